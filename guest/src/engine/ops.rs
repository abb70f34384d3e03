//! The operations, on plain `f32` slices in NHWC layout, with TensorFlow's exact semantics.
//!
//! These are the portable (scalar) kernels: loops written so that the innermost one walks
//! contiguous memory (output channels, or channels of a pixel), which is both the obvious
//! reading of the maths and what a compiler can vectorise. [`super::kernels`] replaces the
//! hot ones with wasm SIMD128 versions; the results agree to float rounding.

/// An activation fused into the op that produces a tensor: applying ReLU6 (or a swish)
/// while the value is still in a register, or in cache, saves a whole pass over memory.
///
/// `Relu`/`Relu6` are clamps, which the SIMD kernels apply in their epilogue; the others
/// are curves (see [`Act::is_curve`]), which the SIMD kernels apply with
/// [`super::kernels::lanes::activate`] over each block of output they have just written.
/// Keras writes them as several ops; [`super::rewrite`] recognises those patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
    /// `1 / (1 + exp(-v))`: a squeeze-excite gate after its convolution.
    Sigmoid,
    /// `v * sigmoid(v)` (SiLU): EfficientNet's activation.
    Swish,
    /// `relu6(v + 3) / 6`: MobileNetV3's gate (Keras 3's `hard_sigmoid`).
    HardSigmoid,
    /// `v * relu6(v + 3) / 6`: MobileNetV3's activation.
    HardSwish,
}

/// `v < lo ? lo : v`, then `v > hi ? hi : v`: exactly wasm's `pmax`/`pmin`, which the SIMD
/// kernels clamp with. A NaN stays NaN (as in TensorFlow's Relu), where `f32::max` would
/// turn it into 0: the scalar and the SIMD paths must agree on every input.
#[inline(always)]
pub fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi {
        hi
    } else {
        v
    }
}

/// The constants of [`exp`] (Cephes' `expf`), shared with the SIMD twin in
/// `kernels::lanes` so the two compute the same float operations in the same order.
pub mod exp_consts {
    /// Inputs are clamped to `[LO, HI]`: `exp(-87)` is still a normal float; above 88.4
    /// the power of two is 2^128, i.e. infinity, as `exp` overflows in TensorFlow.
    pub const LO: f32 = -87.0;
    pub const HI: f32 = 89.0;
    pub const LOG2E: f32 = core::f32::consts::LOG2_E;
    /// `1.5 * 2^23`: added to a float below 2^22 in magnitude, it rounds it to a whole
    /// number (to even), which then sits in the low bits of the sum's mantissa.
    pub const ROUND: f32 = 12_582_912.0;
    /// ln 2 split in two, so `v - n ln 2` loses nothing.
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// `exp(r) ~ 1 + r + r^2 (P0 + P1 r + ... + P5 r^5)` for |r| <= ln2 / 2.
    pub const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
}

/// `e^v` in plain float operations (no `libm`): a range reduction to `r = v - n ln 2`, a
/// degree-7 polynomial in `r`, then `2^n` built in the exponent bits (no float-to-int
/// conversion, no `floor`: both cost Cranelift several instructions per lane). Within 2 ulp of the
/// true value on `[-87, 88]`; NaN stays NaN, large inputs give infinity, very negative ones
/// about 1.6e-38. The SIMD kernels run the same operations four lanes at a time, so the
/// scalar and vector activations agree bit for bit.
#[inline(always)]
pub fn exp(v: f32) -> f32 {
    use exp_consts::*;
    let v = clamp(v, LO, HI);
    // n = round(v / ln 2): adding 1.5 * 2^23 leaves n in the low mantissa bits of `t`.
    let t = v * LOG2E + ROUND;
    let n = t - ROUND;
    let r = v - n * LN2_HI - n * LN2_LO;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y * r + p;
    }
    let y = y * (r * r) + r + 1.0;
    // 2^n: n + 127 shifted into the exponent field (the bits above it shift out). For a
    // NaN input `y` is NaN, so whatever the bits make, the product is NaN.
    y * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

/// The logistic function `1 / (1 + e^-v)`, TensorFlow's `Sigmoid` (to float rounding).
#[inline(always)]
pub fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

/// Keras 3's `hard_sigmoid`: `relu6(v + 3) / 6`.
#[inline(always)]
pub fn hard_sigmoid(v: f32) -> f32 {
    clamp(v + 3.0, 0.0, 6.0) / 6.0
}

