//! Who may read what: the role matrix of docs/SECURITY.md as one pure function, and the access event
//! that records each decision about a person's documents.

use crate::error_code::ErrorCode;
use crate::ids::{now_unix_ms, Code, Digest, OwnerId};
use crate::vault::{AccessAction, AccessEvent, AccessOutcome, Salt, Share, ShareState};

use super::auth::{Principal, Role};

/// Something of a person's that a caller wants to see.
#[derive(Debug, Clone)]
pub enum Resource {
    /// A record's metadata, status and receipt.
    Record { owner: OwnerId, issuer_agency: Code },
    /// A record's document bytes.
    Content { owner: OwnerId, issuer_agency: Code },
    /// The list of an owner's records.
    OwnerRecords { owner: OwnerId },
    /// An owner's access log.
    AccessLog { owner: OwnerId },
    /// An owner's whole store as an evidence bundle (records, documents, access log).
    Export { owner: OwnerId },
    /// One record's evidence bundle, its document included.
    RecordBundle { owner: OwnerId, issuer_agency: Code },
    /// The uploads an owner asked `agency` to certify (what an officer at its counter looks up).
    CertificationRequests { owner: OwnerId, agency: Code },
}

impl Resource {
    pub fn owner(&self) -> &OwnerId {
        match self {
            Resource::Record { owner, .. }
            | Resource::Content { owner, .. }
            | Resource::OwnerRecords { owner }
            | Resource::AccessLog { owner }
            | Resource::Export { owner }
            | Resource::RecordBundle { owner, .. }
            | Resource::CertificationRequests { owner, .. } => owner,
        }
    }

