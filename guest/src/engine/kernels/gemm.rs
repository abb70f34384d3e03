//! Convolution as matrix multiplication, with a register-tiled micro-kernel.
//!
//! A 1x1 convolution over `P` pixels is exactly `C[P, cout] = A[P, cin] @ W[cin, cout]`: the
//! NHWC input already *is* `A`. Any other convolution becomes one after **im2col**: each
//! output pixel's receptive field (`kh * kw * cin` values, zeros where it hangs over the
//! border) is copied into a row, and HWIO weights flattened to `[kh*kw*cin, cout]` are `W`.
//!
//! The multiplication is blocked so the inner loop keeps `MR x NR = 4 x 8` outputs in eight
//! 4-lane registers: per step of `k` it loads 8 weights (two vectors) and 4 inputs (one
//! vector, each lane broadcast by a shuffle), and does 8 vector multiply-adds: 32
//! multiply-adds for 3 loads. The weights are **packed**
//! at load time into panels of 8 columns, `[cout/8][k][8]`, so those loads are contiguous;
//! each block of rows of A is packed once per GEMM into tiles `[k][4]`, so the 4 inputs
//! of one step sit side by side. Bias and activation are applied while the tile is still in
//! registers. (Measured on Cranelift/x86-64: 4 x 8 beats 5 x 8 and 6 x 8, which run out of
//! the 16 vector registers and spill.)

use super::lanes::{act_bounds, activate, F32x4};
use crate::engine::ops::{Act, Window};

/// Rows (pixels) per tile: see [`kernel`] for the register budget.
pub const MR: usize = 4;
const _: () = assert!(
    MR == 4,
    "the kernel reads one tile row of A as one 4-lane vector"
);
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
        PackedB {
            k,
            n,
            panels,
            bias: padded,
        }
    }

    pub fn weight_count(&self) -> usize {
        self.panels.len() + self.bias.len()
    }

    /// The packed panels as the kernel reads them: value `(p, col)` of `W[k, n]` sits at
    /// `((col / NR) * k + p) * NR + col % NR` (the step-through view un-packs it).
    pub fn panels(&self) -> &[f32] {
        &self.panels
    }

    /// The bias, zero-padded to a whole number of panels.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }
}

/// `C[m, n] = act(A @ W + bias)`; `A` rows are `lda` apart (`lda >= k`), `C` rows `n` apart.
///
/// `residual` (`[m, n]`, like `C`) is added before the activation: a skip connection's
/// `Add` fused into the convolution that ends the block.
pub fn gemm(
    a: &[f32],
    lda: usize,
    m: usize,
    b: &PackedB,
    act: Act,
    residual: Option<&[f32]>,
    c: &mut [f32],
) {
    let k = b.k;
    assert!(lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k));
    gemm_with(m, b, act, residual, c, true, |i0, rows, out| {
        pack_a(&a[i0 * lda..], lda, rows, k, out)
    })
}

/// A convolution with any window: `C = act(im2col(x) @ W + bias)`, with the receptive
/// fields copied straight into packed tiles (no im2col matrix, no second copy).
pub fn conv_im2col(
    x: &[f32],
    g: &Window,
    b: &PackedB,
    act: Act,
    residual: Option<&[f32]>,
    c: &mut [f32],
) {
    assert!(b.k == g.kh * g.kw * g.c && x.len() >= g.n * g.h * g.w * g.c);
    // An image's receptive fields are almost never all zero: no zero-step index.
    gemm_with(
        g.n * g.oh * g.ow,
        b,
        act,
        residual,
        c,
        false,
        |i0, rows, out| pack_im2col(x, g, i0, rows, out),
    )
}

