//! Model entry points: load a frozen graph once, run it many times.
//!
//! The article parsed the model on every request (`infer_from_ptrs`); that function is kept
//! for the lesson, but the kit's hosts load a model once (`load_model`), get a small integer
//! handle, and then call `classify` or `infer_tensor` with it. Every function returns a
//! negative [`ErrorCode`] on failure (message in `last_error`) and never traps on bad input.

use crate::abi::{
    self, check_apart, finish, input_slice, output_slice_apart, write_f32s, write_truncated,
    ErrorCode, GuestResult,
};
use crate::engine::Model;
use crate::preprocess::{self, Mode, TENSOR_LEN};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    /// handle -> loaded model. Handles start at 1 and are never reused.
    static MODELS: RefCell<BTreeMap<i32, Model>> = RefCell::new(BTreeMap::new());
    static NEXT_HANDLE: RefCell<i32> = RefCell::new(1);
}

/// The input every image entry point feeds: one 224x224 RGB image, NHWC.
const IMAGE_INPUT: [usize; 4] = [1, preprocess::SIDE as usize, preprocess::SIDE as usize, 3];

fn register(model: Model) -> GuestResult<i32> {
    MODELS.with(|m| {
        let mut models = m.borrow_mut();
        let handle = NEXT_HANDLE.with(|h| {
            let mut h = h.borrow_mut();
            // After 2^31 - 1 loads the counter wraps to 1: skip handles still in use, so a
            // new model never replaces (and a host never reaches) a live one.
            loop {
                let v = *h;
                *h = if v == i32::MAX { 1 } else { v + 1 };
                if !models.contains_key(&v) {
                    return v;
                }
            }
        });
        models.insert(handle, model);
        Ok(handle)
    })
}

/// Test hook: set the next handle `register` tries, so a test can reach the wrap-around
/// without loading two billion models.
#[no_mangle]
pub extern "C" fn set_next_handle_for_tests(next: i32) -> i32 {
    if next < 1 {
        return abi::fail(
            ErrorCode::BadArgument,
            "set_next_handle_for_tests: handles start at 1",
        );
    }
    NEXT_HANDLE.with(|h| *h.borrow_mut() = next);
    0
}

/// Run `f` with the model behind `handle`.
pub(crate) fn with_model<T>(
    handle: i32,
    f: impl FnOnce(&mut Model) -> GuestResult<T>,
) -> GuestResult<T> {
    MODELS.with(|m| match m.borrow_mut().get_mut(&handle) {
        Some(model) => f(model),
        None => Err((
            ErrorCode::BadHandle,
            format!("no model is loaded under handle {}", handle),
        )),
    })
}

/// Models fed from an image must take exactly one 224x224x3 image.
fn check_image_input(model: &Model) -> GuestResult<()> {
    if model.info.input_shape != IMAGE_INPUT {
        return Err((
            ErrorCode::BadArgument,
            format!(
                "the model's input '{}' has shape {:?}; images and tensors are fed as {:?} (use infer_raw for other shapes)",
                model.info.input_name, model.info.input_shape, IMAGE_INPUT
            ),
        ));
    }
    Ok(())
}

/// Parse a frozen graph (`len` bytes at `ptr`, a live block) and keep it. Returns a handle
/// (>= 1). The output is the last `Softmax` (or the `Reshape` after it).
#[no_mangle]
pub extern "C" fn load_model(ptr: *const u8, len: usize) -> i32 {
    finish((|| {
        let bytes = input_slice(ptr, len, "load_model")?;
        register(Model::load(bytes, None)?)
    })())
}

/// As `load_model`, reading the node named by the UTF-8 string at `name_ptr` instead.
#[no_mangle]
pub extern "C" fn load_model_with_output(
    ptr: *const u8,
    len: usize,
    name_ptr: *const u8,
    name_len: usize,
) -> i32 {
    finish((|| {
        let bytes = input_slice(ptr, len, "load_model_with_output")?;
        let name = input_slice(name_ptr, name_len, "load_model_with_output name")?;
        let name = std::str::from_utf8(name).map_err(|_| {
            (
                ErrorCode::BadArgument,
                "the output name is not UTF-8".to_string(),
            )
        })?;
        register(Model::load(bytes, Some(name))?)
    })())
}

