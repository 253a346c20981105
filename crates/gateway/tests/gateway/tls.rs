//! The TLS listener: a self-signed certificate made by rcgen, served, then
//! replaced on disk and picked up without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use lucia_common::Shutdown;
use lucia_common::duration::ConfigDuration;
use lucia_common::server::ProcessConfig;
use lucia_gateway::config::TlsConfig;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::harness::Backend;

fn self_signed() -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// GETs `path` over TLS; returns the status, body and the certificate the
/// server presented.
async fn get(
    port: u16,
    roots: &RootCertStore,
    path: &str,
) -> std::io::Result<(u16, String, CertificateDer<'static>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let tls = connector.connect(name, tcp).await?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| std::io::Error::other("no certificate"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(std::io::Error::other)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        presented,
    ))
}

#[tokio::test]
async fn tls_with_certificate_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert1, key1, der1) = self_signed();
    let (cert2, key2, der2) = self_signed();
    std::fs::write(&cert_file, &cert1).expect("write cert");
    std::fs::write(&key_file, &key1).expect("write key");
    let mut roots = RootCertStore::empty();
    roots.add(der1.clone()).expect("root 1");
    roots.add(der2.clone()).expect("root 2");

    let querier = Backend::start("querier").await;
    let mut config = lucia_gateway::Config::default();
    config.backends.all = vec![querier.url()];
    config.tls = Some(TlsConfig {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        reload_interval: ConfigDuration::from_millis(100),
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let process = ProcessConfig {
        listen_address: ([127, 0, 0, 1], port).into(),
        data_dir: dir.path().to_path_buf(),
        multi_tenant: false,
        consul: None,
    };
    let shutdown = Shutdown::new();
    let server = tokio::spawn(lucia_gateway::run(config, process, shutdown.clone()));

    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, body, presented) = loop {
        match get(port, &roots, "/loki/api/v1/labels").await {
            Ok(answer) => break answer,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("no TLS answer: {err}"),
        }
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"backend\":\"querier\""), "{body}");
    assert_eq!(presented, der1);
    let (status, _, _) = get(port, &roots, "/ready").await.expect("ready");
    assert_eq!(status, 200);

    // Plain HTTP to the TLS port gets nowhere.
    let plain = lucia_common::http_client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    // Replace the files: new connections get the new certificate.
    std::fs::write(&key_file, &key2).expect("write key");
    std::fs::write(&cert_file, &cert2).expect("write cert");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, presented) = get(port, &roots, "/ready").await.expect("ready");
        if presented == der2 {
            break;
        }
        assert!(Instant::now() < deadline, "certificate never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("gateway stops")
        .expect("join")
        .expect("clean stop");
}

/// An https backend: trusted through `backend_tls_config.ca_file`, and a
/// 503 naming the certificate problem without it.
#[tokio::test]
async fn proxies_to_an_https_backend() {
    let ca = lucia_tests::tls::TestCa::new(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_ca(dir.path());
    let querier = Backend::start_https("querier", &ca).await;
    assert!(querier.url().starts_with("https://"));

    let mut config = lucia_gateway::Config::default();
    config.backends.querier = vec![querier.url()];
    config.backend_tls_config = Some(lucia_common::http_config::TlsConfig {
        ca_file: Some(ca_file.display().to_string()),
        ..Default::default()
    });
    let gw = crate::harness::Gateway::start(config).await;
    let response = gw.request("GET", "/loki/api/v1/labels", &[], "").await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert!(body.contains("\"backend\":\"querier\""), "{body}");
    assert_eq!(querier.requests().len(), 1);

    let mut untrusting = lucia_gateway::Config::default();
    untrusting.backends.querier = vec![querier.url()];
    let gw = crate::harness::Gateway::start(untrusting).await;
    let response = gw.request("GET", "/loki/api/v1/labels", &[], "").await;
    assert_eq!(response.status(), 503);
    let body = response.text().await.expect("body");
    assert!(body.contains("certificate"), "{body}");
    assert_eq!(querier.requests().len(), 1);
}
