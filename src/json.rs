//! The JSON shapes of records, receipts, statuses, certificates and access events, shared by the CLI
//! and the HTTP API so that both print the same thing, and described in the OpenAPI document from these
//! types. Signed statements are also given verbatim (`envelope_base64`), so a client can verify them
//! itself.

use base64::Engine as _;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ids::format_unix_ms;
use crate::statement::{CopyCertification, PublicKey, Receipt, Record, Signed};
use crate::vault::{AccessEvent, AccessOutcome, CertificateView, ChainPage, Completeness, RecordView, Status};

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A public key: its algorithm, raw bytes and fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct KeyJson {
    /// `Ed25519`, `EcdsaP256Sha256` or `RsaSha256`.
    pub algorithm: String,
    pub public_key_hex: String,
    /// SHA-256 of the key, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub fingerprint: String,
}

pub fn key_json(key: &PublicKey) -> KeyJson {
    KeyJson {
        algorithm: format!("{:?}", key.algorithm()),
        public_key_hex: hex::encode(key.raw_bytes()),
        fingerprint: key.fingerprint().to_hex(),
    }
}

/// A record's signed fields (docs/FORMAT.md 1.1).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordJson {
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub id: String,
    #[schema(pattern = "^([0-9]{10}|[0-9]{12}|[0-9]{13})$")]
    pub owner: String,
    pub document_type: String,
    pub title: String,
    pub issuer_agency: String,
    #[schema(format = Date)]
    pub issued_on: String,
    #[schema(format = Date)]
    pub valid_from: String,
    /// Inclusive; none: no end.
    #[schema(format = Date)]
    pub valid_until: Option<String>,
    pub procedure: String,
    pub dossier: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub blake3: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    pub size_bytes: u64,
    pub media_type: String,
    /// The record this one replaces.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub supersedes: Option<String>,
    #[schema(format = DateTime)]
    pub signed_at: String,
    pub signer: KeyJson,
}

pub fn record_json(record: &Signed<Record>) -> RecordJson {
    let body = record.body();
    RecordJson {
        id: record.id().to_hex(),
        owner: body.owner.as_str().to_owned(),
        document_type: body.document_type.as_str().to_owned(),
        title: body.title.as_str().to_owned(),
        issuer_agency: body.issuer_agency.as_str().to_owned(),
        issued_on: body.issued_on.to_string(),
        valid_from: body.valid_from.to_string(),
        valid_until: body.valid_until.map(|d| d.to_string()),
        procedure: body.procedure.as_str().to_owned(),
        dossier: body.dossier.as_str().to_owned(),
        blake3: body.blake3.to_hex(),
        sha256: body.sha256.to_hex(),
        size_bytes: body.size_bytes,
        media_type: body.media_type.as_str().to_owned(),
        supersedes: body.supersedes.map(|d| d.to_hex()),
        signed_at: format_unix_ms(body.signed_at_ms),
        signer: key_json(record.signer()),
    }
}

/// The vault's signed receipt for an accepted statement: where it is in the log.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReceiptJson {
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub statement: String,
    pub statement_kind: u8,
    pub log_index: u64,
    /// Where its inclusion proof is served.
    pub inclusion_proof: String,
    #[schema(format = DateTime)]
    pub accepted_at: String,
    pub signer: KeyJson,
    #[schema(format = Byte)]
    pub envelope_base64: String,
}

pub fn receipt_json(receipt: &Signed<Receipt>) -> ReceiptJson {
    let body = receipt.body();
    ReceiptJson {
        statement: body.statement.to_hex(),
        statement_kind: body.statement_kind,
        log_index: body.log_index,
        inclusion_proof: format!("/v1/log/proof/inclusion?index={}", body.log_index),
        accepted_at: format_unix_ms(body.accepted_at_ms),
        signer: key_json(receipt.signer()),
        envelope_base64: base64(&receipt.to_envelope()),
    }
}

