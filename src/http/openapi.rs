//! The OpenAPI 3.1 description of the API, generated: every route is registered through
//! utoipa-axum's router from its handler's `#[utoipa::path]` (parameters with their patterns, bodies
//! and every status it answers), and bodies are the Rust types handlers send (`crate::json` and the
//! types here). Served at `/v1/openapi.json` and checked in as docs/openapi.json
//! (`kho openapi > docs/openapi.json`); a test keeps the two equal.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::error_code::ErrorCode;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kho",
        description = "The e-data warehouse vault. Every read of a person's documents by someone else is recorded in \
                       their access log before any byte is sent. Signed statement formats: docs/FORMAT.md. Roles and \
                       the access matrix: docs/SECURITY.md. Every error is `{\"error\": {\"code\", \"message\"}}` with \
                       a code from the ErrorCode list.",
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&BearerScheme),
)]
pub(super) struct ApiDoc;

/// The tile routes, described here because they are routed with a wildcard (see `api_routes`).
#[derive(OpenApi)]
#[openapi(paths(super::log::hash_tile, super::log::entry_bundle))]
pub(super) struct Tiles;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT from a configured identity provider (docs/SECURITY.md)")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, as served.
pub fn document() -> Value {
    let (_, api) = super::api_routes(std::time::Duration::from_secs(1)).split_for_parts();
    let mut value = serde_json::to_value(&api).unwrap_or_default();
    value["info"]["version"] = Value::from(env!("CARGO_PKG_VERSION"));
    value
}

/// (method, path) of every described operation.
pub fn operations() -> Vec<(String, String)> {
    let document = document();
    let mut operations = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                if ["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                    operations.push((method, path.clone()));
                }
            }
        }
    }
    operations
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; may change between releases.
    pub message: String,
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A stable machine-readable error code."))
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// Bytes: a document, a signed statement envelope, an archive.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

/// A record id (also a document's BLAKE3 address).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct IdPath {
    /// 64 lowercase hex digits.
    #[param(pattern = "^[0-9a-f]{64}$")]
    id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct OwnerPath {
    /// A 12-digit citizen id or a 10/13-digit organization code.
    #[param(pattern = "^([0-9]{10}|[0-9]{12}|[0-9]{13})$")]
    owner: String,
}

/// The purpose an officer or auditor states: the dossier being processed.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct PurposeHeader {
    /// The dossier code being processed (officers; auditors for content and bundles).
    #[param(rename = "Kho-Purpose", pattern = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")]
    purpose: Option<String>,
}

/// The answers every signed-in route may give besides its own.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum SignedIn {
    /// Missing, invalid, expired or wrong-audience token.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// `rate_limited`: the token's subject is over its role's rate; `Retry-After` says when to try again.
    #[response(status = 429, headers(("Retry-After" = u64, description = "seconds")))]
    RateLimited(ErrorBody),
}
