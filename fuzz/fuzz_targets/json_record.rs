//! A Kafka record value, as `serve` reads it: JSON decode straight into the
//! Arrow builder (`append_json`, text borrowed where it can be), then the row
//! validation that decides between outcome and dead letter. Anything may be
//! refused; nothing may panic; and the borrowed fast path must give exactly
//! what the owned decode (`decode_json` + `append`) gives.
#![no_main]

use fraudflight::record::{decode_json, TransactionBatchBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut fast = TransactionBatchBuilder::with_capacity(1);
    let appended = fast.append_json(data);
    let owned = decode_json(data);
    assert_eq!(appended.is_ok(), owned.is_ok(), "append_json and decode_json disagree on acceptance");
    if let Ok(transaction) = owned {
        let mut builder = TransactionBatchBuilder::with_capacity(1);
        builder.append(&transaction);
        let batch = builder.finish();
        assert_eq!(fast.finish(), batch, "append_json built another row than decode_json + append");
        let batch = fraudflight::record::conform::conform(&batch).expect("the builder's own schema conforms");
        let features = fraudflight::features::derive(&batch);
        assert!(features.invalid.len() <= 1);
    }
});
