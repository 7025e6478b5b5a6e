//! HTTPS and MQTTS from certificate files made at test time: answers to clients that trust the test CA, refusals
//! to those that do not, reloads when the files change (and refusals of a bad change), the handshake timeout, and
//! the start refusing files that cannot serve.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::helpers::{TestServer, test_config};
use crate::mqtt::Client;
use crate::python_clients::run_client;

/// A certificate authority of the test's own, which issues server certificates for `localhost` and 127.0.0.1.
struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    certificate: rcgen::Certificate,
}

/// A server certificate and its key, as PEM, and the certificate's DER to recognise it by.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        TestCa { params, key, certificate }
    }

    fn issue(&self) -> Issued {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer).unwrap();
        Issued { cert_pem: certificate.pem(), key_pem: key.serialize_pem(), der: certificate.der().clone() }
    }

    /// A client context that trusts this CA only.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.certificate.der().clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Every connection a full handshake: a resumed session goes on with the certificate it began with, and the
        // tests look at which certificate new handshakes get.
        config.resumption = rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(config))
    }
}

/// The certificate files a server is configured with, in a directory of the test's own.
struct CertFiles {
    directory: tempfile::TempDir,
}

impl CertFiles {
    fn new(issued: &Issued) -> CertFiles {
        let files = CertFiles { directory: tempfile::tempdir().unwrap() };
        files.replace(issued);
        files
    }

    fn cert(&self) -> PathBuf {
        self.directory.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.directory.path().join("key.pem")
    }

    /// Replaces both files the way certificate tools do: written aside, then renamed over the old ones.
    fn replace(&self, issued: &Issued) {
        write_by_rename(&self.cert(), &issued.cert_pem);
        write_by_rename(&self.key(), &issued.key_pem);
    }
}

