//! The transparency log over HTTP, under `/v1/log/`: the newest checkpoint and the hash tiles in the
//! C2SP tlog-tiles layout (public: they reveal nothing personal), entry bundles (auditors stating a
//! purpose: leaves name people), and inclusion and consistency proofs as JSON.

use crate::error_code::ErrorCode;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{purpose, require_role, ApiError, AppState, Principal, Role};
use crate::log::{Hash, Tile};
use crate::vault::{InclusionProof, SignedCheckpoint};

/// Checkpoints change about once a second; tiles and entry bundles never change once complete.
const CHECKPOINT_CACHE_CONTROL: &str = "no-cache";
const FULL_TILE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// On a checkpoint: how many configured witnesses cosigned it, the quorum, and `below-quorum` if so.
pub const WITNESSES_HEADER: &str = "kho-witnesses";

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
pub async fn hash_tile(
    State(state): State<AppState>,
    Path((level, rest)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tile = parse_tile(&format!("{level}/{rest}"))?;
    serve_tile(&state, tile).await
}

/// `GET /v1/log/tile/entries/{N...}`: an entry bundle, for auditors stating a purpose.
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

fn checkpoint_json(checkpoint: &SignedCheckpoint) -> Value {
    json!({
        "size": checkpoint.checkpoint.size,
        "root": hex::encode(checkpoint.checkpoint.root),
        "note": checkpoint.note,
        "witnesses": crate::json::witnessed_json(&checkpoint.witnessed),
    })
}

/// The JSON of an inclusion proof (also given by the CLI).
pub fn inclusion_json(proof: &InclusionProof) -> Value {
    json!({
        "index": proof.index,
        "tree_size": proof.checkpoint.checkpoint.size,
        "leaf_hash": hex::encode(proof.leaf_hash),
        "hashes": hashes_json(&proof.hashes),
        "checkpoint": checkpoint_json(&proof.checkpoint),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    index: u64,
    size: Option<u64>,
}

/// `GET /v1/log/proof/inclusion?index=N[&size=S]`: against the checkpoint at S, or the newest.
pub async fn inclusion(
    State(state): State<AppState>,
    query: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
    let proof = state.blocking(move |vault| vault.inclusion_proof(query.index, query.size)).await??;
    Ok(Json(inclusion_json(&proof)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    old: u64,
    new: Option<u64>,
}

/// `GET /v1/log/proof/consistency?old=A[&new=B]`: between two signed checkpoints (B: the newest).
pub async fn consistency(
    State(state): State<AppState>,
    query: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
    let proof = state.blocking(move |vault| vault.consistency_proof(query.old, query.new)).await??;
    Ok(Json(json!({
        "old": checkpoint_json(&proof.old),
        "new": checkpoint_json(&proof.new),
        "hashes": hashes_json(&proof.hashes),
    })))
}
