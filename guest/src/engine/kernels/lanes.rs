//! Four `f32` lanes: wasm SIMD128 when the build enables it, a plain array otherwise.
//!
//! The blocked kernels in [`super::gemm`] and [`super::depthwise`] are written once against
//! this tiny type. Under `-C target-feature=+simd128` each method is one wasm instruction
//! (`f32x4.add`, `v128.load` ...); on any other target (the host unit tests) it is four
//! scalar operations, so the tests exercise exactly the same blocking, packing and tails.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::*;

    /// The multiply-add marker: `a * b + c`, with the signature and operand order of
    /// relaxed SIMD's `f32x4.relaxed_madd` (`v128 v128 v128 -> v128`).
    ///
    /// Why a function: Debian's rustc 1.63 cannot emit relaxed-SIMD instructions (the
    /// intrinsic arrived in Rust 1.82), but a call to this function leaves exactly the same
    /// three operands on the wasm stack as the instruction would take. So the build keeps it
    /// out of line, and `wasi_lab.relaxed` rewrites every `call` to it into one
    /// `f32x4.relaxed_madd` after linking, on any toolchain. Left unrewritten, the module is
    /// still correct, only slow (a call per multiply-add).
    #[cfg(feature = "relaxed-fma")]
    #[inline(never)]
    pub extern "C" fn __wasi_lab_relaxed_madd(a: v128, b: v128, c: v128) -> v128 {
        f32x4_add(f32x4_mul(a, b), c)
    }

    #[derive(Clone, Copy)]
    pub struct F32x4(v128);

    impl F32x4 {
        #[inline(always)]
        pub fn splat(v: f32) -> F32x4 {
            F32x4(f32x4_splat(v))
        }
        /// Load 4 floats from `p` (wasm loads need no alignment).
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> F32x4 {
            F32x4(v128_load(p as *const v128))
        }
        /// # Safety
        /// `p .. p + 4` must be writable `f32`s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            v128_store(p as *mut v128, self.0)
        }
        /// Lane `l` (0..4) in all 4 lanes: one `i32x4.shuffle`, which Cranelift emits as a
        /// single `pshufd`; a `v128.load32_splat` costs it a scalar load, a move into a
        /// vector register and a broadcast.
        #[inline(always)]
        pub fn lane_splat(self, l: usize) -> F32x4 {
            F32x4(match l {
                0 => i32x4_shuffle::<0, 0, 0, 0>(self.0, self.0),
                1 => i32x4_shuffle::<1, 1, 1, 1>(self.0, self.0),
                2 => i32x4_shuffle::<2, 2, 2, 2>(self.0, self.0),
                _ => i32x4_shuffle::<3, 3, 3, 3>(self.0, self.0),
            })
        }
        /// Whether any lane has a bit set (`-0.0` and NaN count as non-zero).
        #[inline(always)]
        pub fn any_nonzero(self) -> bool {
            v128_any_true(self.0)
        }
        #[inline(always)]
        pub fn add(self, o: F32x4) -> F32x4 {
            F32x4(f32x4_add(self.0, o.0))
        }
        #[inline(always)]
        pub fn mul(self, o: F32x4) -> F32x4 {
            F32x4(f32x4_mul(self.0, o.0))
        }
        /// `self + a * b` (wasm SIMD128 has no fused multiply-add: two instructions).
        #[cfg(not(feature = "relaxed-fma"))]
        #[inline(always)]
        pub fn mul_add(self, a: F32x4, b: F32x4) -> F32x4 {
            F32x4(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }
        /// `self + a * b` through the multiply-add marker [`__wasi_lab_relaxed_madd`]:
        /// after the post-link pass it is one `f32x4.relaxed_madd`, an FMA on hosts with one.
        #[cfg(feature = "relaxed-fma")]
        #[inline(always)]
        pub fn mul_add(self, a: F32x4, b: F32x4) -> F32x4 {
            F32x4(__wasi_lab_relaxed_madd(a.0, b.0, self.0))
        }
        /// Lane-wise clamp to `[lo, hi]` (`pmax`/`pmin`: one instruction each).
        #[inline(always)]
        pub fn clamp(self, lo: F32x4, hi: F32x4) -> F32x4 {
            F32x4(f32x4_pmin(f32x4_pmax(self.0, lo.0), hi.0))
        }
        #[inline(always)]
        pub fn sub(self, o: F32x4) -> F32x4 {
            F32x4(f32x4_sub(self.0, o.0))
        }
        #[inline(always)]
        pub fn div(self, o: F32x4) -> F32x4 {
            F32x4(f32x4_div(self.0, o.0))
        }
        #[inline(always)]
        pub fn neg(self) -> F32x4 {
            F32x4(f32x4_neg(self.0))
        }
        /// The bits of each lane plus 127, shifted left by 23 (as integers): `2^n` when
        /// the lane is `1.5 * 2^23 + n` (see `ops::exp`).
        #[inline(always)]
        pub fn exponent_bits(self) -> F32x4 {
            F32x4(i32x4_shl(i32x4_add(self.0, i32x4_splat(127)), 23))
        }
        /// The 4x4 transpose of four rows: lane `j` of row `i` becomes lane `i` of row `j`.
        /// Eight shuffles, each one `unpck`/`movlhps`-style instruction under Cranelift.
        #[inline(always)]
        pub fn transpose(r: [F32x4; 4]) -> [F32x4; 4] {
            let lo01 = i32x4_shuffle::<0, 4, 1, 5>(r[0].0, r[1].0);
            let lo23 = i32x4_shuffle::<0, 4, 1, 5>(r[2].0, r[3].0);
            let hi01 = i32x4_shuffle::<2, 6, 3, 7>(r[0].0, r[1].0);
            let hi23 = i32x4_shuffle::<2, 6, 3, 7>(r[2].0, r[3].0);
            [
                F32x4(i64x2_shuffle::<0, 2>(lo01, lo23)),
                F32x4(i64x2_shuffle::<1, 3>(lo01, lo23)),
                F32x4(i64x2_shuffle::<0, 2>(hi01, hi23)),
                F32x4(i64x2_shuffle::<1, 3>(hi01, hi23)),
            ]
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod imp {
    #[derive(Clone, Copy)]
    pub struct F32x4([f32; 4]);

    // `add`/`mul` mirror the wasm module's names (no operator traits there either).
    #[allow(clippy::should_implement_trait)]
    impl F32x4 {
        #[inline(always)]
        pub fn splat(v: f32) -> F32x4 {
            F32x4([v; 4])
        }
        /// # Safety
        /// `p .. p + 4` must be readable `f32`s.
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> F32x4 {
            F32x4([*p, *p.add(1), *p.add(2), *p.add(3)])
        }
        #[inline(always)]
        pub fn lane_splat(self, l: usize) -> F32x4 {
            F32x4([self.0[l & 3]; 4])
        }
        /// # Safety
        /// `p .. p + 4` must be writable `f32`s.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            for i in 0..4 {
                *p.add(i) = self.0[i];
            }
        }
        #[inline(always)]
        pub fn any_nonzero(self) -> bool {
            self.0.iter().any(|v| v.to_bits() != 0)
        }
        #[inline(always)]
        pub fn add(self, o: F32x4) -> F32x4 {
            F32x4([
                self.0[0] + o.0[0],
                self.0[1] + o.0[1],
                self.0[2] + o.0[2],
                self.0[3] + o.0[3],
            ])
        }
        #[inline(always)]
        pub fn mul(self, o: F32x4) -> F32x4 {
            F32x4([
                self.0[0] * o.0[0],
                self.0[1] * o.0[1],
                self.0[2] * o.0[2],
                self.0[3] * o.0[3],
            ])
        }
        #[inline(always)]
        pub fn mul_add(self, a: F32x4, b: F32x4) -> F32x4 {
            self.add(a.mul(b))
        }
        #[inline(always)]
        #[allow(clippy::needless_range_loop)] // lane i of three vectors: an index reads best
        pub fn clamp(self, lo: F32x4, hi: F32x4) -> F32x4 {
            let mut r = self.0;
            for i in 0..4 {
                // Same as wasm pmax/pmin: NaN stays NaN-free only if the input is.
                r[i] = if lo.0[i] > r[i] { lo.0[i] } else { r[i] };
                r[i] = if r[i] > hi.0[i] { hi.0[i] } else { r[i] };
            }
            F32x4(r)
        }
        #[inline(always)]
        pub fn sub(self, o: F32x4) -> F32x4 {
            F32x4([0, 1, 2, 3].map(|i| self.0[i] - o.0[i]))
        }
        #[inline(always)]
        pub fn div(self, o: F32x4) -> F32x4 {
            F32x4([0, 1, 2, 3].map(|i| self.0[i] / o.0[i]))
        }
        #[inline(always)]
        pub fn neg(self) -> F32x4 {
            F32x4(self.0.map(|v| -v))
        }
        #[inline(always)]
        pub fn exponent_bits(self) -> F32x4 {
            F32x4(
                self.0
                    .map(|t| f32::from_bits(t.to_bits().wrapping_add(127) << 23)),
            )
        }
        #[inline(always)]
        pub fn transpose(r: [F32x4; 4]) -> [F32x4; 4] {
            let mut t = [[0.0; 4]; 4];
            for (i, row) in r.iter().enumerate() {
                for (j, v) in row.0.iter().enumerate() {
                    t[j][i] = *v;
                }
            }
            t.map(F32x4)
        }
    }
}

