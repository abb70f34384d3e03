//! The article's first failure, reproduced on purpose (feature `rayon-demo`).
//!
//! The article's guest pulled in the `image` crate with its default features, whose JPEG
//! decoder asks rayon for a thread pool. wasm32-wasi has no threads: starting a worker fails
//! with "operation not supported on this platform", and rayon-core 1.10 turns a failed
//! *global* pool into a panic, which in wasm is a trap. These two exports show both faces of
//! the same cause without the image crate in between:
//!
//! - `rayon_demo_build_pool` builds a private pool and reports the error like every other
//!   entry point (negative code, message for `last_error`);
//! - `rayon_demo_global` touches the global pool, exactly as `jpeg_decoder` did, and traps.

use crate::abi::{fail, ErrorCode};

/// Try to start a 2-thread rayon pool. Returns the number of threads on success (never, on
/// wasm32-wasi) or a negative code whose `last_error` is the `Debug` of the
/// `ThreadPoolBuildError`.
#[no_mangle]
pub extern "C" fn rayon_demo_build_pool() -> i32 {
    match rayon::ThreadPoolBuilder::new().num_threads(2).build() {
        Ok(pool) => pool.current_num_threads() as i32,
        Err(err) => fail(ErrorCode::BadArgument, format!("{:?}", err)),
    }
}

/// Ask rayon how many threads its global pool has. The first call tries to start the global
/// pool; on wasm32-wasi that fails and rayon-core panics with
/// "The global thread pool has not been initialized.: ThreadPoolBuildError { .. }",
/// the article's message. The panic aborts: the host sees a trap.
#[no_mangle]
pub extern "C" fn rayon_demo_global() -> i32 {
    rayon::current_num_threads() as i32
}