/// A record as read from the vault: fields, status, receipt, and the signed envelope.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecordViewJson {
    pub record: RecordJson,
    pub status: StatusJson,
    pub receipt: ReceiptJson,
    #[schema(format = Byte)]
    pub envelope_base64: String,
    /// The vault's validation of the agency's own X.509 signature, for documents deposited as signed.
    pub signature: Option<SignatureJson>,
}

pub fn record_view_json(view: &RecordView) -> RecordViewJson {
    RecordViewJson {
        record: record_json(&view.record),
        status: status_json(&view.status),
        receipt: receipt_json(&view.receipt),
        envelope_base64: base64(&view.record.to_envelope()),
        signature: view.signature.as_ref().map(signature_json),
    }
}

/// The vault's validation of an X.509 signature: who signed under which root, when, timestamped by
/// whom, and the signed validation itself.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SignatureJson {
    pub signer: String,
    pub root: String,
    #[schema(format = DateTime)]
    pub signed_at: String,
    pub timestamped_by: Option<String>,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub validation: String,
    #[schema(format = Byte)]
    pub validation_envelope_base64: String,
}

pub fn signature_json(validation: &Signed<crate::statement::SignatureValidation>) -> SignatureJson {
    let v = validation.body();
    let timestamped_by = match &v.basis {
        crate::statement::ValidationBasis::Timestamp { authority, .. } => Some(authority.to_string()),
        _ => None,
    };
    SignatureJson {
        signer: v.signer.to_string(),
        root: v.root_subject.to_string(),
        signed_at: format_unix_ms(v.decided_at_ms),
        timestamped_by,
        validation: validation.id().to_hex(),
        validation_envelope_base64: base64(&validation.to_envelope()),
    }
}

/// A record's status, computed when it is read: revoked adds the revocation with its signed statement
/// and receipt verbatim; superseded the replacing record; certified_copy the certification (who, from
/// what original, when) with the signed statement and its receipt.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatusJson {
    Valid,
    NotYetValid,
    Expired,
    Revoked {
        revocation: String,
        reason: String,
        #[schema(format = DateTime)]
        revoked_at: String,
        #[schema(format = Byte)]
        revocation_envelope_base64: String,
        #[schema(format = Byte)]
        revocation_receipt_envelope_base64: String,
    },
    Superseded {
        by: String,
    },
    SelfUploaded,
    CertifiedCopy {
        certification: String,
        agency: String,
        officer: String,
        original_type: String,
        original: String,
        #[schema(format = DateTime)]
        certified_at: String,
        #[schema(format = Byte)]
        certification_envelope_base64: String,
        #[schema(format = Byte)]
        certification_receipt_envelope_base64: String,
    },
}

pub fn status_json(status: &Status) -> StatusJson {
    match status {
        Status::Valid => StatusJson::Valid,
        Status::NotYetValid => StatusJson::NotYetValid,
        Status::Expired => StatusJson::Expired,
        Status::Revoked { revocation, reason, revoked_at_ms, envelope, receipt_envelope } => StatusJson::Revoked {
            revocation: revocation.to_hex(),
            reason: reason.to_string(),
            revoked_at: format_unix_ms(*revoked_at_ms),
            revocation_envelope_base64: base64(envelope),
            revocation_receipt_envelope_base64: base64(receipt_envelope),
        },
        Status::Superseded { by } => StatusJson::Superseded { by: by.to_hex() },
        Status::SelfUploaded => StatusJson::SelfUploaded,
        Status::CertifiedCopy {
            certification,
            agency,
            officer,
            original_type,
            original,
            certified_at_ms,
            envelope,
            receipt_envelope,
        } => StatusJson::CertifiedCopy {
            certification: certification.to_hex(),
            agency: agency.as_str().to_owned(),
            officer: officer.to_string(),
            original_type: original_type.as_str().to_owned(),
            original: original.to_string(),
            certified_at: format_unix_ms(*certified_at_ms),
            certification_envelope_base64: base64(envelope),
            certification_receipt_envelope_base64: base64(receipt_envelope),
        },
    }
}

