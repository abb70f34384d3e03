//! Kernel selection: the hot convolutions, blocked and vectorised, or portable.
//!
//! - default build: 1x1 convolutions are a packed GEMM ([`gemm`]), other convolutions
//!   (EfficientNet's 3x3 stride-2 stem) the same GEMM on receptive fields packed straight
//!   from the image (im2col without the matrix), depthwise convolutions a
//!   channel-vectorised loop ([`depthwise`]). With `-C target-feature=+simd128` the 4-lane
//!   type in [`lanes`] is wasm SIMD128; elsewhere (host tests) it is emulated.
//! - feature `scalar`: the straightforward loops of [`crate::engine::ops`], kept as the
//!   readable reference; both must agree to float rounding.
//!
//! Everything else (pooling, add, mean, softmax ...) is cheap and always runs `ops`.

pub mod depthwise;
pub mod gemm;
pub mod lanes;

use super::graphdef::element_count;
use super::ops::{self, Act, Window};

/// Which kernels this build uses (reported by `model_info`).
#[cfg(feature = "scalar")]
pub const NAME: &str = "scalar";
#[cfg(all(
    not(feature = "scalar"),
    target_arch = "wasm32",
    target_feature = "simd128"
))]
pub const NAME: &str = "simd128";
#[cfg(all(
    not(feature = "scalar"),
    not(all(target_arch = "wasm32", target_feature = "simd128"))
))]
pub const NAME: &str = "blocked-portable";

/// Convolution weights rearranged at load time for the GEMM kernel.
pub type Packed = gemm::PackedB;

/// Pack a convolution's HWIO weights and bias (after batch-norm folding) for the GEMM, or
/// `None` to keep the direct loop (scalar build, or an im2col matrix too big to hold).
pub fn pack_conv(win: &Window, w: &[f32], cout: usize, bias: &[f32]) -> Option<Packed> {
    if cfg!(feature = "scalar") {
        return None;
    }
    let k = win.kh * win.kw * win.c;
    if !is_pointwise(win) && element_count(&[win.n * win.oh * win.ow, k]).is_none() {
        return None;
    }
    Some(gemm::PackedB::new(w, k, cout, bias))
}

/// Reserve the packing buffers the convolution `win` will use (see
/// [`gemm::reserve_scratch`]): `Ok(bytes they need)`, `Err(bytes)` when they cannot be
/// allocated.
pub fn reserve_conv(win: &Window, packed: Option<&Packed>) -> Result<usize, usize> {
    let packed = match packed {
        Some(p) => p,
        None => return Ok(0),
    };
    let m = win.n * win.oh * win.ow;
    // The same calls as `conv2d`: the pointwise GEMM skips zero steps, im2col does not.
    gemm::reserve_scratch(m, packed.k, is_pointwise(win))
}

/// A 1x1, stride-1 convolution reads the input as the GEMM's left matrix directly, unless
/// it is padded (explicit padding makes the output larger than the input).
fn is_pointwise(win: &Window) -> bool {
    win.kh == 1 && win.kw == 1 && win.sh == 1 && win.sw == 1 && (win.oh, win.ow) == (win.h, win.w)
}

/// `act(conv(x) + bias [+ residual])`: `residual` is a skip connection's `Add` fused into
/// the convolution (same shape as `out`), added before the activation.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    win: &Window,
    w: &[f32],
    packed: Option<&Packed>,
    cout: usize,
    bias: &[f32],
    act: Act,
    residual: Option<&[f32]>,
    out: &mut [f32],
) {
    let packed = match packed {
        Some(p) => p,
        None => {
            return match residual {
                None => ops::conv2d(x, win, w, cout, bias, act, out),
                Some(r) => {
                    ops::conv2d(x, win, w, cout, bias, Act::None, out);
                    for (o, &v) in out.iter_mut().zip(r) {
                        *o = act.apply(*o + v);
                    }
                }
            };
        }
    };
    let m = win.n * win.oh * win.ow;
    if is_pointwise(win) {
        return gemm::gemm(x, win.c, m, packed, act, residual, out);
    }
    gemm::conv_im2col(x, win, packed, act, residual, out)
}

