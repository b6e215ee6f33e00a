//! `kho export` (download an evidence bundle from a server) and `kho verify BUNDLE` (check one offline).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::client::{agent, authorized, refused, unreachable, url};
use super::{ClientArgs, EXIT_INVALID};
use crate::evidence::{verify_bundle, Bundle, VerifyOptions};
use crate::ids::{Date, Digest, OwnerId};
use crate::keys;

#[derive(Args)]
pub(super) struct ExportArgs {
    /// The owner whose whole store to export (the owner's own token, or an auditor's with --purpose).
    #[arg(required_unless_present = "record", conflicts_with = "record")]
    owner: Option<String>,
    /// Export one record's evidence bundle instead, its document included.
    #[arg(long)]
    record: Option<String>,
    /// Where to write the bundle; default kho-OWNER.tar or kho-record-ID.tar.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Downloads a bundle with a progress bar into a temporary file, checks that it reads back as a whole
/// bundle, then moves it into place.
pub(super) fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let (path, default_out) = match (&args.owner, &args.record) {
        (Some(owner), _) => {
            let owner = OwnerId::parse(owner).context("the owner")?;
            (format!("/v1/owners/{owner}/export"), format!("kho-{owner}.tar"))
        }
        (None, Some(id)) => {
            let id = Digest::parse_hex("record id", id)?;
            (format!("/v1/records/{id}/bundle"), format!("kho-record-{id}.tar"))
        }
        (None, None) => anyhow::bail!("give an owner or --record"),
    };
    let out = args.out.unwrap_or_else(|| PathBuf::from(default_out));
    if out.exists() {
        anyhow::bail!("{} exists; give another --out or remove it", out.display());
    }
    let client = &args.client;
    let mut response =
        authorized(client, agent().get(url(client, &path))).call().map_err(|e| unreachable(client, e))?;
    if !response.status().is_success() {
        return Ok(refused(response));
    }
    let total =
        response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let progress = super::byte_progress(total.unwrap_or(0));
    let partial = super::with_suffix(&out, ".partial");
    let mut file = File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut reader = response.body_mut().with_config().limit(total.unwrap_or(u64::MAX)).reader();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    let copied = (|| {
        loop {
            let count = reader.read(&mut buffer).context("downloading the bundle")?;
            if count == 0 {
                break;
            }
            file.write_all(&buffer[..count]).with_context(|| format!("cannot write {}", partial.display()))?;
            received += count as u64;
            progress.set_position(received);
        }
        file.sync_all().with_context(|| format!("cannot sync {}", partial.display()))?;
        anyhow::Ok(())
    })();
    progress.finish_and_clear();
    if let Err(error) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    // A body cut short (the server stopped midway) must not pass for a bundle.
    let summary = File::open(&partial)
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok(Bundle::read(BufReader::new(f), |_| {})?))
        .and_then(|bundle| Ok((bundle.manifest()?, bundle.documents.len())));
    let (manifest, documents) = match summary {
        Ok(summary) if total.is_none_or(|total| total == received) => summary,
        Ok(_) | Err(_) => {
            let _ = std::fs::remove_file(&partial);
            eprintln!("error: the bundle arrived incomplete ({received} bytes); nothing was kept");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    std::fs::rename(&partial, &out).with_context(|| format!("cannot move the bundle to {}", out.display()))?;
    println!(
        "exported {} records ({documents} documents, {received} bytes) of owner {} as of log checkpoint {} into {}",
        manifest.records.len(),
        manifest.owner,
        manifest.checkpoint_size,
        out.display()
    );
    println!("check it anywhere, offline: kho verify {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The options `kho verify` takes for a bundle.
pub(super) struct BundleTrust<'a> {
    pub anchors: &'a [PathBuf],
    pub vault_key: Option<&'a Path>,
    pub at: Option<&'a str>,
    pub json: bool,
    pub witnesses: &'a [String],
    pub quorum: Option<usize>,
    pub x509_roots: &'a [PathBuf],
}

/// The DER of every certificate in the files given (PEM or DER).
fn read_x509_roots(paths: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut roots = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let certificates = crate::x509::Certificate::all_from_pem_or_der(&bytes)
            .with_context(|| format!("{} holds no X.509 certificate", path.display()))?;
        roots.extend(certificates.into_iter().map(|c| c.der().to_vec()));
    }
    Ok(roots)
}

/// `kho verify BUNDLE`: every document's verdict, with reasons; exit 3 if any evidence fails.
pub(super) fn verify(path: &Path, trust: BundleTrust<'_>) -> anyhow::Result<ExitCode> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).ok();
    let progress = super::byte_progress(size.unwrap_or(0));
    progress.set_message("reading");
    let read = Bundle::read(BufReader::new(file), |bytes| progress.set_position(bytes));
    progress.finish_and_clear();
    let bundle = match read {
        Ok(bundle) => bundle,
        Err(error) => {
            eprintln!("error: {} cannot be read as a bundle: {error}", path.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let manifest = match bundle.manifest() {
        Ok(manifest) => manifest,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let options = VerifyOptions {
        anchors: match trust.anchors {
            [] => None,
            paths => Some(paths.iter().map(|p| keys::read_public_key(p)).collect::<Result<Vec<_>, _>>()?),
        },
        vault_key: trust.vault_key.map(keys::read_public_key).transpose()?,
        today: trust.at.map(Date::parse).transpose().context("--at")?,
        witnesses: super::audit::witness_keys(trust.witnesses)?,
        quorum: trust.quorum,
        x509_roots: match trust.x509_roots {
            [] => None,
            paths => Some(read_x509_roots(paths)?),
        },
    };
    let report = verify_bundle(&bundle, &manifest, &options);
    if trust.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let scope = if report.scope == "owner" { "store" } else { "record" };
        println!(
            "bundle {}: the {scope} of owner {}, as of log checkpoint {}",
            path.display(),
            report.owner,
            manifest.checkpoint_size
        );
        for check in &report.checks {
            println!("{} {}", if check.passed { "ok  " } else { "FAIL" }, check.what);
        }
        for document in &report.documents {
            println!("{}  {}  {}", document.verdict.as_str().to_uppercase(), document.id, document.title);
            for reason in &document.reasons {
                println!("      {reason}");
            }
        }
        let failed = report.documents.iter().filter(|d| d.verdict.is_failure()).count();
        println!(
            "{}: {} documents, {failed} failed; {} of {} bundle checks passed",
            if report.failed() { "NOT VERIFIED" } else { "VERIFIED" },
            report.documents.len(),
            report.checks.iter().filter(|c| c.passed).count(),
            report.checks.len()
        );
    }
    Ok(if report.failed() { ExitCode::from(EXIT_INVALID) } else { ExitCode::SUCCESS })
}
