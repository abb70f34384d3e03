//! Step-through inference: run the plan one step at a time and show where its tensors live.
//!
//! `step_info` tells the host, for every step of a loaded model's plan, the op, the node,
//! the shapes, and the linear-memory offsets and byte lengths of the step's inputs, output
//! and weights. `run_to_step` runs steps `0..=step` on an input; the host then reads the
//! step's input and output activations straight out of memory at those offsets (notebook 09
//! recomputes one output value from them in NumPy). Same conventions as `model_exports`:
//! negative `ErrorCode` plus `last_error` on failure, never a trap on bad input.

use crate::abi::{finish, input_slice, write_truncated, ErrorCode};
use crate::model_exports::{read_f32s, with_model};

/// Write the plan as JSON (`{"input", "output", "steps": [{"index", "op", "node", "macs",
/// "inputs": [{"kind", "ptr", "bytes", "shape"}], "output", "weights": [{"name", "ptr",
/// "bytes", "layout", "shape"}], "act", ...}]}`) to `out_ptr`: at most `cap` bytes, like
/// `model_info`. Returns the JSON's full length, so a host with a short buffer asks again.
#[no_mangle]
pub extern "C" fn step_info(handle: i32, out_ptr: *mut u8, cap: usize) -> i32 {
    finish((|| {
        let json = with_model(handle, |m| Ok(m.steps_json()))?;
        write_truncated(out_ptr, cap, &json, "step_info output")
    })())
}

/// Run steps `0..=step` of the plan on the input at `in_ptr` (`in_len` bytes of LE f32,
/// exactly the model input's size, NHWC). Returns the number of steps run (`step + 1`).
/// Afterwards step `step`'s inputs and output are in memory where `step_info` says; later
/// steps' slots hold stale values from earlier runs.
#[no_mangle]
pub extern "C" fn run_to_step(handle: i32, in_ptr: *const u8, in_len: usize, step: i32) -> i32 {
    finish((|| {
        let raw = input_slice(in_ptr, in_len, "run_to_step input")?;
        with_model(handle, |model| {
            if in_len != model.input_len() * 4 {
                return Err((
                    ErrorCode::LengthMismatch,
                    format!(
                        "run_to_step: {} bytes given, the input {:?} takes {}",
                        in_len,
                        model.info.input_shape,
                        model.input_len() * 4
                    ),
                ));
            }
            // Negative here; past the last step in `run_to`, which knows the plan.
            let last = usize::try_from(step).map_err(|_| {
                (
                    ErrorCode::BadArgument,
                    format!(
                        "run_to_step: step {} is negative; the plan has steps 0..={}",
                        step,
                        model.step_count() as i64 - 1
                    ),
                )
            })?;
            model.run_to(&read_f32s(raw)?, last)?;
            Ok(step + 1)
        })
    })())
}
