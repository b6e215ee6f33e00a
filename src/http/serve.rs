//! Running the service: load the configuration's keys, open the vault, bind, serve until SIGTERM or
//! SIGINT, then let in-flight requests finish (every acknowledged deposit is already durable).
//!
//! The accept loop is Kho's own rather than axum's `serve`, because a public service needs what that
//! one leaves out: TCP_NODELAY on every connection (without it a small answer waits for the client's
//! delayed ACK, about 40 ms), a deadline for a request's headers (slowloris, silent and idle
//! connections), an idle timeout on connections that move no bytes, and a cap on open connections.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, DEV_TOKEN_ISSUER, DEV_TOKEN_KEY_FILE};
use crate::keys::{self, KeyFileError};
use crate::vault::{OpenError, Vault};

use super::{router, AppState, Authenticator, Limits};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
}

/// The dev token key of a data directory, created on first use.
pub fn dev_token_key(config: &Config) -> Result<crate::statement::SecretKey, KeyFileError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| KeyFileError::Write { path: config.data_dir.clone(), source })?;
    keys::load_or_create_secret_key(&config.data_dir.join(DEV_TOKEN_KEY_FILE))
}

/// Builds the application state from a configuration.
pub fn state(config: &Config) -> Result<AppState, ServeError> {
    let vault_config = config.vault_config()?;
    if vault_config.trust_anchors.is_empty() {
        tracing::warn!(
            "no trust anchors configured: no issuer certificate can be added, so no deposit can be accepted"
        );
    }
    let vault = Vault::open(vault_config)?;
    let report = vault.open_report();
    if report.batches_replayed > 0 || !report.quarantined.is_empty() {
        tracing::warn!(
            batches_replayed = report.batches_replayed,
            quarantined = report.quarantined.len(),
            "the store was repaired at open; see the warnings above"
        );
    }
    let dev_signer = if config.auth.dev_mode {
        tracing::warn!(
            "DEV MODE IS ON: tokens minted by `kho dev-token` (iss {DEV_TOKEN_ISSUER:?}) are accepted; never run this in production"
        );
        Some(dev_token_key(config)?)
    } else {
        None
    };
    let dev_key = dev_signer.as_ref().map(|key| key.public_key());
    let auth = Authenticator::from_config(&config.auth, dev_key.as_ref())?;
    let limits = Limits::from_config(config);
    let pages = super::pages::PageSettings { dev_signer, public_url: config.public_url.clone() };
    Ok(AppState::new(vault, auth, limits, pages))
}

/// How connections are treated (see `config` for each value's meaning).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub connections_max: usize,
    /// Counts the connections open (the server's `/metrics` gauge; a fresh one counts for nobody).
    pub open_connections: prometheus_client::metrics::gauge::Gauge,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::from_config(&Config::default())
    }
}

impl ConnectionLimits {
    pub fn from_config(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(config.idle_timeout_seconds),
            connections_max: config.connections_max,
            open_connections: Default::default(),
        }
    }
}

/// After a failed `accept` (out of file descriptors, say), wait this long before the next one rather
/// than spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets every connection
/// finish the request it is in and close, and returns once all have closed.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let (stop_sender, stop_receiver) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's backlog until a slot frees.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let (app, limits, stop, tls) = (app.clone(), limits.clone(), stop_receiver.clone(), tls.clone());
        tokio::spawn(async move {
            let _open = OpenConnection::new(&limits.open_connections);
            let activity = Arc::new(Activity::new());
            let stream = Tracked { stream, activity: activity.clone() };
            let Some(tls) = tls else {
                return serve_connection(stream, activity, app, limits, stop, slot).await;
            };
            // The handshake gets the time a request's headers get.
            match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, activity, app, limits, stop, slot).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    let _ = stop_sender.send(true);
    // Every connection holds a slot until it has closed.
    let all = u32::try_from(limits.connections_max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn serve_connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    activity: Arc<Activity>,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let io = TokioIo::new(stream);
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        tower::ServiceExt::oneshot(app.clone(), request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut connection = pin!(builder.serve_connection(io, service));
    let mut idle_check = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(10)));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_check.tick() => {
                if activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!("closing a connection idle for {:?}", limits.idle_timeout);
                    return;
                }
            }
        }
    }
}

/// One open connection on the gauge, for as long as it lives.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> OpenConnection {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// When a connection last moved a byte.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), last_ms: AtomicU64::new(0) }
    }
    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        self.opened.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that notes every byte it moves.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, buffers);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves until SIGTERM or SIGINT. `on_ready` is called with the bound address (useful with port 0).
