//! A record checked the way an outsider would, for people who will not run a verifier themselves (the
//! citizen's pages, the public page behind a printed result's QR code): the issuer's signature under a
//! certificate of its agency that was valid when the vault accepted it, the vault's receipt, and the
//! record's log entry inside the newest served checkpoint.

use super::{RecordView, StorageError, Vault};
use crate::log;
use crate::statement::{KeyCertificate, Signed, StatementBody};

/// Whether the record's log entry is inside a signed checkpoint yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inclusion {
    /// Proven inside the checkpoint of this tree size.
    Proven {
        checkpoint_size: u64,
    },
    /// Accepted after the newest checkpoint; the next one (about a second) will cover it.
    Pending,
    Failed(String),
}

/// The three checks of a record, each `Ok` or the reason it failed.
#[derive(Debug, Clone)]
pub struct RecordChecks {
    /// The issuer's signature, under a certificate of its agency valid and unrevoked at acceptance.
    pub signature: Result<(), String>,
    /// The certificate the signer held for the record's agency, if the vault has one.
    pub certificate: Option<Signed<KeyCertificate>>,
    /// Kho's receipt: signed by the vault key, for this record.
    pub receipt: Result<(), String>,
    pub inclusion: Inclusion,
}

impl RecordChecks {
    pub fn all_passed(&self) -> bool {
        self.signature.is_ok() && self.receipt.is_ok() && matches!(self.inclusion, Inclusion::Proven { .. })
    }
}

impl Vault {
    /// Checks `view` against what the vault holds (its certificates, receipt and log).
    pub fn check_record(&self, view: &RecordView) -> Result<RecordChecks, StorageError> {
        let record = view.record.body();
        let id = view.id();
        let receipt = view.receipt.body();
        let signature = self
            .trust_check(&id, view.record.signer(), &record.issuer_agency, receipt.accepted_at_ms)?
            .map_err(|error| error.to_string());
        let mut certificate = None;
        for certificate_id in self.store.certificates_of_key(&view.record.signer().fingerprint()) {
            if let Some(found) = self.certificate(&certificate_id?)? {
                if found.certificate.body().agency == record.issuer_agency {
                    certificate = Some(found.certificate);
                    break;
                }
            }
        }
        let receipt_check = if view.receipt.signer() != &self.key_of_entry(receipt.log_index) {
            Err("the receipt is not signed by the vault key of its log entry".to_owned())
        } else if receipt.statement != id || receipt.statement_kind != crate::statement::Record::KIND {
            Err("the receipt names another statement".to_owned())
        } else {
            Ok(())
        };
        let inclusion = self.inclusion_of(receipt.log_index, &id)?;
        Ok(RecordChecks { signature, certificate, receipt: receipt_check, inclusion })
    }

    fn inclusion_of(&self, index: u64, id: &crate::ids::Digest) -> Result<Inclusion, StorageError> {
        let Some(checkpoint) = self.served_checkpoint()? else { return Ok(Inclusion::Pending) };
        let size = checkpoint.checkpoint.size;
        if index >= size {
            return Ok(Inclusion::Pending);
        }
        let Some(bytes) = self.log_entry(index)? else {
            return Ok(Inclusion::Failed(format!("log entry {index} is missing")));
        };
        match log::Entry::decode(&bytes) {
            Ok(entry) if &entry.id == id => {}
            _ => return Ok(Inclusion::Failed(format!("log entry {index} does not name this record"))),
        }
        let proof = log::inclusion_proof(index, size, &self.store)?;
        Ok(match log::verify_inclusion(index, size, &log::leaf_hash(&bytes), &proof, &checkpoint.checkpoint.root) {
            Ok(()) => Inclusion::Proven { checkpoint_size: size },
            Err(error) => Inclusion::Failed(error.to_string()),
        })
    }
}
