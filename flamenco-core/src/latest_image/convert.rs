//! Turning one rendered file into the latest-image JPEG, in-process (v2 ran ImageMagick's
//! `convert`): decode PNG, JPEG, TIFF or OpenEXR within [`ConvertLimits`], tone-map float
//! images (linear light, clamped, sRGB-encoded like Blender's "Standard" view), composite
//! straight alpha over black, scale to fit [`ConvertLimits::max_output`] keeping the aspect
//! ratio, and encode as JPEG.
//!
//! Only regular files are read: the path is checked with `metadata` before it is opened,
//! it is opened with `O_NONBLOCK` (so a FIFO swapped in between cannot block the open), and
//! the open file is checked again. A FIFO, socket or device named like a frame is refused
//! with [`ConvertError::NotAFile`].
//!
//! CPU-bound and blocking: call it off the async runtime (the pipeline uses its own
//! threads, with a time limit; see the module above).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits, RgbImage};

/// Limits on what is decoded, so that a huge or hostile file is refused instead of
/// exhausting memory.
#[derive(Clone, Debug)]
pub struct ConvertLimits {
    /// Largest file read, in bytes (default 512 MiB).
    pub max_file_size: u64,
    /// Largest width and height decoded, in pixels (default 16384 each).
    pub max_dimensions: (u32, u32),
    /// Most memory one decode may allocate, in bytes (default 1 GiB).
    pub max_alloc: u64,
    /// The JPEG fits in this box (default 1920×1080); smaller images are not enlarged.
    pub max_output: (u32, u32),
    /// JPEG quality, 1–100 (default 85, as v2).
    pub jpeg_quality: u8,
    /// Longest one conversion may take (default 60 s). A conversion still running then is
    /// abandoned (its thread finishes on its own, its result is dropped) and the next path
    /// is taken; see [`super::MAX_CONVERSION_THREADS`].
    pub max_duration: Duration,
}

impl Default for ConvertLimits {
    fn default() -> Self {
        ConvertLimits {
            max_file_size: 512 * 1024 * 1024,
            max_dimensions: (16384, 16384),
            max_alloc: 1024 * 1024 * 1024,
            max_output: (1920, 1080),
            jpeg_quality: 85,
            max_duration: Duration::from_secs(60),
        }
    }
}

/// A converted image.
#[derive(Clone, Debug)]
pub struct Converted {
    /// The JPEG file's bytes.
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Why a file was not converted. The messages name the file's problem; the caller adds
/// the path.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (a folder, FIFO, socket or device); only image files are read")]
    NotAFile,
    #[error("the file is {size} bytes, more than the {max} bytes allowed")]
    TooLarge { size: u64, max: u64 },
    #[error("not a supported image (PNG, JPEG, TIFF or OpenEXR): {0}")]
    Unsupported(String),
    #[error("the image is over the decoding limits ({0}); render a smaller preview")]
    OverLimits(String),
    #[error("cannot decode the image: {0}")]
    Decode(String),
    #[error("cannot encode the JPEG: {0}")]
    Encode(String),
    #[error("the Manager is shutting down")]
    Closed,
}

impl From<image::ImageError> for ConvertError {
    fn from(e: image::ImageError) -> Self {
        use image::ImageError as E;
        match e {
            E::Limits(l) => ConvertError::OverLimits(l.to_string()),
            E::Unsupported(u) => ConvertError::Unsupported(u.to_string()),
            E::IoError(io) => ConvertError::Io(io),
            other => ConvertError::Decode(other.to_string()),
        }
    }
}

/// Convert the image file at `path` (its format is recognised from its content, else its
/// extension).
pub fn convert_file(path: &Path, limits: &ConvertLimits) -> Result<Converted, ConvertError> {
    let file = open_regular_file(path)?;
    let meta = file.metadata()?;
    if meta.len() > limits.max_file_size {
        return Err(ConvertError::TooLarge {
            size: meta.len(),
            max: limits.max_file_size,
        });
    }
    let mut reader = ImageReader::new(BufReader::new(file));
    if let Ok(format) = image::ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let mut reader = reader.with_guessed_format()?;
    if reader.format().is_none() {
        return Err(ConvertError::Unsupported(
            "the content and the file name match no known format".into(),
        ));
    }
    let mut decode_limits = Limits::default();
    decode_limits.max_image_width = Some(limits.max_dimensions.0);
    decode_limits.max_image_height = Some(limits.max_dimensions.1);
    decode_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decode_limits);
    let decoded = reader.decode()?;
    convert_image(decoded, limits)
}