impl Act {
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => clamp(v, 0.0, f32::INFINITY),
            Act::Relu6 => clamp(v, 0.0, 6.0),
            Act::Sigmoid => sigmoid(v),
            Act::Swish => v * sigmoid(v),
            Act::HardSigmoid => hard_sigmoid(v),
            Act::HardSwish => v * hard_sigmoid(v),
        }
    }

    pub fn apply_all(self, out: &mut [f32]) {
        match self {
            Act::None => {}
            Act::Relu => out
                .iter_mut()
                .for_each(|v| *v = clamp(*v, 0.0, f32::INFINITY)),
            Act::Relu6 => out.iter_mut().for_each(|v| *v = clamp(*v, 0.0, 6.0)),
            _ => out.iter_mut().for_each(|v| *v = self.apply(*v)),
        }
    }

    /// The clamp `(lo, hi)` a kernel's epilogue applies: the whole activation for `Relu`
    /// and `Relu6`, nothing (`(-inf, inf)`) for the curves, which come after.
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Act::Relu => (0.0, f32::INFINITY),
            Act::Relu6 => (0.0, 6.0),
            _ => (f32::NEG_INFINITY, f32::INFINITY),
        }
    }

    /// Whether the activation is a function a clamp cannot express.
    pub fn is_curve(self) -> bool {
        !matches!(self, Act::None | Act::Relu | Act::Relu6)
    }

    /// The name `step_info` shows.
    pub fn name(self) -> &'static str {
        match self {
            Act::None => "none",
            Act::Relu => "relu",
            Act::Relu6 => "relu6",
            Act::Sigmoid => "sigmoid",
            Act::Swish => "swish",
            Act::HardSigmoid => "hard_sigmoid",
            Act::HardSwish => "hard_swish",
        }
    }
}

/// TensorFlow's `padding` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Same,
    Valid,
}

/// Output size and padding-before for one spatial dimension.
///
/// `SAME` gives `ceil(in / stride)` outputs and pads `total = max((out-1)*stride + k - in, 0)`
/// cells, `total / 2` before and the rest after: for an even kernel overhang at stride 2 the
/// extra row goes to the bottom/right (the classic TF-vs-PyTorch difference).
pub fn window_dim(
    size: usize,
    k: usize,
    stride: usize,
    padding: Padding,
) -> Result<(usize, usize), String> {
    if k == 0 || stride == 0 {
        return Err(format!(
            "kernel {} / stride {} must be at least 1",
            k, stride
        ));
    }
    if size == 0 {
        return Err("a spatial dimension of the input is 0".to_string());
    }
    match padding {
        Padding::Valid => {
            if size < k {
                return Err(format!(
                    "VALID window of {} is larger than the input ({})",
                    k, size
                ));
            }
            Ok(((size - k) / stride + 1, 0))
        }
        Padding::Same => {
            let out = (size + stride - 1) / stride;
            let needed = (out - 1) * stride + k;
            let total = needed.saturating_sub(size);
            Ok((out, total / 2))
        }
    }
}

/// Output size of one spatial dimension padded by `before` and `after` zeros, then slid
/// over VALID.
fn explicit_dim(
    size: usize,
    k: usize,
    stride: usize,
    before: usize,
    after: usize,
) -> Result<usize, String> {
    let padded = size
        .checked_add(before)
        .and_then(|v| v.checked_add(after))
        .ok_or_else(|| format!("padding {} + {} is too large", before, after))?;
    window_dim(padded, k, stride, Padding::Valid)
        .map(|(out, _)| out)
        .map_err(|e| format!("{} after explicit padding {} + {}", e, before, after))
}

/// Geometry of a sliding-window op (convolution or pooling) on an NHWC tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    /// Padding before (top, left); padding after is implied by the output size.
    pub pt: usize,
    pub pl: usize,
    /// Dilation (rows, columns): tap `ky` reads input row `oy * sh + ky * dh - pt`. Only
    /// `Conv2D` windows dilate (see [`Window::with_taps`]); everything else has 1.
    pub dh: usize,
    pub dw: usize,
}

impl Window {
    pub fn new(
        shape: &[usize],
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        padding: Padding,
    ) -> Result<Window, String> {
        if shape.len() != 4 {
            return Err(format!(
                "expected an NHWC tensor (rank 4), got shape {:?}",
                shape
            ));
        }
        let (oh, pt) = window_dim(shape[1], kh, sh, padding)?;
        let (ow, pl) = window_dim(shape[2], kw, sw, padding)?;
        Ok(Window {
            n: shape[0],
            h: shape[1],
            w: shape[2],
            c: shape[3],
            oh,
            ow,
            kh,
            kw,
            sh,
            sw,
            pt,
            pl,
            dh: 1,
            dw: 1,
        })
    }

    /// TensorFlow's `padding="EXPLICIT"`: `pads` cells `[top, bottom, left, right]` of zeros
    /// around the image, then a VALID window over the padded image. Padding-after stays
    /// implied by the output size (the last window may stop short of the padded edge, as in
    /// VALID); the kernels clip every window to the image with [`Window::rows`] and
    /// [`Window::cols`], so any padding, even a window that lies all in it, reads zeros.
    pub fn explicit(
        shape: &[usize],
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        pads: [usize; 4],
    ) -> Result<Window, String> {
        let mut win = Window::new(shape, 1, 1, 1, 1, Padding::Valid)?;
        let [top, bottom, left, right] = pads;
        win.oh = explicit_dim(win.h, kh, sh, top, bottom)?;
        win.ow = explicit_dim(win.w, kw, sw, left, right)?;
        win.kh = kh;
        win.kw = kw;
        win.sh = sh;
        win.sw = sw;
        win.pt = top;
        win.pl = left;
        Ok(win)
    }

