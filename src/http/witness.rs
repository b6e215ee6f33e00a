//! `kho witness` over HTTP: the tlog-witness `add-checkpoint` endpoint, served by the same accept loop
//! as the vault (TCP_NODELAY, header and idle timeouts, connection cap).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::serve::{run, shutdown_signal, ConnectionLimits, ServeError};
use crate::witness::{AddError, Witness, REQUEST_SIZE_BYTES_MAX, SIZE_CONTENT_TYPE};

/// The witness's routes: `POST /add-checkpoint`, and `GET /` saying who it is and what it follows.
pub fn witness_router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/", get(about))
        .layer(DefaultBodyLimit::max(REQUEST_SIZE_BYTES_MAX))
        .with_state(witness)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Bytes) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    match tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await {
        Ok(Ok(cosignature)) => text(StatusCode::OK, "text/plain; charset=utf-8", cosignature),
        Ok(Err(AddError::Conflict { latest })) => text(StatusCode::CONFLICT, SIZE_CONTENT_TYPE, format!("{latest}\n")),
        Ok(Err(error)) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::error!(%error, "add-checkpoint failed");
            } else {
                tracing::info!(%error, "add-checkpoint refused");
            }
            text(status, "text/plain; charset=utf-8", format!("{error}\n"))
        }
        Err(error) => {
            tracing::error!(%error, "the witness worker failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "the witness failed\n".into())
        }
    }
}

async fn about(State(witness): State<Arc<Witness>>) -> Response {
    let mut body = format!("Kho witness\nkey {}\n", witness.verifier_key());
    for origin in witness.logs() {
        body.push_str(&format!("log {origin}\n"));
    }
    text(StatusCode::OK, "text/plain; charset=utf-8", body)
}

/// Runs a witness on `listen` until SIGTERM or SIGINT; `on_ready` gets the bound address.
pub fn serve_witness(
    witness: Witness,
    listen: SocketAddr,
    limits: ConnectionLimits,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind { address: listen, source })?;
        on_ready(listener.local_addr()?);
        run(listener, witness_router(Arc::new(witness)), limits, None, shutdown_signal()).await;
        Ok(())
    })
}
