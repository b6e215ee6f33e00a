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
/// The signature type byte of Ed25519 cosignatures (C2SP tlog-cosignature, `cosignature/v1`).
const COSIGNATURE_TYPE: u8 = 0x04;
/// The first line of the message an Ed25519 cosignature signs.
const COSIGNATURE_HEADER: &str = "cosignature/v1";
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
        sign_text(&self.text(), &self.origin, &[key])
    }

    /// The handover note of a log key rotation: this checkpoint with an extension line naming the
    /// successor (`kho-key-handover <its verifier key>`), signed by the retiring key and then by the
    /// successor. The retiring key's signature thus vouches for the successor, and the successor's for
    /// the tree the retiring key last signed; stock verifiers read it as an ordinary checkpoint.
    pub fn sign_handover(&self, retiring: &SecretKey, successor: &SecretKey) -> String {
        let text =
            format!("{}{HANDOVER_EXTENSION} {}\n", self.text(), verifier_key(&self.origin, &successor.public_key()));
        sign_text(&text, &self.origin, &[retiring, successor])
    }
}

/// The checkpoint extension line of a handover note, followed by the successor's verifier key.
pub const HANDOVER_EXTENSION: &str = "kho-key-handover";

/// A note of `text` with one signature line per key, in order, each under the key name `name`.
fn sign_text(text: &str, name: &str, keys: &[&SecretKey]) -> String {
    let mut note = format!("{text}\n");
    for key in keys {
        let mut signature = key_id(name, &key.public_key()).to_vec();
        signature.extend_from_slice(&key.sign_raw(text.as_bytes()));
        note += &format!("{SIGNATURE_PREFIX}{name} {}\n", base64::engine::general_purpose::STANDARD.encode(signature));
    }
    note
}

/// Opens a handover note of the log `origin` signed by `retiring`: the checkpoint, and the successor its
/// extension line names, which must have signed it too.
pub fn open_handover(note: &str, origin: &str, retiring: &PublicKey) -> Result<(Checkpoint, PublicKey), NoteError> {
    let checkpoint = open(note, origin, retiring)?;
    let parsed = Note::parse(note)?;
    let mut named = parsed.text.lines().filter_map(|line| line.strip_prefix(HANDOVER_EXTENSION)?.strip_prefix(' '));
    let (Some(successor), None) = (named.next(), named.next()) else {
        return Err(NoteError::MalformedCheckpoint("a handover names exactly one successor"));
    };
    let successor = VerifierKey::parse(successor)?;
    if successor.role != KeyRole::Log || successor.name != origin || &successor.key == retiring {
        return Err(NoteError::MalformedCheckpoint("a handover's successor is another key of the same log"));
    }
    if !parsed.signed_by(origin, &successor.key) {
        return Err(NoteError::NotSigned(successor.to_string()));
    }
    Ok((checkpoint, successor.key))
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
    typed_key_id(name, ED25519_SIGNATURE_TYPE, key)
}

/// The key id of an Ed25519 cosigner (a witness): SHA-256(name || 0x0A || 0x04 || public key)[..4].
pub fn cosigner_key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    typed_key_id(name, COSIGNATURE_TYPE, key)
}

fn typed_key_id(name: &str, signature_type: u8, key: &PublicKey) -> [u8; 4] {
    let hash: Hash = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', signature_type])
        .chain_update(key.raw_bytes())
        .finalize()
        .into();
    [hash[0], hash[1], hash[2], hash[3]]
}

/// The verifier key string of the signed-note ecosystem: `name+hex(key id)+base64(0x01 || key)`.
pub fn verifier_key(name: &str, key: &PublicKey) -> String {
    typed_verifier_key(name, ED25519_SIGNATURE_TYPE, key)
}

/// A cosigner's (a witness's) verifier key: `name+hex(key id)+base64(0x04 || key)`.
pub fn cosigner_verifier_key(name: &str, key: &PublicKey) -> String {
    typed_verifier_key(name, COSIGNATURE_TYPE, key)
}

fn typed_verifier_key(name: &str, signature_type: u8, key: &PublicKey) -> String {
    let mut encoded = vec![signature_type];
    encoded.extend_from_slice(key.raw_bytes());
    let id = typed_key_id(name, signature_type, key);
    format!("{name}+{}+{}", hex::encode(id), base64::engine::general_purpose::STANDARD.encode(encoded))
}

/// What a verifier key string names: a log's note key or a witness's cosigning key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Signs checkpoints (signature type 0x01).
    Log,
    /// Cosigns checkpoints (signature type 0x04).
    Cosigner,
}

/// A parsed verifier key string: its name, what it signs, and the Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub role: KeyRole,
    pub key: PublicKey,
}

