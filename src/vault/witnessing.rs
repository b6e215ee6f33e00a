//! Asking witnesses to cosign the log's checkpoints (C2SP tlog-witness), keeping their cosignatures,
//! and saying of every checkpoint served how many witnesses cosigned it against the quorum.
//!
//! The server asks after every checkpoint it signs, and an export asks before it hands its checkpoint
//! out. Each witness is asked for the newest checkpoint with a consistency proof from the size it last
//! cosigned (learned from its 409 answer when unknown); an answer counts only if its cosignature
//! verifies under the configured witness key. A witness that says it cosigned a larger tree than this
//! log has is reported loudly: it saw a history this vault does not hold.

use std::collections::BTreeMap;

use super::{StorageError, Vault};
use crate::log::checkpoint::Note;
use crate::witness::{self, AddCheckpoint, Answer, WitnessPeer};

/// How many configured witnesses cosigned a checkpoint, against the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Witnessed {
    pub cosigned: usize,
    /// 0 when the vault has no witnesses.
    pub quorum: usize,
}

impl Witnessed {
    pub fn below_quorum(&self) -> bool {
        self.cosigned < self.quorum
    }
}

/// Why a witness gave no cosignature this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessFailure {
    pub witness: String,
    pub reason: String,
}

/// After asking: the checkpoint's witnessing, and each witness that did not cosign, with why.
#[derive(Debug, Clone)]
pub struct WitnessRound {
    pub size: u64,
    pub witnessed: Witnessed,
    pub failures: Vec<WitnessFailure>,
}

/// Asks at most this many times per witness and round (a 409 teaches the size; one retry follows).
const ATTEMPTS_MAX: usize = 2;

impl Vault {
    /// How the checkpoint at `size` stands with the configured witnesses, and its cosignature lines.
    pub(super) fn witnessing(&self, size: u64) -> Result<(Witnessed, Vec<(String, String)>), StorageError> {
        let policy = &self.config.witnesses;
        let lines: Vec<_> = self
            .store
            .cosignatures(size)?
            .into_iter()
            .filter(|(name, _)| policy.peers.iter().any(|peer| &peer.key.name == name))
            .collect();
        Ok((Witnessed { cosigned: lines.len(), quorum: policy.quorum }, lines))
    }

    /// Asks every configured witness that has not cosigned the newest checkpoint to do so, in parallel,
    /// and keeps the cosignatures that verify. `None` when there is no checkpoint or no witness.
    pub fn cosign_latest(&self) -> Result<Option<WitnessRound>, StorageError> {
        let policy = &self.config.witnesses;
        if policy.peers.is_empty() {
            return Ok(None);
        }
        let mut known = self.witness_sizes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((size, note)) = self.store.latest_checkpoint()? else {
            return Ok(None);
        };
        let (_, have) = self.witnessing(size)?;
        let asked: Vec<&WitnessPeer> =
            policy.peers.iter().filter(|peer| !have.iter().any(|(name, _)| name == &peer.key.name)).collect();
        let answers: Vec<Result<String, String>> = std::thread::scope(|scope| {
            let known = &*known;
            let note = note.as_str();
            let handles: Vec<_> = asked
                .iter()
                .map(|peer| {
                    let old = known.get(&peer.key.name).copied().unwrap_or(0);
                    scope.spawn(move || self.ask(peer, old, size, note))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| Err("the request panicked".into())))
                .collect()
        });
        let mut fresh = Vec::new();
        let mut failures = Vec::new();
        for (peer, answer) in asked.iter().zip(answers) {
            let witness = peer.key.name.clone();
            match answer {
                Ok(line) => {
                    known.insert(witness.clone(), size);
                    fresh.push((witness, line));
                }
                Err(reason) => {
                    tracing::warn!(%witness, size, "no cosignature: {reason}");
                    failures.push(WitnessFailure { witness, reason });
                }
            }
        }
        let cosigned = have.len() + fresh.len();
        if !fresh.is_empty() {
            let reached = cosigned >= policy.quorum && have.len() < policy.quorum;
            self.store.put_cosignatures(size, &fresh, reached)?;
        }
        Ok(Some(WitnessRound { size, witnessed: Witnessed { cosigned, quorum: policy.quorum }, failures }))
    }

    /// One witness, one checkpoint: its verified cosignature line, or why there is none.
    fn ask(&self, peer: &WitnessPeer, mut old: u64, size: u64, note: &str) -> Result<String, String> {
        for _ in 0..ATTEMPTS_MAX {
            if old > size {
                return Err(format!(
                    "the witness has cosigned a tree of {old} entries of this log, larger than its newest checkpoint \
                     ({size}): it has seen a history this vault does not hold (a fork, or entries lost here)"
                ));
            }
            let proof = if old == 0 {
                Vec::new()
            } else {
                crate::log::consistency_proof(old, size, &self.store).map_err(|e| e.to_string())?
            };
            let request = AddCheckpoint { old_size: old, proof, note: note.to_owned() };
            match witness::submit(peer, &request, self.config.witnesses.timeout)? {
                Answer::Cosigned(lines) => {
                    // The answer may carry several lines; the one that verifies under this witness's key counts.
                    let line = lines
                        .lines()
                        .find(|line| {
                            Note::parse(&format!("{note}{line}\n"))
                                .is_ok_and(|one| one.cosigned_by(&peer.key.name, &peer.key.key).is_some())
                        })
                        .ok_or("its answer carries no cosignature that verifies under its key")?;
                    return Ok(format!("{line}\n"));
                }
                Answer::Conflict(latest) if latest != old => old = latest,
                Answer::Conflict(latest) => return Err(format!("it insists on size {latest}")),
                Answer::Refused(status, body) => return Err(format!("refused with {status}: {}", body.trim())),
            }
        }
        Err("it kept answering with another size".into())
    }
}

/// The sizes each witness last cosigned, as this vault learned them (by witness name).
pub(super) type WitnessSizes = BTreeMap<String, u64>;