    /// Kernel rows `[lo, hi)` that land inside the image for output row `oy`: the others
    /// would read padding, which is zero for convolutions and ignored by pooling.
    #[inline]
    pub fn rows(&self, oy: usize) -> (usize, usize) {
        range(oy * self.sh, self.pt, self.kh, self.h, self.dh)
    }

    #[inline]
    pub fn cols(&self, ox: usize) -> (usize, usize) {
        range(ox * self.sw, self.pl, self.kw, self.w, self.dw)
    }
}

impl Window {
    /// The window of a dilated convolution: `self` was sized for the kernel spread out to
    /// `(kh - 1) * dh + 1` by `(kw - 1) * dw + 1` (TensorFlow sizes the output and the
    /// padding for that, whatever the padding mode); the result visits only the real
    /// `kh x kw` taps, `dh` rows and `dw` columns apart, so the zeros between them cost
    /// nothing. [`spread`] gives the spread size.
    pub fn with_taps(mut self, (kh, kw): (usize, usize), (dh, dw): (usize, usize)) -> Window {
        self.kh = kh;
        self.kw = kw;
        self.dh = dh;
        self.dw = dw;
        self
    }
}

/// A kernel of `k` taps `d` apart spread out with zeros: `(k - 1) * d + 1` taps (at most
/// 2^16), or `None`.
pub fn spread(k: usize, d: usize) -> Option<usize> {
    k.checked_sub(1)?
        .checked_mul(d)
        .map(|v| v + 1)
        .filter(|&v| v <= 1 << 16 && d >= 1)
}

/// Taps `k` in `[0, kernel)` with `0 <= start + k * d - pad < size`.
#[inline]
fn range(start: usize, pad: usize, kernel: usize, size: usize, d: usize) -> (usize, usize) {
    if d == 1 {
        let lo = pad.saturating_sub(start);
        let hi = (size + pad).saturating_sub(start).min(kernel);
        return (lo.min(hi), hi);
    }
    let up = |v: usize| (v + d - 1) / d;
    let lo = up(pad.saturating_sub(start));
    let hi = up((size + pad).saturating_sub(start)).min(kernel);
    (lo.min(hi), hi)
}

/// `Conv2D`: `w` is HWIO (`[kh, kw, cin, cout]`), `bias` has `cout` values.
///
/// For every output pixel: start from the bias, then for every tap inside the image add
/// `x[pixel, ci] * w[tap, ci, :]` to the whole row of output channels.
pub fn conv2d(
    x: &[f32],
    g: &Window,
    w: &[f32],
    cout: usize,
    bias: &[f32],
    act: Act,
    out: &mut [f32],
) {
    let cin = g.c;
    for n in 0..g.n {
        for oy in 0..g.oh {
            let (ky0, ky1) = g.rows(oy);
            for ox in 0..g.ow {
                let (kx0, kx1) = g.cols(ox);
                let o = ((n * g.oh + oy) * g.ow + ox) * cout;
                let acc = &mut out[o..o + cout];
                acc.copy_from_slice(bias);
                for ky in ky0..ky1 {
                    let iy = oy * g.sh + ky * g.dh - g.pt;
                    for kx in kx0..kx1 {
                        let ix = ox * g.sw + kx * g.dw - g.pl;
                        let px = &x[((n * g.h + iy) * g.w + ix) * cin..][..cin];
                        let taps = &w[(ky * g.kw + kx) * cin * cout..][..cin * cout];
                        for (ci, &xv) in px.iter().enumerate() {
                            let wrow = &taps[ci * cout..(ci + 1) * cout];
                            for (a, &wv) in acc.iter_mut().zip(wrow) {
                                *a += xv * wv;
                            }
                        }
                    }
                }
                act.apply_all(acc);
            }
        }
    }
}

