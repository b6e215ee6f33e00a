//! Checkpoints: the log's signed tree heads, in the C2SP tlog-checkpoint format carried by a C2SP
//! signed note, so that stock tlog tools and witnesses can read and check them.
//!
//! A checkpoint's text is three lines: the log's origin, the tree size in decimal, and the root hash in
//! standard base64. The note appends a blank line and one signature line per signer:
//! `— <key name> <base64(key id || signature)>`, where for Ed25519 the key id is the first four bytes of
//! SHA-256(key name || 0x0A || 0x01 || public key) and the signature covers the text exactly.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::tree::Hash;
use crate::statement::{PublicKey, SecretKey};

/// The longest note accepted (a checkpoint plus a few dozen cosignatures is far smaller).
pub const NOTE_SIZE_BYTES_MAX: usize = 16 * 1024;
/// The longest origin line.
pub const ORIGIN_LENGTH_MAX: usize = 255;
/// The signature type byte of Ed25519 in signed notes.
const ED25519_SIGNATURE_TYPE: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoteError {
    #[error("the note is larger than {NOTE_SIZE_BYTES_MAX} bytes")]
    TooLarge,
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    #[error("the checkpoint is for log {found:?}, not {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error("no valid signature by {0:?}")]
    NotSigned(String),
}

/// A tree head: the log's origin, a tree size, and the root of that tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, each on its own line.
    pub fn text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, base64::engine::general_purpose::STANDARD.encode(self.root))
    }

    /// Parses a checkpoint text (extension lines after the third are allowed and ignored).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = text.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty() && o.len() <= ORIGIN_LENGTH_MAX);
        let origin = origin.ok_or(NoteError::MalformedCheckpoint("the origin line is empty or too long"))?;
        let size = lines.next().ok_or(NoteError::MalformedCheckpoint("no tree size line"))?;
        if size.is_empty() || (size.len() > 1 && size.starts_with('0')) || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NoteError::MalformedCheckpoint("the tree size is not a decimal number without leading zeros"));
        }
        let size = size.parse().map_err(|_| NoteError::MalformedCheckpoint("the tree size is too large"))?;
        let root = lines.next().ok_or(NoteError::MalformedCheckpoint("no root hash line"))?;
        let root = base64::engine::general_purpose::STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| Hash::try_from(bytes).ok())
            .ok_or(NoteError::MalformedCheckpoint("the root hash is not 32 bytes of base64"))?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }

    /// The signed note: this checkpoint signed by `key` under the key name `origin`.
    pub fn sign(&self, key: &SecretKey) -> String {
        let text = self.text();
        let mut signature = key_id(&self.origin, &key.public_key()).to_vec();
        signature.extend_from_slice(&key.sign_raw(text.as_bytes()));
        format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.origin,
            base64::engine::general_purpose::STANDARD.encode(signature)
        )
    }
}

/// Whether `name` can be a log origin and a note key name: 1 to [`ORIGIN_LENGTH_MAX`] characters,
/// none of them whitespace, a control character or `+`.
pub fn is_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= ORIGIN_LENGTH_MAX
        && !name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '+')
}

/// The key id of an Ed25519 note key: SHA-256(name || 0x0A || 0x01 || public key)[..4].
pub fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let hash: Hash = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ED25519_SIGNATURE_TYPE])
        .chain_update(key.raw_bytes())
        .finalize()
        .into();
    [hash[0], hash[1], hash[2], hash[3]]
}

/// The verifier key string of the signed-note ecosystem: `name+hex(key id)+base64(0x01 || key)`.
pub fn verifier_key(name: &str, key: &PublicKey) -> String {
    let mut encoded = vec![ED25519_SIGNATURE_TYPE];
    encoded.extend_from_slice(key.raw_bytes());
    format!("{name}+{}+{}", hex::encode(key_id(name, key)), base64::engine::general_purpose::STANDARD.encode(encoded))
}

/// A signed note split into its text and its signature lines (name, key id, signature bytes).
pub struct Note<'a> {
    pub text: &'a str,
    pub signatures: Vec<(&'a str, [u8; 4], Vec<u8>)>,
}

