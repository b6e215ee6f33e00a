//! The transparency log over HTTP, under `/v1/log/`: the newest checkpoint and the hash tiles in the
//! C2SP tlog-tiles layout (public: they reveal nothing personal), entry bundles (auditors stating a
//! purpose: leaves name people), and inclusion and consistency proofs as JSON.

use crate::error_code::ErrorCode;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{purpose, require_role, ApiError, AppState, Principal, Role};
use crate::log::{Hash, Tile};
use crate::vault::{InclusionProof, SignedCheckpoint};

/// Checkpoints change about once a second; tiles and entry bundles never change once complete.
const CHECKPOINT_CACHE_CONTROL: &str = "no-cache";
const FULL_TILE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// On a checkpoint: how many configured witnesses cosigned it, the quorum, and `below-quorum` if so.
pub const WITNESSES_HEADER: &str = "kho-witnesses";

#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log",
    summary = "The newest checkpoint of the transparency log: a C2SP tlog-checkpoint signed note with the witnesses' cosignature lines",
    description = "Roles: anyone. The Kho-Witnesses header says `cosigned=C; quorum=Q` and `; below-quorum` if so (with a fail-closed policy, the newest checkpoint that reached the quorum).",
    responses(
        (status = 200, description = "the signed note", body = String, content_type = "text/plain",
            headers(("Kho-Witnesses" = String, description = "cosigned=C; quorum=Q[; below-quorum], when witnesses are configured"))),
        (status = 404, description = "no checkpoint has been signed yet", body = super::openapi::ErrorBody),
    ))]
pub async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let latest = state.blocking(|vault| vault.served_checkpoint()).await??;
    let latest = latest.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::NoCheckpoint,
            "no checkpoint has been signed (and, where witnesses are required, cosigned) yet; one follows the \
             first entry within a second",
        )
    })?;
    let witnessed = latest.witnessed;
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static(CHECKPOINT_CACHE_CONTROL)),
        ],
        latest.note,
    )
        .into_response();
    if witnessed.quorum > 0 {
        let value = format!(
            "cosigned={}; quorum={}{}",
            witnessed.cosigned,
            witnessed.quorum,
            if witnessed.below_quorum() { "; below-quorum" } else { "" }
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(WITNESSES_HEADER, value);
        }
    }
    Ok(response)
}

fn parse_tile(path: &str) -> Result<Tile, ApiError> {
    Tile::parse(path).ok_or_else(|| {
        ApiError::not_found(ErrorCode::NoSuchTile, "not a tile path (tile/<L>/<N>[.p/<W>], N as x001/x234/067)")
    })
}

