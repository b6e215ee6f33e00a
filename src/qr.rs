//! QR codes: the verification link printed on a paper copy of a result (Decree 45/2020 Art. 18), and
//! share links shown to a citizen. SVG for pages and print templates, PNG for everything else; both
//! with the four-module quiet zone scanners need, at error-correction level M (a smudged print still
//! reads).

use qrcode::{Color, EcLevel, QrCode};

use crate::ids::Digest;

/// Longest text put in a QR code (a verification or share URL is far shorter).
pub const QR_TEXT_LENGTH_BYTES_MAX: usize = 1024;
/// Largest PNG module, in pixels.
pub const QR_MODULE_PIXELS_MAX: u32 = 32;
const QUIET_ZONE_MODULES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the text is too long for a QR code ({0} bytes; at most {QR_TEXT_LENGTH_BYTES_MAX})")]
    TooLong(usize),
    #[error("a module is 1 to {QR_MODULE_PIXELS_MAX} pixels")]
    ModuleSize,
    #[error("cannot encode the QR code: {0}")]
    Encode(String),
}

/// The public page that verifies record `id`: `<base>/verify/<id>`.
pub fn verification_url(base: &str, id: &Digest) -> String {
    format!("{}/verify/{id}", base.trim_end_matches('/'))
}

fn encode(text: &str) -> Result<QrCode, QrError> {
    if text.len() > QR_TEXT_LENGTH_BYTES_MAX {
        return Err(QrError::TooLong(text.len()));
    }
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| QrError::Encode(e.to_string()))
}

/// An SVG image of `text`, scaling to whatever size it is shown at.
pub fn svg(text: &str) -> Result<String, QrError> {
    let code = encode(text)?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .quiet_zone(true)
        .module_dimensions(1, 1)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// A greyscale PNG of `text`, `module_pixels` pixels per module.
pub fn png(text: &str, module_pixels: u32) -> Result<Vec<u8>, QrError> {
    if !(1..=QR_MODULE_PIXELS_MAX).contains(&module_pixels) {
        return Err(QrError::ModuleSize);
    }
    let code = encode(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let scale = module_pixels as usize;
    let side = (modules + 2 * QUIET_ZONE_MODULES) * scale;
    let mut pixels = vec![255u8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (x, y) = (index % modules + QUIET_ZONE_MODULES, index / modules + QUIET_ZONE_MODULES);
        for row in y * scale..(y + 1) * scale {
            pixels[row * side + x * scale..row * side + (x + 1) * scale].fill(0);
        }
    }
    let mut out = Vec::new();
    let side_u32 = u32::try_from(side).map_err(|_| QrError::ModuleSize)?;
    let mut encoder = png::Encoder::new(&mut out, side_u32, side_u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| QrError::Encode(e.to_string()))?;
    writer.write_image_data(&pixels).map_err(|e| QrError::Encode(e.to_string()))?;
    writer.finish().map_err(|e| QrError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_svg_carry_the_same_modules_with_a_quiet_zone() {
        let text = "https://kho.example.vn/verify/00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let code = encode(text).expect("encode");
        let modules = code.width();
        let image = png(text, 3).expect("png");
        let decoder = png::Decoder::new(std::io::Cursor::new(image));
        let mut reader = decoder.read_info().expect("png header");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut pixels).expect("frame");
        let side = (modules + 8) * 3;
        assert_eq!((info.width as usize, info.height as usize), (side, side));
        // Every module's pixels are the module's colour; the quiet zone is white.
        for (index, color) in code.to_colors().iter().enumerate() {
            let (x, y) = ((index % modules + 4) * 3 + 1, (index / modules + 4) * 3 + 1);
            assert_eq!(pixels[y * side + x] == 0, *color == Color::Dark, "module {index}");
        }
        assert!(pixels[..side * 12].iter().all(|p| *p == 255), "quiet zone");
        let image = svg(text).expect("svg");
        assert!(image.starts_with("<?xml") && image.contains("<svg") && image.contains("#000000"));
        assert!(matches!(png(text, 0), Err(QrError::ModuleSize)));
        assert!(matches!(svg(&"x".repeat(QR_TEXT_LENGTH_BYTES_MAX + 1)), Err(QrError::TooLong(_))));
    }
}
