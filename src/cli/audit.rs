//! `kho audit` follows a server's log: every checkpoint it is shown must be signed by the vault key
//! (and cosigned by a quorum of the witnesses it is given) and must extend, by a consistency proof, the
//! last checkpoint it verified, which it keeps on disk. `kho witness` runs a witness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::log::{parse_hashes, vault_key, LogClientArgs};
use super::EXIT_INVALID;
use crate::log::checkpoint::{self, Checkpoint, KeyRole, Note, VerifierKey};
use crate::statement::PublicKey;

/// Parses witness cosigner keys given on the command line.
pub(super) fn witness_keys(keys: &[String]) -> anyhow::Result<Vec<VerifierKey>> {
    keys.iter()
        .map(|text| {
            let key = VerifierKey::parse(text).with_context(|| format!("--witness {text}"))?;
            anyhow::ensure!(key.role == KeyRole::Cosigner, "--witness {text} is a log's key, not a witness's");
            Ok(key)
        })
        .collect()
}

#[derive(Args)]
pub(super) struct AuditArgs {
    #[command(flatten)]
    log: LogClientArgs,
    /// Where the last verified checkpoint is kept between runs (created on the first run, which trusts
    /// the checkpoint it is shown; keep this file safe).
    #[arg(long, default_value = "kho-audit.checkpoint")]
    state: PathBuf,
    /// Keep following the log, checking again every --interval-seconds, until stopped or until a check
    /// fails.
    #[arg(long)]
    follow: bool,
    #[arg(long, default_value_t = 10, requires = "follow")]
    interval_seconds: u64,
    /// A witness's cosigner key (`name+id+key`); a checkpoint counts only once a quorum of these cosigned it.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// How many of the --witness keys must have cosigned; default a majority.
    #[arg(long, requires = "witnesses")]
    quorum: Option<usize>,
    /// Also check that this owner's access log is complete (needs --token allowed to read it).
    #[arg(long, requires = "token")]
    owner: Option<String>,
    /// A bearer token for --owner.
    #[arg(long, env = "KHO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The audit you are working on (auditors reading an owner's access log state one).
    #[arg(long, env = "KHO_PURPOSE")]
    purpose: Option<String>,
}

/// What one look at the server found.
enum Outcome {
    /// The checkpoint verified and extends the last one (or is the first); the state moved to it.
    Verified(String),
    /// Nothing to move to (no checkpoint yet, below the witness quorum, an older but consistent one).
    Unchanged(String),
    /// The log contradicts what was verified before, or a signature fails.
    Failed(String),
}

/// `kho audit`: one round, or rounds until stopped or failed with --follow.
pub(super) fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let (keys, certified_origin) = vault_key(&args.log)?;
    let witnesses = witness_keys(&args.witnesses)?;
    let quorum = args.quorum.unwrap_or(crate::witness::majority(witnesses.len())).min(witnesses.len());
    let auditor = Auditor { args: &args, keys, certified_origin, witnesses, quorum };
    loop {
        match auditor.round() {
            Ok(Outcome::Verified(message)) => println!("ok: {message}"),
            Ok(Outcome::Unchanged(message)) => println!("unchanged: {message}"),
            Ok(Outcome::Failed(report)) => {
                eprintln!("AUDIT FAILED: {report}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            // A server that cannot be reached is not evidence of anything; a follower keeps trying.
            Err(error) if args.follow => eprintln!("warning: {error:#}; trying again"),
            Err(error) => return Err(error),
        }
        if let (Some(owner), Some(token)) = (&args.owner, &args.token) {
            let client = super::ClientArgs {
                server: args.log.server.clone(),
                token: token.clone(),
                purpose: args.purpose.clone(),
            };
            let code = super::client::verify_access_log(&client, owner, args.log.trust())?;
            if code != ExitCode::SUCCESS {
                eprintln!("AUDIT FAILED: the access log of owner {owner} is not shown complete");
                return Ok(code);
            }
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(args.interval_seconds));
    }
}

struct Auditor<'a> {
    args: &'a AuditArgs,
    /// The vault key trusted out of band and those it handed over to.
    keys: Vec<PublicKey>,
    certified_origin: Option<String>,
    witnesses: Vec<VerifierKey>,
    quorum: usize,
}