fn write_by_rename(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

async fn start_with_tls(files: &CertFiles) -> TestServer {
    let (cert, key) = (files.cert(), files.key());
    TestServer::start_with(move |config| {
        config.tls_cert_file = Some(cert);
        config.tls_key_file = Some(key);
        config.https_addr = Some("127.0.0.1:0".parse().unwrap());
        config.mqtts_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

fn https_addr(tessera: &TestServer) -> SocketAddr {
    tessera.server.as_ref().unwrap().https_addr().expect("HTTPS listens")
}

fn mqtts_addr(tessera: &TestServer) -> SocketAddr {
    tessera.server.as_ref().unwrap().mqtts_addr().expect("MQTTS listens")
}

async fn dial(address: SocketAddr, connector: &TlsConnector) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("the server presented a certificate")[0].clone().into_owned()
}

/// One HTTP/1.1 request over `stream` (the connection closed after it); the answer's status and body.
async fn request(mut stream: TlsStream<TcpStream>, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// Waits until `condition` holds, failing the test after `limit`.
async fn eventually(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Longer than the reload check's interval, with room for a loaded machine.
const RELOAD_WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn https_serves_the_routes_to_a_client_that_trusts_the_certificate() {
    let ca = TestCa::new("Tessera test CA");
    let files = CertFiles::new(&ca.issue());
    let tessera = start_with_tls(&files).await;
    let connector = ca.connector();

    let (status, body) = request(dial(https_addr(&tessera), &connector).await.unwrap(), "/healthz", &[]).await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", tessera.account_token().await);
    let stream = dial(https_addr(&tessera), &connector).await.unwrap();
    let (status, body) = request(stream, "/v1/collections", &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "a JSON answer: {body}");
    let (status, _) = request(dial(https_addr(&tessera), &connector).await.unwrap(), "/v1/collections", &[]).await;
    assert_eq!(status, 401, "the same refusals as over plain HTTP");

    // Plain HTTP goes on as before, beside it.
    let (status, _) = tessera.call(Method::GET, "/healthz", &[], None).await;
    assert_eq!(status, StatusCode::OK);

    // A client with another CA refuses the server's certificate: no request is made.
    let stranger = TestCa::new("Another CA").connector();
    let refused = dial(https_addr(&tessera), &stranger).await.unwrap_err();
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // Nor does plain HTTP get an answer on the HTTPS port.
    let mut plain = TcpStream::connect(https_addr(&tessera)).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await.expect("closed");
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "no answer over plain HTTP");
}

#[tokio::test]
async fn the_console_sets_secure_cookies_over_https_only() {
    let ca = TestCa::new("Tessera test CA");
    let files = CertFiles::new(&ca.issue());
    let tessera = start_with_tls(&files).await;
    let mut stream = dial(https_addr(&tessera), &ca.connector()).await.unwrap();
    stream.write_all(b"GET /console/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let head = answer.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    let cookies: Vec<&str> = head.lines().filter(|line| line.starts_with("set-cookie:")).collect();
    assert!(!cookies.is_empty(), "the sign-in page sets its cookie: {head}");
    assert!(cookies.iter().all(|cookie| cookie.contains("; secure")), "{cookies:?}");

    let response = tessera.client.get(tessera.url("/console/login")).send().await.unwrap();
    let plain: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(!plain.is_empty() && plain.iter().all(|cookie| !cookie.contains("secure")), "{plain:?}");
}

#[tokio::test]
async fn a_device_connects_and_publishes_over_mqtts() {
    let ca = TestCa::new("Tessera test CA");
    let files = CertFiles::new(&ca.issue());
    let tessera = start_with_tls(&files).await;
    let device = tessera.device_with_reading("tls-device").await;
    let (_, token) =
        tessera.native(Method::POST, &format!("/devices/{device}/tokens"), &tessera.api_key, Some(json!({}))).await;
    let secret = token["secret"].as_str().unwrap().to_owned();

    let stream = dial(mqtts_addr(&tessera), &ca.connector()).await.expect("the handshake succeeds");
    let (mut client, _) =
        Client::connect_over(Box::new(stream), &secret, "", "tls-device", true).await.expect("CONNACK accepted");
    assert!(client.publish(&format!("device/{device}/asset/t/state"), json!({"value": 8})).await, "PUBACK");
    let bearer = format!("Bearer {secret}");
    let (status, state) = tessera
        .call(Method::GET, &format!("/device/{device}/asset/t/state"), &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["state"]["value"], 8.0);

    // A wrong token is refused at CONNACK over TLS too.
    let stream = dial(mqtts_addr(&tessera), &ca.connector()).await.unwrap();
    assert!(Client::connect_over(Box::new(stream), "not-a-token", "", "stranger", true).await.is_err());
    // A client that does not trust the certificate never gets as far as CONNECT.
    assert!(dial(mqtts_addr(&tessera), &TestCa::new("Another CA").connector()).await.is_err());
    // And plain MQTT stays where it was.
    assert!(Client::connect(&tessera, &secret, "").await.is_ok());
}

#[tokio::test]
async fn paho_connects_over_mqtts_trusting_the_ca() {
    let ca = TestCa::new("Tessera test CA");
    let files = CertFiles::new(&ca.issue());
    let ca_file = files.directory.path().join("ca.pem");
    std::fs::write(&ca_file, ca.certificate.pem()).unwrap();
    let tessera = start_with_tls(&files).await;
    let device = tessera.device_with_reading("paho-device").await;
    let (_, token) =
        tessera.native(Method::POST, &format!("/devices/{device}/tokens"), &tessera.api_key, Some(json!({}))).await;
    let secret = token["secret"].as_str().unwrap().to_owned();
    let environment = vec![
        ("TESSERA_MQTTS", mqtts_addr(&tessera).to_string()),
        ("TESSERA_CA", ca_file.display().to_string()),
        ("TESSERA_DEVICE", device.clone()),
        ("TESSERA_TOKEN", secret.clone()),
    ];
    if !run_client("paho_mqtts.py", &["paho.mqtt"], environment).await {
        return;
    }
    let bearer = format!("Bearer {secret}");
    let (status, state) = tessera
        .call(Method::GET, &format!("/device/{device}/asset/t/state"), &[("authorization", &bearer)], None)
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["state"]["value"], 21.0, "paho's publish was stored");
}

/// Debian's `mosquitto_pub`, unchanged, over MQTTS with the test's CA (and refused with the system's CAs only).
#[tokio::test]
async fn mosquitto_pub_publishes_over_mqtts_trusting_the_ca() {
    if std::process::Command::new("mosquitto_pub").arg("--help").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must install mosquitto-clients");
        eprintln!("skipped: mosquitto_pub is not installed (apt-get install mosquitto-clients)");
        return;
    }
    let ca = TestCa::new("Tessera test CA");
    let files = CertFiles::new(&ca.issue());
    let ca_file = files.directory.path().join("ca.pem");
    std::fs::write(&ca_file, ca.certificate.pem()).unwrap();
    let tessera = start_with_tls(&files).await;
    let token = tessera.account_token().await;
    let port = mqtts_addr(&tessera).port().to_string();
    let publish = |trust: [&str; 2]| {
        tokio::process::Command::new("mosquitto_pub")
            .args(trust)
            .args(["-h", "localhost", "-p", &port, "-u", &token, "-q", "1", "-t", "/v1.6/devices/tls-cli"])
            .args(["-m", r#"{"temperature": 21.5}"#])
            .output()
    };
    let published = publish(["--cafile", ca_file.to_str().unwrap()]).await.unwrap();
    assert!(published.status.success(), "{}", String::from_utf8_lossy(&published.stderr));
    let (status, last) = tessera.ubidots(Method::GET, "/devices/tls-cli/temperature/lv", &token, None).await;
    assert_eq!((status, last), (StatusCode::OK, json!(21.5)));
    let refused = publish(["--capath", "/etc/ssl/certs"]).await.unwrap();
    assert!(!refused.status.success(), "a client that does not trust the CA is refused");
}

#[tokio::test]
async fn changed_files_serve_new_connections_and_a_bad_change_keeps_the_old_pair() {
    let ca = TestCa::new("Tessera test CA");
    let first = ca.issue();
    let files = CertFiles::new(&first);
    let tessera = start_with_tls(&files).await;
    let connector = ca.connector();
    let certificates = tessera.server.as_ref().unwrap().certificates().unwrap().clone();
    let open = dial(https_addr(&tessera), &connector).await.unwrap();
    assert_eq!(presented(&open), first.der);

    let second = ca.issue();
    files.replace(&second);
    eventually(RELOAD_WAIT, "new handshakes get the new certificate", async || {
        presented(&dial(https_addr(&tessera), &connector).await.unwrap()) == second.der
    })
    .await;
    assert_eq!(presented(&dial(mqtts_addr(&tessera), &connector).await.unwrap()), second.der, "MQTTS too");
    assert!(certificates.reloaded() >= 1);
    // The connection opened before the change goes on with its session.
    let (status, _) = request(open, "/healthz", &[]).await;
    assert_eq!(status, 200);

    // A key that is not the certificate's is refused, and the second pair goes on serving.
    // (Counted from here: the renames above may have been seen one at a time, the first refused.)
    let (reloaded, refused) = (certificates.reloaded(), certificates.refused());
    let third = ca.issue();
    write_by_rename(&files.cert(), &third.cert_pem);
    eventually(RELOAD_WAIT, "the mismatched pair is refused", async || certificates.refused() > refused).await;
    assert_eq!(presented(&dial(https_addr(&tessera), &connector).await.unwrap()), second.der);
    // So is a file that is not PEM at all.
    write_by_rename(&files.key(), "not a key");
    eventually(RELOAD_WAIT, "the unreadable key is refused", async || certificates.refused() > refused + 1).await;
    assert_eq!(certificates.reloaded(), reloaded, "nothing bad was loaded");
    let (status, _) = request(dial(https_addr(&tessera), &connector).await.unwrap(), "/healthz", &[]).await;
    assert_eq!(status, 200, "still served with the second pair");
    // Putting the third pair's key in place mends it.
    write_by_rename(&files.key(), &third.key_pem);
    eventually(RELOAD_WAIT, "the mended pair serves", async || {
        presented(&dial(https_addr(&tessera), &connector).await.unwrap()) == third.der
    })
    .await;
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_cut_off_and_counted_under_the_bound() {
    let ca = TestCa::new("Tessera test CA");
    let files = CertFiles::new(&ca.issue());
    let (cert, key) = (files.cert(), files.key());
    let header_timeout = Duration::from_millis(700);
    let tessera = TestServer::start_with(move |config| {
        config.tls_cert_file = Some(cert);
        config.tls_key_file = Some(key);
        config.https_addr = Some("127.0.0.1:0".parse().unwrap());
        config.http_header_timeout = header_timeout;
        config.http_max_connections = 1;
    })
    .await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(https_addr(&tessera)).await.unwrap();
    // While the silent client holds the one connection, nobody else is served, over HTTPS or HTTP.
    let connector = ca.connector();
    let mut waiting = Box::pin(dial(https_addr(&tessera), &connector));
    assert!(
        tokio::time::timeout(header_timeout / 2, &mut waiting).await.is_err(),
        "a second client waits at the bound"
    );
    let mut buffer = [0; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer)).await.expect("cut off");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without a byte: {read:?}");
    let waited = started.elapsed();
    assert!(waited >= header_timeout && waited < header_timeout * 5, "{waited:?}");
    // Its permit back, the waiting client is served.
    let stream = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("accepted").unwrap();
    let (status, _) = request(stream, "/healthz", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn start_refuses_tls_files_that_cannot_serve_naming_the_key() {
    let ca = TestCa::new("Tessera test CA");
    let issued = ca.issue();
    let files = CertFiles::new(&issued);
    let data_dir = tempfile::tempdir().unwrap();
    let refused = async |cert: PathBuf, key: PathBuf| {
        let mut config = test_config(&data_dir, None);
        config.tls_cert_file = Some(cert);
        config.tls_key_file = Some(key);
        config.https_addr = Some("127.0.0.1:0".parse().unwrap());
        tessera_server::start(config).await.expect_err("start refuses").to_string()
    };
    let missing = files.directory.path().join("missing.pem");
    let error = refused(files.cert(), missing.clone()).await;
    assert!(error.contains("tls_key_file") && error.contains("missing.pem"), "{error}");
    let error = refused(missing, files.key()).await;
    assert!(error.contains("tls_cert_file"), "{error}");
    let other = ca.issue();
    let stray = files.directory.path().join("other-key.pem");
    std::fs::write(&stray, &other.key_pem).unwrap();
    let error = refused(files.cert(), stray).await;
    assert!(error.contains("tls_key_file") && error.contains("is not the key of the certificate"), "{error}");
    // The key file named as the certificate: no certificate in it.
    let error = refused(files.key(), files.key()).await;
    assert!(error.contains("tls_cert_file") && error.contains("no certificate"), "{error}");

    // An HTTPS address without the files is refused by name too.
    let mut config = test_config(&data_dir, None);
    config.https_addr = Some("127.0.0.1:0".parse().unwrap());
    let error = tessera_server::start(config).await.expect_err("start refuses").to_string();
    assert!(error.contains("https_addr") && error.contains("tls_cert_file"), "{error}");
}
