//! Kernel selection: the hot convolutions, portable or wasm SIMD128.
//!
//! Everything else runs the portable code in [`super::ops`].

use super::ops::{self, Act, Window};

/// Which kernels this build uses (reported by `model_info`).
pub const NAME: &str = "scalar";

/// Weights rearranged at load time for a faster kernel (none in the portable build).
#[derive(Debug)]
pub struct Packed;

/// Pack a convolution's HWIO weights, if this build has a kernel that wants them packed.
pub fn pack_conv(_win: &Window, _w: &[f32], _cout: usize) -> Option<Packed> {
    None
}

pub fn conv2d(x: &[f32], win: &Window, w: &[f32], _packed: Option<&Packed>, cout: usize, bias: &[f32], act: Act, out: &mut [f32]) {
    ops::conv2d(x, win, w, cout, bias, act, out)
}

pub fn depthwise(x: &[f32], win: &Window, w: &[f32], mult: usize, bias: &[f32], act: Act, out: &mut [f32]) {
    ops::depthwise(x, win, w, mult, bias, act, out)
}
