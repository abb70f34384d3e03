//! Image decoding and preprocessing: bytes in, a 1x224x224x3 NHWC f32 tensor out.
//!
//! Two families of preprocessing are a lesson of the kit (notebook 04):
//! - **article**: stretch the whole picture to 224x224 with the `image` crate's Triangle
//!   filter and divide by 255, as the article and tract's MobileNet example do;
//! - **model**: the value range the network was trained with: EfficientNet-Lite takes
//!   `(x - 127) / 128`, TF-slim's MobileNet V2 `x / 127.5 - 1` (inception preprocessing).
//!
//! All modes stretch the whole picture to 224x224: only the value mapping differs, so the
//! side-by-side comparison in notebook 04 isolates that one lesson. (The TF reference
//! pipelines also crop the central 87.5%; on `grace_hopper.jpg` that crop cuts the uniform
//! away and EfficientNet-Lite0 answers "academic gown": `wasi_lab.models.preprocess`
//! shows it with `crop=0.875`.)

use crate::abi::{ErrorCode, GuestResult};
use crate::jpeg_scan::check_jpeg_scan;
use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::io::Reader;
use image::{ColorType, DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, RgbImage};
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
                format!(
                    "unknown preprocessing mode {} (0 article, 1 efficientnet, 2 inception)",
                    other
                ),
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
            format!(
                "{:?} images are not supported (this guest decodes JPEG and PNG)",
                other
            ),
        )),
        None => Err((
            ErrorCode::BadImage,
            "not a JPEG or PNG image (unrecognised signature)".to_string(),
        )),
    }
}

/// Width and height from the header alone, without decoding the pixels.
pub fn dimensions(bytes: &[u8]) -> GuestResult<(u32, u32)> {
    reader(bytes)?.into_dimensions().map_err(|e| {
        (
            ErrorCode::BadImage,
            format!("cannot read image header: {}", e),
        )
    })
}

fn out_of_memory(what: &str, bytes: usize, w: u32, h: u32) -> (ErrorCode, String) {
    (
        ErrorCode::OutOfMemory,
        format!(
            "decoding a {}x{} image needs {} MiB more for {}, more than this guest may use",
            w,
            h,
            (bytes + (1 << 20) - 1) >> 20,
            what
        ),
    )
}

/// A zeroed vector of `n` values, or OutOfMemory instead of an aborting allocation.
fn try_zeroed<T: Copy + Default>(n: usize, what: &str, w: u32, h: u32) -> GuestResult<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| out_of_memory(what, n.saturating_mul(std::mem::size_of::<T>()), w, h))?;
    v.resize(n, T::default());
    Ok(v)
}

/// Check that `bytes` more can be allocated right now (then give them back at once).
///
/// The decoders allocate their own working memory with plain (aborting) allocations: under a
/// store memory limit, running out inside them would trap the instance. Reserving the same
/// amount first turns that into a clean OutOfMemory; the freed block is what the decoder then
/// gets (linear memory never shrinks).
fn probe(bytes: usize, what: &str, w: u32, h: u32) -> GuestResult<()> {
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(bytes)
        .map_err(|_| out_of_memory(what, bytes, w, h))
}

/// Run `decoder` into a buffer this guest allocated itself (fallibly), as `T` samples.
fn read_into<'a, T, D>(decoder: D, internal: usize, w: u32, h: u32) -> GuestResult<Vec<T>>
where
    T: Copy + Default,
    D: ImageDecoder<'a>,
{
    let total = usize::try_from(decoder.total_bytes())
        .map_err(|_| out_of_memory("its pixels", usize::MAX, w, h))?;
    let size = std::mem::size_of::<T>();
    let mut buf: Vec<T> = try_zeroed(total / size, "its pixels", w, h)?;
    // The decoder's own planes and rows, or (after it) the RGB copy and the resize's line,
    // weights and output, whichever is larger.
    let rgb = if decoder.color_type() == ColorType::Rgb8 {
        0
    } else {
        w as usize * h as usize * 3
    };
    let resize = 12 * w as usize + 8 * (w as usize + h as usize) + (2 << 20);
    probe(
        internal.max(rgb.saturating_add(resize)),
        "the decoder",
        w,
        h,
    )?;
    // SAFETY: `buf` holds `total / size` initialised values of a plain integer type; viewing
    // them as `total` bytes is how `image` itself fills 16-bit buffers.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, buf.len() * size) };
    decoder
        .read_image(bytes)
        .map_err(|e| (ErrorCode::BadImage, format!("cannot decode image: {}", e)))?;
    Ok(buf)
}

