//! Image decoding and preprocessing: bytes in, a 1x224x224x3 NHWC f32 tensor out.
//!
//! Two families of preprocessing are a lesson of the kit (notebook 04):
//! - **article**: stretch the whole picture to 224x224 with the `image` crate's Triangle
//!   filter and divide by 255, as the article and tract's MobileNet example do;
//! - **model**: the value range the network was trained with: EfficientNet-Lite takes
//!   `(x - 127) / 128`, TF-slim's MobileNet V2 `x / 127.5 - 1` (inception preprocessing).
//! All modes stretch the whole picture to 224x224: only the value mapping differs, so the
//! side-by-side comparison in notebook 04 isolates that one lesson. (The TF reference
//! pipelines also crop the central 87.5%; on `grace_hopper.jpg` that crop cuts the uniform
//! away and EfficientNet-Lite0 answers "academic gown": `wasi_lab.models.preprocess`
//! shows it with `crop=0.875`.)

use crate::abi::{ErrorCode, GuestResult};
use image::imageops::{self, FilterType};
use image::io::Reader;
use image::RgbImage;
use std::io::Cursor;

/// Side of the square input every bundled model takes.
pub const SIDE: u32 = 224;
/// Values in one input tensor (1 x SIDE x SIDE x 3).
pub const TENSOR_LEN: usize = (SIDE * SIDE * 3) as usize;
/// Largest image we decode: 40 megapixels is ~120 MB of RGB, far above any photo a learner
/// brings, and far below what would exhaust the 4 GiB a wasm32 memory can address.
pub const MAX_PIXELS: u64 = 40_000_000;

/// Preprocessing mode, as passed over the ABI (`mode` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 0: stretch to 224x224, x / 255 (the article).
    Article,
    /// 1: (x - 127) / 128 (EfficientNet-Lite).
    EfficientNet,
    /// 2: x / 127.5 - 1 (TF-slim MobileNet, inception preprocessing).
    Inception,
}

impl Mode {
    pub fn from_i32(mode: i32) -> GuestResult<Mode> {
        match mode {
            0 => Ok(Mode::Article),
            1 => Ok(Mode::EfficientNet),
            2 => Ok(Mode::Inception),
            other => Err((
                ErrorCode::BadArgument,
                format!("unknown preprocessing mode {} (0 article, 1 efficientnet, 2 inception)", other),
            )),
        }
    }

    /// Map one 0..=255 channel value to the network's input range.
    fn normalise(self, v: u8) -> f32 {
        let v = v as f32;
        match self {
            Mode::Article => v / 255.0,
            Mode::EfficientNet => (v - 127.0) / 128.0,
            Mode::Inception => v / 127.5 - 1.0,
        }
    }
}

fn reader(bytes: &[u8]) -> GuestResult<Reader<Cursor<&[u8]>>> {
    let reader = Reader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| (ErrorCode::BadImage, format!("cannot read image: {}", e)))?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg) | Some(image::ImageFormat::Png) => Ok(reader),
        Some(other) => Err((
            ErrorCode::BadImage,
            format!("{:?} images are not supported (this guest decodes JPEG and PNG)", other),
        )),
        None => Err((
            ErrorCode::BadImage,
            "not a JPEG or PNG image (unrecognised signature)".to_string(),
        )),
    }
}

/// Width and height from the header alone, without decoding the pixels.
pub fn dimensions(bytes: &[u8]) -> GuestResult<(u32, u32)> {
    reader(bytes)?
        .into_dimensions()
        .map_err(|e| (ErrorCode::BadImage, format!("cannot read image header: {}", e)))
}

/// Decode to RGB8, refusing oversized images *before* any pixel buffer is allocated.
pub fn decode_rgb(bytes: &[u8]) -> GuestResult<RgbImage> {
    let (w, h) = dimensions(bytes)?;
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err((
            ErrorCode::ImageTooLarge,
            format!(
                "image is {}x{} ({} pixels); the limit is {} pixels",
                w, h, pixels, MAX_PIXELS
            ),
        ));
    }
    if w == 0 || h == 0 {
        return Err((ErrorCode::BadImage, format!("image has no pixels ({}x{})", w, h)));
    }
    // Probe for the memory decoding will need (decoder planes + output + RGB copy, ~8 bytes
    // a pixel) before the decoder asks for it: when the host caps memory (a store limit), an
    // allocation failure inside the decoder would abort the whole instance, while a failed
    // `try_reserve` is a clean OutOfMemory. The probe is freed at once; the decoder reuses it.
    let need = (pixels as usize).saturating_mul(8);
    let mut probe: Vec<u8> = Vec::new();
    if probe.try_reserve_exact(need).is_err() {
        return Err((
            ErrorCode::OutOfMemory,
            format!(
                "decoding a {}x{} image needs about {} MiB, more than this guest may use",
                w,
                h,
                need >> 20
            ),
        ));
    }
    drop(probe);
    let image = reader(bytes)?
        .decode()
        .map_err(|e| (ErrorCode::BadImage, format!("cannot decode image: {}", e)))?;
    Ok(image.to_rgb8())
}

/// Stretch to SIDE x SIDE with the Triangle filter, as tract's MobileNet example does.
pub fn resize_for(image: &RgbImage) -> RgbImage {
    imageops::resize(image, SIDE, SIDE, FilterType::Triangle)
}

/// The NHWC tensor for a resized image.
pub fn to_tensor(resized: &RgbImage, mode: Mode) -> Vec<f32> {
    resized.as_raw().iter().map(|&v| mode.normalise(v)).collect()
}

/// Bytes to (original width, original height, tensor).
pub fn preprocess(bytes: &[u8], mode: Mode) -> GuestResult<(u32, u32, Vec<f32>)> {
    let image = decode_rgb(bytes)?;
    let (w, h) = image.dimensions();
    let resized = resize_for(&image);
    Ok((w, h, to_tensor(&resized, mode)))
}
