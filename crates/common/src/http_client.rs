//! Outgoing HTTP and TLS: the one place where reqwest clients and rustls
//! client configurations are made.
//!
//! reqwest is built with `rustls-no-provider` (ring instead of aws-lc-rs),
//! and then `reqwest::Client::new()` panics unless a process-wide rustls
//! crypto provider is installed. Tests and library code cannot rely on
//! that, so every client starts from [`builder`], which hands reqwest a
//! finished rustls `ClientConfig` with the ring provider and the trust
//! roots; clippy.toml forbids reqwest's own constructors elsewhere.
//!
//! Trust roots: the system store (`/etc/ssl/certs`, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`), which is where operators put their corporate CAs; when
//! it holds no certificate (a container without ca-certificates), Mozilla's
//! roots compiled into the binary. A `tls_config` with `ca`/`ca_file`
//! replaces them, as in Prometheus.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::http_config::TlsConfig;

/// A `tls_config` that cannot be applied; names the field to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_config.{field}: cannot read {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("tls_config.{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        field,
        message: message.into(),
    }
}

/// The crypto of every TLS connection Lucia makes or accepts: ring.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Installs ring as the process-wide rustls provider, for libraries that
/// build their own TLS configs (object_store's S3 client). Lucia's own
/// clients do not need it. Harmless when one is installed already.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where the default trust roots came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootsSource {
    System,
    Bundled,
}

/// The default trust roots: the system store, or the bundled Mozilla
/// roots when it is empty. Loaded once per process.
pub fn default_roots() -> (Arc<RootCertStore>, RootsSource) {
    static ROOTS: OnceLock<(Arc<RootCertStore>, RootsSource)> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for err in &loaded.errors {
                tracing::debug!(%err, "cannot load a system trust root");
            }
            let mut store = RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added > 0 {
                tracing::debug!(roots = added, "trust roots: the system store");
                (Arc::new(store), RootsSource::System)
            } else {
                tracing::info!(
                    "no system trust roots (install ca-certificates or set SSL_CERT_FILE): using the bundled Mozilla roots"
                );
                let store: RootCertStore =
                    webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
                (Arc::new(store), RootsSource::Bundled)
            }
        })
        .clone()
}

/// A reqwest client builder with TLS set up (ring, default trust roots).
#[allow(clippy::disallowed_methods)] // the one sanctioned constructor
pub fn builder() -> reqwest::ClientBuilder {
    let config = default_client_config();
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

/// A client with the defaults, for tests and tools.
///
/// # Panics
/// When reqwest cannot build a client without any option set, which with a
/// preconfigured TLS backend does not happen.
pub fn client() -> reqwest::Client {
    match builder().build() {
        Ok(client) => client,
        Err(err) => panic!("cannot build the default http client: {err}"),
    }
}

/// A reqwest client builder with `tls` applied (the defaults without one).
pub fn builder_with_tls(tls: Option<&TlsConfig>) -> Result<reqwest::ClientBuilder, TlsError> {
    let Some(tls) = tls else {
        return Ok(builder());
    };
    let config = client_config(tls)?;
    #[allow(clippy::disallowed_methods)] // TLS is preconfigured right here
    let builder = reqwest::Client::builder().tls_backend_preconfigured(config);
    Ok(builder)
}

/// An error with its causes (`error sending request: …: invalid peer
/// certificate: UnknownIssuer`): reqwest's own message names none of them.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A reqwest client builder that trusts no server certificate: for a
/// `tls_config` that can no longer be applied (a file gone since the config
/// loaded), https then fails closed instead of falling back to the system's
/// roots, while the error that caused it is logged by the caller.
#[allow(clippy::disallowed_methods)] // TLS is preconfigured right here
pub fn builder_trusting_nothing() -> reqwest::ClientBuilder {
    let config = default_versions()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

/// The rustls configuration without a `tls_config`.
pub fn default_client_config() -> ClientConfig {
    let (roots, _) = default_roots();
    default_versions()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// ring with TLS 1.2 and 1.3.
fn default_versions() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        // an invariant, not input: ring implements TLS 1.2 and 1.3
        .expect("the ring provider supports the default TLS versions")
}

/// PEM text and where it came from: the field that named it and the file
/// (or "inline"), for error messages.
struct Pem {
    bytes: Vec<u8>,
    field: &'static str,
    origin: String,
}

/// Reads one PEM field given inline (`ca`, `cert`, `key`) or as a file
/// (`ca_file`, …); `None` when neither is set.
fn pem_source(
    inline: &Option<String>,
    file: &Option<String>,
    ref_: &Option<String>,
    name: &'static str,
    file_field: &'static str,
) -> Result<Option<Pem>, TlsError> {
    if ref_.is_some() {
        return Err(invalid(
            name,
            format!("{name}_ref (a secret manager reference) is not supported: use {file_field}"),
        ));
    }
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            name,
            format!("at most one of {name} & {file_field} must be configured"),
        )),
        (Some(text), None) => Ok(Some(Pem {
            bytes: text.as_bytes().to_vec(),
            field: name,
            origin: "inline".into(),
        })),
        (None, Some(path)) if !path.is_empty() => {
            let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
                field: file_field,
                path: path.clone(),
                source,
            })?;
            Ok(Some(Pem {
                bytes,
                field: file_field,
                origin: path.clone(),
            }))
        }
        _ => Ok(None),
    }
}

