//! `kho checkpoint` and `kho proof`: fetch the log's checkpoint and proofs from a server and verify
//! them here, against the vault's public key obtained out of band, so nothing the server says is
//! taken on trust.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::EXIT_INVALID;
use crate::keys;
use crate::log::{self, checkpoint, Checkpoint, Hash};
use crate::statement::{PublicKey, Signed, VaultKeyCertificate};

/// How a client comes to trust the vault's key: given out of band, or certified by a trust anchor.
#[derive(Args)]
pub(super) struct VaultTrustArgs {
    /// The vault's public key (PEM), obtained out of band (`vault-key.pub.pem` in its data folder).
    #[arg(long, conflicts_with = "vault_certificate")]
    vault_key: Option<PathBuf>,
    /// Or the vault key certificate (`GET /v1/vault-certificate`), trusted because --anchor signed it.
    #[arg(long, requires = "anchor")]
    vault_certificate: Option<PathBuf>,
    /// The trust anchor's public key (PEM) that signed --vault-certificate.
    #[arg(long)]
    anchor: Option<PathBuf>,
}

impl VaultTrustArgs {
    /// The vault key, and the log origin its certificate names (if it came with one); an error if
    /// neither was given or the certificate is not the anchor's.
    pub(super) fn key(&self) -> anyhow::Result<(PublicKey, Option<String>)> {
        match (&self.vault_key, &self.vault_certificate, &self.anchor) {
            (Some(path), _, _) => Ok((keys::read_public_key(path)?, None)),
            (None, Some(path), Some(anchor)) => {
                let anchor = keys::read_public_key(anchor)?;
                let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                let certificate = Signed::<VaultKeyCertificate>::from_envelope(&bytes)
                    .with_context(|| format!("{} is not a valid vault key certificate", path.display()))?;
                anyhow::ensure!(
                    certificate.signer() == &anchor,
                    "the vault key certificate {} is not signed by the trust anchor {}",
                    path.display(),
                    anchor.fingerprint()
                );
                let body = certificate.body();
                Ok((body.subject.clone(), Some(body.origin.clone())))
            }
            _ => anyhow::bail!("give --vault-key, or --vault-certificate with --anchor"),
        }
    }
}

#[derive(Args)]
pub(super) struct LogClientArgs {
    /// The Kho server.
    #[arg(long, env = "KHO_SERVER", default_value = "http://127.0.0.1:8080")]
    pub(super) server: String,
    #[command(flatten)]
    trust: VaultTrustArgs,
    /// The log's origin, if you know it; otherwise the certificate's, or the checkpoint's own first line.
    #[arg(long)]
    origin: Option<String>,
}

impl LogClientArgs {
    /// The origin given on the command line, if any.
    pub(super) fn origin(&self) -> Option<String> {
        self.origin.clone()
    }

    pub(super) fn trust(&self) -> &VaultTrustArgs {
        &self.trust
    }
}

#[derive(Subcommand)]
pub(super) enum ProofCommand {
    /// That log entry INDEX (a receipt's log index) is in a signed checkpoint.
    Inclusion {
        index: u64,
        /// The tree size of the checkpoint to prove against; default the newest.
        #[arg(long)]
        size: Option<u64>,
        #[command(flatten)]
        client: LogClientArgs,
    },
    /// That the checkpoint at tree size OLD is a prefix of a newer one: nothing was rewritten or dropped.
    Consistency {
        old: u64,
        /// The newer checkpoint's tree size; default the newest.
        #[arg(long)]
        new: Option<u64>,
        #[command(flatten)]
        client: LogClientArgs,
    },
}