/// The blocked GEMM; `pack(i0, rows, out)` writes rows `i0..i0 + rows` of A as packed
/// tiles (`[tile][k][MR]`, zero-padded) into `out`. With `skip_zeros`, steps of k at which
/// a whole tile of A is zero are skipped when there are enough of them (see
/// [`compact_nonzero_steps`]).
fn gemm_with(
    m: usize,
    b: &PackedB,
    act: Act,
    residual: Option<&[f32]>,
    c: &mut [f32],
    skip_zeros: bool,
    pack: impl Fn(usize, usize, &mut [f32]),
) {
    let (k, n) = (b.k, b.n);
    assert!(c.len() >= m * n && residual.map_or(true, |r| r.len() >= m * n));
    if m == 0 || n == 0 {
        return;
    }
    let (lo, hi) = act_bounds(act);
    let (mc, a_len, idx_len) = scratch_sizes(m, k, skip_zeros);
    PACKED_A.with(|buf| {
        STEP_INDEX.with(|idx| {
            let (mut buf, mut idx) = (buf.borrow_mut(), idx.borrow_mut());
            // Reserved at load time (`reserve_scratch`), so these never grow while running.
            if buf.len() < a_len {
                buf.resize(a_len, 0.0);
            }
            if idx.len() < idx_len {
                idx.resize(idx_len, 0);
            }
            gemm_blocks(
                &mut buf,
                &mut idx[..idx_len],
                m,
                mc,
                b,
                (lo, hi),
                act,
                residual,
                c,
                pack,
            )
        })
    })
}

/// `(mc, packed A floats, step-index entries)` a GEMM of `m` rows and depth `k` uses.
///
/// Cache blocking: a block of `mc` rows of A (about 128 KiB) is packed once and reused for
/// every panel of W; each panel (k x 8) is reused for every tile of the block.
fn scratch_sizes(m: usize, k: usize, skip_zeros: bool) -> (usize, usize, usize) {
    let mc = ((A_BLOCK_FLOATS / k.max(1)) / MR * MR).max(MR);
    let tiles = round_up(mc.min(m), MR) / MR;
    (
        mc,
        tiles * MR * k,
        if skip_zeros { tiles * (k + 1) } else { 0 },
    )
}

/// Grow the shared packing buffers to what a GEMM of `m` rows and depth `k` needs, or
/// answer how many bytes could not be had: called when a model is loaded, so that running
/// it never allocates (the buffers only grow, and every model's needs are reserved).
pub fn reserve_scratch(m: usize, k: usize, skip_zeros: bool) -> Result<usize, usize> {
    fn grow<T: Clone>(v: &mut Vec<T>, len: usize, zero: T) -> Result<(), usize> {
        if v.len() < len {
            // Amortised growth, as `resize` grew it when the first inference did this.
            v.try_reserve(len - v.len())
                .map_err(|_| len * std::mem::size_of::<T>())?;
            v.resize(len, zero);
        }
        Ok(())
    }
    let (_, a_len, idx_len) = scratch_sizes(m, k, skip_zeros);
    PACKED_A.with(|b| grow(&mut b.borrow_mut(), a_len, 0.0))?;
    STEP_INDEX.with(|i| grow(&mut i.borrow_mut(), idx_len, 0))?;
    Ok(a_len * 4 + idx_len * 4)
}

