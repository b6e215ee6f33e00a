//! Evidence that travels: the bundle archive an export writes (`bundle`), and checking it offline
//! (`verify`) with the vault's own acceptance rule (docs/FORMAT.md 1.5), which `kho verify` also applies
//! to a single document.
//!
//! Nothing here trusts the bundle's manifest: every verdict rests on signed bytes, log proofs and the
//! trust anchors (and vault key) the verifier is given.

pub mod bundle;
pub mod verify;

pub use bundle::{Bundle, BundleError, BundlePlan, DocumentDigest, Manifest};
pub use verify::{verify_bundle, DocumentReport, Report, Verdict, VerifyOptions};

use crate::ids::{format_unix_ms, Code, Digest};
use crate::statement::{KeyCertificate, PublicKey, Receipt, Signed};

/// One line of a verification: what was checked, and whether it held.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub passed: bool,
    pub what: String,
}

/// How the vault key is trusted: known out of band (`window: None`), or certified by a trust anchor
/// for receipts inside a validity window; and the keys it replaced, if any.
#[derive(Debug, Clone)]
pub struct VaultTrust {
    pub key: PublicKey,
    pub window: Option<(i64, i64)>,
    /// The vault's earlier keys, oldest first, trusted through their handovers (the same checkpoint
    /// signed by each and by its successor), each with the log size it handed over at: it receipted the
    /// entries below that size and at or above the previous key's.
    pub retired: Vec<(PublicKey, u64)>,
}

impl VaultTrust {
    /// A key known out of band, with no earlier keys.
    pub fn given(key: PublicKey) -> VaultTrust {
        VaultTrust { key, window: None, retired: Vec::new() }
    }

    /// Whether `key` is the vault's, current or retired.
    pub fn is_vault_key(&self, key: &PublicKey) -> bool {
        &self.key == key || self.retired.iter().any(|(retired, _)| retired == key)
    }

    /// The log entries `key` receipted, if it is one of the vault's keys.
    fn entries_of(&self, key: &PublicKey) -> Option<std::ops::Range<u64>> {
        let mut from = 0;
        for (retired, until) in &self.retired {
            if retired == key {
                return Some(from..*until);
            }
            from = *until;
        }
        (&self.key == key).then_some(from..u64::MAX)
    }

    /// Checks that `receipt` is the trusted vault's (signed by the key that served at its log index,
    /// inside the current key's certified window), for statement `id` of `kind`.
    pub fn check_receipt(&self, receipt: &Signed<Receipt>, id: Digest, kind: u8) -> Result<(), String> {
        let body = receipt.body();
        let Some(entries) = self.entries_of(receipt.signer()) else {
            return Err(format!("the receipt is not signed by the vault key {}", self.key.fingerprint()));
        };
        if !entries.contains(&body.log_index) {
            return Err(format!(
                "the receipt of log entry {} is signed by vault key {}, which served entries {} to {}",
                body.log_index,
                receipt.signer().fingerprint(),
                entries.start,
                entries.end.saturating_sub(1)
            ));
        }
        if let (true, Some((from, until))) = (receipt.signer() == &self.key, self.window) {
            if !(from..=until).contains(&body.accepted_at_ms) {
                return Err(format!(
                    "the receipt's time {} is outside the vault key certificate ({} to {})",
                    format_unix_ms(body.accepted_at_ms),
                    format_unix_ms(from),
                    format_unix_ms(until)
                ));
            }
        }
        if body.statement != id || body.statement_kind != kind {
            return Err(format!("the receipt is for statement {}, not this one", body.statement));
        }
        Ok(())
    }
}

/// An issuer key certificate whose own evidence was checked, with the times the vault accepted it and
/// (if so) its revocation.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub certificate: Signed<KeyCertificate>,
    pub accepted_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// Signed by a trust anchor the verifier trusts.
    pub anchor_trusted: bool,
}

/// The vault's acceptance rule for a statement signed by `signer` for `agency`, accepted at
/// `accepted_at_ms`: some trusted certificate of that key for that agency was valid then, accepted by
/// the vault no later, and not revoked at or before that moment.
pub fn check_acceptance(
    signer: &PublicKey,
    agency: &Code,
    accepted_at_ms: i64,
    issuers: &[Issuer],
) -> Result<(), String> {
    let mut reasons = Vec::new();
    for issuer in issuers.iter().filter(|issuer| &issuer.certificate.body().subject == signer) {
        let certificate = issuer.certificate.body();
        let id = issuer.certificate.id();
        let reason = if !issuer.anchor_trusted {
            format!(
                "certificate {id} is signed by {}, which is not a trusted anchor",
                issuer.certificate.signer().fingerprint()
            )
        } else if &certificate.agency != agency {
            format!("certificate {id} is for agency {}, not {agency}", certificate.agency)
        } else if !(certificate.valid_from_ms..=certificate.valid_until_ms).contains(&accepted_at_ms) {
            format!(
                "certificate {id} was not valid at {} (valid {} to {})",
                format_unix_ms(accepted_at_ms),
                format_unix_ms(certificate.valid_from_ms),
                format_unix_ms(certificate.valid_until_ms)
            )
        } else if issuer.accepted_at_ms > accepted_at_ms {
            format!("certificate {id} reached the vault after the statement")
        } else if let Some(revoked_at) = issuer.revoked_at_ms.filter(|revoked_at| *revoked_at <= accepted_at_ms) {
            format!(
                "certificate {id} was revoked at {}, before the vault accepted the statement",
                format_unix_ms(revoked_at)
            )
        } else {
            return Ok(());
        };
        reasons.push(reason);
    }
    if reasons.is_empty() {
        reasons.push(format!("no certificate in the bundle for the signing key {}", signer.fingerprint()));
    }
    Err(reasons.join("; "))
}