/// `DepthwiseConv2dNative`: `w` is `[kh, kw, c, mult]`; output channel `c * mult + m`
/// comes from input channel `c` alone.
pub fn depthwise(
    x: &[f32],
    g: &Window,
    w: &[f32],
    mult: usize,
    bias: &[f32],
    act: Act,
    out: &mut [f32],
) {
    let c = g.c;
    let cout = c * mult;
    assert!(g.dh == 1 && g.dw == 1, "depthwise windows do not dilate");
    for n in 0..g.n {
        for oy in 0..g.oh {
            let (ky0, ky1) = g.rows(oy);
            for ox in 0..g.ow {
                let (kx0, kx1) = g.cols(ox);
                let o = ((n * g.oh + oy) * g.ow + ox) * cout;
                let acc = &mut out[o..o + cout];
                acc.copy_from_slice(bias);
                for ky in ky0..ky1 {
                    let iy = oy * g.sh + ky - g.pt;
                    for kx in kx0..kx1 {
                        let ix = ox * g.sw + kx - g.pl;
                        let px = &x[((n * g.h + iy) * g.w + ix) * c..][..c];
                        let taps = &w[(ky * g.kw + kx) * cout..][..cout];
                        if mult == 1 {
                            for ((a, &xv), &wv) in acc.iter_mut().zip(px).zip(taps) {
                                *a += xv * wv;
                            }
                        } else {
                            for (ci, &xv) in px.iter().enumerate() {
                                for m in 0..mult {
                                    acc[ci * mult + m] += xv * taps[ci * mult + m];
                                }
                            }
                        }
                    }
                }
                act.apply_all(acc);
            }
        }
    }
}

/// `MaxPool` / `AvgPool`. Padding cells never take part: the max is over real cells, and
/// the average divides by the number of real cells under the window (TensorFlow's rule,
/// which differs from dividing by `kh * kw` at the borders).
pub fn pool(x: &[f32], g: &Window, max: bool, out: &mut [f32]) {
    let c = g.c;
    for n in 0..g.n {
        for oy in 0..g.oh {
            let (ky0, ky1) = g.rows(oy);
            for ox in 0..g.ow {
                let (kx0, kx1) = g.cols(ox);
                let o = ((n * g.oh + oy) * g.ow + ox) * c;
                let acc = &mut out[o..o + c];
                acc.iter_mut()
                    .for_each(|a| *a = if max { f32::NEG_INFINITY } else { 0.0 });
                for ky in ky0..ky1 {
                    let iy = oy * g.sh + ky - g.pt;
                    for kx in kx0..kx1 {
                        let ix = ox * g.sw + kx - g.pl;
                        let px = &x[((n * g.h + iy) * g.w + ix) * c..][..c];
                        if max {
                            acc.iter_mut().zip(px).for_each(|(a, &v)| *a = a.max(v));
                        } else {
                            acc.iter_mut().zip(px).for_each(|(a, &v)| *a += v);
                        }
                    }
                }
                if !max {
                    let count = ((ky1 - ky0) * (kx1 - kx0)).max(1) as f32;
                    acc.iter_mut().for_each(|a| *a /= count);
                }
            }
        }
    }
}

/// Per-channel `y = act(x * scale + shift)` over the last dimension: inference-mode batch
/// normalisation (folded to one multiply-add), `BiasAdd`, a lone `Relu`/`Relu6`.
pub fn channel_affine(
    x: &[f32],
    channels: usize,
    scale: Option<&[f32]>,
    shift: Option<&[f32]>,
    act: Act,
    out: &mut [f32],
) {
    for (xs, ys) in x.chunks_exact(channels).zip(out.chunks_exact_mut(channels)) {
        for c in 0..channels {
            let mut v = xs[c];
            if let Some(s) = scale {
                v *= s[c];
            }
            if let Some(t) = shift {
                v += t[c];
            }
            ys[c] = act.apply(v);
        }
    }
}

/// The highest rank the elementwise loops index (the planner refuses higher ranks), so
/// their multi-indices are fixed arrays: an inference allocates nothing.
pub const MAX_RANK: usize = crate::engine::graphdef::MAX_RANK;

/// Row-major strides of a shape (rank at most [`MAX_RANK`]).
pub fn strides(shape: &[usize]) -> [usize; MAX_RANK] {
    assert!(shape.len() <= MAX_RANK);
    let mut s = [1; MAX_RANK];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// NumPy broadcasting: align shapes on the right; a dimension of 1 stretches.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {:?} and {:?} do not broadcast", a, b));
        };
    }
    Ok(out)
}

/// Strides of `shape` seen through the broadcast `out` shape (0 where it stretches).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> [usize; MAX_RANK] {
    assert!(out.len() <= MAX_RANK && shape.len() <= out.len());
    let s = strides(shape);
    let off = out.len() - shape.len();
    let mut b = [0; MAX_RANK];
    for i in off..out.len() {
        if shape[i - off] != 1 {
            b[i] = s[i - off];
        }
    }
    b
}

/// `Add` / `AddV2` with broadcasting, then the fused activation.
pub fn add(
    a: &[f32],
    ashape: &[usize],
    b: &[f32],
    bshape: &[usize],
    oshape: &[usize],
    act: Act,
    out: &mut [f32],
) {
    if ashape == bshape {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = act.apply(x + y);
        }
        return;
    }
    let sa = broadcast_strides(ashape, oshape);
    let sb = broadcast_strides(bshape, oshape);
    let mut index = [0usize; MAX_RANK];
    let (mut ia, mut ib) = (0usize, 0usize);
    for o in out.iter_mut() {
        *o = act.apply(a[ia] + b[ib]);
        // Odometer increment of the multi-index, keeping both input offsets in step.
        for d in (0..oshape.len()).rev() {
            index[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if index[d] < oshape[d] {
                break;
            }
            ia -= sa[d] * oshape[d];
            ib -= sb[d] * oshape[d];
            index[d] = 0;
        }
    }
}