/// A copy certification: which upload, by whom, from what original, signed by which key.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CopyCertificationJson {
    /// Always `copy certification`.
    pub kind: String,
    pub id: String,
    pub record: String,
    pub agency: String,
    pub officer: String,
    pub original_type: String,
    pub original: String,
    #[schema(format = DateTime)]
    pub signed_at: String,
    pub signer: KeyJson,
}

pub fn copy_certification_json(certification: &Signed<CopyCertification>) -> CopyCertificationJson {
    let body = certification.body();
    CopyCertificationJson {
        kind: "copy certification".to_owned(),
        id: certification.id().to_hex(),
        record: body.record.to_hex(),
        agency: body.agency.as_str().to_owned(),
        officer: body.officer.as_str().to_owned(),
        original_type: body.original_type.as_str().to_owned(),
        original: body.original.as_str().to_owned(),
        signed_at: format_unix_ms(body.signed_at_ms),
        signer: key_json(certification.signer()),
    }
}

/// An issuer key certificate with its receipt and, if revoked, its revocation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CertificateJson {
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub id: String,
    pub agency: String,
    pub subject: KeyJson,
    #[schema(format = DateTime)]
    pub valid_from: String,
    #[schema(format = DateTime)]
    pub valid_until: String,
    #[schema(format = DateTime)]
    pub signed_at: String,
    pub signer: KeyJson,
    pub receipt: ReceiptJson,
    pub revoked: Option<CertificateRevocationJson>,
    #[schema(format = Byte)]
    pub envelope_base64: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CertificateRevocationJson {
    pub id: String,
    pub reason: String,
    #[schema(format = DateTime)]
    pub revoked_at: String,
    #[schema(format = Byte)]
    pub envelope_base64: String,
    pub receipt: ReceiptJson,
}

pub fn certificate_json(view: &CertificateView) -> CertificateJson {
    let certificate = &view.certificate;
    let body = certificate.body();
    CertificateJson {
        id: certificate.id().to_hex(),
        agency: body.agency.as_str().to_owned(),
        subject: key_json(&body.subject),
        valid_from: format_unix_ms(body.valid_from_ms),
        valid_until: format_unix_ms(body.valid_until_ms),
        signed_at: format_unix_ms(body.signed_at_ms),
        signer: key_json(certificate.signer()),
        receipt: receipt_json(&view.receipt),
        revoked: view.revocation.as_ref().map(|(revocation, receipt)| CertificateRevocationJson {
            id: revocation.id().to_hex(),
            reason: revocation.body().reason.as_str().to_owned(),
            revoked_at: format_unix_ms(receipt.body().accepted_at_ms),
            envelope_base64: base64(&revocation.to_envelope()),
            receipt: receipt_json(receipt),
        }),
        envelope_base64: base64(&certificate.to_envelope()),
    }
}

/// One access event of an owner's access log, with its canonical bytes (docs/FORMAT.md 2).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AccessEventJson {
    pub log_index: u64,
    /// SHA-256 of the canonical bytes.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub id: String,
    #[schema(format = DateTime)]
    pub at: String,
    pub subject: String,
    pub role: String,
    pub agency: Option<String>,
    /// The dossier the reader stated.
    pub purpose: Option<String>,
    pub record: Option<String>,
    pub action: String,
    pub outcome: OutcomeJson,
    pub salt: String,
    #[schema(format = Byte)]
    pub canonical_base64: String,
}

/// Whether the access was allowed, or denied and why (an error code).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OutcomeJson {
    Allowed,
    Denied { reason: String },
}

pub fn access_event_json(log_index: u64, event: &AccessEvent) -> AccessEventJson {
    let canonical = event.encode();
    AccessEventJson {
        log_index,
        id: crate::ids::Digest::sha256(&canonical).to_hex(),
        at: format_unix_ms(event.at_ms),
        subject: event.subject.clone(),
        role: event.role.clone(),
        agency: event.agency.as_ref().map(|a| a.as_str().to_owned()),
        purpose: event.purpose.as_ref().map(|p| p.as_str().to_owned()),
        record: event.record.map(|r| r.to_hex()),
        action: event.action.as_str().to_owned(),
        outcome: match &event.outcome {
            AccessOutcome::Allowed => OutcomeJson::Allowed,
            AccessOutcome::Denied { reason } => OutcomeJson::Denied { reason: reason.clone() },
        },
        salt: hex::encode(event.salt.0),
        canonical_base64: base64(&canonical),
    }
}