pub use imp::F32x4;

use super::super::ops::{self, Act};

/// Bounds for an activation as a clamp: `(lo, hi)` lanes (no clamp for the curves, which
/// [`activate`] applies after the kernel has stored its block).
#[inline(always)]
pub fn act_bounds(act: Act) -> (F32x4, F32x4) {
    let (lo, hi) = act.bounds();
    (F32x4::splat(lo), F32x4::splat(hi))
}

/// `e^v` in four lanes: the operations of [`ops::exp`], in the same order, so every lane
/// is bit for bit the scalar result.
#[inline(always)]
pub fn exp(v: F32x4) -> F32x4 {
    use ops::exp_consts::*;
    let s = F32x4::splat;
    let v = v.clamp(s(LO), s(HI));
    let t = v.mul(s(LOG2E)).add(s(ROUND));
    let n = t.sub(s(ROUND));
    let r = v.sub(n.mul(s(LN2_HI))).sub(n.mul(s(LN2_LO)));
    let mut y = s(P[0]);
    for &p in &P[1..] {
        y = y.mul(r).add(s(p));
    }
    let y = y.mul(r.mul(r)).add(r).add(s(1.0));
    y.mul(t.exponent_bits())
}

/// [`ops::sigmoid`] in four lanes.
#[inline(always)]
pub fn sigmoid(v: F32x4) -> F32x4 {
    let one = F32x4::splat(1.0);
    one.div(one.add(exp(v.neg())))
}

