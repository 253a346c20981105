//! The optional TLS listener: rustls with the certificate and key read from
//! PEM files and reloaded when either file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use lucia_common::Shutdown;
use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// How long a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the certificate chain and key.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key_file.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key in {}: {e}", key_file.display()))?;
    Ok(CertifiedKey::new(certs, signer))
}

/// Hands out the current certificate; [`watch`] replaces it.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The acceptor for `config`, reloading the files every
/// `reload_interval` when their modification time changed, until
/// `shutdown`. A file that fails to load keeps the previous certificate.
pub fn acceptor(config: &TlsConfig, shutdown: Shutdown) -> Result<TlsAcceptor, String> {
    let certified = load(&config.cert_file, &config.key_file)?;
    let resolver = Arc::new(ReloadingCert {
        current: RwLock::new(Arc::new(certified)),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(watch(
        resolver,
        config.cert_file.clone(),
        config.key_file.clone(),
        config.reload_interval.0.max(Duration::from_millis(10)),
        shutdown,
    ));
    Ok(TlsAcceptor::from(Arc::new(server)))
}

async fn watch(
    resolver: Arc<ReloadingCert>,
    cert_file: PathBuf,
    key_file: PathBuf,
    every: Duration,
    shutdown: Shutdown,
) {
    let mut seen = (modified(&cert_file), modified(&key_file));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = (modified(&cert_file), modified(&key_file));
        if now == seen {
            continue;
        }
        match load(&cert_file, &key_file) {
            Ok(certified) => {
                *resolver.current.write() = Arc::new(certified);
                seen = now;
                tracing::info!(cert = %cert_file.display(), "gateway reloaded its TLS certificate");
            }
            // Perhaps half-written: try again next time, keep serving the old one.
            Err(err) => tracing::error!(%err, "gateway cannot reload its TLS certificate"),
        }
    }
}

/// Serves `router` over TLS on `listener` (HTTP/1.1 with upgrades, and
/// HTTP/2) until `shutdown`, then lets open connections finish for a while.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "gateway cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("gateway closed connections still open after {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}
