//! Witnesses (C2SP tlog-witness, tlog-cosignature): a second party that cosigns a log's checkpoints
//! only if each extends the last one it cosigned, so that a log cannot show two histories to two
//! parties without one of its witnesses refusing.
//!
//! Both sides are here. [`Witness`] is what `kho witness` runs: its own Ed25519 key, the logs it follows
//! (by verifier key), and per log the newest checkpoint it cosigned, kept in a file replaced durably
//! before any cosignature leaves. [`submit`] is what a vault uses to ask a witness, and [`WitnessPeer`]
//! and [`WitnessPolicy`] are how a vault is configured with its witnesses and quorum.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::keys::{self, KeyFileError};
use crate::log::checkpoint::{self, Checkpoint, KeyRole, Note, VerifierKey, NOTE_SIZE_BYTES_MAX};
use crate::log::{self, Hash};
use crate::statement::SecretKey;

/// The most consistency proof lines a request may carry (tlog-witness).
pub const PROOF_LINES_MAX: usize = 63;
/// The largest add-checkpoint body: the old size line, the proof lines, and a note.
pub const REQUEST_SIZE_BYTES_MAX: usize = 32 + PROOF_LINES_MAX * 46 + 1 + NOTE_SIZE_BYTES_MAX;
/// The witness's signing key inside its data directory.
pub const WITNESS_KEY_FILE: &str = "witness-key.pem";
/// Its verifier key string, written at start for operators to hand to the logs' operators.
pub const WITNESS_VKEY_FILE: &str = "witness-key.vkey";
/// The folder of the newest cosigned checkpoint of each log.
const STATE_DIRECTORY: &str = "state";
/// The folder where properly signed checkpoints that were refused as inconsistent are kept: each is a
/// log's signature on a history that contradicts the one cosigned, the evidence of a split view.
pub const REFUSED_DIRECTORY: &str = "refused";
/// How the 409 answer's body is typed.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An add-checkpoint request: the size the client believes the witness last cosigned, a consistency
/// proof from it, and the signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    pub note: String,
}

impl AddCheckpoint {
    /// The request body: `old N`, one base64 hash per line, a blank line, the note.
    pub fn encode(&self) -> String {
        let mut body = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            body.push_str(&base64::engine::general_purpose::STANDARD.encode(hash));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }

    /// Parses a request body strictly (a 400 for anything else).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, AddError> {
        let bad = |reason: &str| AddError::BadRequest(reason.to_owned());
        if body.len() > REQUEST_SIZE_BYTES_MAX {
            return Err(bad("the request is too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("the request is not UTF-8"))?;
        let (head, note) = text.split_once("\n\n").ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines.next().and_then(|line| line.strip_prefix("old ")).ok_or_else(|| bad("no `old` line"))?;
        if old.is_empty() || (old.len() > 1 && old.starts_with('0')) || !old.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the old size is not a decimal number without leading zeros"));
        }
        let old_size = old.parse().map_err(|_| bad("the old size is too large"))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == PROOF_LINES_MAX {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let hash = base64::engine::general_purpose::STANDARD
                .decode(line)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .ok_or_else(|| bad("a consistency proof line is not a base64 hash"))?;
            proof.push(hash);
        }
        Ok(AddCheckpoint { old_size, proof, note: note.to_owned() })
    }
}

/// Why a witness did not cosign, each with the status tlog-witness gives it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("this witness does not follow log {0:?}")]
    UnknownLog(String),
    #[error("the checkpoint carries no valid signature by log {0:?}'s key")]
    NotSigned(String),
    #[error("the witness last cosigned this log at size {latest}, not the request's old size")]
    Conflict { latest: u64 },
    #[error("the checkpoint is not consistent with the one this witness cosigned: {0}")]
    Inconsistent(String),
    #[error("the witness's state cannot be read or written: {0}")]
    State(String),
}