/// Open `path` for reading if it is a regular file (symbolic links are followed), without
/// ever blocking on a FIFO or device: the type is checked before the open, the open is
/// non-blocking, and the open file's type is checked again (it may have been replaced).
pub fn open_regular_file(path: &Path) -> Result<File, ConvertError> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(ConvertError::NotAFile);
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No effect on regular files; a FIFO opened this way does not wait for a writer.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(ConvertError::NotAFile);
    }
    Ok(file)
}

/// Scale, tone-map and encode an already decoded image.
pub fn convert_image(
    image: DynamicImage,
    limits: &ConvertLimits,
) -> Result<Converted, ConvertError> {
    let (width, height) = fit_within(image.width(), image.height(), limits.max_output);
    let scaled = if (width, height) == (image.width(), image.height()) {
        image
    } else {
        // A fast area average down to twice the size, then a triangle filter: quick on
        // big frames, and no aliasing when the sizes are close.
        let image = if image.width() >= 4 * width && image.height() >= 4 * height {
            image.thumbnail_exact(2 * width, 2 * height)
        } else {
            image
        };
        image.resize_exact(width, height, FilterType::Triangle)
    };
    let rgb = to_display_rgb(scaled);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, limits.jpeg_quality.clamp(1, 100))
        .encode_image(&rgb)
        .map_err(|e| ConvertError::Encode(e.to_string()))?;
    Ok(Converted {
        jpeg,
        width: rgb.width(),
        height: rgb.height(),
    })
}

/// The largest size with the aspect ratio of `width`×`height` that fits in `bounds`;
/// never larger than the original, never zero.
pub fn fit_within(width: u32, height: u32, bounds: (u32, u32)) -> (u32, u32) {
    let (max_w, max_h) = (bounds.0.max(1), bounds.1.max(1));
    if width <= max_w && height <= max_h {
        return (width.max(1), height.max(1));
    }
    let scale = f64::min(
        f64::from(max_w) / f64::from(width),
        f64::from(max_h) / f64::from(height),
    );
    let w = (f64::from(width) * scale)
        .round()
        .clamp(1.0, f64::from(max_w)) as u32;
    let h = (f64::from(height) * scale)
        .round()
        .clamp(1.0, f64::from(max_h)) as u32;
    (w, h)
}

/// 8-bit sRGB for display: float images are linear light (tone-mapped), integer images are
/// already display-referred (straight alpha composited over black).
fn to_display_rgb(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgb32F(buf) => {
            let (w, h) = buf.dimensions();
            RgbImage::from_fn(w, h, |x, y| {
                let p = buf.get_pixel(x, y).0;
                image::Rgb([tone_map(p[0]), tone_map(p[1]), tone_map(p[2])])
            })
        }
        // OpenEXR colour is premultiplied: over black, the alpha is simply dropped.
        DynamicImage::ImageRgba32F(buf) => {
            let (w, h) = buf.dimensions();
            RgbImage::from_fn(w, h, |x, y| {
                let p = buf.get_pixel(x, y).0;
                image::Rgb([tone_map(p[0]), tone_map(p[1]), tone_map(p[2])])
            })
        }
        other if other.color().has_alpha() => {
            let rgba = other.into_rgba8();
            let (w, h) = rgba.dimensions();
            RgbImage::from_fn(w, h, |x, y| {
                let [r, g, b, a] = rgba.get_pixel(x, y).0;
                let over_black = |c: u8| ((u16::from(c) * u16::from(a) + 127) / 255) as u8;
                image::Rgb([over_black(r), over_black(g), over_black(b)])
            })
        }
        other => other.into_rgb8(),
    }
}

/// Linear light → 8-bit sRGB: negative and NaN become 0, above 1 is clipped (Blender's
/// "Standard" view transform).
fn tone_map(linear: f32) -> u8 {
    let c = if linear.is_nan() {
        0.0
    } else {
        linear.clamp(0.0, 1.0)
    };
    let encoded = if c <= 0.003_130_8 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    };
    (encoded * 255.0 + 0.5).clamp(0.0, 255.0) as u8
}
