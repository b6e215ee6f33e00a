//! The JSON shapes of records, receipts, statuses, certificates and access events, shared by the CLI
//! and the HTTP API so that both print the same thing. Signed statements are also given verbatim
//! (`envelope_base64`), so a client can verify them itself.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::ids::format_unix_ms;
use crate::statement::{CopyCertification, PublicKey, Receipt, Record, Signed};
use crate::vault::{AccessEvent, AccessOutcome, CertificateView, ChainPage, Completeness, RecordView, Status};

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn key_json(key: &PublicKey) -> Value {
    json!({
        "algorithm": format!("{:?}", key.algorithm()),
        "public_key_hex": hex::encode(key.raw_bytes()),
        "fingerprint": key.fingerprint().to_hex(),
    })
}

pub fn record_json(record: &Signed<Record>) -> Value {
    let body = record.body();
    json!({
        "id": record.id().to_hex(),
        "owner": body.owner.as_str(),
        "document_type": body.document_type.as_str(),
        "title": body.title.as_str(),
        "issuer_agency": body.issuer_agency.as_str(),
        "issued_on": body.issued_on.to_string(),
        "valid_from": body.valid_from.to_string(),
        "valid_until": body.valid_until.map(|d| d.to_string()),
        "procedure": body.procedure.as_str(),
        "dossier": body.dossier.as_str(),
        "blake3": body.blake3.to_hex(),
        "sha256": body.sha256.to_hex(),
        "size_bytes": body.size_bytes,
        "media_type": body.media_type.as_str(),
        "supersedes": body.supersedes.map(|d| d.to_hex()),
        "signed_at": format_unix_ms(body.signed_at_ms),
        "signer": key_json(record.signer()),
    })
}

pub fn receipt_json(receipt: &Signed<Receipt>) -> Value {
    let body = receipt.body();
    json!({
        "statement": body.statement.to_hex(),
        "statement_kind": body.statement_kind,
        "log_index": body.log_index,
        "inclusion_proof": format!("/v1/log/proof/inclusion?index={}", body.log_index),
        "accepted_at": format_unix_ms(body.accepted_at_ms),
        "signer": key_json(receipt.signer()),
        "envelope_base64": base64(&receipt.to_envelope()),
    })
}

/// A record as read from the vault: fields, status, receipt, and the signed envelope.
pub fn record_view_json(view: &RecordView) -> Value {
    json!({
        "record": record_json(&view.record),
        "status": status_json(&view.status),
        "receipt": receipt_json(&view.receipt),
        "envelope_base64": base64(&view.record.to_envelope()),
        "signature": view.signature.as_ref().map(signature_json),
    })
}

/// The vault's validation of an X.509 signature: who signed under which root, when, timestamped by
/// whom, and the signed validation itself.
pub fn signature_json(validation: &crate::statement::Signed<crate::statement::SignatureValidation>) -> Value {
    let v = validation.body();
    let timestamped_by = match &v.basis {
        crate::statement::ValidationBasis::Timestamp { authority, .. } => Some(authority.to_string()),
        _ => None,
    };
    json!({
        "signer": v.signer.to_string(),
        "root": v.root_subject.to_string(),
        "signed_at": format_unix_ms(v.decided_at_ms),
        "timestamped_by": timestamped_by,
        "validation": validation.id().to_hex(),
        "validation_envelope_base64": base64(&validation.to_envelope()),
    })
}

/// `{"status": "valid" | "not_yet_valid" | "expired" | "revoked" | "superseded" | "self_uploaded" |
/// "certified_copy", ...}`: revoked adds the revocation id, reason and time, and the signed revocation
/// and its receipt verbatim; superseded adds the id of the replacing record; certified_copy adds the
/// certification (who, from what original, when) with the signed statement and its receipt.
pub fn status_json(status: &Status) -> Value {
    match status {
        Status::Valid => json!({"status": "valid"}),
        Status::NotYetValid => json!({"status": "not_yet_valid"}),
        Status::Expired => json!({"status": "expired"}),
        Status::Revoked { revocation, reason, revoked_at_ms, envelope, receipt_envelope } => json!({
            "status": "revoked",
            "revocation": revocation.to_hex(),
            "reason": reason,
            "revoked_at": format_unix_ms(*revoked_at_ms),
            "revocation_envelope_base64": base64(envelope),
            "revocation_receipt_envelope_base64": base64(receipt_envelope),
        }),
        Status::Superseded { by } => json!({"status": "superseded", "by": by.to_hex()}),
        Status::SelfUploaded => json!({"status": "self_uploaded"}),
        Status::CertifiedCopy {
            certification,
            agency,
            officer,
            original_type,
            original,
            certified_at_ms,
            envelope,
            receipt_envelope,
        } => json!({
            "status": "certified_copy",
            "certification": certification.to_hex(),
            "agency": agency.as_str(),
            "officer": officer,
            "original_type": original_type.as_str(),
            "original": original,
            "certified_at": format_unix_ms(*certified_at_ms),
            "certification_envelope_base64": base64(envelope),
            "certification_receipt_envelope_base64": base64(receipt_envelope),
        }),
    }
}