impl AddError {
    /// The HTTP status tlog-witness prescribes.
    pub fn status(&self) -> u16 {
        match self {
            AddError::BadRequest(_) => 400,
            AddError::UnknownLog(_) => 404,
            AddError::NotSigned(_) => 403,
            AddError::Conflict { .. } => 409,
            AddError::Inconsistent(_) => 422,
            AddError::State(_) => 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("{0:?} cannot name a witness: 1 to 255 characters, no spaces, control characters or '+'")]
    BadName(String),
    #[error("{0} is a witness's key; a witness follows logs by their checkpoint keys")]
    NotALogKey(String),
    #[error("the same key of log {0:?} is given twice")]
    DuplicateLog(String),
    #[error("cannot use the witness folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A witness: its key and name, the logs it follows, and its state on disk.
pub struct Witness {
    name: String,
    key: SecretKey,
    /// By origin: the log's keys (several while its operator rotates its key).
    logs: BTreeMap<String, Vec<VerifierKey>>,
    dir: PathBuf,
    /// The check of the old size and the update of the state are one step (tlog-witness: otherwise two
    /// requests could roll the state back).
    state: Mutex<()>,
}

impl Witness {
    /// Opens (or creates) a witness in `dir`, creating its key on first start, following `logs` (each
    /// log's checkpoint verifier key; the key's name is the log's origin; a log that rotates its key is
    /// followed by both keys under the same origin, sharing one state).
    pub fn open(dir: &Path, name: &str, logs: Vec<VerifierKey>) -> Result<Witness, WitnessError> {
        if !checkpoint::is_key_name(name) {
            return Err(WitnessError::BadName(name.to_owned()));
        }
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WitnessError::Io { path, source }
        };
        let state = dir.join(STATE_DIRECTORY);
        std::fs::create_dir_all(&state).map_err(io(&state))?;
        let key = keys::load_or_create_secret_key(&dir.join(WITNESS_KEY_FILE))?;
        let mut followed: BTreeMap<String, Vec<VerifierKey>> = BTreeMap::new();
        for log in logs {
            if log.role != KeyRole::Log {
                return Err(WitnessError::NotALogKey(log.to_string()));
            }
            let keys = followed.entry(log.name.clone()).or_default();
            if keys.contains(&log) {
                return Err(WitnessError::DuplicateLog(log.name));
            }
            keys.push(log);
        }
        let witness =
            Witness { name: name.to_owned(), key, logs: followed, dir: dir.to_owned(), state: Mutex::new(()) };
        let vkey_path = dir.join(WITNESS_VKEY_FILE);
        crate::files::replace_durably(&vkey_path, format!("{}\n", witness.verifier_key()).as_bytes())
            .map_err(io(&vkey_path))?;
        Ok(witness)
    }

    /// The witness's cosigner verifier key, which a vault's operator configures.
    pub fn verifier_key(&self) -> String {
        checkpoint::cosigner_verifier_key(&self.name, &self.key.public_key())
    }

    /// The logs followed, by origin.
    pub fn logs(&self) -> impl Iterator<Item = &str> {
        self.logs.keys().map(String::as_str)
    }

    fn state_path(&self, origin: &str) -> PathBuf {
        let name = hex::encode(&Sha256::digest(origin.as_bytes())[..16]);
        self.dir.join(STATE_DIRECTORY).join(format!("{name}.note"))
    }

    /// The newest checkpoint cosigned for `origin`, re-verified under the log's key.
    pub fn latest(&self, origin: &str) -> Result<Option<Checkpoint>, AddError> {
        let keys = self.logs.get(origin).ok_or_else(|| AddError::UnknownLog(origin.to_owned()))?;
        let path = self.state_path(origin);
        let Some(bytes) = crate::files::read_if_exists(&path).map_err(|e| AddError::State(e.to_string()))? else {
            return Ok(None);
        };
        let note = String::from_utf8(bytes).map_err(|_| AddError::State(format!("{} is not text", path.display())))?;
        checkpoint::open_any(&note, origin, keys.iter().map(|log| &log.key))
            .map(Some)
            .map_err(|error| AddError::State(format!("{} does not verify: {error}", path.display())))
    }

    /// Handles an add-checkpoint request at `now` (POSIX seconds): the cosignature line, once the new
    /// state is durable.
    pub fn add_checkpoint(&self, body: &[u8], now: u64) -> Result<String, AddError> {
        let request = AddCheckpoint::parse(body)?;
        let note =
            Note::parse(&request.note).map_err(|error| AddError::BadRequest(format!("the checkpoint: {error}")))?;
        let checkpoint =
            Checkpoint::parse(note.text).map_err(|error| AddError::BadRequest(format!("the checkpoint: {error}")))?;
        let keys = self.logs.get(&checkpoint.origin).ok_or_else(|| AddError::UnknownLog(checkpoint.origin.clone()))?;
        if !keys.iter().any(|log| note.signed_by(&log.name, &log.key)) {
            return Err(AddError::NotSigned(checkpoint.origin.clone()));
        }
        if request.old_size > checkpoint.size {
            return Err(AddError::BadRequest(format!(
                "the old size {} is larger than the checkpoint's {}",
                request.old_size, checkpoint.size
            )));
        }
        let _state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let latest = self.latest(&checkpoint.origin)?;
        let (latest_size, latest_root) = match &latest {
            Some(latest) => (latest.size, latest.root),
            None => (0, log::empty_root()),
        };
        if request.old_size != latest_size {
            return Err(AddError::Conflict { latest: latest_size });
        }
        if checkpoint.size == 0 && checkpoint.root != log::empty_root() {
            return Err(self.refuse(&request, &checkpoint, "a checkpoint of size 0 must have the empty tree's root"));
        }
        if let Err(error) =
            log::verify_consistency(latest_size, checkpoint.size, &latest_root, &checkpoint.root, &request.proof)
        {
            let reason = format!("from size {latest_size} to {}: {error}", checkpoint.size);
            return Err(self.refuse(&request, &checkpoint, &reason));
        }
        // The note is kept as signed; its log signature is checked again whenever the state is read.
        crate::files::replace_durably(&self.state_path(&checkpoint.origin), request.note.as_bytes())
            .map_err(|error| AddError::State(error.to_string()))?;
        Ok(checkpoint::cosign(note.text, &self.name, &self.key, now))
    }

    /// Keeps a refused (but properly signed) checkpoint as evidence, and says why it was refused.
    fn refuse(&self, request: &AddCheckpoint, checkpoint: &Checkpoint, reason: &str) -> AddError {
        let folder = self.dir.join(REFUSED_DIRECTORY);
        let name = format!(
            "{}-{}-{}.note",
            hex::encode(&Sha256::digest(checkpoint.origin.as_bytes())[..8]),
            checkpoint.size,
            hex::encode(&checkpoint.root[..8])
        );
        let kept = std::fs::create_dir_all(&folder)
            .and_then(|()| crate::files::replace_durably(&folder.join(&name), request.note.as_bytes()));
        tracing::error!(
            origin = %checkpoint.origin,
            size = checkpoint.size,
            root = %hex::encode(checkpoint.root),
            evidence = %folder.join(&name).display(),
            kept = kept.is_ok(),
            "REFUSED a checkpoint the log signed that contradicts the history this witness cosigned: {reason}"
        );
        AddError::Inconsistent(reason.to_owned())
    }
}

/// A witness a vault asks to cosign its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessPeer {
    /// The witness's cosigner key (`name+id+key`, signature type 0x04).
    pub key: VerifierKey,
    /// Its submission prefix: `<url>/add-checkpoint` is posted to.
    pub url: String,
}