pub fn depthwise(
    x: &[f32],
    win: &Window,
    w: &[f32],
    mult: usize,
    bias: &[f32],
    act: Act,
    out: &mut [f32],
) {
    if cfg!(feature = "scalar") || mult != 1 {
        ops::depthwise(x, win, w, mult, bias, act, out)
    } else {
        depthwise::depthwise(x, win, w, bias, act, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ops::Padding;

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{}: {} vs {}",
                i,
                x,
                y
            );
        }
    }

    /// The packed GEMM (with row and column tails) and im2col agree with the plain loops.
    #[test]
    fn blocked_conv_matches_plain_loops() {
        for &(h, w, cin, cout, k, s, pad) in &[
            (5, 7, 3, 13, 1, 1, Padding::Same),
            (9, 9, 16, 24, 1, 1, Padding::Valid),
            (8, 9, 3, 32, 3, 2, Padding::Same),
            (7, 6, 5, 9, 5, 2, Padding::Valid),
            (3, 3, 2, 1, 3, 1, Padding::Same),
            (6, 6, 4, 8, 1, 2, Padding::Same),
            // A long k with row (30 = 7 x 4 + 2) and column (40 = 5 x 8) tails.
            (6, 5, 160, 40, 1, 1, Padding::Valid),
            // The stem's shape, smaller: tiles of 4 windows inside the image (packed 4x4
            // at a time) next to tiles that touch the border or wrap to the next row.
            (15, 13, 3, 16, 3, 2, Padding::Same),
        ] {
            let win = Window::new(&[1, h, w, cin], k, k, s, s, pad).unwrap();
            let x = noise(h * w * cin, 1);
            let wt = noise(k * k * cin * cout, 2);
            let bias = noise(cout, 3);
            let n_out = win.oh * win.ow * cout;
            for act in [
                Act::None,
                Act::Relu6,
                Act::Swish,
                Act::Sigmoid,
                Act::HardSwish,
            ] {
                let mut want = vec![0.0; n_out];
                ops::conv2d(&x, &win, &wt, cout, &bias, act, &mut want);
                let packed = gemm::PackedB::new(&wt, k * k * cin, cout, &bias);
                let mut got = vec![0.0; n_out];
                conv2d(
                    &x,
                    &win,
                    &[],
                    Some(&packed),
                    cout,
                    &bias,
                    act,
                    None,
                    &mut got,
                );
                close(&got, &want);
                // With a fused residual: act(conv + bias + r), packed and plain alike.
                let r = noise(n_out, 10);
                let mut plain = vec![0.0; n_out];
                ops::conv2d(&x, &win, &wt, cout, &bias, Act::None, &mut plain);
                let want: Vec<f32> = plain
                    .iter()
                    .zip(&r)
                    .map(|(a, b)| act.apply(a + b))
                    .collect();
                conv2d(
                    &x,
                    &win,
                    &[],
                    Some(&packed),
                    cout,
                    &bias,
                    act,
                    Some(&r),
                    &mut got,
                );
                close(&got, &want);
                conv2d(&x, &win, &wt, None, cout, &bias, act, Some(&r), &mut got);
                close(&got, &want);
            }
        }
    }

    /// A dilated window (`with_taps`) visits only the real taps, packed (im2col) and plain
    /// alike, and gives what the kernel spread out with zeros gives undilated.
    #[test]
    fn dilated_conv_skips_the_zero_taps() {
        for &(h, w, cin, cout, k, s, d, pad) in &[
            (9, 8, 4, 5, 3, 1, 2, Padding::Same),
            (9, 8, 4, 5, 3, 1, 2, Padding::Valid),
            (11, 10, 3, 9, 3, 2, 3, Padding::Same),
            (7, 12, 6, 8, 2, 1, 4, Padding::Same),
        ] {
            let x = noise(h * w * cin, 21);
            let wt = noise(k * k * cin * cout, 22);
            let bias = noise(cout, 23);
            let ke = (k - 1) * d + 1;
            let mut spread = vec![0.0; ke * ke * cin * cout];
            for i in 0..k {
                for j in 0..k {
                    let (from, to) = ((i * k + j) * cin * cout, (i * d * ke + j * d) * cin * cout);
                    spread[to..to + cin * cout].copy_from_slice(&wt[from..from + cin * cout]);
                }
            }
            let plain = Window::new(&[1, h, w, cin], ke, ke, s, s, pad).unwrap();
            let win = plain.clone().with_taps((k, k), (d, d));
            let n_out = win.oh * win.ow * cout;
            let mut want = vec![0.0; n_out];
            ops::conv2d(&x, &plain, &spread, cout, &bias, Act::Relu6, &mut want);
            let mut got = vec![0.0; n_out];
            ops::conv2d(&x, &win, &wt, cout, &bias, Act::Relu6, &mut got);
            close(&got, &want);
            let packed = gemm::PackedB::new(&wt, k * k * cin, cout, &bias);
            let mut got = vec![0.0; n_out];
            conv2d(
                &x,
                &win,
                &[],
                Some(&packed),
                cout,
                &bias,
                Act::Relu6,
                None,
                &mut got,
            );
            close(&got, &want);
        }
    }

    /// After a ReLU: inputs with whole channels zero (so most steps of k are zero in every
    /// row of a tile, and the sparse kernel runs) and scattered zeros, with row and column
    /// tails and a residual, agree with the plain loops.
    #[test]
    fn sparse_inputs_match_plain_loops() {
        // cout >= 32: the sparse kernel needs 4 panels of W to share the compaction.
        for &(h, w, cin, cout) in &[(6, 5, 40, 40), (7, 3, 19, 35), (1, 1, 64, 32)] {
            let win = Window::new(&[1, h, w, cin], 1, 1, 1, 1, Padding::Valid).unwrap();
            let x: Vec<f32> = noise(h * w * cin, 7)
                .iter()
                .enumerate()
                .map(|(i, &v)| if (i % cin) % 3 == 0 { 0.0 } else { v.max(0.0) })
                .collect();
            let wt = noise(cin * cout, 8);
            let bias = noise(cout, 9);
            let r = noise(h * w * cout, 11);
            let packed = gemm::PackedB::new(&wt, cin, cout, &bias);
            let mut plain = vec![0.0; h * w * cout];
            ops::conv2d(&x, &win, &wt, cout, &bias, Act::None, &mut plain);
            let want: Vec<f32> = plain
                .iter()
                .zip(&r)
                .map(|(a, b)| Act::Relu6.apply(a + b))
                .collect();
            let mut got = vec![0.0; want.len()];
            gemm::take_skipped_macs();
            conv2d(
                &x,
                &win,
                &[],
                Some(&packed),
                cout,
                &bias,
                Act::Relu6,
                Some(&r),
                &mut got,
            );
            close(&got, &want);
            // A third of the channels are zero everywhere: the sparse kernel ran and
            // skipped at least those (and counted them, for the profile).
            assert!(gemm::take_skipped_macs() as usize >= h * w * ((cin + 2) / 3) * cout);
        }
    }

    #[test]
    fn vector_depthwise_matches_plain_loops() {
        // The first six take the unrolled interior loops (3x3 and 5x5, stride 1 and 2, channels
        // a multiple of 16) plus the clipped border; the last three the general loop only.
        for &(h, w, c, k, s, pad) in &[
            (7, 8, 16, 3, 1, Padding::Same),
            (9, 10, 32, 3, 2, Padding::Same),
            (11, 9, 48, 5, 1, Padding::Same),
            (12, 13, 16, 5, 2, Padding::Same),
            (8, 9, 32, 3, 1, Padding::Valid),
            (4, 4, 16, 5, 1, Padding::Same),
            (9, 7, 20, 5, 2, Padding::Same),
            (6, 6, 13, 3, 2, Padding::Valid),
            (7, 7, 16, 7, 1, Padding::Same),
        ] {
            let win = Window::new(&[1, h, w, c], k, k, s, s, pad).unwrap();
            let x = noise(h * w * c, 4);
            let wt = noise(k * k * c, 5);
            let bias = noise(c, 6);
            for act in [Act::Relu6, Act::Swish, Act::HardSigmoid] {
                let mut want = vec![0.0; win.oh * win.ow * c];
                ops::depthwise(&x, &win, &wt, 1, &bias, act, &mut want);
                let mut got = vec![0.0; want.len()];
                depthwise::depthwise(&x, &win, &wt, &bias, act, &mut got);
                close(&got, &want);
            }
        }
    }

    /// `padding="EXPLICIT"` windows, whose padding-after is not SAME's (more at the bottom
    /// than SAME would add, less, none, or more than a kernel's width so that whole windows
    /// lie in the padding; a padded 1x1 conv, which must not take the pointwise GEMM): every
    /// kernel, scalar and vector, equals the VALID window over the input padded by hand.
    #[test]
    fn explicit_padding_matches_padded_input() {
        // (h, w, c, k, stride, [top, bottom, left, right])
        for &(h, w, c, k, s, pads) in &[
            (7, 8, 16, 3, 2, [0, 1, 0, 1]), // Keras' ZeroPadding2D before a stride-2 conv
            (9, 10, 32, 3, 1, [1, 2, 0, 1]),
            (8, 8, 16, 5, 2, [2, 2, 1, 3]),
            (6, 7, 24, 3, 1, [4, 0, 0, 5]), // rows/columns of windows all in the padding
            (5, 6, 13, 3, 2, [1, 0, 2, 0]),
            (4, 5, 8, 1, 1, [1, 2, 2, 1]),   // padded pointwise
            (15, 13, 3, 3, 2, [0, 1, 0, 1]), // the stem's im2col tiles
        ] {
            let [t, b, l, r] = pads;
            let win = Window::explicit(&[1, h, w, c], k, k, s, s, pads).unwrap();
            let (ph, pw) = (h + t + b, w + l + r);
            let valid = Window::new(&[1, ph, pw, c], k, k, s, s, Padding::Valid).unwrap();
            assert_eq!((win.oh, win.ow), (valid.oh, valid.ow));
            let x = noise(h * w * c, 21);
            let mut xp = vec![0.0; ph * pw * c];
            let (from, to) = ([1, h, w, c], [1, ph, pw, c]);
            ops::pad(&x, &from, &[(0, 0), (t, b), (l, r), (0, 0)], &to, &mut xp);
            let bias = noise(c, 23);
            // Depthwise, multiplier 1: the vector kernel and the plain loop.
            let wd = noise(k * k * c, 22);
            let mut want = vec![0.0; valid.oh * valid.ow * c];
            ops::depthwise(&xp, &valid, &wd, 1, &bias, Act::Relu6, &mut want);
            let mut got = vec![0.0; want.len()];
            depthwise::depthwise(&x, &win, &wd, &bias, Act::Relu6, &mut got);
            close(&got, &want);
            ops::depthwise(&x, &win, &wd, 1, &bias, Act::Relu6, &mut got);
            close(&got, &want);
            // Depthwise, multiplier 2 (the plain loop only).
            let wm = noise(k * k * c * 2, 24);
            let bm = noise(c * 2, 25);
            let mut want = vec![0.0; valid.oh * valid.ow * c * 2];
            ops::depthwise(&xp, &valid, &wm, 2, &bm, Act::None, &mut want);
            let mut got = vec![0.0; want.len()];
            ops::depthwise(&x, &win, &wm, 2, &bm, Act::None, &mut got);
            close(&got, &want);
            // Conv2D: packed (GEMM or im2col) and the plain loop.
            let cout = 9;
            let wc = noise(k * k * c * cout, 26);
            let bc = noise(cout, 27);
            let mut want = vec![0.0; valid.oh * valid.ow * cout];
            ops::conv2d(&xp, &valid, &wc, cout, &bc, Act::Relu6, &mut want);
            let packed = gemm::PackedB::new(&wc, k * k * c, cout, &bc);
            let mut got = vec![0.0; want.len()];
            let p = Some(&packed);
            conv2d(&x, &win, &[], p, cout, &bc, Act::Relu6, None, &mut got);
            close(&got, &want);
            conv2d(&x, &win, &wc, None, cout, &bc, Act::Relu6, None, &mut got);
            close(&got, &want);
        }
        // Too much padding for nothing: a window larger than the padded input is refused.
        assert!(Window::explicit(&[1, 2, 2, 1], 5, 5, 1, 1, [1, 1, 1, 1]).is_err());
        assert!(Window::explicit(&[1, 2, 2, 1], 3, 3, 1, 1, [0, 1, 1, 0]).is_ok());
    }

    /// The curves' four-lane pass ([`lanes::activate`]) is the scalar activation bit for
    /// bit, tails included, on ordinary values, saturating ones, infinities and NaN.
    #[test]
    fn curve_activations_agree_bit_for_bit() {
        let mut x: Vec<f32> = noise(397, 12).iter().map(|v| v * 12.0).collect();
        x.extend_from_slice(&[
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            -3.0,
            3.0,
            86.9,
            -86.9,
            88.5,
            -88.5,
            100.0,
            -100.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let acts = [
            Act::None,
            Act::Relu,
            Act::Relu6,
            Act::Sigmoid,
            Act::Swish,
            Act::HardSigmoid,
            Act::HardSwish,
        ];
        for act in acts {
            let want: Vec<f32> = x.iter().map(|&v| act.apply(v)).collect();
            // Every tail length: the last len % 4 values take the scalar path.
            for len in (x.len() - 8)..=x.len() {
                let mut got = x[..len].to_vec();
                lanes::activate(&mut got, act);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{:?}({}): {} vs {}",
                        act,
                        x[i],
                        g,
                        w
                    );
                }
            }
        }
    }

    /// `exp`, `sigmoid` and the hard curves against f64 (what TensorFlow's float results
    /// round), with TensorFlow's answers at the edges: NaN in, NaN out (as Relu keeps it);
    /// `sigmoid(inf) = 1`, `sigmoid(-inf) = 0`, and so `swish(-inf) = -inf * 0 = NaN`.
    #[test]
    fn curves_match_f64_and_tensorflow_at_the_edges() {
        for i in 0..=20_000 {
            let v = -87.0 + 175.0 * i as f32 / 20_000.0;
            let e = (v as f64).exp();
            let rel = ((ops::exp(v) as f64 - e) / e).abs();
            assert!(
                rel < 3e-7,
                "exp({}): {} vs {} ({:e})",
                v,
                ops::exp(v),
                e,
                rel
            );
            let s = 1.0 / (1.0 + (-(v as f64)).exp());
            let got = ops::sigmoid(v) as f64;
            assert!(
                (got - s).abs() <= 3e-7 * s + 1e-37,
                "sigmoid({}): {} vs {}",
                v,
                got,
                s
            );
            let hs = ((v as f64 + 3.0).clamp(0.0, 6.0)) / 6.0;
            assert!((Act::HardSigmoid.apply(v) as f64 - hs).abs() <= 1e-7 * hs.max(1e-30));
        }
        assert_eq!(ops::exp(0.0), 1.0);
        assert_eq!(ops::exp(90.0), f32::INFINITY);
        assert_eq!(ops::sigmoid(f32::INFINITY), 1.0);
        assert_eq!(ops::sigmoid(f32::NEG_INFINITY), 0.0);
        assert_eq!(Act::Swish.apply(f32::INFINITY), f32::INFINITY);
        assert!(Act::Swish.apply(f32::NEG_INFINITY).is_nan());
        assert_eq!(Act::HardSwish.apply(-3.5), -0.0);
        assert_eq!(Act::HardSwish.apply(4.0), 4.0);
        for act in [Act::Sigmoid, Act::Swish, Act::HardSigmoid, Act::HardSwish] {
            assert!(act.apply(f32::NAN).is_nan(), "{:?}", act);
            assert!(act.is_curve() && act.bounds() == (f32::NEG_INFINITY, f32::INFINITY));
        }
    }
}
