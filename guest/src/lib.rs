//! The wasi-lab guest.
//!
//! Everything the host can call is an `extern "C"` function in one of these modules:
//! - [`abi`]: the memory ABI (`alloc`, `dealloc`, `last_error`) and the table of live
//!   allocations that lets every other entry point check the pointers it is given;
//! - [`image_exports`]: `decode_image`, the image decoding and preprocessing lesson;
//! - `model_exports`: `load_model`, `classify`, `infer_tensor` and the article's
//!   `infer_from_ptrs`, backed by [`engine`];
//! - `step_exports`: `step_info` and `run_to_step`, step-through inference;
//! - `report_exports`: `model_report`, "will my model run?" without running it.
//!
//! Errors never panic across the boundary: a function returns a negative [`abi::ErrorCode`]
//! and the host reads the message with `last_error`.

// Clippy (rustup's stable, run by tests/test_rust_toolchains.py) is clean with two lints off:
// - `not_unsafe_ptr_arg_deref`: the exports take guest addresses from the host and check
//   every one against the live-block table before touching it; marking them `unsafe` would
//   say the opposite of what they guarantee.
// - `missing_const_for_thread_local`: `BTreeMap::new` is `const` only from Rust
//   1.66, and the guest must build on Debian's 1.63.
// `unknown_lints`: an older clippy (or plain rustc) may not know the second name.
#![allow(unknown_lints)]
#![allow(clippy::not_unsafe_ptr_arg_deref)]
#![allow(clippy::missing_const_for_thread_local)]

pub mod abi;
pub mod engine;
pub mod image_exports;
pub mod jpeg_scan;
pub mod model_exports;
pub mod preprocess;
#[cfg(feature = "rayon-demo")]
pub mod rayon_demo;
pub mod report_exports;
pub mod step_exports;

/// Trap on purpose (wasm `unreachable`). A test hook: hosts use it to check that a trapped
/// instance is discarded and replaced while everything around it keeps working.
#[no_mangle]
pub extern "C" fn trap_for_tests() -> i32 {
    std::process::abort()
}

thread_local! {
    static SINK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::new());
}

/// Allocate `len` bytes the way most Rust code does (an aborting allocation), keep them until
/// the next call, and return 0. A test hook: under a store memory limit a large `len` makes
/// Rust print "memory allocation of N bytes failed" and abort, which hosts must report as the
/// trap's cause.
#[no_mangle]
pub extern "C" fn abort_on_alloc_for_tests(len: usize) -> i32 {
    SINK.with(|s| *s.borrow_mut() = vec![1u8; len]);
    0
}