async fn serve_tile(state: &AppState, tile: Tile) -> Result<Response, ApiError> {
    let bytes = state.blocking(move |vault| vault.tile(tile)).await??;
    let bytes = bytes
        .ok_or_else(|| ApiError::not_found(ErrorCode::NoSuchTile, "the log's newest checkpoint has no such tile"))?;
    let cache = if tile.width == crate::log::TILE_WIDTH { FULL_TILE_CACHE_CONTROL } else { CHECKPOINT_CACHE_CONTROL };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /v1/log/tile/{L}/{N...}`: a hash tile, public.
#[utoipa::path(get, path = "/v1/log/tile/{level}/{index}", tag = "log",
    summary = "A hash tile of the log in the C2SP tlog-tiles layout (tile/<L>/<N>[.p/<W>]), 32 bytes per hash",
    description = "Roles: anyone. The index has several segments (x001/x234/067), then .p/<width> for a partial tile.",
    params(("level" = u8, Path, description = "tile level, 0 to 63", minimum = 0, maximum = 63),
        ("index" = String, Path, description = "the tile index, segments joined by /", pattern = r"^(x[0-9]{3}/)*[0-9]{3}(\.p/[0-9]{1,3})?$")),
    responses(
        (status = 200, description = "the hashes", body = super::openapi::Binary, content_type = "application/octet-stream"),
        (status = 404, description = "no such tile in the newest checkpoint's tree", body = super::openapi::ErrorBody),
    ))]
pub async fn hash_tile(
    State(state): State<AppState>,
    Path((level, rest)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tile = parse_tile(&format!("{level}/{rest}"))?;
    serve_tile(&state, tile).await
}

/// `GET /v1/log/tile/entries/{N...}`: an entry bundle, for auditors stating a purpose.
#[utoipa::path(get, path = "/v1/log/tile/entries/{index}", tag = "log",
    summary = "An entry bundle of the log (tlog-tiles): each leaf as a u16 length and its bytes (docs/FORMAT.md 4.1)",
    description = "Roles: auditor (with purpose).",
    params(("index" = String, Path, description = "the tile index, segments joined by /", pattern = r"^(x[0-9]{3}/)*[0-9]{3}(\.p/[0-9]{1,3})?$"),
        super::openapi::PurposeHeader),
    responses(
        (status = 200, description = "the entries", body = super::openapi::Binary, content_type = "application/octet-stream"),
        (status = 400, description = "malformed purpose", body = super::openapi::ErrorBody),
        (status = 403, description = "not an auditor, or no purpose stated", body = super::openapi::ErrorBody),
        (status = 404, description = "no such tile in the newest checkpoint's tree", body = super::openapi::ErrorBody),
        super::openapi::SignedIn,
    ),
    security(("bearer" = [])))]
pub async fn entry_bundle(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Path(rest): Path<String>,
) -> Result<Response, ApiError> {
    require_role(&principal, Role::Auditor, "read the log's entries (they name people)")?;
    if purpose(&headers)?.is_none() {
        return Err(ApiError::forbidden(
            ErrorCode::PurposeRequired,
            "state the audit you are working on in the Kho-Purpose header",
        ));
    }
    let tile = parse_tile(&format!("entries/{rest}"))?;
    serve_tile(&state, tile).await
}

fn hashes_json(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// A signed checkpoint: its size and root, the note, and how many witnesses cosigned it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointJson {
    pub size: u64,
    /// The tree's root hash, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub root: String,
    /// The C2SP signed note.
    pub note: String,
    pub witnesses: crate::json::WitnessedJson,
}

fn checkpoint_json(checkpoint: &SignedCheckpoint) -> CheckpointJson {
    CheckpointJson {
        size: checkpoint.checkpoint.size,
        root: hex::encode(checkpoint.checkpoint.root),
        note: checkpoint.note.clone(),
        witnesses: crate::json::witnessed_json(&checkpoint.witnessed),
    }
}

/// An inclusion proof (RFC 9162) of one entry against a signed checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionJson {
    pub index: u64,
    pub tree_size: u64,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub leaf_hash: String,
    /// The audit path, hex hashes.
    pub hashes: Vec<String>,
    pub checkpoint: CheckpointJson,
}

/// The JSON of an inclusion proof (also given by the CLI).
pub fn inclusion_json(proof: &InclusionProof) -> InclusionJson {
    InclusionJson {
        index: proof.index,
        tree_size: proof.checkpoint.checkpoint.size,
        leaf_hash: hex::encode(proof.leaf_hash),
        hashes: hashes_json(&proof.hashes),
        checkpoint: checkpoint_json(&proof.checkpoint),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The entry's log index (a receipt's log_index).
    index: u64,
    /// The tree size of a signed checkpoint; default the newest.
    size: Option<u64>,
}

/// `GET /v1/log/proof/inclusion?index=N[&size=S]`: against the checkpoint at S, or the newest.
#[utoipa::path(get, path = "/v1/log/proof/inclusion", tag = "log",
    summary = "An inclusion proof (RFC 9162) of a log entry against a signed checkpoint",
    description = "Roles: anyone.",
    params(InclusionQuery),
    responses(
        (status = 200, description = "leaf hash, audit path and the signed checkpoint", body = InclusionJson),
        (status = 400, description = "malformed query", body = super::openapi::ErrorBody),
        (status = 404, description = "no checkpoint at that size, or the entry is not in it yet", body = super::openapi::ErrorBody),
    ))]
pub async fn inclusion(
    State(state): State<AppState>,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<InclusionJson>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
    let proof = state.blocking(move |vault| vault.inclusion_proof(query.index, query.size)).await??;
    Ok(Json(inclusion_json(&proof)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older checkpoint's tree size.
    old: u64,
    /// The newer checkpoint's tree size; default the newest.
    new: Option<u64>,
}

/// A consistency proof (RFC 9162) between two signed checkpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyJson {
    pub old: CheckpointJson,
    pub new: CheckpointJson,
    pub hashes: Vec<String>,
}

/// `GET /v1/log/proof/consistency?old=A[&new=B]`: between two signed checkpoints (B: the newest).
#[utoipa::path(get, path = "/v1/log/proof/consistency", tag = "log",
    summary = "A consistency proof (RFC 9162) between two signed checkpoints",
    description = "Roles: anyone.",
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "both signed checkpoints and the proof", body = ConsistencyJson),
        (status = 400, description = "malformed query, or old larger than new", body = super::openapi::ErrorBody),
        (status = 404, description = "no checkpoint at one of the sizes", body = super::openapi::ErrorBody),
    ))]
pub async fn consistency(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConsistencyJson>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
    let proof = state.blocking(move |vault| vault.consistency_proof(query.old, query.new)).await??;
    Ok(Json(ConsistencyJson {
        old: checkpoint_json(&proof.old),
        new: checkpoint_json(&proof.new),
        hashes: hashes_json(&proof.hashes),
    }))
}
