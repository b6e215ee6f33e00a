//! Signed PDFs as agencies issue them (PAdES, `ETSI.CAdES.detached`, or `adbe.pkcs7.detached`): the
//! signature dictionary's `/ByteRange` and `/Contents`, found by a narrow scanner (fuzzed), and the CMS
//! signature inside checked over exactly the bytes the range names. Kho accepts a PDF only if its last
//! signature covers the whole file but its own hex string: nothing added after signing, nothing left
//! outside the range (the incremental-saving and signature-wrapping attacks need one or the other).

use super::cms::{self, CmsError, CmsSignature};
use crate::error_code::ErrorCode;

/// Signature dictionaries looked at in one file at most.
pub const PDF_SIGNATURES_MAX: usize = 16;
/// Largest `/Contents` accepted (its hex is twice this).
pub const PDF_SIGNATURE_BYTES_MAX: usize = 512 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PdfError {
    #[error("the document is not a PDF (it does not start with %PDF-)")]
    NotPdf,
    #[error("the PDF carries no signature (no /ByteRange with a /Contents signature)")]
    NoSignature,
    #[error("the PDF's signature dictionary is malformed: {0}")]
    Malformed(String),
    #[error("the PDF was changed after its last signature: the signature covers {covered} of its {length} bytes")]
    ChangedAfterSigning { covered: usize, length: usize },
    #[error(transparent)]
    Signature(#[from] CmsError),
}

impl PdfError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PdfError::NotPdf => ErrorCode::NotAPdf,
            PdfError::NoSignature => ErrorCode::NoSignature,
            PdfError::Malformed(_) => ErrorCode::MalformedSignature,
            PdfError::ChangedAfterSigning { .. } => ErrorCode::ChangedAfterSigning,
            PdfError::Signature(error) => error.code(),
        }
    }
}

/// One signature of a PDF: the byte range it covers and the CMS signature (DER) from `/Contents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfSignature {
    pub byte_range: [usize; 4],
    pub cms: Vec<u8>,
}

/// Every signature dictionary of `pdf` whose `/ByteRange` is well formed and points at a hex string.
pub fn signatures(pdf: &[u8]) -> Result<Vec<PdfSignature>, PdfError> {
    if !pdf.starts_with(b"%PDF-") {
        return Err(PdfError::NotPdf);
    }
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = find(&pdf[from..], b"/ByteRange") {
        let start = from + offset + b"/ByteRange".len();
        from = start;
        if found.len() == PDF_SIGNATURES_MAX {
            return Err(PdfError::Malformed(format!("more than {PDF_SIGNATURES_MAX} signatures")));
        }
        let byte_range = byte_range(&pdf[start..]).map_err(PdfError::Malformed)?;
        let cms = contents(pdf, byte_range).map_err(PdfError::Malformed)?;
        found.push(PdfSignature { byte_range, cms });
    }
    if found.is_empty() {
        return Err(PdfError::NoSignature);
    }
    Ok(found)
}

/// The signature that covers the whole of `pdf`, checked over its byte range.
pub fn verify(pdf: &[u8]) -> Result<(PdfSignature, CmsSignature), PdfError> {
    let all = signatures(pdf)?;
    let covered = all.iter().map(|s| s.byte_range[2] + s.byte_range[3]).max().unwrap_or(0);
    let last = all
        .into_iter()
        .find(|s| s.byte_range[2] + s.byte_range[3] == pdf.len())
        .ok_or(PdfError::ChangedAfterSigning { covered, length: pdf.len() })?;
    let [first_start, first_length, second_start, second_length] = last.byte_range;
    let signed = [&pdf[first_start..first_start + first_length], &pdf[second_start..second_start + second_length]];
    let signature = cms::verify_detached_parts(&last.cms, &signed)?;
    Ok((last, signature))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| b.is_ascii_whitespace() || *b == 0) {
        at += 1;
    }
    at
}

/// `[a b c d]` after `/ByteRange`.
fn byte_range(bytes: &[u8]) -> Result<[usize; 4], String> {
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'[') {
        return Err("/ByteRange is not followed by an array".into());
    }
    at += 1;
    let mut numbers = [0usize; 4];
    for number in &mut numbers {
        at = skip_whitespace(bytes, at);
        let digits = bytes[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 12 {
            return Err("/ByteRange holds something other than four non-negative integers".into());
        }
        let text = std::str::from_utf8(&bytes[at..at + digits]).map_err(|e| e.to_string())?;
        *number = text.parse().map_err(|_| "a /ByteRange number is out of range".to_owned())?;
        at += digits;
    }
    at = skip_whitespace(bytes, at);
    if bytes.get(at) != Some(&b']') {
        return Err("/ByteRange has more than four numbers".into());
    }
    Ok(numbers)
}

