//! Image decoding: JPEG and PNG files to RGB as Pillow's `Image.open(..).convert('RGB')` gives
//! them.
use anyhow::{bail, Context, Result};
use image::RgbImage;
use std::path::Path;

/// Reads and decodes an image file (JPEG or PNG) to RGB as PIL's `Image.open(..).convert('RGB')`
/// does (see [`decode_rgb`]). The file is read by [`crate::io::read_regular_file`]: a regular
/// file of at most [`crate::io::MAX_IMAGE_BYTES`], so a FIFO or device named like an image never
/// blocks or streams. A missing, unreadable, irregular, oversized, corrupt, truncated or empty
/// file is an error naming it.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = crate::io::read_regular_file(path, "image", crate::io::MAX_IMAGE_BYTES)?;
    decode_rgb(&bytes).with_context(|| {
        format!(
            "cannot decode image {} (expected a JPEG or PNG file)",
            path.display()
        )
    })
}

/// Decodes an in-memory JPEG or PNG to RGB as PIL's `convert('RGB')`: grey becomes R = G = B,
/// alpha (and a PNG's `tRNS` transparency) is dropped. 16-bit PNGs as Pillow 13 reads them:
/// colour (with or without alpha) and grey with alpha keep each sample's high byte (`v >> 8`);
/// grey without alpha is PIL's mode `I;16`, whose conversion clips (`min(v, 255)`).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let img = if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes)?
    } else {
        let grey_png = png_colour_type(bytes) == Some(PNG_GREY);
        pil_rgb(image::load_from_memory(bytes)?, grey_png)
    };
    if img.width() == 0 || img.height() == 0 {
        bail!("the image has no pixels ({}x{})", img.width(), img.height());
    }
    Ok(img)
}

/// PNG colour type 0: grey without an alpha channel.
const PNG_GREY: u8 = 0;

/// The colour type in a PNG's header (the `IHDR` chunk, which must come first), if `bytes` is one.
fn png_colour_type(bytes: &[u8]) -> Option<u8> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    // Signature, chunk length, "IHDR", width, height, bit depth, then the colour type.
    let ihdr = bytes.strip_prefix(SIGNATURE)?;
    (ihdr.get(4..8)? == b"IHDR").then(|| ihdr.get(17).copied())?
}

/// `img` as PIL's `convert('RGB')` gives it. `grey_png`: the file is a grey PNG without an alpha
/// channel, which the decoder expands to grey + alpha when it has `tRNS` transparency (PIL keeps
/// mode `I;16` for it at 16 bits, and ignores the transparency).
fn pil_rgb(img: image::DynamicImage, grey_png: bool) -> RgbImage {
    use image::DynamicImage as D;
    let (w, h) = (img.width(), img.height());
    let rgb = |samples: Vec<u8>| {
        RgbImage::from_raw(w, h, samples).unwrap_or_else(|| unreachable!("3 samples per pixel"))
    };
    fn high(v: u16) -> u8 {
        (v >> 8) as u8
    }
    fn clip(v: u16) -> u8 {
        v.min(255) as u8
    }
    match img {
        D::ImageRgb16(b) => rgb(b.into_raw().into_iter().map(high).collect()),
        D::ImageRgba16(b) => rgb(b
            .pixels()
            .flat_map(|p| [p[0], p[1], p[2]].map(high))
            .collect()),
        D::ImageLuma16(b) => rgb(b
            .into_raw()
            .into_iter()
            .flat_map(|v| [clip(v); 3])
            .collect()),
        D::ImageLumaA16(b) => {
            let to8 = if grey_png { clip } else { high };
            rgb(b.pixels().flat_map(|p| [to8(p[0]); 3]).collect())
        }
        other => other.into_rgb8(),
    }
}

/// JPEG straight to RGB. A stream that ends early is an error (as in PIL); other departures from
/// the standard that a lenient decoder can get past (stray bytes between segments, unexpected
/// markers) are accepted, as libjpeg accepts them with a warning.
fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let decode = |strict: bool| -> Result<RgbImage> {
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::RGB)
            .set_strict_mode(strict);
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        let pixels = decoder.decode().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (w, h) = decoder.dimensions().context("JPEG without dimensions")?;
        RgbImage::from_raw(w as u32, h as u32, pixels).with_context(|| {
            format!("JPEG decoder returned the wrong amount of data for {w}x{h} RGB")
        })
    };
    match decode(true) {
        Ok(img) => Ok(img),
        Err(e) => {
            let msg = e.to_string();
            if ["Premature end", "Exhausted data", "No more bytes"]
                .iter()
                .any(|s| msg.contains(s))
            {
                bail!("truncated JPEG data ({msg})");
            }
            decode(false)
        }
    }
}
