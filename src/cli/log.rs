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
use crate::statement::PublicKey;

#[derive(Args)]
pub(super) struct LogClientArgs {
    /// The Kho server.
    #[arg(long, env = "KHO_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The vault's public key (PEM), obtained out of band (`vault-key.pub.pem` in its data folder).
    #[arg(long)]
    vault_key: PathBuf,
    /// The log's origin, if you know it; otherwise the checkpoint's own first line is used (and shown).
    #[arg(long)]
    origin: Option<String>,
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

/// Verifies a signed checkpoint note; the failure is printed and becomes the exit code.
fn open_note(client: &LogClientArgs, key: &PublicKey, note: &str) -> Result<Checkpoint, ExitCode> {
    let origin = match &client.origin {
        Some(origin) => origin.clone(),
        None => note.lines().next().unwrap_or_default().to_owned(),
    };
    checkpoint::open(note, &origin, key).map_err(|error| {
        eprintln!("error: the checkpoint does not verify under the vault key: {error}");
        ExitCode::from(EXIT_INVALID)
    })
}

pub(super) fn parse_hash(value: &serde_json::Value) -> anyhow::Result<Hash> {
    let bytes = hex::decode(value.as_str().context("a hash is not text")?).context("a hash is not hex")?;
    Hash::try_from(bytes).map_err(|_| anyhow::anyhow!("a hash is not 32 bytes"))
}

fn parse_hashes(value: &serde_json::Value) -> anyhow::Result<Vec<Hash>> {
    value.as_array().context("no hashes in the proof")?.iter().map(parse_hash).collect()
}

/// The vault key, and a proof's JSON from the server (or the exit code of its refusal).
fn fetch_proof(
    client: &LogClientArgs,
    query: &str,
) -> anyhow::Result<Result<(PublicKey, serde_json::Value), ExitCode>> {
    let key = keys::read_public_key(&client.vault_key)?;
    let text = match fetch(client, query)? {
        Ok(text) => text,
        Err(code) => return Ok(Err(code)),
    };
    let proof = serde_json::from_str(&text).context("the server's answer is not JSON")?;
    Ok(Ok((key, proof)))
}

pub(super) fn checkpoint(client: &LogClientArgs) -> anyhow::Result<ExitCode> {
    let key = keys::read_public_key(&client.vault_key)?;
    let note = match fetch(client, "/v1/log/checkpoint")? {
        Ok(note) => note,
        Err(code) => return Ok(code),
    };
    let checkpoint = match open_note(client, &key, &note) {
        Ok(checkpoint) => checkpoint,
        Err(code) => return Ok(code),
    };
    println!("{note}");
    eprintln!(
        "verified: log {} has {} entries, root {}; signed by {}",
        checkpoint.origin,
        checkpoint.size,
        hex::encode(checkpoint.root),
        checkpoint::verifier_key(&checkpoint.origin, &key)
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
            let (key, proof) = match fetch_proof(&client, &query)? {
                Ok(answer) => answer,
                Err(code) => return Ok(code),
            };
            let checkpoint = match open_note(&client, &key, proof["checkpoint"]["note"].as_str().unwrap_or_default()) {
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
            let (key, proof) = match fetch_proof(&client, &query)? {
                Ok(answer) => answer,
                Err(code) => return Ok(code),
            };
            let mut checkpoints = Vec::new();
            for side in ["old", "new"] {
                match open_note(&client, &key, proof[side]["note"].as_str().unwrap_or_default()) {
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