impl Auditor<'_> {
    fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.args.log.server.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = agent.get(&url).call().with_context(|| format!("cannot reach {url}"))?;
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_to_string().with_context(|| format!("reading {url}"))?))
    }

    /// The origin checkpoints must carry: given, certified, or the kept state's.
    fn origin(&self, fallback: &str) -> String {
        self.args.log.origin().or(self.certified_origin.clone()).unwrap_or_else(|| fallback.to_owned())
    }

    fn open(&self, note: &str) -> Result<Checkpoint, String> {
        let origin = self.origin(note.lines().next().unwrap_or_default());
        checkpoint::open_any(note, &origin, &self.keys).map_err(|error| error.to_string())
    }

    fn round(&self) -> anyhow::Result<Outcome> {
        let state = &self.args.state;
        let kept = match crate::files::read_if_exists(state).with_context(|| format!("reading {}", state.display()))? {
            None => None,
            Some(bytes) => {
                let note = String::from_utf8(bytes).context("the audit state is not text")?;
                let checkpoint = self.open(&note).map_err(|error| {
                    anyhow::anyhow!(
                        "the audit state {} does not verify under the vault key ({error}); it is another log's or \
                         damaged",
                        state.display()
                    )
                })?;
                Some((checkpoint, note))
            }
        };
        let (status, note) = self.get("/v1/log/checkpoint")?;
        if status == 404 {
            return Ok(Outcome::Unchanged("the server has no checkpoint to show yet".into()));
        }
        anyhow::ensure!(status == 200, "the server answered {status} for its checkpoint: {}", note.trim());
        let new = match self.open(&note) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                return Ok(Outcome::Failed(format!(
                    "the server's checkpoint does not verify under the vault key: {error}\n{note}"
                )))
            }
        };
        if !self.witnesses.is_empty() {
            let parsed = Note::parse(&note).map_err(|e| anyhow::anyhow!("the checkpoint note: {e}"))?;
            let cosigners = parsed.cosigners(&self.witnesses).len();
            if cosigners < self.quorum {
                return Ok(Outcome::Unchanged(format!(
                    "the checkpoint of {} entries is cosigned by {cosigners} of the {} witnesses given, below the \
                     quorum of {}; it is not taken until witnessed",
                    new.size,
                    self.witnesses.len(),
                    self.quorum
                )));
            }
        }
        let Some((old, old_note)) = kept else {
            self.keep(&note)?;
            return Ok(Outcome::Verified(format!(
                "first checkpoint of log {}: {} entries, root {} (trusted on first use; kept in {})",
                new.origin,
                new.size,
                hex::encode(new.root),
                state.display()
            )));
        };
        let evidence = |what: &str| self.keep_evidence(what, &old_note, &note);
        if new.origin != old.origin {
            return Ok(Outcome::Failed(format!(
                "the server's checkpoint is of log {:?}, the verified one of {:?}",
                new.origin, old.origin
            )));
        }
        if new.size == old.size {
            if new.root == old.root {
                return Ok(Outcome::Unchanged(format!("the log still has {} entries", new.size)));
            }
            return Ok(Outcome::Failed(format!(
                "the vault signed two different logs of {} entries: roots {} (verified before) and {} (now). This \
                 is a split view or a rewritten log. {}",
                new.size,
                hex::encode(old.root),
                hex::encode(new.root),
                evidence("two checkpoints of one size")?
            )));
        }
        let (small, large) = if new.size > old.size { (&old, &new) } else { (&new, &old) };
        let path = format!("/v1/log/proof/consistency?old={}&new={}", small.size, large.size);
        let (status, body) = self.get(&path)?;
        let consistent = if status == 200 {
            let proof: serde_json::Value = serde_json::from_str(&body).context("the proof is not JSON")?;
            let hashes = parse_hashes(&proof["hashes"])?;
            crate::log::verify_consistency(small.size, large.size, &small.root, &large.root, &hashes)
                .map_err(|error| format!("the consistency proof fails: {error}"))
        } else {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            Err(format!("the server gives no consistency proof ({status}: {message})"))
        };
        match consistent {
            Err(reason) => Ok(Outcome::Failed(format!(
                "the log at {} entries (root {}) does not extend the log at {} entries (root {}) verified before: \
                 {reason}. The server shows a history that contradicts the one it showed earlier. {}",
                large.size,
                hex::encode(large.root),
                small.size,
                hex::encode(small.root),
                evidence("inconsistent checkpoints")?
            ))),
            Ok(()) if new.size < old.size => Ok(Outcome::Unchanged(format!(
                "the server shows an older checkpoint ({} entries) than the one verified ({}); it is consistent with it",
                new.size, old.size
            ))),
            Ok(()) => {
                self.keep(&note)?;
                Ok(Outcome::Verified(format!(
                    "log {} grew from {} to {} entries, consistently; root {}",
                    new.origin,
                    old.size,
                    new.size,
                    hex::encode(new.root)
                )))
            }
        }
    }

    fn keep(&self, note: &str) -> anyhow::Result<()> {
        crate::files::replace_durably(&self.args.state, note.as_bytes())
            .with_context(|| format!("cannot keep the audit state in {}", self.args.state.display()))
    }

    /// Keeps both signed checkpoints beside the state: together they are the proof of the failure.
    fn keep_evidence(&self, what: &str, old: &str, new: &str) -> anyhow::Result<String> {
        let path = evidence_path(&self.args.state);
        let text = format!("# {what}\n# verified before:\n{old}\n# shown now:\n{new}");
        crate::files::replace_durably(&path, text.as_bytes())
            .with_context(|| format!("cannot keep the evidence in {}", path.display()))?;
        Ok(format!("Both signed checkpoints are kept in {}.", path.display()))
    }
}