fn fetch(client: &LogClientArgs, path: &str) -> anyhow::Result<Result<String, ExitCode>> {
    let url = format!("{}{path}", client.server.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response =
        agent.get(&url).call().map_err(|e| anyhow::anyhow!("cannot reach the Kho server at {}: {e}", client.server))?;
    if !response.status().is_success() {
        return Ok(Err(super::client::refused(response)));
    }
    Ok(Ok(response.body_mut().read_to_string().context("reading the server's answer")?))
}

/// The vault keys to accept, and the origin checkpoints must carry (given, certified, or none yet): the
/// key trusted out of band and every key it handed over to since.
pub(super) fn vault_key(client: &LogClientArgs) -> anyhow::Result<(Vec<PublicKey>, Option<String>)> {
    let (key, certified_origin) = client.trust.key()?;
    let origin = client.origin.clone().or(certified_origin);
    Ok((follow_handovers(&client.server, key, origin.as_deref()), origin))
}

/// `key` and the keys the vault rotated to after it, each vouched for by the key before it: the vault's
/// handover notes (`GET /v1/vault-keys`) name each successor and are signed by both keys, so trust moves
/// forward only through signatures, never through the server's word. A server that lists none (or an
/// older one) leaves `key` alone.
pub(super) fn follow_handovers(server: &str, key: PublicKey, origin: Option<&str>) -> Vec<PublicKey> {
    let mut keys = vec![key];
    let url = format!("{}/v1/vault-keys", server.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let listed: Option<serde_json::Value> = agent
        .get(&url)
        .call()
        .ok()
        .filter(|response| response.status().is_success())
        .and_then(|mut response| response.body_mut().read_to_string().ok())
        .and_then(|text| serde_json::from_str(&text).ok());
    let Some(listed) = listed else { return keys };
    let origin = origin.map(str::to_owned).or_else(|| listed["origin"].as_str().map(str::to_owned)).unwrap_or_default();
    for retired in listed["retired"].as_array().into_iter().flatten() {
        let note = retired["handover_note"].as_str().unwrap_or_default();
        let Some(trusted) = keys.last() else { break };
        if let Ok((handover, successor)) = checkpoint::open_handover(note, &origin, trusted) {
            eprintln!(
                "note: vault key {} handed over to {} at log size {}; following it",
                trusted.fingerprint(),
                successor.fingerprint(),
                handover.size
            );
            keys.push(successor);
        }
    }
    keys
}

/// Verifies a signed checkpoint note under any of `keys`; the failure is printed and becomes the exit
/// code.
pub(super) fn open_note(origin: &Option<String>, keys: &[PublicKey], note: &str) -> Result<Checkpoint, ExitCode> {
    let origin = match origin {
        Some(origin) => origin.clone(),
        None => note.lines().next().unwrap_or_default().to_owned(),
    };
    checkpoint::open_any(note, &origin, keys).map_err(|error| {
        eprintln!("error: the checkpoint does not verify under the vault key: {error}");
        ExitCode::from(EXIT_INVALID)
    })
}

/// The verifier key of whichever of `keys` signed `note`.
pub(super) fn signer_of(checkpoint: &Checkpoint, keys: &[PublicKey], note: &str) -> String {
    let signer = keys.iter().rev().find(|key| checkpoint::open(note, &checkpoint.origin, key).is_ok());
    signer.map_or_else(String::new, |key| checkpoint::verifier_key(&checkpoint.origin, key))
}

pub(super) fn parse_hash(value: &serde_json::Value) -> anyhow::Result<Hash> {
    let bytes = hex::decode(value.as_str().context("a hash is not text")?).context("a hash is not hex")?;
    Hash::try_from(bytes).map_err(|_| anyhow::anyhow!("a hash is not 32 bytes"))
}

pub(super) fn parse_hashes(value: &serde_json::Value) -> anyhow::Result<Vec<Hash>> {
    value.as_array().context("no hashes in the proof")?.iter().map(parse_hash).collect()
}

/// A vault key with the origin it signs under, and a proof's JSON from the server (or the exit code of
/// its refusal).
type Trusted = (Vec<PublicKey>, Option<String>);
fn fetch_proof(client: &LogClientArgs, query: &str) -> anyhow::Result<Result<(Trusted, serde_json::Value), ExitCode>> {
    let trusted = vault_key(client)?;
    let text = match fetch(client, query)? {
        Ok(text) => text,
        Err(code) => return Ok(Err(code)),
    };
    let proof = serde_json::from_str(&text).context("the server's answer is not JSON")?;
    Ok(Ok((trusted, proof)))
}

pub(super) fn checkpoint(client: &LogClientArgs) -> anyhow::Result<ExitCode> {
    let (keys, origin) = vault_key(client)?;
    let note = match fetch(client, "/v1/log/checkpoint")? {
        Ok(note) => note,
        Err(code) => return Ok(code),
    };
    let checkpoint = match open_note(&origin, &keys, &note) {
        Ok(checkpoint) => checkpoint,
        Err(code) => return Ok(code),
    };
    println!("{note}");
    eprintln!(
        "verified: log {} has {} entries, root {}; signed by {}",
        checkpoint.origin,
        checkpoint.size,
        hex::encode(checkpoint.root),
        signer_of(&checkpoint, &keys, &note)
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn proof(command: ProofCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProofCommand::Inclusion { index, size, client } => {
            let query = match size {
                Some(size) => format!("/v1/log/proof/inclusion?index={index}&size={size}"),
                None => format!("/v1/log/proof/inclusion?index={index}"),
            };
            let ((keys, origin), proof) = match fetch_proof(&client, &query)? {
                Ok(answer) => answer,
                Err(code) => return Ok(code),
            };
            let checkpoint = match open_note(&origin, &keys, proof["checkpoint"]["note"].as_str().unwrap_or_default()) {
                Ok(checkpoint) => checkpoint,
                Err(code) => return Ok(code),
            };
            let leaf = parse_hash(&proof["leaf_hash"]).context("no leaf hash in the proof")?;
            let hashes = parse_hashes(&proof["hashes"])?;
            if let Err(error) = log::verify_inclusion(index, checkpoint.size, &leaf, &hashes, &checkpoint.root) {
                eprintln!("error: the inclusion proof fails: {error}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            println!("{}", serde_json::to_string_pretty(&proof)?);
            eprintln!(
                "verified: entry {index} (leaf {}) is in log {} at size {}",
                hex::encode(leaf),
                checkpoint.origin,
                checkpoint.size
            );
            Ok(ExitCode::SUCCESS)
        }
        ProofCommand::Consistency { old, new, client } => {
            let query = match new {
                Some(new) => format!("/v1/log/proof/consistency?old={old}&new={new}"),
                None => format!("/v1/log/proof/consistency?old={old}"),
            };
            let ((keys, origin), proof) = match fetch_proof(&client, &query)? {
                Ok(answer) => answer,
                Err(code) => return Ok(code),
            };
            let mut checkpoints = Vec::new();
            for side in ["old", "new"] {
                match open_note(&origin, &keys, proof[side]["note"].as_str().unwrap_or_default()) {
                    Ok(checkpoint) => checkpoints.push(checkpoint),
                    Err(code) => return Ok(code),
                }
            }
            let (older, newer) = (&checkpoints[0], &checkpoints[1]);
            if older.origin != newer.origin {
                eprintln!("error: the two checkpoints are of different logs ({} and {})", older.origin, newer.origin);
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            let hashes = parse_hashes(&proof["hashes"])?;
            if let Err(error) = log::verify_consistency(older.size, newer.size, &older.root, &newer.root, &hashes) {
                eprintln!("error: the log at {} does not extend the log at {}: {error}", newer.size, older.size);
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            println!("{}", serde_json::to_string_pretty(&proof)?);
            eprintln!(
                "verified: log {} at size {} extends its checkpoint at size {}",
                newer.origin, newer.size, older.size
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
