//! A Kafka record value, as `serve` reads it: JSON decode, then the Arrow
//! batch and the row validation that decide between outcome and dead letter.
//! Anything may be refused; nothing may panic.
#![no_main]

use fraudflight::record::{decode_json, TransactionBatchBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(transaction) = decode_json(data) {
        let mut builder = TransactionBatchBuilder::with_capacity(1);
        builder.append(&transaction);
        let batch = fraudflight::conform::conform(&builder.finish()).expect("the builder's own schema conforms");
        let features = fraudflight::score::features::derive(&batch);
        assert!(features.invalid.len() <= 1);
    }
});
