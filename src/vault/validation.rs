//! Statements signed under X.509 (algorithms 2 and 3): the signer's chain is validated against the
//! configured roots at acceptance, with the revocation evidence on hand, and the vault records why it
//! trusted it: a [`SignatureValidation`] (kind 10) accepted into the log *before* the statement, with
//! the CRLs and OCSP responses it used kept beside it. The statement's own acceptance then requires that
//! validation (`x509_trust`), so a crash between the two leaves a harmless validation, never a statement
//! accepted without one; and validity at signing time stays provable after the certificates expire.

use super::sequencer::{Acceptance, Decision};
use super::{StorageError, TrustError, Vault};
use crate::ids::{now_unix_ms, Code, Digest, OwnerId, Title};
use crate::statement::{PublicKey, SignatureValidation, Signed, StatementBody as _, ValidationBasis, X509Signer};
use crate::store::Change;
use crate::x509::{RevocationEvidence, ValidatedPath};

/// A validation counts for the statement's acceptance only if made this recently before it.
pub const VALIDATION_AGE_MS_MAX: i64 = 10 * 60 * 1000;

/// A validation made but not yet accepted.
pub(super) struct PreparedValidation {
    signed: Signed<SignatureValidation>,
    evidence: Vec<(Digest, Vec<u8>)>,
    owner: Option<OwnerId>,
    /// The detached signature validated, kept beside the statement.
    pub(super) detached: Option<Vec<u8>>,
}

pub(super) fn title(text: String) -> Title {
    // Subjects are RFC 4514 text; a very long one is cut to what a title holds, never refused.
    let cut: String = text.chars().filter(|c| !c.is_control()).take(512).collect();
    Title::parse(&cut).unwrap_or_else(|_| Title::parse("(unnamed)").unwrap_or_else(|_| unreachable!()))
}

impl Vault {
    /// Validates `signer` of `statement` for `agency` now, storing nothing: the chain to a configured
    /// root, every certificate unrevoked by the evidence on hand, and the agency the root's mapping reads
    /// from the signer's certificate.
    pub(super) fn prepare_validation(
        &self,
        statement: Digest,
        signer: &X509Signer,
        agency: &Code,
        owner: Option<&OwnerId>,
    ) -> Result<PreparedValidation, TrustError> {
        let trust = &self.config.x509;
        let evidence = RevocationEvidence::read_paths(&trust.evidence).map_err(TrustError::X509Evidence)?;
        let now = now_unix_ms();
        let path = trust
            .store
            .validate(signer.certificate(), signer.intermediates(), now, &evidence)
            .map_err(TrustError::X509)?;
        let found = trust.store.anchors[path.anchor].agency_of(signer.certificate());
        if found.as_deref() != Some(agency.as_str()) {
            return Err(TrustError::X509OtherAgency { claimed: agency.clone(), found });
        }
        Ok(self.validation_of_path(statement, agency, &path, &evidence, ValidationBasis::Acceptance, owner))
    }

    /// The validation of a path that validated at `path.at_ms`, keeping the CRLs and OCSP responses that
    /// showed its certificates unrevoked.
    pub(super) fn validation_of_path(
        &self,
        statement: Digest,
        agency: &Code,
        path: &ValidatedPath,
        evidence: &RevocationEvidence,
        basis: ValidationBasis,
        owner: Option<&OwnerId>,
    ) -> PreparedValidation {
        let kept: Vec<(Digest, Vec<u8>)> = path
            .revocation
            .iter()
            .flatten()
            .filter_map(|source| {
                let digest = source.sha256();
                let bytes = evidence
                    .crls
                    .iter()
                    .map(|crl| crl.der())
                    .chain(evidence.ocsp.iter().map(|response| response.der()))
                    .find(|der| Digest::sha256(der).0 == digest)?;
                Some((Digest(digest), bytes.to_vec()))
            })
            .collect();
        let body = SignatureValidation {
            statement,
            agency: agency.clone(),
            signer_certificate: Digest(path.signer().fingerprint()),
            signer: title(path.signer().subject()),
            root: Digest(path.root().fingerprint()),
            root_subject: title(path.root().subject()),
            decided_at_ms: path.at_ms,
            basis,
            evidence: kept.iter().map(|(digest, _)| *digest).collect(),
            signed_at_ms: now_unix_ms(),
        };
        PreparedValidation {
            signed: Signed::sign(body, &self.key),
            evidence: kept,
            owner: owner.cloned(),
            detached: None,
        }
    }

    /// Accepts a prepared validation into the log, durably, before the statement it validates.
    pub(super) fn accept_validation(&self, prepared: PreparedValidation) -> Result<(), StorageError> {
        let PreparedValidation { signed, evidence, owner, detached } = prepared;
        let id = signed.id();
        let statement = signed.body().statement;
        self.accept(|| {
            Ok::<_, StorageError>(Decision::Accept(Acceptance {
                kind: SignatureValidation::KIND,
                id,
                owner,
                accepted_at_ms: signed.body().signed_at_ms,
                change: Change::SignatureValidation {
                    id,
                    statement,
                    envelope: signed.to_envelope(),
                    evidence,
                    detached,
                },
                receipted: true,
            }))
        })?;
        Ok(())
    }

    /// For a statement signed under X.509: validates its signer now and logs the validation, which the
    /// statement's own acceptance then requires. Nothing for Kho's own Ed25519 keys.
    pub(super) fn validate_signer<E: From<TrustError> + From<StorageError>>(
        &self,
        statement: Digest,
        signer: &PublicKey,
        agency: &Code,
        owner: Option<&OwnerId>,
    ) -> Result<(), E> {
        let PublicKey::X509(signer) = signer else { return Ok(()) };
        let prepared = self.prepare_validation(statement, signer, agency, owner)?;
        self.accept_validation(prepared)?;
        Ok(())
    }

    /// Whether `statement`'s X.509 signer counts at `at_ms`: a validation of it for `agency` was
    /// accepted, at most [`VALIDATION_AGE_MS_MAX`] before.
    pub(super) fn x509_trust(
        &self,
        statement: &Digest,
        agency: &Code,
        at_ms: i64,
    ) -> Result<Result<(), TrustError>, StorageError> {
        let Some(entry) = self.store.signature_validation(statement)? else {
            return Ok(Err(TrustError::X509NotValidated));
        };
        let validation = Signed::<SignatureValidation>::from_envelope(&entry.envelope)
            .map_err(|e| StorageError::Corrupt(format!("the validation of {statement}: {e}")))?;
        let body = validation.body();
        // Made (and signed) by this vault just before; `decided_at` may be a timestamp's, long before.
        let fresh = body.signed_at_ms <= at_ms && at_ms - body.signed_at_ms <= VALIDATION_AGE_MS_MAX;
        if &body.agency != agency || !fresh || !self.is_own_key(validation.signer()) {
            return Ok(Err(TrustError::X509NotValidated));
        }
        Ok(Ok(()))
    }
}