/// How many configured witnesses cosigned a checkpoint, against the quorum (0: no witnesses).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WitnessedJson {
    pub cosigned: usize,
    pub quorum: usize,
    pub below_quorum: bool,
}

pub fn witnessed_json(witnessed: &crate::vault::Witnessed) -> WitnessedJson {
    WitnessedJson { cosigned: witnessed.cosigned, quorum: witnessed.quorum, below_quorum: witnessed.below_quorum() }
}

/// The evidence that an owner's chain is complete up to an owner-map commitment (docs/FORMAT.md 4.4).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CompletenessJson {
    /// The signed checkpoint note the evidence is for.
    pub checkpoint: String,
    pub witnesses: WitnessedJson,
    pub complete_through: CompleteThroughJson,
    pub commitment: CommitmentJson,
    pub owner_map: OwnerMapJson,
    /// Where the owner's chain entries are served, newest first.
    pub chain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CompleteThroughJson {
    pub log_index: u64,
    #[schema(format = DateTime)]
    pub at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CommitmentJson {
    pub log_index: u64,
    #[schema(format = Byte)]
    pub entry_base64: String,
    pub inclusion_proof: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OwnerMapJson {
    pub key: String,
    pub head: Option<ChainHeadJson>,
    pub proof: MapProofJson,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChainHeadJson {
    pub length: u64,
    pub log_index: u64,
    pub leaf_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MapProofJson {
    pub siblings: Vec<String>,
    pub leaf: Option<MapLeafJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MapLeafJson {
    pub key: String,
    #[schema(format = Byte)]
    pub value_base64: String,
}

pub fn completeness_json(owner: &crate::ids::OwnerId, completeness: &Completeness) -> CompletenessJson {
    let hexes = |hashes: &[crate::log::Hash]| hashes.iter().map(hex::encode).collect::<Vec<_>>();
    let evidence = &completeness.evidence;
    let commitment_at = crate::log::Entry::decode(&evidence.commitment_entry).map(|e| e.accepted_at_ms).ok();
    CompletenessJson {
        checkpoint: completeness.checkpoint_note.clone(),
        witnesses: witnessed_json(&completeness.witnessed),
        complete_through: CompleteThroughJson {
            log_index: evidence.commitment_index,
            at: commitment_at.map(format_unix_ms),
        },
        commitment: CommitmentJson {
            log_index: evidence.commitment_index,
            entry_base64: base64(&evidence.commitment_entry),
            inclusion_proof: hexes(&evidence.commitment_proof),
        },
        owner_map: OwnerMapJson {
            key: hex::encode(crate::log::map::owner_key(owner)),
            head: completeness.head.map(|head| ChainHeadJson {
                length: head.length,
                log_index: head.index,
                leaf_hash: hex::encode(head.head),
            }),
            proof: MapProofJson {
                siblings: hexes(&evidence.map_proof.siblings),
                leaf: evidence
                    .map_proof
                    .leaf
                    .as_ref()
                    .map(|(key, value)| MapLeafJson { key: hex::encode(key), value_base64: base64(value) }),
            },
        },
        chain: completeness.head.map(|head| format!("/v1/owners/{owner}/log-entries?before={}", head.index + 1)),
    }
}

/// A page of an owner's chain entries, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChainPageJson {
    pub entries: Vec<ChainEntryJson>,
    /// Pass as `before` for the next page; none at the owner's first entry.
    pub next_before: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ChainEntryJson {
    pub log_index: u64,
    #[schema(format = Byte)]
    pub entry_base64: String,
}

pub fn chain_page_json(page: &ChainPage) -> ChainPageJson {
    ChainPageJson {
        entries: page
            .entries
            .iter()
            .map(|(index, bytes)| ChainEntryJson { log_index: *index, entry_base64: base64(bytes) })
            .collect(),
        next_before: page.next_before,
    }
}