/// The DER signature in the hex string between the two ranges, which must be exactly that string.
fn contents(
    pdf: &[u8],
    [first_start, first_length, second_start, second_length]: [usize; 4],
) -> Result<Vec<u8>, String> {
    let gap_end = second_start;
    let fits = first_start == 0
        && first_length > 0
        && gap_end >= first_length + 2
        && second_start.checked_add(second_length).is_some_and(|end| end <= pdf.len());
    if !fits {
        return Err(format!(
            "/ByteRange [{first_start} {first_length} {second_start} {second_length}] does not fit the file"
        ));
    }
    let gap = &pdf[first_length..gap_end];
    if gap.first() != Some(&b'<') || gap.last() != Some(&b'>') {
        return Err("the gap in /ByteRange is not exactly the /Contents hex string".into());
    }
    let hex: Vec<u8> = gap[1..gap.len() - 1].iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if hex.len() > 2 * PDF_SIGNATURE_BYTES_MAX {
        return Err(format!("/Contents is larger than {PDF_SIGNATURE_BYTES_MAX} bytes"));
    }
    let mut bytes = hex::decode(if hex.len().is_multiple_of(2) { hex } else { [hex, vec![b'0']].concat() })
        .map_err(|_| "/Contents is not a hex string".to_owned())?;
    // The signature is written into a zero-padded placeholder: keep its DER, refuse anything else.
    let length = der_length(&bytes).ok_or("/Contents does not hold a DER signature")?;
    if bytes[length..].iter().any(|b| *b != 0) {
        return Err("/Contents holds bytes after its signature".into());
    }
    bytes.truncate(length);
    Ok(bytes)
}

/// The length of the DER SEQUENCE at the start of `bytes`, header included.
fn der_length(bytes: &[u8]) -> Option<usize> {
    if bytes.first() != Some(&0x30) {
        return None;
    }
    let first = *bytes.get(1)?;
    let (header, length) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let length = bytes.get(2..2 + count)?.iter().fold(0usize, |n, b| n << 8 | usize::from(*b));
        (2 + count, length)
    };
    let total = header.checked_add(length)?;
    (total <= bytes.len()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf_with(range: &str, contents: &str) -> Vec<u8> {
        format!("%PDF-1.7\n<< /Type /Sig /ByteRange {range} /Contents {contents} >>\n%%EOF\n").into_bytes()
    }

    #[test]
    fn ranges_that_leave_bytes_uncovered_or_do_not_frame_the_hex_string_are_refused() {
        assert_eq!(signatures(b"not a pdf").expect_err("not pdf"), PdfError::NotPdf);
        assert_eq!(signatures(b"%PDF-1.7\nno signature").expect_err("none"), PdfError::NoSignature);
        let code = |pdf: &[u8]| signatures(pdf).expect_err("refused").code();
        assert_eq!(code(&pdf_with("[0 10 20]", "<00>")), "malformed_signature");
        assert_eq!(code(&pdf_with("[0 10 20 30 40]", "<00>")), "malformed_signature");
        assert_eq!(code(&pdf_with("[5 10 20 30]", "<00>")), "malformed_signature");
        assert_eq!(code(&pdf_with("[0 -1 20 30]", "<00>")), "malformed_signature");
        assert_eq!(code(&pdf_with("[0 99999999999999 20 30]", "<00>")), "malformed_signature");
        // A range whose gap is exactly the hex string, holding a zero-padded DER value.
        let head = "%PDF-1.7\n<< /Type /Sig /ByteRange [0 0000 0000 0000] /Contents ";
        let hex = "<3003020101000000>";
        let tail = " >>\n%%EOF\n";
        let (b, c) = (head.len(), head.len() + hex.len());
        let total = c + tail.len();
        let range = format!("[0 {b:04} {c:04} {:04}]", total - c);
        let text = format!("{}{hex}{tail}", head.replace("[0 0000 0000 0000]", &range));
        let found = signatures(text.as_bytes()).expect("found");
        assert_eq!(found[0].byte_range, [0, b, c, total - c]);
        assert_eq!(found[0].cms, vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        // The same with bytes after the DER value, or a gap one byte off.
        let text = format!("{}{}{tail}", head.replace("[0 0000 0000 0000]", &range), "<3003020101000001>");
        assert_eq!(code(text.as_bytes()), "malformed_signature");
        let off = format!("[0 {:04} {c:04} {:04}]", b + 1, total - c);
        let text = format!("{}{hex}{tail}", head.replace("[0 0000 0000 0000]", &off));
        assert_eq!(code(text.as_bytes()), "malformed_signature");
    }
}