/// Drop a model and its weights. Returns 0, or BadHandle.
#[no_mangle]
pub extern "C" fn free_model(handle: i32) -> i32 {
    finish(MODELS.with(|m| match m.borrow_mut().remove(&handle) {
        Some(_) => Ok(0),
        None => Err((
            ErrorCode::BadHandle,
            format!("free_model: no model is loaded under handle {}", handle),
        )),
    }))
}

/// Number of f32 the model outputs (1000 or 1001 for the bundled classifiers).
#[no_mangle]
pub extern "C" fn model_output_len(handle: i32) -> i32 {
    finish(with_model(handle, |m| Ok(m.output_len() as i32)))
}

/// Number of f32 the model's input takes (150528 for a 224x224x3 image).
#[no_mangle]
pub extern "C" fn model_input_len(handle: i32) -> i32 {
    finish(with_model(handle, |m| Ok(m.input_len() as i32)))
}

/// Write a UTF-8 JSON summary (nodes, op counts, input shape, output name and shape, weight
/// and activation bytes, kernels) to `out_ptr`: at most `cap` bytes, like `last_error`.
/// Returns the summary's full length, so a host with a short buffer can ask again.
#[no_mangle]
pub extern "C" fn model_info(handle: i32, out_ptr: *mut u8, cap: usize) -> i32 {
    finish((|| {
        let json = with_model(handle, |m| Ok(m.info.to_json()))?;
        write_truncated(out_ptr, cap, &json, "model_info output")
    })())
}

/// Run one timed inference on a preprocessed tensor (like `infer_tensor`) and write the
/// per-step profile as JSON (`[{"node","op","macs","ns"}, ...]`) to `out_ptr`: at most `cap`
/// bytes, like `model_info`. Returns the profile's full length; a host whose buffer was too
/// short asks again with a bigger one (and gets a fresh measurement).
#[no_mangle]
pub extern "C" fn profile_tensor(
    handle: i32,
    tensor_ptr: *const u8,
    out_ptr: *mut u8,
    cap: usize,
) -> i32 {
    finish((|| {
        let raw = input_slice(tensor_ptr, TENSOR_LEN * 4, "profile_tensor input")?;
        check_apart(
            (out_ptr, cap),
            &[(tensor_ptr, TENSOR_LEN * 4)],
            "profile_tensor output",
        )?;
        with_model(handle, |model| {
            check_image_input(model)?;
            let steps = model.run_timed(&read_f32s(raw)?)?;
            let json = format!(
                "[{}]",
                steps
                    .iter()
                    .map(|s| s.to_json())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            write_truncated(out_ptr, cap, &json, "profile_tensor output")
        })
    })())
}

/// The `k` largest probabilities, best first, as (index, probability).
fn top_k(probs: &[f32], k: usize) -> GuestResult<Vec<(usize, f32)>> {
    let mut order: Vec<(usize, f32)> = Vec::new();
    order.try_reserve_exact(probs.len()).map_err(|_| {
        (
            ErrorCode::OutOfMemory,
            format!("cannot sort {} scores", probs.len()),
        )
    })?;
    order.extend(probs.iter().cloned().enumerate());
    // Descending by value, NaN last, ties by lower index: deterministic on every host.
    order.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or_else(|| a.1.is_nan().cmp(&b.1.is_nan()))
            .then(a.0.cmp(&b.0))
    });
    order.truncate(k);
    Ok(order)
}

