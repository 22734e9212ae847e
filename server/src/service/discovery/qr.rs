//! QR codes from uploaded PNG images (rqrr), with limits on the image so a
//! small upload cannot unpack into a huge bitmap.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

use super::DiscoveryError;

/// Largest PNG accepted.
pub const MAX_PNG_BYTES: usize = 4 * 1024 * 1024;
const MAX_SIDE: u32 = 4096;

/// Decodes the first QR code found in a PNG image to its text.
pub fn decode_png(png: &[u8]) -> Result<String, DiscoveryError> {
    if png.len() > MAX_PNG_BYTES {
        return Err(DiscoveryError::QrImage(format!(
            "{} bytes exceeds {MAX_PNG_BYTES}",
            png.len()
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(png), ImageFormat::Png);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(64 * 1024 * 1024);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| DiscoveryError::QrImage(e.to_string()))?
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    let grid = grids
        .first()
        .ok_or_else(|| DiscoveryError::QrCode("no qr code found in the image".into()))?;
    let (_, text) = grid
        .decode()
        .map_err(|e| DiscoveryError::QrCode(e.to_string()))?;
    Ok(text)
}