/// A copy certification: which upload, by whom, from what original, signed by which key.
pub fn copy_certification_json(certification: &Signed<CopyCertification>) -> Value {
    let body = certification.body();
    json!({
        "kind": "copy certification",
        "id": certification.id().to_hex(),
        "record": body.record.to_hex(),
        "agency": body.agency.as_str(),
        "officer": body.officer.as_str(),
        "original_type": body.original_type.as_str(),
        "original": body.original.as_str(),
        "signed_at": format_unix_ms(body.signed_at_ms),
        "signer": key_json(certification.signer()),
    })
}

pub fn certificate_json(view: &CertificateView) -> Value {
    let certificate = &view.certificate;
    let body = certificate.body();
    json!({
        "id": certificate.id().to_hex(),
        "agency": body.agency.as_str(),
        "subject": key_json(&body.subject),
        "valid_from": format_unix_ms(body.valid_from_ms),
        "valid_until": format_unix_ms(body.valid_until_ms),
        "signed_at": format_unix_ms(body.signed_at_ms),
        "signer": key_json(certificate.signer()),
        "receipt": receipt_json(&view.receipt),
        "revoked": view.revocation.as_ref().map(|(revocation, receipt)| json!({
            "id": revocation.id().to_hex(),
            "reason": revocation.body().reason.as_str(),
            "revoked_at": format_unix_ms(receipt.body().accepted_at_ms),
            "envelope_base64": base64(&revocation.to_envelope()),
            "receipt": receipt_json(receipt),
        })),
        "envelope_base64": base64(&certificate.to_envelope()),
    })
}

pub fn access_event_json(log_index: u64, event: &AccessEvent) -> Value {
    let canonical = event.encode();
    json!({
        "log_index": log_index,
        "id": crate::ids::Digest::sha256(&canonical).to_hex(),
        "at": format_unix_ms(event.at_ms),
        "subject": event.subject,
        "role": event.role,
        "agency": event.agency.as_ref().map(|a| a.as_str()),
        "purpose": event.purpose.as_ref().map(|p| p.as_str()),
        "record": event.record.map(|r| r.to_hex()),
        "action": event.action.as_str(),
        "outcome": match &event.outcome {
            AccessOutcome::Allowed => json!({"outcome": "allowed"}),
            AccessOutcome::Denied { reason } => json!({"outcome": "denied", "reason": reason}),
        },
        "salt": hex::encode(event.salt.0),
        "canonical_base64": base64(&canonical),
    })
}

/// How many configured witnesses cosigned a checkpoint, against the quorum (0: no witnesses).
pub fn witnessed_json(witnessed: &crate::vault::Witnessed) -> Value {
    json!({
        "cosigned": witnessed.cosigned,
        "quorum": witnessed.quorum,
        "below_quorum": witnessed.below_quorum(),
    })
}

/// The evidence that an owner's chain is complete up to an owner-map commitment (docs/FORMAT.md 4.4).
pub fn completeness_json(owner: &crate::ids::OwnerId, completeness: &Completeness) -> Value {
    let hexes = |hashes: &[crate::log::Hash]| hashes.iter().map(hex::encode).collect::<Vec<_>>();
    let evidence = &completeness.evidence;
    let commitment_at = crate::log::Entry::decode(&evidence.commitment_entry).map(|e| e.accepted_at_ms).ok();
    json!({
        "checkpoint": completeness.checkpoint_note,
        "witnesses": witnessed_json(&completeness.witnessed),
        "complete_through": {
            "log_index": evidence.commitment_index,
            "at": commitment_at.map(format_unix_ms),
        },
        "commitment": {
            "log_index": evidence.commitment_index,
            "entry_base64": base64(&evidence.commitment_entry),
            "inclusion_proof": hexes(&evidence.commitment_proof),
        },
        "owner_map": {
            "key": hex::encode(crate::log::map::owner_key(owner)),
            "head": completeness.head.map(|head| json!({
                "length": head.length,
                "log_index": head.index,
                "leaf_hash": hex::encode(head.head),
            })),
            "proof": {
                "siblings": hexes(&evidence.map_proof.siblings),
                "leaf": evidence.map_proof.leaf.as_ref().map(|(key, value)| json!({
                    "key": hex::encode(key),
                    "value_base64": base64(value),
                })),
            },
        },
        "chain": completeness.head.map(|head| format!("/v1/owners/{owner}/log-entries?before={}", head.index + 1)),
    })
}

/// A page of an owner's chain entries, newest first.
pub fn chain_page_json(page: &ChainPage) -> Value {
    json!({
        "entries": page.entries.iter().map(|(index, bytes)| json!({
            "log_index": index,
            "entry_base64": base64(bytes),
        })).collect::<Vec<_>>(),
        "next_before": page.next_before,
    })
}