impl VerifierKey {
    /// Parses `name+hex(key id)+base64(type || key)`, checking the key id; only Ed25519 note keys and
    /// Ed25519 cosigner keys are known.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        // The name holds no '+', the base64 key may.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Malformed("a verifier key is name+keyid+key"));
        };
        if !is_key_name(name) {
            return Err(NoteError::Malformed("a verifier key's name is empty or has spaces"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| NoteError::Malformed("a verifier key is not base64"))?;
        let (role, raw) = match bytes.split_first() {
            Some((&ED25519_SIGNATURE_TYPE, raw)) => (KeyRole::Log, raw),
            Some((&COSIGNATURE_TYPE, raw)) => (KeyRole::Cosigner, raw),
            _ => return Err(NoteError::Malformed("a verifier key is not an Ed25519 note or cosignature key")),
        };
        let raw: [u8; 32] = raw.try_into().map_err(|_| NoteError::Malformed("an Ed25519 key is 32 bytes"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .map(PublicKey::Ed25519)
            .map_err(|_| NoteError::Malformed("not an Ed25519 public key"))?;
        let parsed = VerifierKey { name: name.to_owned(), role, key };
        if hex::encode(parsed.key_id()) != id {
            return Err(NoteError::Malformed("a verifier key's id does not match its name and key"));
        }
        Ok(parsed)
    }

    pub fn key_id(&self) -> [u8; 4] {
        match self.role {
            KeyRole::Log => key_id(&self.name, &self.key),
            KeyRole::Cosigner => cosigner_key_id(&self.name, &self.key),
        }
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role {
            KeyRole::Log => f.write_str(&verifier_key(&self.name, &self.key)),
            KeyRole::Cosigner => f.write_str(&cosigner_verifier_key(&self.name, &self.key)),
        }
    }
}

/// The message an Ed25519 cosignature signs: the `cosignature/v1` line, the time line, the note text.
fn cosigned_message(text: &str, timestamp: u64) -> String {
    format!("{COSIGNATURE_HEADER}\ntime {timestamp}\n{text}")
}

/// A witness's cosignature line over a checkpoint's note `text`, made at `timestamp` (POSIX seconds):
/// `— <name> base64(key id || timestamp (8 bytes, big-endian) || signature)`, newline-terminated.
pub fn cosign(text: &str, name: &str, key: &SecretKey, timestamp: u64) -> String {
    let mut signature = cosigner_key_id(name, &key.public_key()).to_vec();
    signature.extend_from_slice(&timestamp.to_be_bytes());
    signature.extend_from_slice(&key.sign_raw(cosigned_message(text, timestamp).as_bytes()));
    format!("{SIGNATURE_PREFIX}{name} {}\n", base64::engine::general_purpose::STANDARD.encode(signature))
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

    /// The time of the valid cosignature by the witness `name` with `key` on this note, if it has one.
    pub fn cosigned_by(&self, name: &str, key: &PublicKey) -> Option<u64> {
        let id = cosigner_key_id(name, key);
        self.signatures.iter().find_map(|(signer, signer_id, signature)| {
            if *signer != name || *signer_id != id || signature.len() != 8 + 64 {
                return None;
            }
            let timestamp = u64::from_be_bytes(signature[..8].try_into().ok()?);
            let message = cosigned_message(self.text, timestamp);
            key.verify_raw(message.as_bytes(), &signature[8..]).ok().map(|()| timestamp)
        })
    }

    /// The witnesses among `witnesses` (cosigner keys) whose cosignature on this note verifies.
    pub fn cosigners<'k>(&self, witnesses: &'k [VerifierKey]) -> Vec<&'k VerifierKey> {
        witnesses
            .iter()
            .filter(|w| w.role == KeyRole::Cosigner && self.cosigned_by(&w.name, &w.key).is_some())
            .collect()
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
    open_any(note, origin, [key])
}

/// Verifies a signed checkpoint from the log `origin` signed by at least one of `keys` (a log whose key
/// was rotated) and returns it.
pub fn open_any<'k>(
    note: &str,
    origin: &str,
    keys: impl IntoIterator<Item = &'k PublicKey>,
) -> Result<Checkpoint, NoteError> {
    let parsed = Note::parse(note)?;
    let checkpoint = Checkpoint::parse(parsed.text)?;
    if checkpoint.origin != origin {
        return Err(NoteError::WrongOrigin { expected: origin.to_owned(), found: checkpoint.origin });
    }
    if !keys.into_iter().any(|key| parsed.signed_by(origin, key)) {
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
    fn a_handover_note_names_and_is_signed_by_both_keys_and_only_those() {
        let checkpoint = Checkpoint { origin: "kho.example/log".into(), size: 9, root: [3; 32] };
        let next = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let stranger = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[10; 32]));
        let note = checkpoint.sign_handover(&key(), &next);
        assert!(note.starts_with(&checkpoint.text()), "a stock verifier reads the same checkpoint");
        assert!(
            note.contains(&format!("\n{HANDOVER_EXTENSION} {}\n", verifier_key("kho.example/log", &next.public_key())))
        );
        assert_eq!(note.matches('\u{2014}').count(), 2);
        let (opened, successor) = open_handover(&note, "kho.example/log", &key().public_key()).expect("handover");
        assert_eq!((opened, successor), (checkpoint.clone(), next.public_key()));
        assert!(
            open_handover(&note, "kho.example/log", &next.public_key()).is_err(),
            "the successor hands over to nobody"
        );
        // A signature appended by another key does not make it a successor: the text names the successor.
        let plain = checkpoint.sign(&key());
        let forged = plain.clone()
            + &sign_text(&checkpoint.text(), "kho.example/log", &[&stranger])[checkpoint.text().len() + 1..];
        assert!(open(&forged, "kho.example/log", &stranger.public_key()).is_ok());
        assert!(open_handover(&forged, "kho.example/log", &key().public_key()).is_err());
        assert!(open_handover(&plain, "kho.example/log", &key().public_key()).is_err());
        // Named but not signed by the successor.
        let unsigned = note.lines().take(6).map(|l| format!("{l}\n")).collect::<String>();
        assert!(matches!(
            open_handover(&unsigned, "kho.example/log", &key().public_key()),
            Err(NoteError::NotSigned(_))
        ));
        assert_eq!(open(&note, "kho.example/log", &key().public_key()), Ok(checkpoint.clone()));
        assert_eq!(open(&note, "kho.example/log", &next.public_key()), Ok(checkpoint.clone()));
        let keys = [stranger.public_key(), next.public_key()];
        assert_eq!(open_any(&note, "kho.example/log", &keys), Ok(checkpoint.clone()));
        assert!(matches!(open_any(&note, "kho.example/log", &[stranger.public_key()]), Err(NoteError::NotSigned(_))));
        assert!(matches!(open_any(&note, "kho.example/log", &[]), Err(NoteError::NotSigned(_))));
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
    fn a_cosignature_verifies_under_its_witness_key_only_and_keys_round_trip() {
        let checkpoint = Checkpoint { origin: "kho.example/log".into(), size: 9, root: [3; 32] };
        let witness = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let mut note = checkpoint.sign(&key());
        let line = cosign(&checkpoint.text(), "witness.example/w1", &witness, 1_700_000_000);
        assert!(line.starts_with("\u{2014} witness.example/w1 ") && line.ends_with('\n'));
        note.push_str(&line);
        let parsed = Note::parse(&note).expect("a cosigned note parses");
        assert_eq!(parsed.cosigned_by("witness.example/w1", &witness.public_key()), Some(1_700_000_000));
        assert_eq!(parsed.cosigned_by("witness.example/w2", &witness.public_key()), None);
        assert_eq!(parsed.cosigned_by("witness.example/w1", &key().public_key()), None);
        assert!(!parsed.signed_by("witness.example/w1", &witness.public_key()), "a cosignature is not a log signature");
        let other = Checkpoint { size: 10, ..checkpoint.clone() }.sign(&key()) + &line;
        assert_eq!(Note::parse(&other).expect("parses").cosigned_by("witness.example/w1", &witness.public_key()), None);

        let vkey = cosigner_verifier_key("witness.example/w1", &witness.public_key());
        let parsed = VerifierKey::parse(&vkey).expect("parses");
        assert_eq!((parsed.role, parsed.to_string()), (KeyRole::Cosigner, vkey.clone()));
        // Base64 keys may hold '+'; names never do.
        let plus = (0..=255u8)
            .map(|seed| SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32])))
            .map(|key| verifier_key("kho.example/log", &key.public_key()))
            .find(|vkey| vkey.matches('+').count() > 2)
            .expect("a key whose base64 holds '+'");
        assert_eq!(VerifierKey::parse(&plus).expect("parses").to_string(), plus);
        let log = VerifierKey::parse(&verifier_key("kho.example/log", &key().public_key())).expect("parses");
        assert_eq!((log.name.as_str(), log.role), ("kho.example/log", KeyRole::Log));
        for bad in ["", "a+b", &vkey.replacen("w1", "w2", 1), &format!("{vkey}A"), &vkey.replace('+', " ")] {
            assert!(VerifierKey::parse(bad).is_err(), "{bad:?}");
        }
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
