//! Every error code Kho answers with: one enum, so the API's codes are a closed, documented set (the
//! OpenAPI document lists them) and a code cannot be misspelt at one call site. The strings are stable:
//! clients match on them, and denials carry them into owners' access logs.

macro_rules! error_codes {
    ($($variant:ident = $text:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the list.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as clients see it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }
    };
}

error_codes! {
    AlgorithmNotAllowed = "algorithm_not_allowed",
    AlreadyCertified = "already_certified",
    AlreadyRevoked = "already_revoked",
    AlreadySuperseded = "already_superseded",
    BadDigest = "bad_digest",
    BadRequest = "bad_request",
    BadSignature = "bad_signature",
    BadTimestamp = "bad_timestamp",
    BodyTooLarge = "body_too_large",
    CertificateMismatch = "certificate_mismatch",
    CertificateNotFound = "certificate_not_found",
    CertificationNotRequested = "certification_not_requested",
    ChangedAfterSigning = "changed_after_signing",
    CheckpointNotWitnessed = "checkpoint_not_witnessed",
    ContentHashMismatch = "content_hash_mismatch",
    ContentReadFailed = "content_read_failed",
    ContentSha256Mismatch = "content_sha256_mismatch",
    ContentTooLong = "content_too_long",
    ContentTruncated = "content_truncated",
    DocumentTooLarge = "document_too_large",
    Error = "error",
    Expired = "expired",
    Forbidden = "forbidden",
    HeadersTooLarge = "headers_too_large",
    IntegrityError = "integrity_error",
    InternalError = "internal_error",
    InvalidAgency = "invalid_agency",
    InvalidCertificateId = "invalid_certificate_id",
    InvalidClaims = "invalid_claims",
    InvalidCursor = "invalid_cursor",
    InvalidDetails = "invalid_details",
    InvalidOwnerId = "invalid_owner_id",
    InvalidPageSize = "invalid_page_size",
    InvalidPurpose = "invalid_purpose",
    InvalidQuery = "invalid_query",
    InvalidRecordId = "invalid_record_id",
    InvalidShareDuration = "invalid_share_duration",
    InvalidToken = "invalid_token",
    KeyExpired = "key_expired",
    KeyNotCertified = "key_not_certified",
    KeyNotYetValid = "key_not_yet_valid",
    KeyOfAnotherAgency = "key_of_another_agency",
    KeyRevoked = "key_revoked",
    MalformedCertificate = "malformed_certificate",
    MalformedCertification = "malformed_certification",
    MalformedRecord = "malformed_record",
    MalformedRevocation = "malformed_revocation",
    MalformedSignature = "malformed_signature",
    MethodNotAllowed = "method_not_allowed",
    MissingRecord = "missing_record",
    MissingToken = "missing_token",
    NoCheckpoint = "no_checkpoint",
    NoCheckpointAtSize = "no_checkpoint_at_size",
    NoPath = "no_path",
    NoRevocationInfo = "no_revocation_info",
    NoSignature = "no_signature",
    NoSuchTile = "no_such_tile",
    NoVaultCertificate = "no_vault_certificate",
    NotACa = "not_a_ca",
    NotAPdf = "not_a_pdf",
    NotAnUpload = "not_an_upload",
    NotForSigning = "not_for_signing",
    NotFound = "not_found",
    NotInCheckpoint = "not_in_checkpoint",
    NotIssuersRecord = "not_issuers_record",
    NotShared = "not_shared",
    NotYetValid = "not_yet_valid",
    NotYourStore = "not_your_store",
    OtherAgency = "other_agency",
    PurposeRequired = "purpose_required",
    RangeNotSatisfiable = "range_not_satisfiable",
    RateLimited = "rate_limited",
    RecordMismatch = "record_mismatch",
    RecordNotFound = "record_not_found",
    RequestTimeout = "request_timeout",
    Revoked = "revoked",
    SelfUploadNotByVault = "self_upload_not_by_vault",
    ShareExpired = "share_expired",
    ShareNotFound = "share_not_found",
    ShareRevoked = "share_revoked",
    SizesOutOfOrder = "sizes_out_of_order",
    StorageError = "storage_error",
    SupersedesOtherAgency = "supersedes_other_agency",
    SupersedesOtherOwner = "supersedes_other_owner",
    SupersedesRevoked = "supersedes_revoked",
    SupersedesUnknown = "supersedes_unknown",
    TokenExpired = "token_expired",
    TokenLifetimeTooLong = "token_lifetime_too_long",
    TokenNotYetValid = "token_not_yet_valid",
    TooManyCertificationRequests = "too_many_certification_requests",
    TooManyShares = "too_many_shares",
    UnknownAgency = "unknown_agency",
    UnknownTrustAnchor = "unknown_trust_anchor",
    UnsupportedCriticalExtension = "unsupported_critical_extension",
    UnsupportedCriticalHeader = "unsupported_critical_header",
    UnsupportedMediaType = "unsupported_media_type",
    UntrustedTimestamp = "untrusted_timestamp",
    UploadEmpty = "upload_empty",
    UploadNotAScan = "upload_not_a_scan",
    UploadTooLarge = "upload_too_large",
    WrongAudience = "wrong_audience",
    WrongIssuer = "wrong_issuer",
    WrongTokenType = "wrong_token_type",
    X509BadSignature = "x509_bad_signature",
    X509EvidenceUnreadable = "x509_evidence_unreadable",
    X509Expired = "x509_expired",
    X509InvalidCertificate = "x509_invalid_certificate",
    X509NoPath = "x509_no_path",
    X509NoRevocationInfo = "x509_no_revocation_info",
    X509NotValidated = "x509_not_validated",
    X509NotYetValid = "x509_not_yet_valid",
    X509OtherAgency = "x509_other_agency",
    X509Revoked = "x509_revoked",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the code's text, as clients match on it.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }
}