/// Decode and preprocess an image (`mode` 0 article, 1 efficientnet, 2 inception), run the
/// model, and write the top `k` as `k` pairs of (u32 index LE, f32 probability LE) to
/// `out_ptr` (8 * k bytes inside a live block). `k` larger than the output is clamped.
/// Returns the number of pairs written.
#[no_mangle]
pub extern "C" fn classify(
    handle: i32,
    img_ptr: *const u8,
    img_len: usize,
    mode: i32,
    out_ptr: *mut u8,
    k: i32,
) -> i32 {
    finish((|| {
        let mode = Mode::from_i32(mode)?;
        if k < 1 {
            return Err((
                ErrorCode::BadArgument,
                format!("classify: k must be at least 1, got {}", k),
            ));
        }
        let image = input_slice(img_ptr, img_len, "classify image")?;
        with_model(handle, |model| {
            check_image_input(model)?;
            let k = (k as usize).min(model.output_len());
            let out = output_slice_apart(out_ptr, 8 * k, &[(img_ptr, img_len)], "classify output")?;
            let (_, _, tensor) = preprocess::preprocess(image, mode)?;
            let probs = model.run(&tensor)?;
            for (chunk, (i, p)) in out.chunks_exact_mut(8).zip(top_k(probs, k)?) {
                chunk[..4].copy_from_slice(&(i as u32).to_le_bytes());
                chunk[4..].copy_from_slice(&p.to_le_bytes());
            }
            Ok(k as i32)
        })
    })())
}

/// The f32 values of `bytes` (LE): borrowed when aligned, else copied into a buffer whose
/// allocation fails cleanly (OutOfMemory) instead of trapping.
pub(crate) fn read_f32s(bytes: &[u8]) -> GuestResult<Cow<'_, [f32]>> {
    // wasm is little-endian, so aligned bytes already are the floats: borrow them (the
    // host's blocks from `alloc` are 8-aligned) instead of converting 150k values.
    if cfg!(target_endian = "little") {
        // SAFETY: every bit pattern is a valid f32; `align_to` only returns an aligned middle.
        let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return Ok(Cow::Borrowed(floats));
        }
    }
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(bytes.len() / 4).map_err(|_| {
        (
            ErrorCode::OutOfMemory,
            format!("cannot copy an input of {} bytes", bytes.len()),
        )
    })?;
    v.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(Cow::Owned(v))
}

/// Run the model on a preprocessed tensor: `tensor_ptr` holds 1x224x224x3 f32 (LE, NHWC,
/// 602112 bytes); writes `model_output_len` f32 to `out_ptr`. Returns that count. Lets the
/// host compare the raw outputs with NumPy or ONNX Runtime on the very same tensor.
#[no_mangle]
pub extern "C" fn infer_tensor(handle: i32, tensor_ptr: *const u8, out_ptr: *mut u8) -> i32 {
    finish((|| {
        let raw = input_slice(tensor_ptr, TENSOR_LEN * 4, "infer_tensor input")?;
        with_model(handle, |model| {
            check_image_input(model)?;
            let out = output_slice_apart(
                out_ptr,
                model.output_len() * 4,
                &[(tensor_ptr, TENSOR_LEN * 4)],
                "infer_tensor output",
            )?;
            let values = model.run(&read_f32s(raw)?)?;
            write_f32s(out, values);
            Ok(values.len() as i32)
        })
    })())
}

/// Run the model on an input of any shape (the Placeholder's): `in_len` bytes of f32 at
/// `in_ptr` (exactly the input's size), output f32 to `out_ptr` (`out_cap` bytes, at least
/// the output's size). Returns the number of f32 written. For small op-by-op tests.
#[no_mangle]
pub extern "C" fn infer_raw(
    handle: i32,
    in_ptr: *const u8,
    in_len: usize,
    out_ptr: *mut u8,
    out_cap: usize,
) -> i32 {
    finish((|| {
        let raw = input_slice(in_ptr, in_len, "infer_raw input")?;
        with_model(handle, |model| {
            if in_len != model.input_len() * 4 {
                return Err((
                    ErrorCode::LengthMismatch,
                    format!(
                        "infer_raw: {} bytes given, the input {:?} takes {}",
                        in_len,
                        model.info.input_shape,
                        model.input_len() * 4
                    ),
                ));
            }
            let need = model.output_len() * 4;
            if out_cap < need {
                return Err((
                    ErrorCode::BadArgument,
                    format!(
                        "infer_raw: output buffer of {} bytes, the output needs {}",
                        out_cap, need
                    ),
                ));
            }
            let out =
                output_slice_apart(out_ptr, out_cap, &[(in_ptr, in_len)], "infer_raw output")?;
            let values = model.run(&read_f32s(raw)?)?;
            write_f32s(&mut out[..need], values);
            Ok(values.len() as i32)
        })
    })())
}