/// The blocks of [`gemm_with`]: pack `mc` rows of A into `buf`, run the kernel over them
/// (skipping all-zero steps of k, listed in `idx`, unless `idx` is empty). The kernel's
/// epilogue clamps (`lo`, `hi`); a curve `act` (swish, sigmoid ...) is then applied to each
/// run's block of C right after the kernel wrote it, while it is in cache, so the kernel's
/// registers stay as they were (see [`activate`]).
/// Kept out of line (not inlined into the thread-local's closure, or further into the
/// plan's step loop) so the hot loops sit in a function of this module, which the
/// post-link pass `wasi_lab.postlink.fold_offsets` optimises.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn gemm_blocks(
    buf: &mut [f32],
    idx: &mut [u32],
    m: usize,
    mc: usize,
    b: &PackedB,
    (lo, hi): (F32x4, F32x4),
    act: Act,
    residual: Option<&[f32]>,
    c: &mut [f32],
    pack: impl Fn(usize, usize, &mut [f32]),
) {
    let (k, n) = (b.k, b.n);
    let np = (n + NR - 1) / NR;
    let curve = act.is_curve();
    let mut i0 = 0;
    while i0 < m {
        let i1 = (i0 + mc).min(m);
        let tiles = (i1 - i0 + MR - 1) / MR;
        let pa = &mut buf[..tiles * MR * k];
        pack(i0, i1 - i0, pa);
        // After a ReLU, many steps of k have a zero input in all of a tile's rows (19 % of
        // EfficientNet-Lite0's 1x1 multiply-adds on a photo): the sparse kernel skips them,
        // at the cost of reading each step's W offset from a list and of one more pass over
        // the block, so only with enough panels to share that pass and enough steps to skip.
        let sparse = !idx.is_empty() && np >= SPARSE_MIN_PANELS && mostly_zero_steps(pa, tiles, k);
        if sparse {
            compact_nonzero_steps(pa, tiles, k, idx);
            let skipped: usize = (0..tiles)
                .map(|t| (k - idx[t * (k + 1)] as usize) * (i1 - i0 - t * MR).min(MR))
                .sum();
            SKIPPED_MACS.with(|s| s.set(s.get() + (skipped * n) as u64));
        }
        // Short k and small W (the 16 -> 96 expand at 112x112): the kernel does little
        // arithmetic per tile, so writing C dominates. All of W stays in L1, so finish
        // each tile's rows of C across every panel before moving on: C is written row
        // after row, instead of one 32-byte strip per panel of a block too big to stay
        // cached (every line of C fetched again for each strip). Measured: 2.28 -> 2.06
        // ms for that layer; for k = 24 (-> 144) it did not help, so only short k.
        let tiles_outer = k <= SHORT_K && k * np * NR <= SMALL_W_FLOATS;
        let full_tiles = (i1 - i0) / MR;
        let full_panels = n / NR;
        // SAFETY: tile t of the packed block holds k * MR values; panel j holds k * NR
        // values and the bias NR; each tile writes its rows x cols inside C (and reads
        // the same part of the residual): `tile` is only called for t < tiles, j < np.
        let cbase = c.as_mut_ptr();
        // Rows `r0..r1` of C, just written: the curve, if the act is one. Whole rows are
        // one run of memory (rows are n apart), so one pass.
        // SAFETY: callers pass rows of this block (r1 <= i1 <= m): inside C.
        let post = |r0: usize, r1: usize| {
            if curve {
                let rows =
                    unsafe { std::slice::from_raw_parts_mut(cbase.add(r0 * n), (r1 - r0) * n) };
                activate(rows, act);
            }
        };
        let tile = |t: usize, j: usize| unsafe {
            let i = i0 + t * MR;
            Run {
                a: pa.as_ptr().add(t * MR * k),
                b: b.panels.as_ptr().add(j * k * NR),
                bias: b.bias.as_ptr().add(j * NR),
                res: residual.map_or(std::ptr::null(), |r| r.as_ptr().add(i * n + j * NR)),
                c: cbase.add(i * n + j * NR),
                idx: if sparse {
                    idx.as_ptr().add(t * (k + 1))
                } else {
                    std::ptr::null()
                },
                rows: (i1 - i).min(MR),
                cols: (n - j * NR).min(NR),
                count: 1,
                steps: (0, 0, 0, 0, 0),
            }
        };
        // SAFETY (the calls below): the runs stay inside the block's tiles and W's panels.
        // Runs of full tiles go to one kernel call each (the kernel loops over them:
        // no call, prologue and argument set-up per tile); the partial last tile and
        // the partial last panel get calls of their own.
        if tiles_outer {
            for t in 0..tiles {
                if full_panels > 0 {
                    unsafe {
                        run_kernel(
                            Run {
                                count: full_panels,
                                steps: (0, k * NR, NR, NR, 0),
                                ..tile(t, 0)
                            },
                            k,
                            n,
                            lo,
                            hi,
                        )
                    };
                }
                if full_panels < np {
                    unsafe { run_kernel(tile(t, full_panels), k, n, lo, hi) };
                }
                post(i0 + t * MR, (i0 + t * MR + MR).min(i1));
            }
        } else {
            for j in 0..np {
                if full_tiles > 0 {
                    unsafe {
                        run_kernel(
                            Run {
                                count: full_tiles,
                                steps: (MR * k, 0, 0, MR * n, k + 1),
                                ..tile(0, j)
                            },
                            k,
                            n,
                            lo,
                            hi,
                        )
                    };
                }
                if full_tiles < tiles {
                    unsafe { run_kernel(tile(full_tiles, j), k, n, lo, hi) };
                }
            }
            post(i0, i1);
        }
        i0 = i1;
    }
}

