//! Running the service: load the configuration's keys, open the vault, bind, serve until SIGTERM or
//! SIGINT, then let in-flight requests finish (every acknowledged deposit is already durable).

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Config, DEV_TOKEN_ISSUER, DEV_TOKEN_KEY_FILE};
use crate::keys::{self, KeyFileError};
use crate::statement::PublicKey;
use crate::vault::{OpenError, Vault, VaultConfig};

use super::{router, AppState, Authenticator, Limits};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The dev token key of a data directory, created on first use.
pub fn dev_token_key(config: &Config) -> Result<crate::statement::SecretKey, KeyFileError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| KeyFileError::Write { path: config.data_dir.clone(), source })?;
    keys::load_or_create_secret_key(&config.data_dir.join(DEV_TOKEN_KEY_FILE))
}

/// Builds the application state from a configuration.
pub fn state(config: &Config) -> Result<AppState, ServeError> {
    let anchors = config.trust_anchors.iter().map(|p| keys::read_public_key(p)).collect::<Result<Vec<_>, _>>()?;
    if anchors.is_empty() {
        tracing::warn!(
            "no trust anchors configured: no issuer certificate can be added, so no deposit can be accepted"
        );
    }
    let mut vault_config = VaultConfig::new(&config.data_dir, anchors);
    vault_config.document_size_bytes_max = config.document_size_bytes_max;
    let vault = Vault::open(vault_config)?;
    let keys: Vec<PublicKey> = config.auth.keys.iter().map(|p| keys::read_public_key(p)).collect::<Result<_, _>>()?;
    let dev_key = if config.auth.dev_mode {
        tracing::warn!(
            "DEV MODE IS ON: tokens minted by `kho dev-token` (iss {DEV_TOKEN_ISSUER:?}) are accepted; never run this in production"
        );
        Some(dev_token_key(config)?.public_key())
    } else {
        None
    };
    let auth = Authenticator {
        issuer: config.auth.issuer.clone(),
        audience: config.auth.audience.clone(),
        keys,
        leeway_seconds: config.auth.leeway_seconds,
        dev_key,
    };
    let limits = Limits {
        statement_body_size_bytes_max: config.statement_body_size_bytes_max,
        request_timeout: Duration::from_secs(config.request_timeout_seconds),
        concurrency_limit: config.concurrency_limit,
    };
    Ok(AppState::new(vault, auth, limits))
}

/// Serves until SIGTERM or SIGINT. `on_ready` is called with the bound address (useful with port 0).
pub fn serve(config: &Config, on_ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let state = state(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind { address: config.listen, source })?;
        let address = listener.local_addr()?;
        tracing::info!(%address, data_dir = %config.data_dir.display(), "kho is serving");
        on_ready(address);
        let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_sender.send(true);
        });
        let mut stopped = stop_receiver.clone();
        tokio::select! {
            result = server => result?,
            // Connections that outlive the grace period are cut; what they had acknowledged is durable.
            _ = async { let _ = stopped.wait_for(|s| *s).await; tokio::time::sleep(grace).await } => {
                tracing::warn!("grace period over; closing the remaining connections");
            }
        }
        Ok::<(), ServeError>(())
    })?;
    // Wait for blocking vault work still running, then close the vault.
    runtime.shutdown_timeout(grace);
    drop(state);
    tracing::info!("stopped");
    Ok(())
}

/// A server running on its own threads, stopped when dropped (for `kho bench` and tests).
pub struct BackgroundServer {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the service in the background on `config.listen` (port 0 picks a free port).
pub fn start_background(config: &Config) -> Result<BackgroundServer, ServeError> {
    let state = state(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .map_err(|source| ServeError::Bind { address: config.listen, source })?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = server.await {
                tracing::error!(%error, "background server failed");
            }
        });
    });
    Ok(BackgroundServer { address, stop: Some(stop), thread: Some(thread) })
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
