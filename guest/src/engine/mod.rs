//! The inference engine for TensorFlow frozen graphs.
//!
//! Read it in this order:
//! - [`proto`]: the protobuf wire format (varints, keys, lengths), by hand;
//! - [`graphdef`]: the TensorFlow messages (`GraphDef`, `NodeDef`, `AttrValue`, `TensorProto`);
//! - [`ops`]: every operation on NHWC `f32` slices, with TensorFlow's padding rules;
//! - [`plan`]: graph -> ordered, shape-checked, fused steps over reused buffers, and `run`;
//! - [`kernels`]: the hot convolutions, portable or wasm SIMD128.

pub mod graphdef;
pub mod kernels;
pub mod ops;
pub mod plan;
pub mod proto;

pub use plan::{Model, ModelInfo, SUPPORTED_OPS};