/// A broadcasting binary op (`Add` has its own loop, [`add`], with a fused activation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinOp {
    #[inline(always)]
    pub fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::Mul => x * y,
            BinOp::Div => x / y,
            // TensorFlow's Maximum/Minimum propagate NaN.
            BinOp::Max => {
                if x.is_nan() || y.is_nan() {
                    f32::NAN
                } else if x > y {
                    x
                } else {
                    y
                }
            }
            BinOp::Min => {
                if x.is_nan() || y.is_nan() {
                    f32::NAN
                } else if x < y {
                    x
                } else {
                    y
                }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BinOp::Add => "Add",
            BinOp::Sub => "Sub",
            BinOp::Mul => "Mul",
            BinOp::Div => "RealDiv",
            BinOp::Max => "Maximum",
            BinOp::Min => "Minimum",
        }
    }
}

/// `out = a (op) b` with NumPy broadcasting (TensorFlow's rule for these ops).
pub fn binary(
    op: BinOp,
    a: &[f32],
    ashape: &[usize],
    b: &[f32],
    bshape: &[usize],
    oshape: &[usize],
    out: &mut [f32],
) {
    if ashape == bshape {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = op.apply(x, y);
        }
        return;
    }
    let sa = broadcast_strides(ashape, oshape);
    let sb = broadcast_strides(bshape, oshape);
    let mut index = [0usize; MAX_RANK];
    let (mut ia, mut ib) = (0usize, 0usize);
    for o in out.iter_mut() {
        *o = op.apply(a[ia], b[ib]);
        for d in (0..oshape.len()).rev() {
            index[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if index[d] < oshape[d] {
                break;
            }
            ia -= sa[d] * oshape[d];
            ib -= sb[d] * oshape[d];
            index[d] = 0;
        }
    }
}

/// An elementwise function of one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnOp {
    Rsqrt,
    Sqrt,
    Sigmoid,
    Tanh,
    LeakyRelu(f32),
}

impl UnOp {
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnOp::Rsqrt => 1.0 / x.sqrt(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Sigmoid => sigmoid(x),
            UnOp::Tanh => x.tanh(),
            // TensorFlow: x > 0 ? x : x * alpha.
            UnOp::LeakyRelu(alpha) => {
                if x > 0.0 {
                    x
                } else {
                    x * alpha
                }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            UnOp::Rsqrt => "Rsqrt",
            UnOp::Sqrt => "Sqrt",
            UnOp::Sigmoid => "Sigmoid",
            UnOp::Tanh => "Tanh",
            UnOp::LeakyRelu(_) => "LeakyRelu",
        }
    }
}

pub fn unary(op: UnOp, x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = op.apply(v);
    }
}

/// `ConcatV2`: input `i` is `[outer, inners[i]]` (everything from the axis on, flattened);
/// the output interleaves them row by row of `outer`.
pub fn concat<'a>(
    input: impl Fn(usize) -> &'a [f32],
    outer: usize,
    inners: &[usize],
    out: &mut [f32],
) {
    let row: usize = inners.iter().sum();
    for o in 0..outer {
        let mut at = o * row;
        for (i, &n) in inners.iter().enumerate() {
            out[at..at + n].copy_from_slice(&input(i)[o * n..(o + 1) * n]);
            at += n;
        }
    }
}

/// The f64 sums [`mean`] needs (its `acc`): planned at load time, so running allocates
/// nothing.
pub fn mean_scratch(shape: &[usize], reduce: &[bool], out_len: usize) -> usize {
    match reduced_run(shape, reduce) {
        Some((_, _, inner)) => inner,
        None => out_len,
    }
}

/// `(outer, reduced, inner)` when the reduced axes are one contiguous run.
fn reduced_run(shape: &[usize], reduce: &[bool]) -> Option<(usize, usize, usize)> {
    let a = reduce.iter().position(|&r| r)?;
    let b = reduce.iter().rposition(|&r| r)?;
    if !reduce[a..=b].iter().all(|&r| r) {
        return None;
    }
    Some((
        shape[..a].iter().product(),
        shape[a..=b].iter().product(),
        shape[b + 1..].iter().product(),
    ))
}

