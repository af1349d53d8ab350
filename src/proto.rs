//! Protobuf messages of the Flight API (`proto/fraudflight.proto`), generated
//! at build time by prost.

include!(concat!(env!("OUT_DIR"), "/fraudflight.v1.rs"));

/// ONNX's model format (`proto/onnx-ml.proto`), read by `score::native`.
/// Its doc comments are ONNX's, formatted for their own tools.
#[allow(clippy::doc_overindented_list_items, clippy::doc_lazy_continuation)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
