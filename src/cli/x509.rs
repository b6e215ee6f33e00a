//! `kho check-signature`: a signed PDF (PAdES) or a file with its detached CMS signature, checked
//! against the configuration's X.509 roots and revocation evidence, as the vault will check a deposit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::EXIT_INVALID;
use crate::x509::{self, RevocationEvidence};

#[derive(Args)]
pub(super) struct CheckSignatureArgs {
    /// The signed PDF, or the file a detached signature signs.
    file: PathBuf,
    /// The detached CMS signature (.p7s) of FILE; not needed for a signed PDF.
    #[arg(long)]
    signature: Option<PathBuf>,
    /// More CRLs or OCSP responses (files or folders), besides x509.revocation_evidence.
    #[arg(long)]
    evidence: Vec<PathBuf>,
    /// The time to validate an untimestamped signature at (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
    /// The configuration whose [x509] roots and evidence are used.
    #[arg(long, env = "KHO_CONFIG")]
    config: Option<PathBuf>,
}

pub(super) fn check_signature(args: CheckSignatureArgs) -> anyhow::Result<ExitCode> {
    let config = crate::config::Config::read(args.config.as_deref())?;
    let store = config.x509.trust_store()?;
    if store.anchors.is_empty() {
        anyhow::bail!("no X.509 roots are configured ([[x509.roots]] in the configuration): nothing could be trusted");
    }
    let paths: Vec<PathBuf> = config.x509.revocation_evidence.iter().chain(&args.evidence).cloned().collect();
    let evidence = RevocationEvidence::read_paths(&paths).map_err(anyhow::Error::msg)?;
    let at_ms = match &args.at {
        None => crate::ids::now_unix_ms(),
        Some(text) => {
            let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--at {text:?} is not an RFC 3339 time such as 2026-06-01T12:00:00+07:00"))?;
            i64::try_from(time.unix_timestamp_nanos() / 1_000_000).context("--at is out of range")?
        }
    };
    let file = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let verified = match &args.signature {
        Some(path) => {
            let signature = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            x509::cms::verify_detached(&signature, &file).map_err(|e| (e.code(), e.to_string()))
        }
        None => x509::pdf::verify(&file).map(|(_, signature)| signature).map_err(|e| (e.code(), e.to_string())),
    };
    let checked = verified.and_then(|signature| {
        x509::check_signature(&store, &signature, &evidence, at_ms).map_err(|e| (e.code(), e.to_string()))
    });
    match checked {
        Ok(check) => {
            println!("signature valid: {check}");
            if let Some(agency) = &check.agency {
                println!("agency: {agency}");
            }
            for (certificate, source) in check.signer_path.chain.iter().zip(&check.signer_path.revocation) {
                let source = match source {
                    Some(x509::revocation::Source::Crl { issuer, this_update_ms, .. }) => {
                        format!("CRL of {issuer} of {}", x509::format_ms(*this_update_ms))
                    }
                    Some(x509::revocation::Source::Ocsp { responder, produced_at_ms, .. }) => {
                        format!("OCSP response of {responder} of {}", x509::format_ms(*produced_at_ms))
                    }
                    None => "not checked (x509.revocation_required = false)".into(),
                };
                println!("not revoked: {} ({source})", certificate.subject());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err((code, message)) => {
            println!("SIGNATURE INVALID ({code}): {message}");
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}