fn certificates(
    pem: &[u8],
    field: &'static str,
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, format!("{origin}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            field,
            format!("{origin}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"),
        ));
    }
    Ok(certs)
}

fn tls_version(
    value: &Option<String>,
    field: &'static str,
) -> Result<Option<&'static rustls::SupportedProtocolVersion>, TlsError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        // rustls speaks TLS 1.2 and 1.3 only: a floor below 1.2 is 1.2
        Some("TLS10" | "TLS11" | "TLS12") => Ok(Some(&rustls::version::TLS12)),
        Some("TLS13") => Ok(Some(&rustls::version::TLS13)),
        Some(other) => Err(invalid(
            field,
            format!("unknown TLS version {other:?}: use TLS12 or TLS13"),
        )),
    }
}

/// The rustls configuration of a Prometheus `tls_config`: `ca`/`ca_file`
/// (replacing the default roots), `cert`/`cert_file` with `key`/`key_file`
/// (a client certificate), `server_name` (the name the server's certificate
/// must carry, instead of the host of the URL), `insecure_skip_verify`,
/// `min_version`/`max_version`. Files are read now.
pub fn client_config(tls: &TlsConfig) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let roots = match pem_source(&tls.ca, &tls.ca_file, &tls.ca_ref, "ca", "ca_file")? {
        Some(ca) => {
            let mut store = RootCertStore::empty();
            for cert in certificates(&ca.bytes, ca.field, &ca.origin)? {
                store.add(cert).map_err(|e| {
                    invalid(
                        ca.field,
                        format!("{}: not a CA certificate: {e}", ca.origin),
                    )
                })?;
            }
            Arc::new(store)
        }
        None => default_roots().0,
    };
    let cert = pem_source(
        &tls.cert,
        &tls.cert_file,
        &tls.cert_ref,
        "cert",
        "cert_file",
    )?;
    let key = pem_source(&tls.key, &tls.key_file, &tls.key_ref, "key", "key_file")?;
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "key_file",
                "exactly one of key or key_file must be configured when a client certificate is configured",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "cert_file",
                "exactly one of cert or cert_file must be configured when a client key is configured",
            ));
        }
        (Some(cert), Some(key)) => {
            let certs = certificates(&cert.bytes, cert.field, &cert.origin)?;
            let key = PrivateKeyDer::from_pem_slice(&key.bytes).map_err(|e| {
                invalid(
                    key.field,
                    format!("{}: no PEM private key: {e}", key.origin),
                )
            })?;
            Some((certs, key))
        }
    };

    let min = tls_version(&tls.min_version, "min_version")?;
    let max = tls_version(&tls.max_version, "max_version")?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = rustls::ALL_VERSIONS
        .iter()
        .copied()
        .filter(|v| {
            let rank = |v: &rustls::SupportedProtocolVersion| u16::from(v.version);
            min.is_none_or(|m| rank(v) >= rank(m)) && max.is_none_or(|m| rank(v) <= rank(m))
        })
        .collect();
    if versions.is_empty() {
        return Err(invalid(
            "max_version",
            "max_version must be greater than or equal to min_version",
        ));
    }

    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid("min_version", e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify == Some(true) {
        Arc::new(NoVerification {
            provider: provider.clone(),
        })
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| invalid("ca_file", e.to_string()))?;
        match tls.server_name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => {
                let name = ServerName::try_from(name.to_string())
                    .map_err(|e| invalid("server_name", format!("{name:?}: {e}")))?;
                Arc::new(FixedServerName {
                    inner: webpki,
                    name,
                })
            }
            None => webpki,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| invalid("key_file", format!("the client certificate and key: {e}"))),
    }
}