fn round_up(v: usize, to: usize) -> usize {
    (v + to - 1) / to * to
}

thread_local! {
    /// The packed row block of A, reused from one GEMM (and one inference) to the next.
    static PACKED_A: std::cell::RefCell<Vec<f32>> = std::cell::RefCell::new(Vec::new());
    /// Its index of non-zero steps (`k + 1` entries per tile), reused the same way.
    static STEP_INDEX: std::cell::RefCell<Vec<u32>> = std::cell::RefCell::new(Vec::new());
    /// Multiply-adds by zero skipped so far, for the per-step profile.
    static SKIPPED_MACS: std::cell::Cell<u64> = std::cell::Cell::new(0);
}

/// Multiply-adds the sparse kernel skipped since the last call: the profile reports them
/// per step, so a learner sees why a step's rate beats what the arithmetic allows.
pub fn take_skipped_macs() -> u64 {
    SKIPPED_MACS.with(|s| s.replace(0))
}

/// The sparse kernel runs when at most `.0 / .1` of the steps are kept (measured: one of
/// its steps, which reads the W offset from the list, costs about 1.25x a dense one) ...
const SPARSE_BELOW: (usize, usize) = (3, 4);
/// ... and when W has at least this many panels to share the cost of compacting A.
const SPARSE_MIN_PANELS: usize = 4;
/// Tiles of a block sampled to decide, spread over it.
const SAMPLE_TILES: usize = 8;

/// Whether a packed block has few enough kept steps (some row non-zero) for the sparse
/// kernel, judged on a sample of its tiles, so that dense inputs (the expand convolutions
/// read the linear bottleneck) pay for the sample only.
fn mostly_zero_steps(pa: &[f32], tiles: usize, k: usize) -> bool {
    assert!(pa.len() >= tiles * MR * k);
    let (mut kept, mut seen) = (0, 0);
    for t in (0..tiles).step_by((tiles + SAMPLE_TILES - 1) / SAMPLE_TILES) {
        let tile = pa[t * MR * k..][..MR * k].as_ptr();
        // SAFETY: p < k: step p of the tile is inside it.
        kept += (0..k)
            .map(|p| unsafe { F32x4::load(tile.add(p * MR)) }.any_nonzero() as usize)
            .sum::<usize>();
        seen += k;
    }
    kept * SPARSE_BELOW.1 <= seen * SPARSE_BELOW.0
}

/// Move each packed tile's kept steps (some row non-zero: `-0.0` and NaN are kept, so
/// only products that are exactly zero are skipped) to the front of the tile, in order,
/// and list them in `idx` as byte offsets into a W panel: `idx[t * (k + 1)]` holds tile
/// t's count, its offsets follow. Branch-free: every step is written (in place: slot
/// `kept <= p`), and the cursor moves past it only if it is kept.
fn compact_nonzero_steps(pa: &mut [f32], tiles: usize, k: usize, idx: &mut [u32]) {
    assert!(pa.len() >= tiles * k * MR && idx.len() >= tiles * (k + 1));
    assert!(k * NR * 4 <= u32::MAX as usize);
    for t in 0..tiles {
        let tile = pa[t * k * MR..][..k * MR].as_mut_ptr();
        let list = idx[t * (k + 1)..][..k + 1].as_mut_ptr();
        let mut kept = 0;
        for p in 0..k {
            // SAFETY: kept <= p < k: both steps lie in the tile (read p, then write slot
            // kept), and list slot kept + 1 <= k in the tile's list.
            unsafe {
                let xs = F32x4::load(tile.add(p * MR));
                xs.store(tile.add(kept * MR));
                *list.add(kept + 1) = (p * NR * 4) as u32;
                kept += xs.any_nonzero() as usize;
            }
        }
        // SAFETY: slot 0 of the list.
        unsafe { *list = kept as u32 };
    }
}

