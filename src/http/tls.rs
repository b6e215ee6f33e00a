//! Optional HTTPS (`[tls]`): rustls with a certificate that can be replaced while the server runs. The
//! certificate and key files are read again on SIGHUP and whenever either file changes (checked every
//! `reload_seconds`); new connections get the new certificate, open ones keep theirs. A renewal that
//! does not load (a half-written file, a key that does not match) is logged and the old certificate
//! kept, so a bad renewal never takes the service down.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("the key in {key} does not fit the certificate in {certificate}: {reason}")]
    Mismatch { certificate: String, key: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The certificate served to new connections, replaceable.
#[derive(Debug)]
pub struct Certificates {
    config: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' modification times when they were read.
    stamps: (Option<SystemTime>, Option<SystemTime>),
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|loaded| loaded.key.clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Certificates {
    /// Reads the configured files; an error here stops the start.
    pub fn load(config: &TlsConfig) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let loaded = read(config, &provider, stamps(config))?;
        Ok(Arc::new(Certificates { config: config.clone(), provider, current: RwLock::new(loaded) }))
    }

    /// The acceptor for the listener: TLS 1.2 and 1.3, HTTP/1.1, this certificate.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reads the files again if `forced` or either changed since they were read; `Ok(true)` if a new
    /// certificate is now served. On an error the old one stays.
    pub fn reload(&self, forced: bool) -> Result<bool, TlsError> {
        let stamps = stamps(&self.config);
        let unchanged = self.current.read().map(|loaded| loaded.stamps == stamps).unwrap_or(false);
        if unchanged && !forced {
            return Ok(false);
        }
        let loaded = read(&self.config, &self.provider, stamps)?;
        if let Ok(mut current) = self.current.write() {
            *current = loaded;
        }
        Ok(true)
    }

    /// Reloads on SIGHUP and every `reload_seconds` when the files changed, for as long as the runtime
    /// runs.
    pub async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(Duration::from_secs(self.config.reload_seconds));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let forced = tokio::select! {
                _ = ticks.tick() => false,
                _ = hangup => true,
            };
            let certificates = self.clone();
            match tokio::task::spawn_blocking(move || certificates.reload(forced)).await {
                Ok(Ok(true)) => tracing::info!(
                    certificate = %self.config.certificate.display(),
                    "TLS certificate reloaded; new connections get it"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "the TLS certificate was not reloaded; the old one is still served")
                }
                Err(error) => tracing::error!(%error, "the TLS reload worker failed"),
            }
        }
    }
}

/// The files' modification times, taken before they are read (a change during the read is seen next time).
fn stamps(config: &TlsConfig) -> (Option<SystemTime>, Option<SystemTime>) {
    (modified(&config.certificate), modified(&config.private_key))
}

fn read(
    config: &TlsConfig,
    provider: &CryptoProvider,
    stamps: (Option<SystemTime>, Option<SystemTime>),
) -> Result<Loaded, TlsError> {
    let text =
        |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source });
    let certificate_path = config.certificate.display().to_string();
    let key_path = config.private_key.display().to_string();
    let chain = CertificateDer::pem_slice_iter(&text(&config.certificate)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoCertificate { path: certificate_path.clone() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: certificate_path });
    }
    let key = PrivateKeyDer::from_pem_slice(&text(&config.private_key)?)
        .map_err(|_| TlsError::NoKey { path: key_path.clone() })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        certificate: certificate_path,
        key: key_path,
        reason: e.to_string(),
    })?;
    Ok(Loaded { key: Arc::new(key), stamps })
}
