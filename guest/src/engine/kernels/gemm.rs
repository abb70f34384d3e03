//! Convolution as matrix multiplication, with a register-tiled micro-kernel.
//!
//! A 1x1 convolution over `P` pixels is exactly `C[P, cout] = A[P, cin] @ W[cin, cout]`: the
//! NHWC input already *is* `A`. Any other convolution becomes one after **im2col**: each
//! output pixel's receptive field (`kh * kw * cin` values, zeros where it hangs over the
//! border) is copied into a row, and HWIO weights flattened to `[kh*kw*cin, cout]` are `W`.
//!
//! The multiplication is blocked so the inner loop keeps `MR x NR = 6 x 8` outputs in twelve
//! 4-lane registers: per step of `k` it loads 8 weights (two vectors), broadcasts 6 inputs,
//! and does 12 vector multiply-adds, 48 multiply-adds for 8 loads. The weights are **packed**
//! at load time into panels of 8 columns, `[cout/8][k][8]`, so those loads are contiguous.
//! Bias and activation are applied while the tile is still in registers.

use super::lanes::{act_bounds, F32x4};
use crate::engine::ops::Act;

/// Rows (pixels) per tile: 6 x 2 accumulators + 2 weight vectors + 1 broadcast = 15 of
/// the 16 vector registers an x86-64 host gives the wasm compiler.
pub const MR: usize = 6;
/// Columns (output channels) per tile and per packed panel.
pub const NR: usize = 8;

/// `W[k, n]` packed in panels of `NR` columns (the last one zero-padded), with the bias
/// padded the same way.
#[derive(Debug)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedB {
    pub fn new(w: &[f32], k: usize, n: usize, bias: &[f32]) -> PackedB {
        let np = (n + NR - 1) / NR;
        let mut panels = vec![0.0; np * k * NR];
        for j in 0..np {
            for p in 0..k {
                for c in 0..NR {
                    let col = j * NR + c;
                    if col < n {
                        panels[(j * k + p) * NR + c] = w[p * n + col];
                    }
                }
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(np * NR, 0.0);
        PackedB { k, n, panels, bias: padded }
    }

    pub fn weight_count(&self) -> usize {
        self.panels.len() + self.bias.len()
    }
}

/// `C[m, n] = act(A @ W + bias)`; `A` rows are `lda` apart (`lda >= k`), `C` rows `n` apart.
pub fn gemm(a: &[f32], lda: usize, m: usize, b: &PackedB, act: Act, c: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    assert!(lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k) && c.len() >= m * n);
    let np = (n + NR - 1) / NR;
    let (lo, hi) = act_bounds(act);
    // Cache blocking: a block of `mc` rows of A (about 128 KiB) is reused for every panel
    // of W, and each panel (k x 8) is reused for every tile of the block while in L1.
    let mc = ((A_BLOCK_FLOATS / k.max(1)) / MR * MR).max(MR);
    let mut i0 = 0;
    while i0 < m {
        let i1 = (i0 + mc).min(m);
        for j in 0..np {
            let cols = (n - j * NR).min(NR);
            let mut i = i0;
            while i < i1 {
                let rows = (i1 - i).min(MR);
                // SAFETY: rows i..i+rows of A hold k values each (asserted above); panel j
                // holds k * NR values and the bias NR; the tile writes rows x cols inside C.
                unsafe {
                    let ap = a.as_ptr().add(i * lda);
                    let bp = b.panels.as_ptr().add(j * k * NR);
                    let biasp = b.bias.as_ptr().add(j * NR);
                    let cp = c.as_mut_ptr().add(i * n + j * NR);
                    if rows == MR {
                        tile_6x8(ap, lda, bp, k, biasp, cp, n, cols, lo, hi);
                    } else {
                        for r in 0..rows {
                            tile_1x8(ap.add(r * lda), bp, k, biasp, cp.add(r * n), cols, lo, hi);
                        }
                    }
                }
                i += rows;
            }
        }
        i0 = i1;
    }
}

/// Floats of A kept hot per row block (128 KiB: fits a typical L2 with room for W).
const A_BLOCK_FLOATS: usize = 32 * 1024;

