//! `model_report`: "will my model run?" for a frozen graph, without running it.
//!
//! The report itself is `engine::report`; this is its ABI. The answer is a JSON object
//! even when the model cannot load (`"loadable": false` and the load's `"error"`), so a
//! negative [`ErrorCode`] only ever means the call itself was wrong (a pointer that is not
//! a live block, an output block overlapping the model).

use crate::abi::{finish, input_slice, output_slice_apart, ErrorCode};
use crate::engine::report;

/// Write the UTF-8 JSON report about the GraphDef at `model_ptr` (`model_len` bytes, a
/// live block) to `out_ptr`, and return its length `n`. If `n > out_cap` nothing is
/// written: the host asks again with a block of `n` bytes. The model is loaded to check
/// it and dropped again: no handle is kept.
#[no_mangle]
pub extern "C" fn model_report(
    model_ptr: *const u8,
    model_len: usize,
    out_ptr: *mut u8,
    out_cap: usize,
) -> i32 {
    finish((|| {
        let bytes = input_slice(model_ptr, model_len, "model_report model")?;
        let json = report::report(bytes);
        let n = json.len();
        if n > i32::MAX as usize {
            return Err((
                ErrorCode::Inference,
                "model_report: the report is too long".to_string(),
            ));
        }
        if n <= out_cap {
            let out =
                output_slice_apart(out_ptr, n, &[(model_ptr, model_len)], "model_report output")?;
            out.copy_from_slice(json.as_bytes());
        }
        Ok(n as i32)
    })())
}
