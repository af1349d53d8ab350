//! Compiles `proto/fraudflight.proto` (the Flight API's messages) and
//! `proto/onnx-ml.proto` (ONNX's model format, as the onnx 1.23 Python
//! package ships it, for the native tree evaluator) into prost types with
//! `protox`, a pure Rust protobuf compiler, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fraudflight.proto");
    println!("cargo:rerun-if-changed=proto/onnx-ml.proto");
    let descriptors = protox::compile(["proto/fraudflight.proto", "proto/onnx-ml.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