/// Largest packed W (floats, 32 KiB) for which tiles, not panels, are the outer loop.
const SMALL_W_FLOATS: usize = 8 * 1024;
/// Longest k for which that loop order is used.
const SHORT_K: usize = 16;

/// Floats of A kept hot per row block (128 KiB: fits a typical L2 with room for W).
const A_BLOCK_FLOATS: usize = 32 * 1024;

/// `dst[q * MR + r] = src[r][q]` for `q < len`: four rows of `len` values interleaved into
/// a packed tile. 4x4 blocks are transposed in registers (4 loads, 8 shuffles, 4 stores
/// per 16 values, instead of 16 scalar copies), the last `len % 4` columns by hand.
///
/// # Safety
/// Each `src[r]` must be valid for `len` reads and `dst` for `len * MR` writes.
unsafe fn interleave4(src: [*const f32; MR], len: usize, dst: *mut f32) {
    let len4 = len / 4 * 4;
    for p in (0..len4).step_by(4) {
        let rows = src.map(|s| F32x4::load(s.add(p)));
        for (j, col) in F32x4::transpose(rows).iter().enumerate() {
            col.store(dst.add((p + j) * MR));
        }
    }
    for p in len4..len {
        for (r, s) in src.iter().enumerate() {
            *dst.add(p * MR + r) = *s.add(p);
        }
    }
}

/// Interleave `rows` rows of A into tiles of `MR` rows, `[tile][k][MR]` (zeros past the
/// last row), so the micro-kernel reads its `MR` inputs for one `k` from one place.
fn pack_a(a: &[f32], lda: usize, rows: usize, k: usize, out: &mut [f32]) {
    let tiles = (rows + MR - 1) / MR;
    assert!(out.len() >= tiles * MR * k && (rows == 0 || a.len() >= (rows - 1) * lda + k));
    for t in 0..tiles {
        let dst = &mut out[t * MR * k..(t + 1) * MR * k];
        if t * MR + MR <= rows {
            let src = &a[t * MR * lda..];
            assert!(src.len() >= 3 * lda + k);
            // SAFETY: each of the 4 rows has k values (asserted), the tile k * MR.
            unsafe {
                interleave4(
                    [0, 1, 2, 3].map(|r| src.as_ptr().add(r * lda)),
                    k,
                    dst.as_mut_ptr(),
                )
            };
            continue;
        }
        for r in 0..MR {
            let row = t * MR + r;
            if row < rows {
                let src = &a[row * lda..row * lda + k];
                // SAFETY: p < k and r < MR, inside `dst` (k * MR values).
                for (p, &v) in src.iter().enumerate() {
                    unsafe { *dst.get_unchecked_mut(p * MR + r) = v };
                }
            } else {
                for p in 0..k {
                    dst[p * MR + r] = 0.0;
                }
            }
        }
    }
}

/// A run of `count` tiles for one kernel call: where the first starts, and how far A, W,
/// the bias, C (with the residual) and the step index move from one tile to the next
/// (`steps`, in elements). All tiles of a run have the same `rows` (<= MR) and `cols`
/// (<= NR). `idx` is the first tile's list of kept steps, or null for every step of k.
struct Run {
    a: *const f32,
    b: *const f32,
    bias: *const f32,
    res: *const f32,
    c: *mut f32,
    idx: *const u32,
    rows: usize,
    cols: usize,
    count: usize,
    steps: (usize, usize, usize, usize, usize),
}

