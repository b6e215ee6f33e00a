//! Deterministic sample documents and records, for `kho bench`, the benchmarks, the fuzz targets and
//! the tests: the same inputs everywhere, reproducible from a seed.

use crate::ids::{Code, Date, Digest, MediaType, OwnerId, Title};
use crate::statement::Record;

/// The citizen of the demo data set (`kho demo`, `kho serve --demo`, the dev sign-in page).
pub const DEMO_OWNER: &str = "001204012345";

/// `len` bytes from `seed`: text-like bytes that compress the way XML and text PDFs do, or
/// pseudo-random bytes that do not compress at all, like scans.
pub fn document(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let text = "<hoSo><maHoSo>H26.22-240301-0001</maHoSo><chuHoSo>Nguyễn Văn An</chuHoSo><giayTo>Giấy khai sinh</giayTo></hoSo>\n".as_bytes();
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match (compressible, i % 97) {
                (true, 0) => b'0' + (state % 10) as u8,
                (true, _) => text[i % text.len()],
                (false, _) => state as u8,
            }
        })
        .collect()
}

/// A birth-certificate record of `owner` issued by `agency` for `content`, signed at `signed_at_ms`
/// (which also makes otherwise equal records distinct).
pub fn record(content: &[u8], owner: &OwnerId, agency: &Code, signed_at_ms: i64) -> Record {
    // The literals are valid by construction; a failure here is a bug in this file.
    let code = |field, text| Code::parse(field, text).expect("sample code is valid");
    let date = Date::from_yyyymmdd(20240301).expect("sample date is valid");
    Record {
        owner: owner.clone(),
        document_type: code("document type", "GKS"),
        title: Title::parse("Giấy khai sinh").expect("sample title is valid"),
        issuer_agency: agency.clone(),
        issued_on: date,
        valid_from: date,
        valid_until: None,
        procedure: code("procedure", "1.001193"),
        dossier: code("dossier", "H26.22-240301-0001"),
        blake3: Digest(*blake3::hash(content).as_bytes()),
        sha256: Digest::sha256(content),
        size_bytes: content.len() as u64,
        media_type: MediaType::parse("application/pdf").expect("sample media type is valid"),
        supersedes: None,
        signed_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_valid() {
        assert_eq!(document(1000, 7, true), document(1000, 7, true));
        assert_ne!(document(1000, 7, false), document(1000, 8, false));
        let owner = OwnerId::parse("001204012345").expect("owner");
        let agency = Code::parse("agency", "000.00.00.H26").expect("agency");
        let record = record(b"x", &owner, &agency, 1);
        assert_eq!(record.title.as_str(), "Giấy khai sinh");
        assert_eq!(record.issued_on.to_string(), "2024-03-01");
        let compressed = zstd::bulk::compress(&document(65536, 1, true), 3).expect("zstd");
        assert!(compressed.len() < 65536 / 5, "text-like samples compress");
        let compressed = zstd::bulk::compress(&document(65536, 1, false), 3).expect("zstd");
        assert!(compressed.len() > 65536, "random samples do not");
    }
}