pub fn serve(config: &Config, on_ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let state = state(config)?;
    // Few blocking threads, for the vault's work; work paced from outside runs elsewhere
    // (`super::spawn_paced`).
    let runtime =
        tokio::runtime::Builder::new_multi_thread().max_blocking_threads(config.store_threads).enable_all().build()?;
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    runtime.block_on(async {
        let tls = match &config.tls {
            Some(tls) => {
                let certificates = super::tls::Certificates::load(tls)?;
                tokio::spawn(certificates.clone().watch());
                Some(certificates.acceptor()?)
            }
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind { address: config.listen, source })?;
        let address = listener.local_addr()?;
        tracing::info!(%address, https = tls.is_some(), data_dir = %config.data_dir.display(), "kho is serving");
        on_ready(address);
        tokio::spawn(checkpointer(state.clone(), Duration::from_millis(config.checkpoint_interval_ms)));
        if !config.witnesses.peers.is_empty() {
            tokio::spawn(witnesser(state.clone(), Duration::from_millis(config.checkpoint_interval_ms)));
        }
        if config.scrub_interval_hours > 0 {
            let interval = Duration::from_secs(config.scrub_interval_hours * 3600);
            tokio::spawn(scrubber(state.clone(), interval, config.scrub_bytes_per_second));
        }
        let (stop_sender, stop_receiver) = watch::channel(false);
        let limits = ConnectionLimits {
            open_connections: state.metrics().connections.clone(),
            ..ConnectionLimits::from_config(config)
        };
        let server = run(listener, router(state.clone()), limits, tls, async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop_sender.send(true);
        });
        let mut stopped = stop_receiver.clone();
        tokio::select! {
            () = server => {},
            // Connections that outlive the grace period are cut; what they had acknowledged is durable.
            _ = async { let _ = stopped.wait_for(|s| *s).await; tokio::time::sleep(grace).await } => {
                tracing::warn!("grace period over; closing the remaining connections");
            }
        }
        Ok::<(), ServeError>(())
    })?;
    // Wait for blocking vault work still running, cover everything acknowledged with a last checkpoint,
    // then close the vault.
    runtime.shutdown_timeout(grace);
    if !super::paced_finished(grace) {
        tracing::warn!("work paced from outside (a scrub, a witness, a slow client) still runs; stopping without it");
    }
    if let Err(error) = state.vault().sign_checkpoint() {
        tracing::error!(%error, "the last checkpoint could not be signed");
    }
    if let Err(error) = state.vault().cosign_latest() {
        tracing::error!(%error, "the witnesses could not be asked to cosign the last checkpoint");
    }
    drop(state);
    tracing::info!("stopped");
    Ok(())
}

/// Signs a checkpoint every `interval` when the log has grown, for as long as the runtime runs. A
/// failure is logged and retried at the next tick (a poisoned store keeps failing, and says so).
async fn checkpointer(state: AppState, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let vault_state = state.clone();
        match tokio::task::spawn_blocking(move || vault_state.vault().sign_checkpoint()).await {
            Ok(Ok(Some(_))) => state.metrics().checkpoint_signed(),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => tracing::error!(%error, "signing a checkpoint failed"),
            Err(error) => tracing::error!(%error, "the checkpoint worker failed"),
        }
    }
}

/// Asks the configured witnesses to cosign the newest checkpoint every `interval`, when it is new to
/// them. Witnesses that do not answer are logged and asked again at the next tick.
async fn witnesser(state: AppState, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let vault_state = state.clone();
        match super::spawn_paced(move || vault_state.vault().cosign_latest()).await {
            Ok(Ok(Some(round))) if round.witnessed.below_quorum() => tracing::warn!(
                size = round.size,
                cosigned = round.witnessed.cosigned,
                quorum = round.witnessed.quorum,
                "the newest checkpoint is below the witness quorum"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, "asking the witnesses failed"),
            Err(error) => tracing::error!(%error, "the witness worker failed"),
        }
    }
}

/// Scrubs the vault every `interval` (the first time one interval after the start), reading documents
/// at most `bytes_per_second`; each finding is logged as an error, with its record and owner.
async fn scrubber(state: AppState, interval: Duration, bytes_per_second: u64) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let vault_state = state.clone();
        tracing::info!("background scrub started");
        let options = crate::vault::ScrubOptions { bytes_per_second: Some(bytes_per_second) };
        let scrub_state = vault_state.clone();
        let scrubbed = super::spawn_paced(move || {
            vault_state.vault().scrub(options, |progress| {
                scrub_state.metrics().scrub_progress(progress.entries_checked, progress.entries_total, None)
            })
        });
        match scrubbed.await {
            Ok(Ok(report)) => {
                state.metrics().scrub_progress(report.entries, report.entries, Some(report.findings.len()));
                for finding in &report.findings {
                    tracing::error!(
                        kind = ?finding.kind,
                        log_index = ?finding.log_index,
                        records = ?finding.records.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        owners = ?finding.owners.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "scrub found damage: {}",
                        finding.detail
                    );
                }
                tracing::info!(
                    entries = report.entries,
                    documents = report.documents,
                    bytes = report.document_bytes,
                    findings = report.findings.len(),
                    "background scrub finished"
                );
            }
            Ok(Err(error)) => tracing::error!(%error, "the background scrub failed"),
            Err(error) => tracing::error!(%error, "the scrub worker failed"),
        }
    }
}

pub(super) async fn shutdown_signal() {
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
