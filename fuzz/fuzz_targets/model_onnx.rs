//! An ONNX file as `load-model` hands it to the native evaluator (an admin
//! may upload any bytes): it is recognised as an exported fraud graph, or
//! refused as `Unsupported` with a reason. Nothing may panic or overflow the
//! stack, and a recognised graph scores a few rows of any values.
#![no_main]

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray};
use fraudflight::score::native::NativeModel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = NativeModel::from_onnx(data) else {
        return;
    };
    let numbers: ArrayRef = Arc::new(Float64Array::from(vec![Some(0.0), Some(-1.5), None, Some(f64::INFINITY)]));
    let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("grocery_pos"), None, Some(""), Some("x")]));
    // Each input gets a column of its own kind; a wrong kind is an error, not a panic.
    let _ = model.predict(4, |_| Some(numbers.clone()));
    let _ = model.predict(4, |_| Some(strings.clone()));
});