fn evidence_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".evidence");
    PathBuf::from(name)
}

#[derive(Args)]
pub(super) struct WitnessArgs {
    /// Where the witness keeps its key and, per log, the newest checkpoint it cosigned.
    #[arg(long, env = "KHO_WITNESS_DIR", default_value = "kho-witness")]
    data_dir: PathBuf,
    /// The witness's name, the key name of its cosignatures (e.g. witness.agency.gov.vn/kho).
    #[arg(long)]
    name: String,
    /// A log to witness: its checkpoint verifier key (`origin+id+key`, as `kho checkpoint` prints it).
    /// Repeat for several logs.
    #[arg(long = "log", required = true)]
    logs: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "KHO_WITNESS_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

/// `kho witness`: cosigns the checkpoints of the logs it follows while each extends the last.
pub(super) fn witness(args: WitnessArgs) -> anyhow::Result<ExitCode> {
    super::init_logging();
    let logs = args
        .logs
        .iter()
        .map(|text| VerifierKey::parse(text).with_context(|| format!("--log {text}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let witness = crate::witness::Witness::open(&args.data_dir, &args.name, logs)?;
    let vkey = witness.verifier_key();
    let followed: Vec<String> = witness.logs().map(str::to_owned).collect();
    crate::http::serve_witness(witness, args.listen, crate::http::ConnectionLimits::default(), |address| {
        // A witness whose standard output was closed (its starter went away) keeps serving.
        let banner = format!(
            "kho witness listening on http://{address}\nwitness key: {vkey}\nfollowing: {}\n",
            followed.join(", ")
        );
        let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    })?;
    Ok(ExitCode::SUCCESS)
}
