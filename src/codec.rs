//! Encoding of Kho's internal stored values: one version byte, then bincode.
//!
//! This is the only module that names bincode. Nothing an outsider must verify passes through here:
//! signed statements keep their own canonical bytes (see `statement`), which stored values carry as
//! opaque byte strings. The layouts are pinned by golden fixtures (tests/format_compat.rs) and by
//! docs/FORMAT.md.

use bincode::Options as _;
use serde::{de::DeserializeOwned, Serialize};

/// The version byte in front of every stored value this build writes.
pub const VALUE_VERSION: u8 = 3;
/// Largest stored catalog value that is decoded; anything larger is corruption.
pub const VALUE_SIZE_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("stored value is empty")]
    Empty,
    #[error("stored value has version {0}; this build reads version {VALUE_VERSION}")]
    UnsupportedVersion(u8),
    #[error("stored value does not decode: {0}")]
    Malformed(String),
}

fn options() -> impl bincode::Options {
    // Fixed-width little-endian integers, a size limit against hostile lengths, and no trailing bytes.
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(VALUE_SIZE_BYTES_MAX)
        .reject_trailing_bytes()
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![VALUE_VERSION];
    // Serializing our own plain structs into a Vec cannot fail short of allocation failure.
    options().serialize_into(&mut bytes, value).expect("stored values always serialize");
    bytes
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != VALUE_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    options().deserialize(body).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        number: u64,
        text: String,
    }

    #[test]
    fn round_trip_and_rejections() {
        let value = Sample { number: 7, text: "bảy".into() };
        let bytes = encode(&value);
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(decode::<Sample>(&bytes), Ok(value));
        assert_eq!(decode::<Sample>(&[]), Err(CodecError::Empty));
        assert_eq!(decode::<Sample>(&[9, 0]), Err(CodecError::UnsupportedVersion(9)));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode::<Sample>(&trailing), Err(CodecError::Malformed(_))));
        // A hostile length prefix must not allocate gigabytes.
        let mut hostile = vec![VALUE_VERSION];
        hostile.extend_from_slice(&7u64.to_le_bytes());
        hostile.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode::<Sample>(&hostile), Err(CodecError::Malformed(_))));
    }
}