/// `Mean` over the dimensions flagged in `reduce` (accumulated in f64, as NumPy does);
/// `acc` holds at least [`mean_scratch`] values.
pub fn mean(x: &[f32], shape: &[usize], reduce: &[bool], out: &mut [f32], acc: &mut [f64]) {
    // One run of reduced axes (a global average pool is H and W of NHWC): `x` is
    // [outer, reduced, inner] and each row of `inner` values adds straight into the sums,
    // a loop LLVM vectorises, instead of walking an index per element.
    if let Some((outer, red, inner)) = reduced_run(shape, reduce) {
        let acc = &mut acc[..inner];
        for o in 0..outer {
            acc.iter_mut().for_each(|v| *v = 0.0);
            for row in x[o * red * inner..(o + 1) * red * inner].chunks_exact(inner.max(1)) {
                for (s, &v) in acc.iter_mut().zip(row) {
                    *s += f64::from(v);
                }
            }
            for (y, s) in out[o * inner..(o + 1) * inner].iter_mut().zip(acc.iter()) {
                *y = (s / red.max(1) as f64) as f32;
            }
        }
        return;
    }
    assert!(shape.len() <= MAX_RANK);
    let mut kept = [1usize; MAX_RANK];
    for (k, (&d, &r)) in kept.iter_mut().zip(shape.iter().zip(reduce)) {
        *k = if r { 1 } else { d };
    }
    let so = broadcast_strides(&kept[..shape.len()], shape);
    let acc = &mut acc[..out.len()];
    acc.iter_mut().for_each(|v| *v = 0.0);
    let mut index = [0usize; MAX_RANK];
    let mut io = 0usize;
    for &v in x {
        acc[io] += f64::from(v);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            io += so[d];
            if index[d] < shape[d] {
                break;
            }
            io -= so[d] * shape[d];
            index[d] = 0;
        }
    }
    let count: usize = shape
        .iter()
        .zip(reduce)
        .filter(|(_, &r)| r)
        .map(|(&d, _)| d)
        .product();
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        *o = (a / count.max(1) as f64) as f32;
    }
}

/// `Softmax` over the last dimension, shifted by the row maximum so `exp` cannot overflow.
pub fn softmax(x: &[f32], classes: usize, out: &mut [f32]) {
    for (xs, ys) in x.chunks_exact(classes).zip(out.chunks_exact_mut(classes)) {
        let max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (y, &v) in ys.iter_mut().zip(xs) {
            *y = (v - max).exp();
            sum += *y;
        }
        ys.iter_mut().for_each(|y| *y /= sum);
    }
}

/// `Pad` with zeros: `pads[d] = (before, after)`.
pub fn pad(x: &[f32], shape: &[usize], pads: &[(usize, usize)], oshape: &[usize], out: &mut [f32]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    let so = strides(oshape);
    let base: usize = pads.iter().zip(&so).map(|(p, s)| p.0 * s).sum();
    let mut index = [0usize; MAX_RANK];
    let mut io = base;
    for &v in x {
        out[io] = v;
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            io += so[d];
            if index[d] < shape[d] {
                break;
            }
            io -= so[d] * shape[d];
            index[d] = 0;
        }
    }
}

/// `MatMul`: `a` is `[m, k]`, `b` is `[k, n]` (transposes are resolved before), then bias
/// and activation.
#[allow(clippy::too_many_arguments)] // the shapes and the fused epilogue, as the kernels take them
pub fn matmul(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    bias: &[f32],
    act: Act,
    out: &mut [f32],
) {
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        row.copy_from_slice(bias);
        for (p, &av) in a[i * k..(i + 1) * k].iter().enumerate() {
            for (o, &bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *o += av * bv;
            }
        }
        act.apply_all(row);
    }
}

/// Transpose a row-major `[rows, cols]` matrix (at load time: it allocates).
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    transpose_into(x, rows, cols, &mut t);
    t
}

/// `out[i] = x[idx[i]]`: any layout op whose index table was planned at load time.
pub fn gather<T: Copy>(x: &[T], idx: &[u32], out: &mut [T]) {
    for (o, &i) in out.iter_mut().zip(idx) {
        *o = x[i as usize];
    }
}

/// A gather's index table as the step keeps it: one index per value, or, when the table
/// is made of long runs of consecutive indices (a `StridedSlice` keeping whole rows or
/// pixels), the runs `(first source index, length)`, each one slice copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatherPlan {
    Elements(Vec<u32>),
    Runs(Vec<(u32, u32)>),
}

/// Runs are kept when they average at least this many values: a shorter copy costs more
/// as a slice copy (a length, a bounds check, maybe a `memcpy` call) than element by element.
pub const MIN_RUN: usize = 4;

impl GatherPlan {
    pub fn new(idx: Vec<u32>) -> GatherPlan {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for &i in &idx {
            match runs.last_mut() {
                Some((start, len)) if *start as u64 + *len as u64 == i as u64 => *len += 1,
                _ => {
                    if runs.len() * MIN_RUN > idx.len() {
                        return GatherPlan::Elements(idx);
                    }
                    runs.push((i, 1));
                }
            }
        }
        if runs.len() * MIN_RUN > idx.len() {
            return GatherPlan::Elements(idx);
        }
        GatherPlan::Runs(runs)
    }
}