/// True when `[ptr, ptr+len)` is *exactly* one live block, checked without taking it.
///
/// `abi::check_within` accepts any range inside a block. The range ends exactly at the end
/// of its block when one more byte does not fit; it starts at the block's start when the
/// range one byte earlier (and one longer) is not inside a single block.
fn check_exact(ptr: usize, len: usize, what: &str) -> GuestResult<()> {
    abi::check_within(ptr, len).map_err(|(c, m)| (c, format!("{}: {}", what, m)))?;
    let ends_at_block_end = abi::check_within(ptr, len + 1).is_err();
    let starts_at_block_start = ptr == 0 || abi::check_within(ptr - 1, len + 1).is_err();
    if !(ends_at_block_end && starts_at_block_start) {
        return Err((
            ErrorCode::LengthMismatch,
            format!(
                "{}: {} bytes at {:#x} are not exactly one block handed out by alloc",
                what, len, ptr
            ),
        ));
    }
    Ok(())
}

/// Free a block whose entry was removed from the table with `forget_block`.
fn release(ptr: usize, len: usize) {
    // SAFETY: the block came from `abi::alloc` with exactly this length (checked by
    // `forget_block`), so this is the layout it was allocated with.
    unsafe {
        std::alloc::dealloc(
            ptr as *mut u8,
            std::alloc::Layout::array::<u8>(len).unwrap(),
        )
    };
}

/// The article's function: model and image bytes in, the best class out.
///
/// Takes ownership of both blocks, as the article did (`Vec::from_raw_parts`), but only
/// after checking that each pointer/length pair is exactly a live block: the article's Node
/// host passed the model's length for the image, which is refused with LengthMismatch and
/// frees nothing. Once both checks pass the guest frees both blocks whatever happens next.
/// Parses the model, preprocesses in **article** mode, runs, and returns the 1-based class
/// as the article printed it: for a 1001-class output (background at 0) the argmax itself,
/// for 1000 classes argmax + 1.
#[no_mangle]
pub extern "C" fn infer_from_ptrs(
    model_ptr: *const u8,
    model_len: usize,
    img_ptr: *const u8,
    img_len: usize,
) -> i32 {
    finish((|| {
        let (mp, ip) = (model_ptr as usize, img_ptr as usize);
        if mp == ip {
            return Err((
                ErrorCode::BadArgument,
                "infer_from_ptrs: the model and the image are the same block".to_string(),
            ));
        }
        check_exact(mp, model_len, "infer_from_ptrs model")?;
        check_exact(ip, img_len, "infer_from_ptrs image")?;
        abi::forget_block(mp, model_len)?;
        if let Err(e) = abi::forget_block(ip, img_len) {
            // Cannot happen after check_exact; never leak the model block if it did.
            release(mp, model_len);
            return Err(e);
        }
        let result = (|| {
            // SAFETY: both blocks are live (checked above) and now owned by this call.
            let model_bytes = unsafe { std::slice::from_raw_parts(model_ptr, model_len) };
            let image = unsafe { std::slice::from_raw_parts(img_ptr, img_len) };
            let mut model = Model::load(model_bytes, None)?;
            check_image_input(&model)?;
            let (_, _, tensor) = preprocess::preprocess(image, Mode::Article)?;
            let probs = model.run(&tensor)?;
            let best = top_k(probs, 1)?.first().map(|&(i, _)| i).unwrap_or(0);
            Ok(if probs.len() == 1001 {
                best as i32
            } else {
                best as i32 + 1
            })
        })();
        release(mp, model_len);
        release(ip, img_len);
        result
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_handles_nan() {
        let t = top_k(&[0.1, f32::NAN, 0.5, 0.5, 0.2], 3).unwrap();
        assert_eq!(t.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 3, 4]);
    }
}
