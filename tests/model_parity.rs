//! Every model shipped under `models/` (and `models/handbook/`, the model
//! trained with history) agrees with Spark: the Rust features
//! equal Spark's on its parity vectors, and the ONNX probabilities are within
//! 1e-5 of Spark's, scored by the native evaluator (which the loader checked
//! against ONNX Runtime) as well as by ONNX Runtime itself.

use std::path::Path;

use fraudflight::score::model::{Model, PARITY_TOLERANCE};

#[test]
fn every_shipped_model_matches_spark_on_its_parity_vectors() {
    let root = Path::new(&manifest_dir()).join("models");
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

/// DoExchange's answer (`Scorer::answer`, built without the rest of the
/// outcome) holds the same values as the stored outcome's columns of those
/// names, invalid rows left out alike, at the model's threshold and another.
#[test]
fn the_exchange_answer_is_the_outcomes_columns_of_its_names() {
    use fraudflight::score::{outcome, registry::Registry, ScoreOptions, Scorer};
    use fraudflight::simulate::{SimConfig, Simulator};
    let dir = Path::new(&manifest_dir()).join("models/gbt-sim-v1");
    let scorer = Scorer::new(std::sync::Arc::new(Registry::open(&dir, 1).expect("the shipped model loads")));
    let mut txns: Vec<_> = Simulator::new(SimConfig { seed: 5, ..SimConfig::default() }).take(3_000).collect();
    txns[7].amt = -1.0;
    let batch = fraudflight::record::to_batch(&txns);
    for threshold in [None, Some(0.01)] {
        let options = ScoreOptions { threshold, ..ScoreOptions::default() };
        let full = scorer.score(&batch, &options).unwrap();
        let answer = scorer.answer(&batch, &options).unwrap();
        assert_eq!(answer.invalid.len(), 1, "the negative amount");
        assert_eq!(full.invalid.len(), answer.invalid.len());
        assert_eq!(answer.outcomes.schema(), outcome::exchange_schema());
        assert_eq!(answer.outcomes.num_rows(), 2_999);
        for field in outcome::exchange_schema().fields() {
            let name = field.name();
            assert_eq!(answer.outcomes.column_by_name(name), full.outcomes.column_by_name(name), "{name}");
        }
    }
}

/// This clone's directory, read when the test runs (cargo sets it): a test
/// binary another clone built into the shared target must not read that
/// clone's files.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