/// [`ops::hard_sigmoid`] in four lanes.
#[inline(always)]
pub fn hard_sigmoid(v: F32x4) -> F32x4 {
    v.add(F32x4::splat(3.0))
        .clamp(F32x4::splat(0.0), F32x4::splat(6.0))
        .div(F32x4::splat(6.0))
}

/// Apply `act` to every value of `out`, four lanes at a time (the last `len % 4` with the
/// scalar [`Act::apply`]): the curves' pass over a block a kernel has just written, while
/// it is still in cache. Agrees with the scalar activation bit for bit.
pub fn activate(out: &mut [f32], act: Act) {
    fn each(out: &mut [f32], act: Act, f: impl Fn(F32x4) -> F32x4) {
        // Two vectors per turn: two independent chains of the polynomial in flight.
        let mut blocks = out.chunks_exact_mut(8);
        for b in &mut blocks {
            // SAFETY: a chunk of exactly 8 floats.
            unsafe {
                let p = b.as_mut_ptr();
                let (y0, y1) = (f(F32x4::load(p)), f(F32x4::load(p.add(4))));
                y0.store(p);
                y1.store(p.add(4));
            }
        }
        let rest = blocks.into_remainder();
        let mut quads = rest.chunks_exact_mut(4);
        for b in &mut quads {
            // SAFETY: a chunk of exactly 4 floats.
            unsafe { f(F32x4::load(b.as_ptr())).store(b.as_mut_ptr()) }
        }
        for v in quads.into_remainder() {
            *v = act.apply(*v);
        }
    }
    match act {
        Act::None => {}
        Act::Relu | Act::Relu6 => {
            let (lo, hi) = act_bounds(act);
            each(out, act, |v| v.clamp(lo, hi))
        }
        Act::Sigmoid => each(out, act, sigmoid),
        Act::Swish => each(out, act, |v| v.mul(sigmoid(v))),
        Act::HardSigmoid => each(out, act, hard_sigmoid),
        Act::HardSwish => each(out, act, |v| v.mul(hard_sigmoid(v))),
    }
}
