//! Arbitrary input to every parser of the transparency log's untrusted bytes (entries, access events,
//! signed notes, key handovers and cosignatures, verifier keys, witness requests, checkpoints, tile paths, owner-map values) and to the three proof verifiers (inclusion,
//! consistency, owner map): never a panic; whatever decodes
//! re-encodes canonically.
#![no_main]

use kho::log::checkpoint::{self, Note};
use kho::log::map::{self, MapProof};
use kho::log::{verify_consistency, verify_inclusion, ChainHead, Checkpoint, Entry, Tile};
use kho::statement::SecretKey;
use kho::vault::AccessEvent;
use kho::witness::AddCheckpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], u64, u64, Vec<[u8; 32]>)| {
    let (bytes, first, second, hashes) = input;
    if let Ok(request) = AddCheckpoint::parse(bytes) {
        assert_eq!(AddCheckpoint::parse(request.encode().as_bytes()).ok(), Some(request));
    }
    if let Ok(entry) = Entry::decode(bytes) {
        assert_eq!(entry.encode(), bytes);
    }
    if let Ok(head) = ChainHead::decode(bytes) {
        assert_eq!(head.encode(), bytes);
    }
    if let Ok(event) = AccessEvent::decode(bytes) {
        assert_eq!(event.encode(), bytes);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let key = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[3; 32])).public_key();
        if let Ok(note) = Note::parse(text) {
            let _ = note.signed_by("kho.example/log", &key);
            let _ = note.cosigned_by("witness.example/w1", &key);
        }
        if let Ok(vkey) = checkpoint::VerifierKey::parse(text) {
            assert_eq!(checkpoint::VerifierKey::parse(&vkey.to_string()), Ok(vkey));
        }
        if let Ok(parsed) = Checkpoint::parse(text) {
            assert_eq!(Checkpoint::parse(&parsed.text()), Ok(parsed));
        }
        if let Some(tile) = Tile::parse(text) {
            assert_eq!(tile.path(), format!("tile/{text}"));
        }
        let _ = checkpoint::open(text, "kho.example/log", &key);
        // A handover note (key rotation): a successor is named only if it parses and signed too.
        if let Ok((_, successor)) = checkpoint::open_handover(text, "kho.example/log", &key) {
            assert!(Note::parse(text).is_ok_and(|note| note.signed_by("kho.example/log", &successor)));
        }
    }
    let (leaf, root) = ([0u8; 32], [1u8; 32]);
    let _ = verify_inclusion(first, second, &leaf, &hashes, &root);
    let _ = verify_consistency(first, second, &leaf, &root, &hashes);
    let key = hashes.first().copied().unwrap_or_default();
    let leaf = (first % 3 == 0).then(|| (hashes.last().copied().unwrap_or_default(), bytes.to_vec()));
    let _ = map::verify(&root, &key, &MapProof { siblings: hashes, leaf });
});
