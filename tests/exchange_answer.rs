//! DoExchange answers with four columns of each outcome (`trans_num`,
//! `fraud_score`, `is_fraud_predicted`, `model_version`), built without the
//! rest of the stored outcome (`Scorer::answer`): they must hold what the
//! stored outcome's columns of those names hold.

mod support;

use std::path::Path;

use fraudflight::score::{outcome, registry::Registry, ScoreOptions, Scorer};
use fraudflight::simulate::{SimConfig, Simulator};

/// DoExchange's answer (`Scorer::answer`, built without the rest of the
/// outcome) holds the same values as the stored outcome's columns of those
/// names, invalid rows left out alike, at the model's threshold and another.
#[test]
fn the_exchange_answer_is_the_outcomes_columns_of_its_names() {
    let dir = Path::new(&support::manifest_dir()).join("models/gbt-sim-v1");
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
