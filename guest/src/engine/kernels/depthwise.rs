//! Depthwise convolution, vectorised across channels.
//!
//! In NHWC the channels of one pixel are contiguous and a depthwise filter never mixes
//! them, so 4 (or 8) channels are simply 4 (or 8) independent lanes: for every output
//! pixel and block of channels, accumulate `x[tap] * w[tap]` over the taps inside the image,
//! starting from the (folded batch-norm) bias, and clamp for ReLU6 before storing.
//!
//! Where neighbouring pixels' windows lie whole inside the image, [`pixels`] walks the
//! taps once for three (or two) of them, so each weight vector is loaded once for all.

use super::lanes::{act_bounds, activate, F32x4};
use crate::engine::ops::{clamp, Act, Window};

/// Depthwise with channel multiplier 1; `w` is `[kh, kw, c]`, `bias` has `c` values.
pub fn depthwise(x: &[f32], g: &Window, w: &[f32], bias: &[f32], act: Act, out: &mut [f32]) {
    let c = g.c;
    assert!(x.len() >= g.n * g.h * g.w * c && w.len() >= g.kh * g.kw * c && bias.len() >= c);
    assert!(out.len() >= g.n * g.oh * g.ow * c);
    assert!(g.dh == 1 && g.dw == 1, "depthwise windows do not dilate");
    let (lo, hi) = act_bounds(act);
    for n in 0..g.n {
        for oy in 0..g.oh {
            let (ky0, ky1) = g.rows(oy);
            let mut ox = 0;
            while ox < g.ow {
                // Neighbours whose windows are whole across: one pass over the taps for
                // three (or two) of them, each weight load shared by all. Measured (per
                // layer kind, ms): 5x5 2.15 -> 1.64, 3x3 1.46 -> 1.19, 5x5/2 0.48 -> 0.38,
                // but 3x3/2 0.49 -> 0.54 (3 taps at stride 2: little to share), so not there.
                let whole = |ox: usize| ox < g.ow && g.cols(ox) == (0, g.kw);
                if (g.sw == 1 || g.kw >= 5) && c % 8 == 0 && whole(ox) && whole(ox + 1) {
                    let o = ((n * g.oh + oy) * g.ow + ox) * c;
                    // SAFETY: the windows' taps are inside the image, c is a multiple of 8,
                    // and the pixels are in this row of `out` (asserted above).
                    unsafe {
                        let args = (
                            x,
                            g,
                            w,
                            bias,
                            (lo, hi),
                            (n, oy, ox),
                            out.as_mut_ptr().add(o),
                        );
                        if whole(ox + 2) {
                            pixels::<3>(args);
                            ox += 3;
                        } else {
                            pixels::<2>(args);
                            ox += 2;
                        }
                    }
                    continue;
                }
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
                            acc += x[((n * g.h + iy) * g.w + ix) * c + ch]
                                * w[(ky * g.kw + kx) * c + ch];
                        }
                    }
                    let (blo, bhi) = act.bounds();
                    out[o + ch] = clamp(acc, blo, bhi);
                }
                ox += 1;
            }
            if act.is_curve() {
                // The row just written, still in cache: the curve the clamp could not do.
                let row = (n * g.oh + oy) * g.ow * c;
                activate(&mut out[row..row + g.ow * c], act);
            }
        }
    }
}

/// `P` neighbouring output pixels from `ox` on, 8 channels at a time: per tap, two weight
/// vectors feed `2 P` multiply-adds, so `2 + 2 P` loads serve `2 P` products where the
/// single-pixel loop needs `4 P`. Registers for `P = 3`: 6 accumulators and 8 loaded
/// vectors, within Cranelift's 16 (it places a block's loads first; 4 pixels would spill).
///
/// # Safety
/// The `P` windows must lie inside the image across (`cols` is `(0, kw)` for each), `c`
/// must be a multiple of 8, and `out` must point at pixel `ox` with room for `P` pixels.
#[allow(clippy::type_complexity)]
unsafe fn pixels<const P: usize>(
    (x, g, w, bias, (lo, hi), (n, oy, ox), out): (
        &[f32],
        &Window,
        &[f32],
        &[f32],
        (F32x4, F32x4),
        (usize, usize, usize),
        *mut f32,
    ),
) {
    let c = g.c;
    let (ky0, ky1) = g.rows(oy);
    let step = g.sw * c; // from one pixel's input column to the next one's
    for cb in (0..c).step_by(8) {
        let b = [
            F32x4::load(bias.as_ptr().add(cb)),
            F32x4::load(bias.as_ptr().add(cb + 4)),
        ];
        let mut acc = [b; P];
        for ky in ky0..ky1 {
            let iy = oy * g.sh + ky - g.pt;
            let mut xp = x
                .as_ptr()
                .add(((n * g.h + iy) * g.w + ox * g.sw - g.pl) * c + cb);
            let mut wp = w.as_ptr().add(ky * g.kw * c + cb);
            for _ in 0..g.kw {
                let (w0, w1) = (F32x4::load(wp), F32x4::load(wp.add(4)));
                for (p, a) in acc.iter_mut().enumerate() {
                    a[0] = a[0].mul_add(F32x4::load(xp.add(p * step)), w0);
                    a[1] = a[1].mul_add(F32x4::load(xp.add(p * step + 4)), w1);
                }
                xp = xp.add(c);
                wp = wp.add(c);
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let o = out.add(p * c + cb);
            a[0].clamp(lo, hi).store(o);
            a[1].clamp(lo, hi).store(o.add(4));
        }
    }
}
