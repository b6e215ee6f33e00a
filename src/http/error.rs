//! The one place that maps errors to HTTP: every case has a stable machine code, a status, and a
//! human message, sent as `{"error": {"code": ..., "message": ...}}`.

use crate::error_code::ErrorCode;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::vault::{
    CertificateError, CopyError, DepositError, ExportError, ProofQueryError, QueryError, ReadError, RevokeError,
    ShareError, StorageError, TrustError, UploadError,
};

use super::auth::AuthError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (429, 503).
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_seconds: None }
    }
    pub fn retry_after(self, seconds: u64) -> ApiError {
        ApiError { retry_after_seconds: Some(seconds), ..self }
    }
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code.as_str(), message = %self.message, "request failed");
        }
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Corrupt(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::IntegrityError, error.to_string())
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::StorageError, other.to_string()),
        }
    }
}

fn trust_status(_: &TrustError) -> StatusCode {
    StatusCode::UNPROCESSABLE_ENTITY
}

impl From<DepositError> for ApiError {
    fn from(error: DepositError) -> Self {
        let error = match error {
            DepositError::Storage(storage) => return storage.into(),
            other => other,
        };
        let status = match &error {
            DepositError::Statement(_) | DepositError::ContentTruncated { .. } | DepositError::ContentRead(_) => {
                StatusCode::BAD_REQUEST
            }
            DepositError::Trust(trust) => trust_status(trust),
            DepositError::DocumentTooLarge { .. } | DepositError::ContentTooLong { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            DepositError::Blake3Mismatch { .. }
            | DepositError::Sha256Mismatch { .. }
            | DepositError::EmbeddedSignature { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            DepositError::SupersedesUnknown(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DepositError::SupersedesOtherAgency { .. } | DepositError::SupersedesOtherOwner { .. } => {
                StatusCode::FORBIDDEN
            }
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<RevokeError> for ApiError {
    fn from(error: RevokeError) -> Self {
        let error = match error {
            RevokeError::Storage(storage) => return storage.into(),
            other => other,
        };
        let status = match &error {
            RevokeError::Statement(_) => StatusCode::BAD_REQUEST,
            RevokeError::Trust(trust) => trust_status(trust),
            RevokeError::UnknownRecord(_) => StatusCode::NOT_FOUND,
            RevokeError::NotIssuersRecord { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<CertificateError> for ApiError {
    fn from(error: CertificateError) -> Self {
        let error = match error {
            CertificateError::Storage(storage) => return storage.into(),
            other => other,
        };
        let status = match &error {
            CertificateError::Statement(_) => StatusCode::BAD_REQUEST,
            CertificateError::Trust(trust) => trust_status(trust),
            CertificateError::UnknownCertificate(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::InvalidPageSize { .. } => ApiError::bad_request(ErrorCode::InvalidPageSize, error.to_string()),
            QueryError::InvalidCursor(_) => ApiError::bad_request(ErrorCode::InvalidCursor, error.to_string()),
            QueryError::Storage(storage) => storage.into(),
        }
    }
}

impl From<ProofQueryError> for ApiError {
    fn from(error: ProofQueryError) -> Self {
        let status = match error {
            ProofQueryError::Storage(storage) => return storage.into(),
            ProofQueryError::SizesOutOfOrder { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::NOT_FOUND,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<ExportError> for ApiError {
    fn from(error: ExportError) -> Self {
        match error {
            ExportError::Storage(storage) => storage.into(),
            ExportError::Proof(proof) => proof.into(),
            ExportError::RecordNotFound(_) => ApiError::not_found(error.code(), error.to_string()),
            ExportError::NotWitnessed(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.code(), error.to_string())
            }
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::RangeNotSatisfiable(e) => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::RangeNotSatisfiable, e.to_string())
            }
            ReadError::Storage(storage) => storage.into(),
        }
    }
}

impl From<CopyError> for ApiError {
    fn from(error: CopyError) -> Self {
        let error = match error {
            CopyError::Storage(storage) => return storage.into(),
            other => other,
        };
        let status = match &error {
            CopyError::Statement(_) => StatusCode::BAD_REQUEST,
            CopyError::Trust(trust) => trust_status(trust),
            CopyError::NotFound => StatusCode::NOT_FOUND,
            CopyError::NotAnUpload(_) | CopyError::UnknownAgency(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CopyError::NotRequested { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> Self {
        let status = match error {
            UploadError::Storage(storage) => return storage.into(),
            UploadError::Deposit(deposit) => return deposit.into(),
            UploadError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::NotAScan => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<ShareError> for ApiError {
    fn from(error: ShareError) -> Self {
        let status = match error {
            ShareError::Storage(storage) => return storage.into(),
            ShareError::NotFound => StatusCode::NOT_FOUND,
            ShareError::TooMany => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}