impl<'a> Note<'a> {
    pub fn parse(note: &'a str) -> Result<Note<'a>, NoteError> {
        if note.len() > NOTE_SIZE_BYTES_MAX {
            return Err(NoteError::TooLarge);
        }
        let split = note.rfind("\n\n").ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
        if text.contains('\r') || !text.chars().all(|c| c == '\n' || !c.is_control()) {
            return Err(NoteError::Malformed("control characters in the text"));
        }
        let signatures =
            signatures.strip_suffix('\n').ok_or(NoteError::Malformed("the note does not end in a newline"))?;
        let mut parsed = Vec::new();
        for line in signatures.split('\n') {
            let rest =
                line.strip_prefix(SIGNATURE_PREFIX).ok_or(NoteError::Malformed("a signature line lacks the dash"))?;
            let (name, encoded) =
                rest.split_once(' ').ok_or(NoteError::Malformed("a signature line lacks its name"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            if name.is_empty() || bytes.len() < 5 {
                return Err(NoteError::Malformed("a signature line is too short"));
            }
            let id = [bytes[0], bytes[1], bytes[2], bytes[3]];
            parsed.push((name, id, bytes[4..].to_vec()));
        }
        Ok(Note { text, signatures: parsed })
    }

    /// Whether `key`, under `name`, signed this note.
    pub fn signed_by(&self, name: &str, key: &PublicKey) -> bool {
        let id = key_id(name, key);
        self.signatures.iter().any(|(signer, signer_id, signature)| {
            *signer == name && *signer_id == id && key.verify_raw(self.text.as_bytes(), signature).is_ok()
        })
    }
}

/// Verifies a signed checkpoint from the log `origin` under `key` and returns it.
pub fn open(note: &str, origin: &str, key: &PublicKey) -> Result<Checkpoint, NoteError> {
    let parsed = Note::parse(note)?;
    let checkpoint = Checkpoint::parse(parsed.text)?;
    if checkpoint.origin != origin {
        return Err(NoteError::WrongOrigin { expected: origin.to_owned(), found: checkpoint.origin });
    }
    if !parsed.signed_by(origin, key) {
        return Err(NoteError::NotSigned(origin.to_owned()));
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
    }

    #[test]
    fn a_signed_checkpoint_opens_and_any_change_fails() {
        let checkpoint = Checkpoint { origin: "kho.example/log".into(), size: 12345, root: [0xab; 32] };
        let note = checkpoint.sign(&key());
        assert!(note.starts_with(
            "kho.example/log\n12345\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\n\u{2014} kho.example/log "
        ));
        assert_eq!(open(&note, "kho.example/log", &key().public_key()), Ok(checkpoint.clone()));

        let other = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[8; 32]));
        assert!(matches!(open(&note, "kho.example/log", &other.public_key()), Err(NoteError::NotSigned(_))));
        assert!(matches!(open(&note, "other/log", &key().public_key()), Err(NoteError::WrongOrigin { .. })));
        let altered = note.replacen("12345", "12346", 1);
        assert!(matches!(open(&altered, "kho.example/log", &key().public_key()), Err(NoteError::NotSigned(_))));
        for bad in ["", "x", &note[..note.len() - 1], &note.replacen("\n\n", "\n", 1)] {
            assert!(open(bad, "kho.example/log", &key().public_key()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_cosigned_note_still_opens_under_the_log_key() {
        let checkpoint = Checkpoint { origin: "kho.example/log".into(), size: 1, root: [1; 32] };
        let mut note = checkpoint.sign(&key());
        note.push_str(
            "\u{2014} witness.example AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        );
        assert_eq!(open(&note, "kho.example/log", &key().public_key()), Ok(checkpoint));
    }

    #[test]
    fn checkpoint_text_is_strict() {
        for bad in ["", "\n1\nAAAA\n", "o\n01\n", "o\n-1\n", "o\n1\nnotbase64!\n", "o\n1\nAAAA\n"] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_verifier_key_has_the_signed_note_shape() {
        let text = verifier_key("kho.example/log", &key().public_key());
        let parts: Vec<&str> = text.split('+').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "kho.example/log");
        assert_eq!(parts[1].len(), 8);
        let decoded = base64::engine::general_purpose::STANDARD.decode(parts[2]).expect("base64");
        assert_eq!(decoded[0], 1);
        assert_eq!(&decoded[1..], key().public_key().raw_bytes());
    }
}