fn to_dynamic<'a, D: ImageDecoder<'a>>(
    decoder: D,
    internal: usize,
    w: u32,
    h: u32,
) -> GuestResult<DynamicImage> {
    let colour = decoder.color_type();
    let wrong = || {
        (
            ErrorCode::BadImage,
            "the decoder returned a buffer of the wrong size".to_string(),
        )
    };
    Ok(match colour {
        ColorType::L8 => DynamicImage::ImageLuma8(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        ColorType::La8 => DynamicImage::ImageLumaA8(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        ColorType::Rgb8 => DynamicImage::ImageRgb8(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        ColorType::Rgba8 => DynamicImage::ImageRgba8(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        ColorType::L16 => DynamicImage::ImageLuma16(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        ColorType::La16 => DynamicImage::ImageLumaA16(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        ColorType::Rgb16 => DynamicImage::ImageRgb16(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        ColorType::Rgba16 => DynamicImage::ImageRgba16(
            ImageBuffer::from_raw(w, h, read_into(decoder, internal, w, h)?).ok_or_else(wrong)?,
        ),
        other => {
            return Err((
                ErrorCode::BadImage,
                format!("{:?} images are not supported", other),
            ))
        }
    })
}

/// What jpeg-decoder 0.2 allocates besides our output: one plane per component (padded to
/// whole 16x16 macroblocks), for a progressive file also every coefficient of the image (an
/// i16 per sample, kept until the last scan), its output vector, and for CMYK the RGB copy.
/// `layout` is (components, progressive) from the frame header; unknown means the worst.
fn jpeg_working_memory(layout: Option<(usize, bool)>, w: u32, h: u32) -> usize {
    let (components, progressive) = layout.unwrap_or((4, true));
    let components = components.max(1);
    let padded = (w as usize + 15).saturating_mul(h as usize + 15);
    let pixels = w as usize * h as usize;
    let planes = padded.saturating_mul(components);
    let coefficients = if progressive {
        planes.saturating_mul(2)
    } else {
        0
    };
    let cmyk = if components == 4 { pixels * 3 } else { 0 };
    planes
        .saturating_add(coefficients)
        .saturating_add(pixels.saturating_mul(components))
        .saturating_add(cmyk)
        .saturating_add(1 << 20)
}

/// Decode to RGB8, refusing oversized images *before* any pixel buffer is allocated, and
/// answering OutOfMemory (never a trap) when the decode would not fit in memory.
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
        return Err((
            ErrorCode::BadImage,
            format!("image has no pixels ({}x{})", w, h),
        ));
    }
    let decode_err =
        |e: image::ImageError| (ErrorCode::BadImage, format!("cannot decode image: {}", e));
    let image = match reader(bytes)?.format() {
        Some(ImageFormat::Png) => {
            let decoder = PngDecoder::new(Cursor::new(bytes)).map_err(decode_err)?;
            // A few rows of unfiltering plus the inflate window.
            let internal = (decoder.scanline_bytes() as usize)
                .saturating_mul(4)
                .saturating_add(1 << 20);
            to_dynamic(decoder, internal, w, h)?
        }
        _ => {
            let layout = check_jpeg_scan(bytes)?;
            let decoder = JpegDecoder::new(Cursor::new(bytes)).map_err(decode_err)?;
            to_dynamic(decoder, jpeg_working_memory(layout, w, h), w, h)?
        }
    };
    Ok(image.into_rgb8())
}

/// The weights of `image`'s Triangle filter for each output index along one axis: the first
/// input index and the normalised weights, computed exactly as `imageops::resize` does.
fn triangle_weights(size: u32, new_size: u32) -> Vec<(u32, Vec<f32>)> {
    let ratio = size as f32 / new_size as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let src_support = sratio; // Triangle's support is 1.0
    (0..new_size)
        .map(|out| {
            let input = (out as f32 + 0.5) * ratio;
            let left = ((input - src_support).floor() as i64).clamp(0, size as i64 - 1);
            let right = ((input + src_support).ceil() as i64).clamp(left + 1, size as i64);
            let input = input - 0.5;
            let mut ws: Vec<f32> = (left..right)
                .map(|i| {
                    let x = (i as f32 - input) / sratio;
                    if x.abs() < 1.0 {
                        1.0 - x.abs()
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f32 = ws.iter().fold(0.0, |s, &w| s + w);
            ws.iter_mut().for_each(|w| *w /= sum);
            (left as u32, ws)
        })
        .collect()
}

/// Stretch to SIDE x SIDE with the Triangle filter: the same arithmetic as `image`'s
/// `imageops::resize(image, SIDE, SIDE, FilterType::Triangle)` (bit for bit), but one
/// vertically filtered row at a time. `imageops::resize` first filters the whole image to
/// `width x SIDE` RGBA f32 (16 bytes a pixel: 573 MB for a 545-byte 160000x1 PNG); this
/// holds one row of `width` RGB f32.
pub fn resize_for(image: &RgbImage) -> GuestResult<RgbImage> {
    let (width, height) = image.dimensions();
    let rows = triangle_weights(height, SIDE);
    let cols = triangle_weights(width, SIDE);
    let raw = image.as_raw();
    let mut line: Vec<f32> = try_zeroed(width as usize * 3, "the resize", width, height)?;
    let mut out = vec![0u8; (SIDE * SIDE * 3) as usize];
    for (oy, (top, wy)) in rows.iter().enumerate() {
        for x in 0..width as usize {
            let mut t = (0.0f32, 0.0f32, 0.0f32);
            for (i, &w) in wy.iter().enumerate() {
                let p = &raw[((*top as usize + i) * width as usize + x) * 3..][..3];
                t.0 += p[0] as f32 * w;
                t.1 += p[1] as f32 * w;
                t.2 += p[2] as f32 * w;
            }
            line[x * 3] = t.0;
            line[x * 3 + 1] = t.1;
            line[x * 3 + 2] = t.2;
        }
        for (ox, (left, wx)) in cols.iter().enumerate() {
            let mut t = (0.0f32, 0.0f32, 0.0f32);
            for (i, &w) in wx.iter().enumerate() {
                let p = &line[(*left as usize + i) * 3..][..3];
                t.0 += p[0] * w;
                t.1 += p[1] * w;
                t.2 += p[2] * w;
            }
            let o = &mut out[(oy * SIDE as usize + ox) * 3..][..3];
            o[0] = clamp_u8(t.0);
            o[1] = clamp_u8(t.1);
            o[2] = clamp_u8(t.2);
        }
    }
    Ok(RgbImage::from_raw(SIDE, SIDE, out).expect("SIDE x SIDE x 3 bytes"))
}

/// `image`'s clamp to [0, 255] then round to nearest.
fn clamp_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0).round() as u8
}

/// The NHWC tensor for a resized image.
pub fn to_tensor(resized: &RgbImage, mode: Mode) -> Vec<f32> {
    resized
        .as_raw()
        .iter()
        .map(|&v| mode.normalise(v))
        .collect()
}

/// Bytes to (original width, original height, tensor).
pub fn preprocess(bytes: &[u8], mode: Mode) -> GuestResult<(u32, u32, Vec<f32>)> {
    let image = decode_rgb(bytes)?;
    let (w, h) = image.dimensions();
    let resized = resize_for(&image)?;
    Ok((w, h, to_tensor(&resized, mode)))
}
