//! The inference engine for TensorFlow frozen graphs.
//!
//! Read it in this order:
//! - [`proto`]: the protobuf wire format (varints, keys, lengths), by hand;
//! - [`graphdef`]: the TensorFlow messages (`GraphDef`, `NodeDef`, `AttrValue`, `TensorProto`);
//! - [`graph`]: the output node, and the nodes it depends on in input-first order;
//! - [`rewrite`]: Keras' activations written out in several ops (swish, hard swish) as one;
//! - [`lower`]: the op registry, one small lowering function per TensorFlow op, by family;
//! - [`ops`]: every operation on NHWC `f32` slices, with TensorFlow's padding rules;
//! - [`plan`]: graph -> ordered, shape-checked, fused steps over reused buffers, and `run`;
//! - [`kernels`]: the hot convolutions, portable or wasm SIMD128;
//! - [`report`]: what a graph needs and whether it loads, without running it.

pub mod graph;
pub mod graphdef;
pub mod kernels;
pub mod lower;
pub mod ops;
pub mod plan;
pub mod proto;
pub mod report;
pub mod rewrite;

pub use lower::supported_ops;
pub use plan::{Model, ModelInfo};