/// Call the kernel instance for the run's row count, dense or sparse.
///
/// # Safety
/// Every tile of the run must lie inside the packed A block, W's panels and C, and its
/// step list (if any) inside the index.
unsafe fn run_kernel(run: Run, k: usize, ldc: usize, lo: F32x4, hi: F32x4) {
    match (run.rows, run.idx.is_null()) {
        (1, true) => kernel::<1, false>(&run, k, ldc, lo, hi),
        (2, true) => kernel::<2, false>(&run, k, ldc, lo, hi),
        (3, true) => kernel::<3, false>(&run, k, ldc, lo, hi),
        (_, true) => kernel::<MR, false>(&run, k, ldc, lo, hi),
        (1, false) => kernel::<1, true>(&run, k, ldc, lo, hi),
        (2, false) => kernel::<2, true>(&run, k, ldc, lo, hi),
        (3, false) => kernel::<3, true>(&run, k, ldc, lo, hi),
        (_, false) => kernel::<MR, true>(&run, k, ldc, lo, hi),
    }
}

/// The micro-kernel: `R` rows (`R <= MR`) x 8 columns in `2 R` accumulators. Per step of
/// `k`: two weight vectors, one vector of the packed A tile whose lanes are broadcast by
/// shuffles, `2 R` multiply-adds. With `R = MR = 4` that is 8 accumulators, 2 weight
/// vectors, 1 A tile, 1 broadcast and 1 product: 13 vector registers, so Cranelift keeps
/// everything in registers
/// (6 x 8 needs all 16 and spilled; so does any call while the accumulators are live).
/// Not inlined: in a small function the register allocator sees only this loop. It walks
/// a whole [`Run`] of tiles, so the call and its set-up are paid once per run, not per
/// tile (measured: conv 1x1 25.5 -> 24.4 ms, most of it in the short-k early layers).
/// `SPARSE` tiles walk only their listed steps of k (`run.idx`).
#[inline(never)]
unsafe fn kernel<const R: usize, const SPARSE: bool>(
    run: &Run,
    k: usize,
    ldc: usize,
    lo: F32x4,
    hi: F32x4,
) {
    debug_assert!(R <= MR && run.rows == R && SPARSE != run.idx.is_null());
    let (da, db, dbias, dc, di) = run.steps;
    let cols = run.cols;
    let (mut a0, mut b0, mut bias, mut res, mut c, mut idx) =
        (run.a, run.b, run.bias, run.res, run.c, run.idx);
    for _ in 0..run.count {
        if SPARSE {
            sparse_tile::<R>(a0, b0, idx, k, bias, res, c, ldc, cols, lo, hi);
            idx = idx.wrapping_add(di);
        } else {
            tile_kernel::<R, false>(a0, b0, idx, k, bias, res, c, ldc, cols, lo, hi);
        }
        // wrapping_add: after the run's last tile these point past the end of their
        // buffers (never dereferenced), which `add` would make undefined behaviour.
        a0 = a0.wrapping_add(da);
        b0 = b0.wrapping_add(db);
        bias = bias.wrapping_add(dbias);
        if !res.is_null() {
            res = res.wrapping_add(dc);
        }
        c = c.wrapping_add(dc);
    }
}

/// A sparse tile, out of line: inlined into [`kernel`]'s loop over the run, it left too
/// few registers and W's base was reloaded from the stack at every step.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
unsafe fn sparse_tile<const R: usize>(
    a: *const f32,
    b: *const f32,
    idx: *const u32,
    k: usize,
    bias: *const f32,
    res: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    lo: F32x4,
    hi: F32x4,
) {
    tile_kernel::<R, true>(a, b, idx, k, bias, res, c, ldc, cols, lo, hi)
}

