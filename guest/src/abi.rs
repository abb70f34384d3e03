//! The memory ABI between host and guest.
//!
//! The article's `alloc` hands the host a block of linear memory and forgets about it; the
//! host then passes pointers and lengths back, and the guest trusts them. A wrong length (the
//! article's Node host passes the model's length for the image) silently reads past the
//! image. Here every block handed out is recorded in a table, so an entry point can check a
//! pointer/length pair before it turns it into a slice, and answer with an error code instead
//! of undefined behaviour.

use std::alloc::{alloc_zeroed as raw_alloc_zeroed, dealloc as raw_dealloc, Layout};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Negative return codes shared by every entry point (mirrored in `wasi_lab/runtime.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ErrorCode {
    /// The pointer is not one `alloc` handed out (or it was freed).
    BadPointer = -1,
    /// The length does not match the allocation the pointer belongs to.
    LengthMismatch = -2,
    /// The bytes are not an image we can decode.
    BadImage = -3,
    /// The image header announces more pixels than we accept (decompression bomb).
    ImageTooLarge = -4,
    /// The model bytes are not a graph we can run.
    BadModel = -5,
    /// No model is loaded under that handle.
    BadHandle = -6,
    /// An argument is out of its range (mode, k, zero length ...).
    BadArgument = -7,
    /// The allocator could not find memory.
    OutOfMemory = -8,
    /// The graph failed while running (shape mismatch ...).
    Inference = -9,
}

/// Outcome of a fallible guest operation: an error code and a message for `last_error`.
pub type GuestResult<T> = Result<T, (ErrorCode, String)>;

thread_local! {
    /// start pointer -> length of every live block handed out by `alloc`.
    static LIVE: RefCell<BTreeMap<usize, usize>> = RefCell::new(BTreeMap::new());
    static LAST_ERROR: RefCell<String> = RefCell::new(String::new());
}

/// Record `message` for `last_error` and return the code as the function's result.
pub fn fail(code: ErrorCode, message: impl Into<String>) -> i32 {
    let message = message.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
    code as i32
}

/// Turn a `GuestResult<i32>` into the i32 an export returns.
pub fn finish(result: GuestResult<i32>) -> i32 {
    match result {
        Ok(v) => v,
        Err((code, message)) => fail(code, message),
    }
}

/// Allocate `len` bytes in linear memory and return the offset of the block.
///
/// Same layout as the article's `Vec::<u8>::with_capacity(len)` + `mem::forget`, so
/// `infer_from_ptrs` may rebuild a `Vec` from it; returns 0 (with `last_error`) when
/// `len` is 0 or memory is exhausted, instead of aborting.
#[no_mangle]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    if len == 0 {
        fail(
            ErrorCode::BadArgument,
            "alloc: length must be at least 1 byte",
        );
        return std::ptr::null_mut();
    }
    let layout = match Layout::array::<u8>(len) {
        Ok(l) => l,
        Err(_) => {
            fail(
                ErrorCode::OutOfMemory,
                format!("alloc: {} bytes is too large", len),
            );
            return std::ptr::null_mut();
        }
    };
    // Zeroed: a block may reuse memory an earlier request freed (its image, its tensor),
    // and an entry point that reads a block the host never wrote must not see those bytes.
    // SAFETY: layout has a non-zero size.
    let ptr = unsafe { raw_alloc_zeroed(layout) };
    if ptr.is_null() {
        fail(
            ErrorCode::OutOfMemory,
            format!("alloc: out of memory for {} bytes", len),
        );
        return ptr;
    }
    LIVE.with(|t| t.borrow_mut().insert(ptr as usize, len));
    ptr
}

/// Free a block from `alloc`. Returns 0, or a negative code when `ptr`/`len` are not a live
/// block (double free, wrong length): the block is then left untouched.
#[no_mangle]
pub extern "C" fn dealloc(ptr: *mut u8, len: usize) -> i32 {
    match forget_block(ptr as usize, len) {
        Ok(()) => {
            // SAFETY: the table says `ptr` is a live block of exactly `len` bytes from `alloc`.
            unsafe { raw_dealloc(ptr, Layout::array::<u8>(len).unwrap()) };
            0
        }
        Err((code, message)) => fail(code, format!("dealloc: {}", message)),
    }
}

/// Copy the last error message (UTF-8) into `ptr` (at most `cap` bytes) and return its full
/// length, so a host with a short buffer can ask again with a bigger one. Returns -1 when the
/// buffer is not inside a live allocation.
#[no_mangle]
pub extern "C" fn last_error(ptr: *mut u8, cap: usize) -> i32 {
    LAST_ERROR.with(|e| {
        let message = e.borrow();
        let bytes = message.as_bytes();
        let n = bytes.len().min(cap);
        if n > 0 {
            if check_within(ptr as usize, n).is_err() {
                return -1;
            }
            // SAFETY: checked above that [ptr, ptr+n) lies inside a live allocation.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, n) };
        }
        bytes.len() as i32
    })
}

/// Number of live blocks and their total size: lets the host (and the tests) see leaks.
#[no_mangle]
pub extern "C" fn live_allocations() -> i32 {
    LIVE.with(|t| t.borrow().len() as i32)
}

/// Remove a block from the table when it is exactly a live block (`ptr` its start, `len` its
/// length). Used by `dealloc` and by entry points that take ownership.
pub fn forget_block(ptr: usize, len: usize) -> GuestResult<()> {
    LIVE.with(|t| {
        let mut table = t.borrow_mut();
        match table.get(&ptr) {
            None => Err((
                ErrorCode::BadPointer,
                format!(
                    "pointer {:#x} is not a block handed out by alloc (or it was freed)",
                    ptr
                ),
            )),
            Some(&size) if size != len => Err((
                ErrorCode::LengthMismatch,
                format!(
                    "block at {:#x} holds {} bytes, but the call says {}",
                    ptr, size, len
                ),
            )),
            Some(_) => {
                table.remove(&ptr);
                Ok(())
            }
        }
    })
}

/// Check that `[ptr, ptr+len)` lies inside one live block.
pub fn check_within(ptr: usize, len: usize) -> GuestResult<()> {
    LIVE.with(|t| {
        let table = t.borrow();
        // The block that starts at or before ptr, if any.
        match table.range(..=ptr).next_back() {
            Some((&start, &size)) if ptr < start + size => {
                // checked_add: in wasm32 a huge `len` would otherwise wrap around and pass.
                if ptr
                    .checked_add(len)
                    .map_or(false, |end| end <= start + size)
                {
                    Ok(())
                } else {
                    Err((
                        ErrorCode::LengthMismatch,
                        format!(
                            "{} bytes at {:#x} run past the end of the {}-byte block at {:#x}",
                            len, ptr, size, start
                        ),
                    ))
                }
            }
            _ => Err((
                ErrorCode::BadPointer,
                format!(
                    "pointer {:#x} is not inside any block handed out by alloc",
                    ptr
                ),
            )),
        }
    })
}

/// Borrow `[ptr, ptr+len)` as bytes after checking it lies inside a live block.
pub fn input_slice<'a>(ptr: *const u8, len: usize, what: &str) -> GuestResult<&'a [u8]> {
    if len == 0 {
        return Err((
            ErrorCode::BadArgument,
            format!("{}: empty input (0 bytes)", what),
        ));
    }
    check_within(ptr as usize, len).map_err(|(c, m)| (c, format!("{}: {}", what, m)))?;
    // SAFETY: the range lies inside a live allocation, which the host owns until it frees it.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Refuse an output range that shares a byte with an input range: the entry point would
/// hold a `&[u8]` and a `&mut [u8]` over the same memory, which Rust forbids.
pub fn check_apart(
    out: (*const u8, usize),
    inputs: &[(*const u8, usize)],
    what: &str,
) -> GuestResult<()> {
    let (o, olen) = (out.0 as usize, out.1);
    for &(p, len) in inputs {
        let p = p as usize;
        // Both ranges were checked to lie inside live blocks, so the ends cannot overflow.
        if olen > 0 && len > 0 && o < p.saturating_add(len) && p < o.saturating_add(olen) {
            return Err((
                ErrorCode::BadArgument,
                format!(
                    "{}: the output ({} bytes at {:#x}) overlaps an input ({} bytes at {:#x}); use separate blocks",
                    what, olen, o, len, p
                ),
            ));
        }
    }
    Ok(())
}

/// [`output_slice`] for an output that must not overlap any of `inputs`.
pub fn output_slice_apart<'a>(
    ptr: *mut u8,
    len: usize,
    inputs: &[(*const u8, usize)],
    what: &str,
) -> GuestResult<&'a mut [u8]> {
    check_within(ptr as usize, len).map_err(|(c, m)| (c, format!("{}: {}", what, m)))?;
    check_apart((ptr, len), inputs, what)?;
    // SAFETY: as in `input_slice`, and no input slice shares a byte with this one.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Mutable variant of [`input_slice`] for output buffers.
pub fn output_slice<'a>(ptr: *mut u8, len: usize, what: &str) -> GuestResult<&'a mut [u8]> {
    check_within(ptr as usize, len).map_err(|(c, m)| (c, format!("{}: {}", what, m)))?;
    // SAFETY: as in `input_slice`.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Copy at most `cap` bytes of `text` to `ptr` (a live block) and return `text`'s full
/// length: the protocol of the JSON reports (`model_info`, `profile_tensor`), so a host
/// whose buffer was too short can ask again with a bigger one.
pub fn write_truncated(ptr: *mut u8, cap: usize, text: &str, what: &str) -> GuestResult<i32> {
    let n = text.len().min(cap);
    if n > 0 {
        output_slice(ptr, n, what)?.copy_from_slice(&text.as_bytes()[..n]);
    }
    Ok(text.len() as i32)
}

/// Write little-endian f32 values into an output buffer (alignment is not assumed).
pub fn write_f32s(out: &mut [u8], values: &[f32]) {
    for (chunk, v) in out.chunks_exact_mut(4).zip(values) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
}