/// [`gather`] by runs `(first source index, length)`: one slice copy each. Out of line, so
/// the plan's step loop (which inlines the element loop of a transpose) stays as it was.
#[inline(never)]
pub fn gather_runs(x: &[f32], runs: &[(u32, u32)], out: &mut [f32]) {
    let mut at = 0;
    for &(start, len) in runs {
        let (s, n) = (start as usize, len as usize);
        out[at..at + n].copy_from_slice(&x[s..s + n]);
        at += n;
    }
}

/// Transpose a row-major `[rows, cols]` matrix into `t` (at least `rows * cols` values).
pub fn transpose_into(x: &[f32], rows: usize, cols: usize, t: &mut [f32]) {
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_is_asymmetric() {
        // in 224, k 3, s 2 -> out 112, total 1: 0 before, 1 after.
        assert_eq!(window_dim(224, 3, 2, Padding::Same).unwrap(), (112, 0));
        // in 7, k 5, s 2 -> out 4, total 4: 2 before.
        assert_eq!(window_dim(7, 5, 2, Padding::Same).unwrap(), (4, 2));
        assert_eq!(window_dim(5, 3, 1, Padding::Same).unwrap(), (5, 1));
        assert_eq!(window_dim(5, 3, 2, Padding::Valid).unwrap(), (2, 0));
        assert!(window_dim(2, 3, 1, Padding::Valid).is_err());
    }

    #[test]
    fn conv_same_3x3_by_hand() {
        // 1x3x3x1 input 1..9, all-ones 3x3 kernel, SAME stride 1: sums of neighbourhoods.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let g = Window::new(&[1, 3, 3, 1], 3, 3, 1, 1, Padding::Same).unwrap();
        let mut out = vec![0.0; 9];
        conv2d(&x, &g, &[1.0; 9], 1, &[0.0], Act::None, &mut out);
        assert_eq!(out, vec![12., 21., 16., 27., 45., 33., 24., 39., 28.]);
        // Stride 2 SAME on 3x3: out 2x2, total pad 2 -> 1 before.
        let g = Window::new(&[1, 3, 3, 1], 3, 3, 2, 2, Padding::Same).unwrap();
        let mut out = vec![0.0; 4];
        conv2d(&x, &g, &[1.0; 9], 1, &[0.5], Act::None, &mut out);
        assert_eq!(out, vec![12.5, 16.5, 24.5, 28.5]);
    }

    #[test]
    fn conv_channels_and_relu6() {
        // 1x1x1x2 input, 1x1 kernel 2->2.
        let g = Window::new(&[1, 1, 1, 2], 1, 1, 1, 1, Padding::Valid).unwrap();
        let mut out = vec![0.0; 2];
        conv2d(
            &[1.0, 2.0],
            &g,
            &[1.0, -1.0, 3.0, 0.5],
            2,
            &[0.0, 0.0],
            Act::Relu6,
            &mut out,
        );
        assert_eq!(out, vec![6.0, 0.0]); // [1+6, -1+1] -> relu6
    }

    #[test]
    fn depthwise_by_hand() {
        // 1x2x2x2, 2x2 kernel VALID, channel 0 weights 1, channel 1 weights 2.
        let x = [1., 10., 2., 20., 3., 30., 4., 40.];
        let g = Window::new(&[1, 2, 2, 2], 2, 2, 1, 1, Padding::Valid).unwrap();
        let w = [1., 2., 1., 2., 1., 2., 1., 2.];
        let mut out = vec![0.0; 2];
        depthwise(&x, &g, &w, 1, &[0.0, 1.0], Act::None, &mut out);
        assert_eq!(out, vec![10.0, 201.0]);
        // multiplier 2 on one channel: outputs c*2+m.
        let g = Window::new(&[1, 1, 1, 1], 1, 1, 1, 1, Padding::Valid).unwrap();
        let mut out = vec![0.0; 2];
        depthwise(
            &[3.0],
            &g,
            &[2.0, -1.0],
            2,
            &[0.0, 0.0],
            Act::Relu,
            &mut out,
        );
        assert_eq!(out, vec![6.0, 0.0]);
    }

    #[test]
    fn avg_pool_same_counts_valid_cells() {
        let x: Vec<f32> = (1..=4).map(|v| v as f32).collect();
        let g = Window::new(&[1, 2, 2, 1], 3, 3, 1, 1, Padding::Same).unwrap();
        let mut out = vec![0.0; 4];
        pool(&x, &g, false, &mut out);
        assert_eq!(out, vec![2.5; 4]);
        pool(&x, &g, true, &mut out);
        assert_eq!(out, vec![4.0; 4]);
        let x = [1.0, 5.0, 3.0];
        let g = Window::new(&[1, 1, 3, 1], 1, 2, 1, 2, Padding::Same).unwrap();
        let mut out = vec![0.0; 2];
        pool(&x, &g, false, &mut out);
        assert_eq!(out, vec![3.0, 3.0]); // (1+5)/2, 3/1
    }

    #[test]
    fn add_mean_softmax_pad_matmul() {
        let mut out = vec![0.0; 4];
        add(
            &[1., 2., 3., 4.],
            &[2, 2],
            &[10., 20.],
            &[2],
            &[2, 2],
            Act::None,
            &mut out,
        );
        assert_eq!(out, vec![11., 22., 13., 24.]);
        add(
            &[1., 2.],
            &[2, 1],
            &[10., 20.],
            &[1, 2],
            &[2, 2],
            Act::None,
            &mut out,
        );
        assert_eq!(out, vec![11., 21., 12., 22.]);
        assert!(broadcast_shape(&[2, 3], &[2]).is_err());

        let mut m = vec![0.0; 2];
        mean(
            &[1., 2., 3., 4., 5., 6., 7., 8.],
            &[1, 2, 2, 2],
            &[false, true, true, false],
            &mut m,
            &mut [0.0; 2],
        );
        assert_eq!(m, vec![4.0, 5.0]);
        // Every reduction of a 2x3x2 tensor against brute force: one run of axes takes
        // the row loop, [true, false, true] the general index walk.
        let x: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 1.0).collect();
        for bits in 1..8u32 {
            let reduce: Vec<bool> = (0..3).map(|d| bits >> d & 1 == 1).collect();
            let kept: Vec<usize> = [2, 3, 2]
                .iter()
                .zip(&reduce)
                .map(|(&d, &r)| if r { 1 } else { d })
                .collect();
            let mut want = vec![0f32; kept.iter().product()];
            let count = [2, 3, 2]
                .iter()
                .zip(&reduce)
                .filter(|(_, &r)| r)
                .map(|(&d, _)| d)
                .product::<usize>() as f32;
            for (i, &v) in x.iter().enumerate() {
                let idx = [i / 6, i / 2 % 3, i % 2];
                let o = (0..3).fold(0, |o, d| o * kept[d] + if reduce[d] { 0 } else { idx[d] });
                want[o] += v / count;
            }
            let mut got = vec![0f32; want.len()];
            mean(
                &x,
                &[2, 3, 2],
                &reduce,
                &mut got,
                &mut vec![0.0; mean_scratch(&[2, 3, 2], &reduce, want.len())],
            );
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-6,
                    "{:?}: {:?} vs {:?}",
                    reduce,
                    got,
                    want
                );
            }
        }

        let mut s = vec![0.0; 3];
        softmax(&[1.0, 2.0, 3.0], 3, &mut s);
        let e: Vec<f32> = [1f32, 2., 3.].iter().map(|v| v.exp()).collect();
        let t: f32 = e.iter().sum();
        for (a, b) in s.iter().zip(e.iter().map(|v| v / t)) {
            assert!((a - b).abs() < 1e-6);
        }

        let mut p = vec![9.0; 8];
        pad(&[1., 2.], &[1, 2], &[(1, 0), (1, 1)], &[2, 4], &mut p);
        assert_eq!(p, vec![0., 0., 0., 0., 0., 1., 2., 0.]);

        let mut y = vec![0.0; 2];
        matmul(
            &[1., 2.],
            &[1., 2., 3., 4.],
            1,
            2,
            2,
            &[0.5, 0.0],
            Act::None,
            &mut y,
        );
        assert_eq!(y, vec![7.5, 10.0]);
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );

        // A slice keeping rows of 4 (runs) and a transpose (no runs) gather the same
        // values as their index tables.
        let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let rows: Vec<u32> = [3u32, 9, 15].iter().flat_map(|&r| r..r + 4).collect();
        let swap: Vec<u32> = (0..24).map(|i| (i % 4) * 6 + i / 4).collect();
        for (idx, runs) in [(rows, true), (swap, false)] {
            let (mut want, mut got) = (vec![0.0; idx.len()], vec![-1.0; idx.len()]);
            gather(&x, &idx, &mut want);
            match GatherPlan::new(idx.clone()) {
                GatherPlan::Runs(r) if runs => gather_runs(&x, &r, &mut got),
                GatherPlan::Elements(i) if !runs => gather(&x, &i, &mut got),
                p => panic!("{:?}", p),
            }
            assert_eq!(got, want);
        }
        assert_eq!(
            GatherPlan::new(vec![5, 6, 7, 8, 0, 1, 2, 3]),
            GatherPlan::Runs(vec![(5, 4), (0, 4)])
        );

        let mut z = vec![0.0; 2];
        channel_affine(
            &[1.0, -1.0],
            2,
            Some(&[2.0, 3.0]),
            Some(&[1.0, 1.0]),
            Act::Relu,
            &mut z,
        );
        assert_eq!(z, vec![3.0, 0.0]);
    }
}