/// One tile of [`kernel`], inlined into its loop. Sparse: `idx` is `[count, offsets...]`
/// (bytes into the panel `b`), and A holds only the listed steps, one after the other.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_kernel<const R: usize, const SPARSE: bool>(
    a: *const f32,
    b: *const f32,
    idx: *const u32,
    k: usize,
    bias: *const f32,
    res: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    lo: F32x4,
    hi: F32x4,
) {
    let (b0, b1) = (F32x4::load(bias), F32x4::load(bias.add(4)));
    let mut acc = [[b0, b1]; R];
    let (steps, mut next) = if SPARSE {
        (*idx as usize, idx.add(1))
    } else {
        (k, idx)
    };
    let (mut a, mut b) = (a, b);
    for _ in 0..steps {
        let w = if SPARSE {
            let w = (b as *const u8).add(*next as usize) as *const f32;
            next = next.add(1);
            w
        } else {
            b
        };
        let w0 = F32x4::load(w);
        let w1 = F32x4::load(w.add(4));
        // The tile's 4 inputs for this k in one load, each lane broadcast by a shuffle
        // (`R < MR` tiles read the zero padding of the packed tile in the other lanes).
        let xs = F32x4::load(a);
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = xs.lane_splat(r);
            acc[0] = acc[0].mul_add(x, w0);
            acc[1] = acc[1].mul_add(x, w1);
        }
        a = a.add(MR);
        if !SPARSE {
            b = b.add(NR);
        }
    }
    if cols == NR {
        for (r, acc) in acc.iter().enumerate() {
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if !res.is_null() {
                v0 = v0.add(F32x4::load(res.add(r * ldc)));
                v1 = v1.add(F32x4::load(res.add(r * ldc + 4)));
            }
            v0.clamp(lo, hi).store(c.add(r * ldc));
            v1.clamp(lo, hi).store(c.add(r * ldc + 4));
        }
    } else {
        // The padded last panel: all accumulators go to a buffer *before* the copies. A
        // copy (or zeroing the buffer) may be a call to `memcpy`/`memset`, and every vector
        // register is caller-saved: an accumulator live across a call makes Cranelift keep
        // it on the stack for the whole loop above (a store and a reload per step of k).
        // Hence an uninitialised buffer, fully written before it is read.
        let mut tmp = std::mem::MaybeUninit::<[f32; MR * NR]>::uninit();
        let t = tmp.as_mut_ptr() as *mut f32;
        for (r, acc) in acc.iter().enumerate() {
            acc[0].store(t.add(r * NR));
            acc[1].store(t.add(r * NR + 4));
        }
        for r in 0..R {
            let row = t.add(r * NR);
            if !res.is_null() {
                for j in 0..cols {
                    *row.add(j) += *res.add(r * ldc + j);
                }
            }
            F32x4::load(row).clamp(lo, hi).store(row);
            F32x4::load(row.add(4)).clamp(lo, hi).store(row.add(4));
            std::ptr::copy_nonoverlapping(row, c.add(r * ldc), cols);
        }
    }
}

