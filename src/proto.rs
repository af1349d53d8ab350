//! Protobuf messages of the Flight API (`proto/fraudflight.proto`), generated
//! at build time by prost.

include!(concat!(env!("OUT_DIR"), "/fraudflight.v1.rs"));

/// ONNX's model format (`proto/onnx-ml.proto`), read by `score::native`.
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
