//! Image entry points: let the host see what the guest sees before any model runs.

use crate::abi::{finish, input_slice, output_slice_apart, write_f32s, GuestResult};
use crate::preprocess::{self, Mode, TENSOR_LEN};

/// Bytes `decode_image` writes: width (u32), height (u32), then the f32 tensor.
pub const DECODED_LEN: usize = 8 + TENSOR_LEN * 4;

/// Size of the output buffer `decode_image` needs.
#[no_mangle]
pub extern "C" fn decoded_len() -> i32 {
    DECODED_LEN as i32
}

/// Side of the square input tensor (224).
#[no_mangle]
pub extern "C" fn tensor_side() -> i32 {
    preprocess::SIDE as i32
}

/// Read width and height from the image header into `out_ptr` (2 x u32), decoding nothing.
/// A host can refuse a decompression bomb with this before paying for a decode.
#[no_mangle]
pub extern "C" fn image_size(ptr: *const u8, len: usize, out_ptr: *mut u8) -> i32 {
    finish((|| -> GuestResult<i32> {
        let bytes = input_slice(ptr, len, "image_size")?;
        let out = output_slice_apart(out_ptr, 8, &[(ptr, len)], "image_size output")?;
        let (w, h) = preprocess::dimensions(bytes)?;
        out[..4].copy_from_slice(&w.to_le_bytes());
        out[4..8].copy_from_slice(&h.to_le_bytes());
        Ok(0)
    })())
}

/// Decode a JPEG/PNG and preprocess it with `mode` (0 article, 1 efficientnet, 2 inception).
/// Writes width, height and the 224x224x3 NHWC f32 tensor (little-endian) at `out_ptr`,
/// which must be a block of at least `decoded_len()` bytes. Returns 0 or a negative code.
#[no_mangle]
pub extern "C" fn decode_image(ptr: *const u8, len: usize, mode: i32, out_ptr: *mut u8) -> i32 {
    finish((|| -> GuestResult<i32> {
        let mode = Mode::from_i32(mode)?;
        let bytes = input_slice(ptr, len, "decode_image")?;
        let out = output_slice_apart(out_ptr, DECODED_LEN, &[(ptr, len)], "decode_image output")?;
        let (w, h, tensor) = preprocess::preprocess(bytes, mode)?;
        out[..4].copy_from_slice(&w.to_le_bytes());
        out[4..8].copy_from_slice(&h.to_le_bytes());
        write_f32s(&mut out[8..], &tensor);
        Ok(0)
    })())
}
