//! What the trust check knows of Ed25519 keys' certificates, kept between checks.
//!
//! A deposit checks its signer twice, when it begins and again at the moment it is accepted, and each
//! check read the key's certificates from the catalog, decoded each (its certified key decompressed)
//! and its receipt and revocation: 3.9% of a deposit's server time on real documents
//! (docs/BENCHMARKS.md, "A key's standing kept between checks"). A key's standing, read once, is kept
//! here until any certificate or certificate revocation is applied (they are rare: an agency's keys
//! change a few times a year; the sequencer lets the kept standings go as it applies one, under the
//! commit lock, so before the change can be durable and count), and only when every statement it was
//! read from was durable: a statement not yet visible is read again at the next check, as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ids::{Code, Digest};

/// How many keys' standings are kept; past it, the kept ones are forgotten and read again as needed.
pub const KEY_STANDINGS_KEPT: usize = 4096;

/// One certificate of a key, as the trust check weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Standing {
    /// The agency the certificate is for.
    pub agency: Code,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    /// When its revocation was accepted, if it was.
    pub revoked_at_ms: Option<i64>,
}

/// A key's certificates as the trust check weighs them.
pub(super) type KeyStanding = Arc<[Standing]>;

/// The standings of keys by fingerprint, each with the generation it was read at.
#[derive(Default)]
pub(super) struct KeyStandings {
    /// Moves on at each accepted certificate or certificate revocation; a kept standing read at an
    /// earlier generation is not used.
    generation: AtomicU64,
    kept: Mutex<HashMap<Digest, (u64, KeyStanding)>>,
}

impl KeyStandings {
    /// The generation to read a standing at: taken before reading the catalog, so that a change
    /// accepted while it is read leaves the standing unused.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The standing of the key `fingerprint` kept at `generation`, if any.
    pub fn get(&self, fingerprint: &Digest, generation: u64) -> Option<KeyStanding> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.get(fingerprint).filter(|(at, _)| *at == generation).map(|(_, standing)| Arc::clone(standing))
    }

    /// Keeps the standing of `fingerprint` read at `generation`.
    pub fn keep(&self, fingerprint: Digest, generation: u64, standing: KeyStanding) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= KEY_STANDINGS_KEPT && !kept.contains_key(&fingerprint) {
            kept.clear();
        }
        kept.insert(fingerprint, (generation, standing));
    }

    /// A certificate or a certificate revocation was applied (or its commit attempted), under the
    /// commit lock and before any sync can make it durable: every kept standing is read again before it
    /// is used, by the acceptance checks that follow under the lock and by any other.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(agency: &str) -> KeyStanding {
        Arc::from(vec![Standing {
            agency: Code::parse("agency", agency).expect("code"),
            valid_from_ms: 0,
            valid_until_ms: 10,
            revoked_at_ms: None,
        }])
    }

    #[test]
    fn a_standing_is_used_only_at_the_generation_it_was_read_at() {
        let standings = KeyStandings::default();
        let key = Digest([7; 32]);
        let read_at = standings.generation();
        standings.keep(key, read_at, standing("000.00.00.H26"));
        assert_eq!(standings.get(&key, standings.generation()), Some(standing("000.00.00.H26")));
        assert_eq!(standings.get(&Digest([8; 32]), standings.generation()), None);
        standings.changed();
        assert_eq!(standings.get(&key, standings.generation()), None, "a change makes it read again");
        // A standing read before a change and kept after it is not used either.
        standings.keep(key, read_at, standing("000.00.00.H26"));
        assert_eq!(standings.get(&key, standings.generation()), None);
    }

    #[test]
    fn past_the_limit_the_kept_standings_are_forgotten() {
        let standings = KeyStandings::default();
        for i in 0..KEY_STANDINGS_KEPT {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            standings.keep(Digest(key), 0, standing("000.00.00.H26"));
        }
        assert!(standings.get(&Digest([0; 32]), 0).is_some());
        standings.keep(Digest([0xff; 32]), 0, standing("000.00.00.H26"));
        assert!(standings.get(&Digest([0; 32]), 0).is_none(), "cleared when full");
        assert!(standings.get(&Digest([0xff; 32]), 0).is_some());
    }
}