/// How a vault uses witnesses: whom it asks, how many cosignatures make a checkpoint witnessed, and
/// whether it serves only witnessed checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessPolicy {
    pub peers: Vec<WitnessPeer>,
    /// Cosignatures a checkpoint needs; 0 when no witnesses are configured.
    pub quorum: usize,
    /// Serve checkpoints, proofs and bundles only against a checkpoint that reached the quorum (a
    /// reader then never relies on a history no witness saw); otherwise the newest checkpoint is served
    /// and marked as below quorum.
    pub fail_closed: bool,
    /// How long one request to a witness may take.
    pub timeout: Duration,
}

/// The quorum of `witnesses` when none is given: a majority of them.
pub fn majority(witnesses: usize) -> usize {
    if witnesses == 0 {
        0
    } else {
        witnesses / 2 + 1
    }
}

/// Default time allowed for one witness request.
pub const WITNESS_TIMEOUT_MS_DEFAULT: u64 = 5_000;

impl Default for WitnessPolicy {
    fn default() -> Self {
        WitnessPolicy {
            peers: Vec::new(),
            quorum: 0,
            fail_closed: false,
            timeout: Duration::from_millis(WITNESS_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// What a witness answered.
#[derive(Debug)]
pub enum Answer {
    /// Cosigned: the signature lines.
    Cosigned(String),
    /// 409: it last cosigned this size.
    Conflict(u64),
    /// Any other refusal: the status and the witness's words.
    Refused(u16, String),
}

/// Posts `request` to `peer`; a transport failure is an error, any answer is an [`Answer`].
pub fn submit(peer: &WitnessPeer, request: &AddCheckpoint, timeout: Duration) -> Result<Answer, String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
    let url = format!("{}/add-checkpoint", peer.url.trim_end_matches('/'));
    let mut response = agent.post(&url).send(request.encode()).map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(NOTE_SIZE_BYTES_MAX as u64)
        .read_to_string()
        .map_err(|e| format!("reading {url}'s answer: {e}"))?;
    Ok(match status {
        200 => Answer::Cosigned(body),
        409 => match body.trim_end_matches('\n').parse() {
            Ok(size) => Answer::Conflict(size),
            Err(_) => Answer::Refused(409, body),
        },
        status => Answer::Refused(status, body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::PublicKey;

    fn log_key() -> SecretKey {
        SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[5; 32]))
    }

    const ORIGIN: &str = "kho.example/log";

    /// A log of `size` leaves `seed || i`: its checkpoint note, and the tree for proofs.
    fn log_at(size: u64, seed: u8) -> (String, log::MemoryTree) {
        let mut tree = log::MemoryTree::new();
        for i in 0..size {
            tree.push(log::leaf_hash(&[seed, i as u8]));
        }
        let checkpoint = Checkpoint { origin: ORIGIN.into(), size, root: tree.root(size) };
        (checkpoint.sign(&log_key()), tree)
    }

    fn witness(dir: &Path) -> Witness {
        let log = VerifierKey::parse(&checkpoint::verifier_key(ORIGIN, &log_key().public_key())).expect("vkey");
        Witness::open(dir, "witness.example/w1", vec![log]).expect("witness")
    }

    fn witness_key(witness: &Witness) -> PublicKey {
        VerifierKey::parse(&witness.verifier_key()).expect("vkey").key
    }

    #[test]
    fn a_request_round_trips_and_malformed_ones_are_refused() {
        let request =
            AddCheckpoint { old_size: 20, proof: vec![[1; 32], [2; 32]], note: "o\n1\nAAAA\n\n— o x\n".into() };
        assert_eq!(AddCheckpoint::parse(request.encode().as_bytes()).expect("parses"), request);
        for bad in ["", "old 1\n", "old 01\n\nx", "new 1\n\nx", "old 1\nnothash\n\nx", "old -1\n\nx"] {
            assert!(matches!(AddCheckpoint::parse(bad.as_bytes()), Err(AddError::BadRequest(_))), "{bad:?}");
        }
        let many = format!("old 1\n{}\nnote", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n".repeat(64));
        assert!(matches!(AddCheckpoint::parse(many.as_bytes()), Err(AddError::BadRequest(_))));
    }

    #[test]
    fn a_witness_cosigns_a_growing_log_and_refuses_a_fork_keeping_the_evidence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let witness = witness(dir.path());
        let (first, _) = log_at(5, 1);
        let add = |old_size, proof, note: &str| {
            witness.add_checkpoint(AddCheckpoint { old_size, proof, note: note.to_owned() }.encode().as_bytes(), 1_000)
        };
        let line = add(0, vec![], &first).expect("the first checkpoint is cosigned");
        let cosigned = format!("{first}{line}");
        let note = Note::parse(&cosigned).expect("parses");
        assert_eq!(note.cosigned_by("witness.example/w1", &witness_key(&witness)), Some(1_000));

        // A stale old size is a conflict naming the witness's size.
        let (grown, tree) = log_at(9, 1);
        assert!(matches!(add(0, vec![], &grown), Err(AddError::Conflict { latest: 5 })));
        let proof = tree.consistency_proof(5, 9);
        add(5, proof, &grown).expect("a consistent extension is cosigned");
        assert_eq!(witness.latest(ORIGIN).expect("state").expect("some").size, 9);

        // The same log key signs another history: refused, the witness's state unchanged, the evidence kept.
        let (fork, fork_tree) = log_at(12, 2);
        let error = add(9, fork_tree.consistency_proof(9, 12), &fork).expect_err("a fork is refused");
        assert!(matches!(error, AddError::Inconsistent(_)), "{error}");
        assert_eq!(error.status(), 422);
        assert_eq!(witness.latest(ORIGIN).expect("state").expect("some").size, 9);
        let kept: Vec<_> = std::fs::read_dir(dir.path().join(REFUSED_DIRECTORY)).expect("evidence").collect();
        assert_eq!(kept.len(), 1);

        // Unknown logs, unsigned checkpoints, sizes out of order.
        let stranger = Checkpoint { origin: "other/log".into(), size: 1, root: [0; 32] }.sign(&log_key());
        assert_eq!(add(0, vec![], &stranger).expect_err("unknown").status(), 404);
        let forged = Checkpoint { origin: ORIGIN.into(), size: 10, root: [0; 32] }.sign(&SecretKey::generate());
        assert_eq!(add(9, vec![], &forged).expect_err("unsigned").status(), 403);
        assert_eq!(add(12, vec![], &grown).expect_err("old > size").status(), 400);

        // The state survives a restart.
        drop(witness);
        let reopened = self::witness(dir.path());
        assert_eq!(reopened.latest(ORIGIN).expect("state").expect("some").size, 9);
    }

    #[test]
    fn a_log_that_rotates_its_key_is_followed_by_both_keys_on_one_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let next = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[6; 32]));
        let vkey =
            |key: &SecretKey| VerifierKey::parse(&checkpoint::verifier_key(ORIGIN, &key.public_key())).expect("vkey");
        let old = vkey(&log_key());
        assert!(matches!(
            Witness::open(dir.path(), "witness.example/w1", vec![old.clone(), old.clone()]),
            Err(WitnessError::DuplicateLog(_))
        ));
        let witness = Witness::open(dir.path(), "witness.example/w1", vec![old, vkey(&next)]).expect("witness");
        assert_eq!(witness.logs().collect::<Vec<_>>(), vec![ORIGIN]);
        let add = |old_size, proof, note: &str| {
            witness.add_checkpoint(AddCheckpoint { old_size, proof, note: note.to_owned() }.encode().as_bytes(), 1_000)
        };
        let (first, tree) = log_at(5, 1);
        add(0, vec![], &first).expect("the old key's checkpoint");
        // The handover at the same size, then the new key's next checkpoint: one history.
        let handover =
            Checkpoint { origin: ORIGIN.into(), size: 5, root: tree.root(5) }.sign_handover(&log_key(), &next);
        add(5, vec![], &handover).expect("the handover");
        let (grown, grown_tree) = log_at(8, 1);
        let by_next = Checkpoint { origin: ORIGIN.into(), size: 8, root: grown_tree.root(8) }.sign(&next);
        add(5, grown_tree.consistency_proof(5, 8), &by_next).expect("the new key's checkpoint");
        assert_eq!(witness.latest(ORIGIN).expect("state").expect("some").size, 8);
        drop(grown);
        // Followed by the new key alone after a restart, the state (signed by the new key) still reads.
        drop(witness);
        let reopened = Witness::open(dir.path(), "witness.example/w1", vec![vkey(&next)]).expect("witness");
        assert_eq!(reopened.latest(ORIGIN).expect("state").expect("some").size, 8);
    }
}