/// Store 8 lanes, or only the first `cols` when the panel is the padded last one.
#[inline(always)]
unsafe fn store8(v0: F32x4, v1: F32x4, c: *mut f32, cols: usize) {
    if cols == NR {
        v0.store(c);
        v1.store(c.add(4));
    } else {
        let mut tmp = [0f32; NR];
        v0.store(tmp.as_mut_ptr());
        v1.store(tmp.as_mut_ptr().add(4));
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), c, cols);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_6x8(a: *const f32, lda: usize, b: *const f32, k: usize, bias: *const f32, c: *mut f32, ldc: usize, cols: usize, lo: F32x4, hi: F32x4) {
    let (b0, b1) = (F32x4::load(bias), F32x4::load(bias.add(4)));
    let mut acc = [[b0, b1]; 6];
    let rows = [a, a.add(lda), a.add(2 * lda), a.add(3 * lda), a.add(4 * lda), a.add(5 * lda)];
    for p in 0..k {
        let w0 = F32x4::load(b.add(p * NR));
        let w1 = F32x4::load(b.add(p * NR + 4));
        for r in 0..6 {
            let x = F32x4::splat(*rows[r].add(p));
            acc[r][0] = acc[r][0].mul_add(x, w0);
            acc[r][1] = acc[r][1].mul_add(x, w1);
        }
    }
    for r in 0..6 {
        store8(acc[r][0].clamp(lo, hi), acc[r][1].clamp(lo, hi), c.add(r * ldc), cols);
    }
}

#[allow(dead_code)]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_4x8(a: *const f32, lda: usize, b: *const f32, k: usize, bias: *const f32, c: *mut f32, ldc: usize, cols: usize, lo: F32x4, hi: F32x4) {
    let (b0, b1) = (F32x4::load(bias), F32x4::load(bias.add(4)));
    let (mut c00, mut c01, mut c10, mut c11) = (b0, b1, b0, b1);
    let (mut c20, mut c21, mut c30, mut c31) = (b0, b1, b0, b1);
    let (a0, a1, a2, a3) = (a, a.add(lda), a.add(2 * lda), a.add(3 * lda));
    for p in 0..k {
        let w0 = F32x4::load(b.add(p * NR));
        let w1 = F32x4::load(b.add(p * NR + 4));
        let x = F32x4::splat(*a0.add(p));
        c00 = c00.mul_add(x, w0);
        c01 = c01.mul_add(x, w1);
        let x = F32x4::splat(*a1.add(p));
        c10 = c10.mul_add(x, w0);
        c11 = c11.mul_add(x, w1);
        let x = F32x4::splat(*a2.add(p));
        c20 = c20.mul_add(x, w0);
        c21 = c21.mul_add(x, w1);
        let x = F32x4::splat(*a3.add(p));
        c30 = c30.mul_add(x, w0);
        c31 = c31.mul_add(x, w1);
    }
    store8(c00.clamp(lo, hi), c01.clamp(lo, hi), c, cols);
    store8(c10.clamp(lo, hi), c11.clamp(lo, hi), c.add(ldc), cols);
    store8(c20.clamp(lo, hi), c21.clamp(lo, hi), c.add(2 * ldc), cols);
    store8(c30.clamp(lo, hi), c31.clamp(lo, hi), c.add(3 * ldc), cols);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_1x8(a: *const f32, b: *const f32, k: usize, bias: *const f32, c: *mut f32, cols: usize, lo: F32x4, hi: F32x4) {
    let (mut c0, mut c1) = (F32x4::load(bias), F32x4::load(bias.add(4)));
    for p in 0..k {
        let x = F32x4::splat(*a.add(p));
        c0 = c0.mul_add(x, F32x4::load(b.add(p * NR)));
        c1 = c1.mul_add(x, F32x4::load(b.add(p * NR + 4)));
    }
    store8(c0.clamp(lo, hi), c1.clamp(lo, hi), c, cols);
}

/// Copy each output pixel's receptive field into a row of `cols = kh * kw * c` values
/// (zeros for taps in the padding), in the HWIO weights' `(ky, kx, ci)` order.
pub fn im2col(x: &[f32], g: &crate::engine::ops::Window, out: &mut [f32]) {
    let c = g.c;
    let cols = g.kh * g.kw * c;
    let mut row = 0;
    for n in 0..g.n {
        for oy in 0..g.oh {
            let (ky0, ky1) = g.rows(oy);
            for ox in 0..g.ow {
                let (kx0, kx1) = g.cols(ox);
                let dst = &mut out[row * cols..(row + 1) * cols];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let d = &mut dst[(ky * g.kw + kx) * c..][..c];
                        if ky < ky0 || ky >= ky1 || kx < kx0 || kx >= kx1 {
                            d.iter_mut().for_each(|v| *v = 0.0);
                        } else {
                            let iy = oy * g.sh + ky - g.pt;
                            let ix = ox * g.sw + kx - g.pl;
                            d.copy_from_slice(&x[((n * g.h + iy) * g.w + ix) * c..][..c]);
                        }
                    }
                }
                row += 1;
            }
        }
    }
}
