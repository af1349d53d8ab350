//! A model's `model.json`, as `load-model` and start-up read it: refused
//! with an error naming the problem, or accepted with its invariants held.
#![no_main]

use fraudflight::score::model::ModelMeta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = ModelMeta::parse(data) {
        assert!((0.0..=1.0).contains(&meta.threshold));
        assert!(!meta.version.trim().is_empty());
    }
});
