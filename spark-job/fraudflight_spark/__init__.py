"""Spark side of fraudflight: reading transactions, deriving features the way
the Rust scorer does, training, exporting to ONNX and checking parity."""
