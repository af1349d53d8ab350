//! Every model shipped under `models/` (and `models/handbook/`, the model
//! trained with history) agrees with Spark: the Rust features
//! equal Spark's on its parity vectors, and the ONNX probabilities are within
//! 1e-5 of Spark's, scored by the native evaluator (which the loader checked
//! against ONNX Runtime) as well as by ONNX Runtime itself.

mod support;

use std::path::Path;

use fraudflight::score::model::{Model, PARITY_TOLERANCE};

#[test]
fn every_shipped_model_matches_spark_on_its_parity_vectors() {
    let root = Path::new(&support::manifest_dir()).join("models");
    let mut checked = 0;
    // models/NAME and one level of grouping (models/handbook/NAME).
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&root).expect("models/ exists") {
        let dir = entry.unwrap().path();
        if dir.join("model.json").exists() {
            dirs.push(dir);
        } else if dir.is_dir() {
            dirs.extend(
                std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|d| d.join("model.json").exists()),
            );
        }
    }
    assert!(dirs.len() >= 2, "the demo's model and the history model: {dirs:?}");
    for dir in dirs {
        assert!(dir.join("parity.jsonl").exists(), "{} ships no parity.jsonl", dir.display());
        let (model, report) = Model::load_dir(&dir, 1).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(report.rows >= 100, "{}: only {} parity vectors", dir.display(), report.rows);
        assert!(report.max_probability_diff <= PARITY_TOLERANCE);
        // Our exporter's graphs (every shipped model) are scored natively;
        // ONNX Runtime agreed with it at load, on 4,096 simulated rows.
        assert_eq!(model.engine(), "native", "{}: the native evaluator did not take the model", dir.display());
        println!(
            "{}: {} vectors, max |p - spark| = {:.2e}, max |distance - spark| = {:.2e} km",
            model.version(),
            report.rows,
            report.max_probability_diff,
            report.max_distance_diff
        );
        checked += 1;
    }
    assert!(checked >= 1, "no model found under {}", root.display());
}

/// The path contributions of the shipped demo model add up to its score:
/// `sigmoid(bias + sum of contributions)` is the probability it serves, for
/// every one of a few thousand simulated transactions.
#[test]
fn path_contributions_add_up_to_the_served_score() {
    let dir = fraudflight::score::registry::model_dir_or_newest(None).expect("a shipped model");
    let (model, _) = Model::load_dir(&dir, 1).unwrap();
    let txns: Vec<_> = fraudflight::simulate::Simulator::new(Default::default()).take(3_000).collect();
    let batch = fraudflight::record::to_batch(&txns);
    let features = fraudflight::features::derive(&batch);
    let scores = model.predict(&batch, &features).unwrap();
    let rows: Vec<usize> = (0..batch.num_rows()).collect();
    let explained = model.explain(&batch, &features, &rows).unwrap().expect("a tree ensemble is explained");
    let inputs: Vec<&str> = model.meta.inputs.iter().map(|i| i.name.as_str()).collect();
    let mut worst = 0.0f64;
    for (e, score) in explained.iter().zip(&scores) {
        assert!(e.contributions.iter().all(|(name, _)| inputs.contains(&name.as_str())));
        let margin = e.bias + e.contributions.iter().map(|(_, c)| c).sum::<f64>();
        worst = worst.max((1.0 / (1.0 + (-margin).exp()) - f64::from(*score)).abs());
    }
    assert!(worst < 1e-6, "sigmoid(bias + contributions) differs from the score by {worst}");
    // Not all zero: the inputs do move the scores.
    assert!(explained.iter().any(|e| e.contributions.iter().any(|(_, c)| c.abs() > 0.1)));
}