/// Verifies the server's certificate for `tls_config.server_name` rather
/// than for the host that was dialled (Go's `tls.Config.ServerName`).
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify: true`: any certificate is accepted (the
/// handshake's signatures are still checked, so the peer holds the key of
/// the certificate it sent).
#[derive(Debug)]
struct NoVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// No test of this crate installs a process-wide provider, so this
    /// checks that every constructor works without one (reqwest panics
    /// when it has to pick a provider itself).
    #[test]
    fn constructors_work_without_a_process_wide_provider() {
        assert!(CryptoProvider::get_default().is_none());
        client();
        builder().build().unwrap();
        builder_trusting_nothing().build().unwrap();
        builder_with_tls(None).unwrap().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let tls = TlsConfig {
            ca_file: Some(write(&dir, "ca.pem", &ca.cert.pem())),
            cert_file: Some(write(&dir, "c.pem", &ca.cert.pem())),
            key_file: Some(write(&dir, "c.key", &ca.signing_key.serialize_pem())),
            server_name: Some("example.org".into()),
            min_version: Some("TLS12".into()),
            ..Default::default()
        };
        builder_with_tls(Some(&tls)).unwrap().build().unwrap();
        let insecure = TlsConfig {
            insecure_skip_verify: Some(true),
            ..Default::default()
        };
        builder_with_tls(Some(&insecure)).unwrap().build().unwrap();
        assert!(CryptoProvider::get_default().is_none());
    }

    #[test]
    fn bad_files_name_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = client_config(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with("tls_config.ca_file: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        let not_pem = TlsConfig {
            ca_file: Some(write(&dir, "ca.pem", "hello")),
            ..Default::default()
        };
        let err = client_config(&not_pem).unwrap_err().to_string();
        assert!(
            err.contains("tls_config.ca_file") && err.contains("no PEM"),
            "{err}"
        );
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_only = TlsConfig {
            cert_file: Some(write(&dir, "c.pem", &cert.cert.pem())),
            ..Default::default()
        };
        let err = client_config(&cert_only).unwrap_err().to_string();
        assert!(err.starts_with("tls_config.key_file:"), "{err}");
        let bad_key = TlsConfig {
            cert_file: Some(write(&dir, "c.pem", &cert.cert.pem())),
            key_file: Some(write(&dir, "k.pem", &cert.cert.pem())),
            ..Default::default()
        };
        let err = client_config(&bad_key).unwrap_err().to_string();
        assert!(err.starts_with("tls_config.key_file:"), "{err}");
        let both = TlsConfig {
            ca: Some(cert.cert.pem()),
            ca_file: Some("x".into()),
            ..Default::default()
        };
        let err = client_config(&both).unwrap_err().to_string();
        assert!(err.contains("at most one of ca & ca_file"), "{err}");
        let version = TlsConfig {
            min_version: Some("TLS9".into()),
            ..Default::default()
        };
        let err = client_config(&version).unwrap_err().to_string();
        assert!(err.starts_with("tls_config.min_version:"), "{err}");
        let inverted = TlsConfig {
            min_version: Some("TLS13".into()),
            max_version: Some("TLS12".into()),
            ..Default::default()
        };
        assert!(client_config(&inverted).is_err());
    }

    #[test]
    fn default_roots_are_never_empty() {
        let (roots, _) = default_roots();
        assert!(!roots.is_empty());
    }
}
