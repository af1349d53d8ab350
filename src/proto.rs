//! Protobuf messages of the Flight API (`proto/fraudflight.proto`), generated
//! at build time by prost.

include!(concat!(env!("OUT_DIR"), "/fraudflight.v1.rs"));