/// Pack rows `i0..i0 + rows` of the im2col matrix of `x` (one row per output pixel: its
/// receptive field in the HWIO weights' `(ky, kx, ci)` order, zeros for taps in the padding)
/// as `[tile][k][MR]` tiles, like [`pack_a`].
fn pack_im2col(x: &[f32], g: &Window, i0: usize, rows: usize, out: &mut [f32]) {
    let c = g.c;
    let k = g.kh * g.kw * c;
    let tiles = (rows + MR - 1) / MR;
    assert!(out.len() >= tiles * MR * k && x.len() >= g.n * g.h * g.w * c);
    assert!(rows == 0 || i0 + rows <= g.n * g.oh * g.ow);
    let dst = out.as_mut_ptr();
    // Rows past the end of the last tile are zero.
    for r in rows..tiles * MR {
        let tile = (r / MR) * MR * k;
        for p in 0..k {
            out[tile + p * MR + r % MR] = 0.0;
        }
    }
    // Where output pixel `pix` reads: (image, oy, ox) and its kernel rows/columns inside.
    let window = |pix: usize| {
        let (n, rem) = (pix / (g.oh * g.ow), pix % (g.oh * g.ow));
        let (oy, ox) = (rem / g.ow, rem % g.ow);
        (n, oy, ox, g.rows(oy), g.cols(ox))
    };
    for t in 0..tiles {
        let r1 = (t * MR + MR).min(rows);
        if r1 - t * MR == MR {
            let wins = [0, 1, 2, 3].map(|q| window(i0 + t * MR + q));
            if g.dw == 1 && wins.iter().all(|w| w.3 == (0, g.kh) && w.4 == (0, g.kw)) {
                // Four windows inside the image (nearly all of the stem's tiles): per kernel
                // row, each pixel's kw taps are kw * c contiguous values, interleaved as in
                // `pack_a`.
                for ky in 0..g.kh {
                    let src = wins.map(|(n, oy, ox, _, _)| {
                        let (iy, ix) = (oy * g.sh + ky * g.dh - g.pt, ox * g.sw - g.pl);
                        x[((n * g.h + iy) * g.w + ix) * c..][..g.kw * c].as_ptr()
                    });
                    // SAFETY: every source holds kw * c values (sliced above); rows
                    // ky*kw*c.. + kw*c of this tile lie inside `out` (asserted above).
                    unsafe { interleave4(src, g.kw * c, dst.add((t * k + ky * g.kw * c) * MR)) };
                }
                continue;
            }
        }
        for r in t * MR..r1 {
            let (n, oy, ox, (ky0, ky1), (kx0, kx1)) = window(i0 + r);
            let lane = t * MR * k + r % MR;
            // Only a window hanging over the border has padding taps to zero (the stem's
            // 12544 pixels are nearly all inside: zeroing every tile first doubled the writes).
            if ky0 != 0 || kx0 != 0 || ky1 != g.kh || kx1 != g.kw {
                for p in 0..k {
                    out[lane + p * MR] = 0.0;
                }
            }
            // A window whose columns all lie in the padding (explicit padding wider than
            // the kernel) reads nothing: its first column would be past the row's end.
            let ky1 = if kx0 == kx1 { ky0 } else { ky1 };
            for ky in ky0..ky1 {
                let iy = oy * g.sh + ky * g.dh - g.pt;
                // Undilated, taps kx0..kx1 of one row are contiguous in x: one run of
                // (kx1 - kx0) * c values; dilated, one run of c values per tap.
                let (taps, run) = if g.dw == 1 {
                    (kx0..kx0 + 1, (kx1 - kx0) * c)
                } else {
                    (kx0..kx1, c)
                };
                for kx in taps {
                    let ix = ox * g.sw + kx * g.dw - g.pl;
                    let src = &x[((n * g.h + iy) * g.w + ix) * c..][..run];
                    let p0 = (ky * g.kw + kx) * c;
                    // SAFETY: p0 + run <= k, so every index is inside this row's lane of the
                    // tile (`lane + (k - 1) * MR < tiles * MR * k`, asserted above).
                    unsafe {
                        let d = dst.add(lane + p0 * MR);
                        for (q, &v) in src.iter().enumerate() {
                            *d.add(q * MR) = v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tiles of k = 5: the kept steps (any non-zero row, or -0.0) move to the front
    /// of their tile in order, listed as W byte offsets; the sample sees 3 kept of 10.
    #[test]
    fn zero_steps_are_compacted_and_indexed() {
        let k = 5;
        let mut pa = vec![0.0f32; 2 * k * MR];
        pa[MR + 2] = 1.0; // tile 0, step 1
        pa[3 * MR] = -0.0; // tile 0, step 3: a set sign bit is kept
        pa[k * MR + 4 * MR + 3] = 2.0; // tile 1, step 4
        assert!(mostly_zero_steps(&pa, 2, k));
        assert!(!mostly_zero_steps(&[1.0; 2 * 5 * MR], 2, k));
        let mut idx = vec![99; 2 * (k + 1)];
        compact_nonzero_steps(&mut pa, 2, k, &mut idx);
        let step = (NR * 4) as u32;
        assert_eq!(&idx[..3], &[2, step, 3 * step]);
        assert_eq!(&idx[k + 1..k + 3], &[1, 4 * step]);
        assert_eq!(&pa[..MR], &[0.0, 0.0, 1.0, 0.0]);
        assert!(pa[MR].is_sign_negative());
        assert_eq!(&pa[k * MR..k * MR + MR], &[0.0, 0.0, 0.0, 2.0]);
    }
}
