//! Depthwise convolution, vectorised across channels.
//!
//! In NHWC the channels of one pixel are contiguous and a depthwise filter never mixes
//! them, so 4 (or 8) channels are simply 4 (or 8) independent lanes: for every output
//! pixel and block of channels, accumulate `x[tap] * w[tap]` over the taps inside the image,
//! starting from the (folded batch-norm) bias, and clamp for ReLU6 before storing.

use super::lanes::{act_bounds, F32x4};
use crate::engine::ops::{Act, Window};

/// Depthwise with channel multiplier 1; `w` is `[kh, kw, c]`, `bias` has `c` values.
pub fn depthwise(x: &[f32], g: &Window, w: &[f32], bias: &[f32], act: Act, out: &mut [f32]) {
    let c = g.c;
    assert!(x.len() >= g.n * g.h * g.w * c && w.len() >= g.kh * g.kw * c && bias.len() >= c);
    assert!(out.len() >= g.n * g.oh * g.ow * c);
    let (lo, hi) = act_bounds(act);
    for n in 0..g.n {
        for oy in 0..g.oh {
            let (ky0, ky1) = g.rows(oy);
            for ox in 0..g.ow {
                let (kx0, kx1) = g.cols(ox);
                let o = ((n * g.oh + oy) * g.ow + ox) * c;
                let mut cb = 0;
                // SAFETY: every (iy, ix) below is inside the image (`rows`/`cols` clip the
                // taps), channel offsets stay below `c`, and the lengths were asserted.
                unsafe {
                    // 16 channels at a time: four accumulators share each tap's address
                    // arithmetic and loop overhead (EfficientNet's widths are multiples of 16).
                    while cb + 16 <= c {
                        let bp = bias.as_ptr().add(cb);
                        let mut a0 = F32x4::load(bp);
                        let mut a1 = F32x4::load(bp.add(4));
                        let mut a2 = F32x4::load(bp.add(8));
                        let mut a3 = F32x4::load(bp.add(12));
                        for ky in ky0..ky1 {
                            let iy = oy * g.sh + ky - g.pt;
                            let xrow = x.as_ptr().add((n * g.h + iy) * g.w * c + cb);
                            let wrow = w.as_ptr().add(ky * g.kw * c + cb);
                            for kx in kx0..kx1 {
                                let ix = ox * g.sw + kx - g.pl;
                                let xp = xrow.add(ix * c);
                                let wp = wrow.add(kx * c);
                                a0 = a0.mul_add(F32x4::load(xp), F32x4::load(wp));
                                a1 = a1.mul_add(F32x4::load(xp.add(4)), F32x4::load(wp.add(4)));
                                a2 = a2.mul_add(F32x4::load(xp.add(8)), F32x4::load(wp.add(8)));
                                a3 = a3.mul_add(F32x4::load(xp.add(12)), F32x4::load(wp.add(12)));
                            }
                        }
                        let op = out.as_mut_ptr().add(o + cb);
                        a0.clamp(lo, hi).store(op);
                        a1.clamp(lo, hi).store(op.add(4));
                        a2.clamp(lo, hi).store(op.add(8));
                        a3.clamp(lo, hi).store(op.add(12));
                        cb += 16;
                    }
                    while cb + 8 <= c {
                        let mut a0 = F32x4::load(bias.as_ptr().add(cb));
                        let mut a1 = F32x4::load(bias.as_ptr().add(cb + 4));
                        for ky in ky0..ky1 {
                            let iy = oy * g.sh + ky - g.pt;
                            let xrow = x.as_ptr().add((n * g.h + iy) * g.w * c + cb);
                            let wrow = w.as_ptr().add(ky * g.kw * c + cb);
                            for kx in kx0..kx1 {
                                let ix = ox * g.sw + kx - g.pl;
                                let xp = xrow.add(ix * c);
                                let wp = wrow.add(kx * c);
                                a0 = a0.mul_add(F32x4::load(xp), F32x4::load(wp));
                                a1 = a1.mul_add(F32x4::load(xp.add(4)), F32x4::load(wp.add(4)));
                            }
                        }
                        let op = out.as_mut_ptr().add(o + cb);
                        a0.clamp(lo, hi).store(op);
                        a1.clamp(lo, hi).store(op.add(4));
                        cb += 8;
                    }
                }
                // Channels left over (fewer than 8): plain code.
                for ch in cb..c {
                    let mut acc = bias[ch];
                    for ky in ky0..ky1 {
                        let iy = oy * g.sh + ky - g.pt;
                        for kx in kx0..kx1 {
                            let ix = ox * g.sw + kx - g.pl;
                            acc += x[((n * g.h + iy) * g.w + ix) * c + ch] * w[(ky * g.kw + kx) * c + ch];
                        }
                    }
                    out[o + ch] = act.apply(acc);
                }
            }
        }
    }
}