    pub fn action(&self) -> AccessAction {
        match self {
            Resource::Record { .. } => AccessAction::ReadRecord,
            Resource::Content { .. } => AccessAction::ReadContent,
            Resource::OwnerRecords { .. } | Resource::CertificationRequests { .. } => AccessAction::ListRecords,
            Resource::AccessLog { .. } => AccessAction::ReadAccessLog,
            Resource::Export { .. } => AccessAction::ExportStore,
            Resource::RecordBundle { .. } => AccessAction::ExportRecord,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { code: ErrorCode, message: String },
}

fn deny(code: ErrorCode, message: impl Into<String>) -> Decision {
    Decision::Deny { code, message: message.into() }
}

/// The role matrix. `purpose` is the dossier code the caller stated, if any.
pub fn decide(principal: &Principal, resource: &Resource, purpose: Option<&Code>) -> Decision {
    let with_purpose = || match purpose {
        Some(_) => Decision::Allow,
        None => deny(ErrorCode::PurposeRequired, "state the dossier you are processing in the Kho-Purpose header"),
    };
    match (principal.role, resource) {
        (Role::Citizen, _) if principal.owner.as_ref() == Some(resource.owner()) => Decision::Allow,
        (Role::Citizen, _) => deny(ErrorCode::NotYourStore, "citizens see only their own store"),
        (_, Resource::AccessLog { .. }) => deny(ErrorCode::NotYourStore, "only the owner reads their access log"),
        // The owner asked the agency: its officers and its systems see what was sent to it.
        (Role::Officer | Role::Issuer, Resource::CertificationRequests { agency, .. })
            if principal.agency.as_ref() == Some(agency) =>
        {
            Decision::Allow
        }
        (Role::Officer | Role::Issuer, Resource::CertificationRequests { .. }) => {
            deny(ErrorCode::OtherAgency, "an agency sees only the certification requests sent to it")
        }
        (Role::Officer, Resource::Export { .. }) => deny(
            ErrorCode::Forbidden,
            "officers fetch the documents a dossier needs; a whole store is exported by its owner or an auditor",
        ),
        (Role::Officer, _) => with_purpose(),
        (Role::Auditor, Resource::Content { .. } | Resource::Export { .. } | Resource::RecordBundle { .. }) => {
            with_purpose()
        }
        (Role::Auditor, _) => Decision::Allow,
        (Role::Issuer, Resource::Record { issuer_agency, .. }) if principal.agency.as_ref() == Some(issuer_agency) => {
            Decision::Allow
        }
        (Role::Issuer, Resource::Record { .. }) => {
            deny(ErrorCode::OtherAgency, "issuers read only their own agency's records")
        }
        (Role::Issuer, _) => {
            deny(ErrorCode::Forbidden, "issuers deposit and revoke; they do not read people's documents")
        }
        (Role::Admin, _) => {
            deny(ErrorCode::Forbidden, "administrators manage certificates; they do not read people's documents")
        }
    }
}

/// The access event for a decision about `owner`'s documents.
pub fn event(
    principal: &Principal,
    owner: OwnerId,
    record: Option<Digest>,
    action: AccessAction,
    purpose: Option<Code>,
    decision: &Decision,
) -> AccessEvent {
    AccessEvent {
        at_ms: now_unix_ms(),
        owner,
        subject: principal.subject.clone(),
        role: principal.role.as_str().to_owned(),
        agency: principal.agency.clone(),
        purpose,
        record,
        action,
        outcome: outcome(decision),
        salt: Salt::random(),
    }
}

/// What a decision leaves in the log: allowed, or denied with its code.
fn outcome(decision: &Decision) -> AccessOutcome {
    match decision {
        Decision::Allow => AccessOutcome::Allowed,
        Decision::Deny { code, .. } => AccessOutcome::Denied { reason: code.as_str().to_owned() },
    }
}

/// The role recorded for someone using a share link, and for anyone checking a printed result.
pub const SHARE_HOLDER_ROLE: &str = "share_holder";
pub const PUBLIC_ROLE: &str = "public";

/// The share rule: a share link lets its holder read exactly its record, while it is active.
pub fn decide_share(share: &Share, record: &Digest, now_ms: i64) -> Decision {
    if &share.record != record {
        return deny(ErrorCode::NotShared, "this link shares another document");
    }
    match share.state(now_ms) {
        ShareState::Active => Decision::Allow,
        ShareState::Expired => deny(ErrorCode::ShareExpired, "this share link has expired"),
        ShareState::Revoked => deny(ErrorCode::ShareRevoked, "the owner revoked this share link"),
    }
}

/// The access event of a visitor without a token: a share link's holder (subject `share:<id>`), or
/// anyone checking a printed result (`public`).
pub fn visitor_event(
    owner: OwnerId,
    record: Digest,
    subject: String,
    role: &str,
    action: AccessAction,
    decision: &Decision,
) -> AccessEvent {
    AccessEvent {
        at_ms: now_unix_ms(),
        owner,
        subject,
        role: role.to_owned(),
        agency: None,
        purpose: None,
        record: Some(record),
        action,
        outcome: outcome(decision),
        salt: Salt::random(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role) -> Principal {
        Principal {
            subject: "someone".into(),
            role,
            agency: matches!(role, Role::Officer | Role::Issuer)
                .then(|| Code::parse("a", "000.00.00.H26").expect("code")),
            owner: (role == Role::Citizen).then(|| OwnerId::parse("001204012345").expect("owner")),
            dev: false,
            expires_at: 0,
        }
    }

    #[test]
    fn the_matrix() {
        let mine = OwnerId::parse("001204012345").expect("owner");
        let theirs = OwnerId::parse("079198000123").expect("owner");
        let h26 = Code::parse("a", "000.00.00.H26").expect("code");
        let g01 = Code::parse("a", "000.00.00.G01").expect("code");
        let dossier = Code::parse("p", "D-1").expect("code");
        let allowed = |role, resource: &Resource, purpose: bool| {
            decide(&principal(role), resource, purpose.then_some(&dossier)) == Decision::Allow
        };
        for resource in [
            Resource::Record { owner: mine.clone(), issuer_agency: h26.clone() },
            Resource::Content { owner: mine.clone(), issuer_agency: h26.clone() },
            Resource::OwnerRecords { owner: mine.clone() },
        ] {
            assert!(allowed(Role::Citizen, &resource, false));
            assert!(allowed(Role::Officer, &resource, true));
            assert!(!allowed(Role::Officer, &resource, false));
            assert!(!allowed(Role::Admin, &resource, true));
        }
        let other_record = Resource::Record { owner: theirs.clone(), issuer_agency: g01.clone() };
        assert!(!allowed(Role::Citizen, &other_record, true));
        assert!(allowed(Role::Auditor, &other_record, false));
        assert!(!allowed(Role::Issuer, &other_record, true), "another agency's record");
        assert!(allowed(Role::Issuer, &Resource::Record { owner: theirs.clone(), issuer_agency: h26.clone() }, false));
        // Certification requests: the agency asked (officers and its systems, without a purpose), the
        // owner, auditors; no other agency, no administrator, no other citizen.
        let sent_to_h26 = Resource::CertificationRequests { owner: mine.clone(), agency: h26.clone() };
        let sent_to_g01 = Resource::CertificationRequests { owner: mine.clone(), agency: g01.clone() };
        for role in [Role::Officer, Role::Issuer] {
            assert!(allowed(role, &sent_to_h26, false));
            assert!(!allowed(role, &sent_to_g01, true));
        }
        assert!(allowed(Role::Citizen, &sent_to_g01, false));
        assert!(allowed(Role::Auditor, &sent_to_g01, false));
        assert!(!allowed(Role::Admin, &sent_to_h26, true));
        let theirs_sent = Resource::CertificationRequests { owner: theirs.clone(), agency: h26.clone() };
        assert!(!allowed(Role::Citizen, &theirs_sent, false));
        let content = Resource::Content { owner: theirs.clone(), issuer_agency: h26 };
        assert!(!allowed(Role::Auditor, &content, false));
        assert!(allowed(Role::Auditor, &content, true));
        assert!(!allowed(Role::Issuer, &content, true));
        assert!(!allowed(Role::Issuer, &Resource::OwnerRecords { owner: theirs }, true));
    }
}
