//! A Kaggle-layout CSV file as `replay` reads it: every row either becomes
//! a transaction (then validated like any other) or an error naming its
//! line. Nothing may panic.
#![no_main]

use fraudflight::record::TransactionBatchBuilder;
use fraudflight::record::kaggle_csv::KaggleCsv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut builder = TransactionBatchBuilder::with_capacity(16);
    for row in KaggleCsv::from_reader(data, "fuzz.csv".into()).take(1_000) {
        match row {
            Ok(transaction) => builder.append(&transaction),
            Err(e) => assert!(e.to_string().starts_with("fuzz.csv line ")),
        }
    }
    let batch = fraudflight::record::conform::conform(&builder.finish()).expect("the builder's own schema conforms");
    let _ = fraudflight::features::derive(&batch);
});
