//! TLS for the HTTPS and MQTTS listeners: the certificate chain and private key named in the configuration
//! (`tls_cert_file`, `tls_key_file`, PEM), served by rustls on the `ring` provider, and loaded again without a
//! restart when the files change.
//!
//! - At start a file that is missing, unreadable, not PEM, holds no certificate or no key, or whose key does not
//!   match the certificate is a configuration error naming the key (`start` refuses).
//! - [`watch`] reads both files every [`RELOAD_CHECK_EVERY`]; when the bytes of either changed it loads the pair
//!   again. A pair that loads goes into [`Certificates`] (one swap under a lock held for
//!   the copy of an `Arc`), and every handshake from then on gets it; connections already open keep their session.
//!   A pair that fails to load is refused with one warning naming the file and the problem, and the old pair goes
//!   on serving; it is tried again when a file changes again (a certificate written before its key, say).
//! - A handshake is done in the connection's own task, never in an accept loop, under a deadline (the HTTP header
//!   timeout, the MQTT CONNECT timeout). One client's failed handshake is logged at debug with a short reason
//!   ([`HandshakeFailure`]), never as a warning: a fleet with a wrong trust store would flood the log.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often [`watch`] looks at the files: a renewed certificate serves within this long of being written. Two
/// reads of a few kilobytes each time, compared with the last.
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The certificate chain and key files, as the configuration names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then the intermediates that lead to the root.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
}

/// Why a pair of files cannot serve, with the configuration key of the file at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} ({}) {problem}", path.display())]
pub struct LoadError {
    /// `tls_cert_file` or `tls_key_file`.
    pub key: &'static str,
    pub path: PathBuf,
    pub problem: String,
}

impl LoadError {
    /// The same problem as a configuration error (`start` and `tessera config show` refuse it).
    pub fn into_config_error(self) -> crate::config::ConfigError {
        crate::config::ConfigError { key: self.key, problem: format!("({}) {}", self.path.display(), self.problem) }
    }
}

/// The crypto provider for every TLS context Tessera makes: ring's (aws-lc-rs, rustls' default, builds C code
/// with cmake).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the chain and key, and checks that the key is the certificate's.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, LoadError> {
    let (cert_text, key_text) = read(files)?;
    parse(files, &cert_text, &key_text)
}

/// Both files' bytes.
fn read(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), LoadError> {
    let unreadable = |key, path: &PathBuf, error: io::Error| LoadError {
        key,
        path: path.clone(),
        problem: format!("cannot be read: {error}"),
    };
    let cert_text =
        std::fs::read(&files.cert_file).map_err(|error| unreadable("tls_cert_file", &files.cert_file, error))?;
    let key_text =
        std::fs::read(&files.key_file).map_err(|error| unreadable("tls_key_file", &files.key_file, error))?;
    Ok((cert_text, key_text))
}

/// The pair in the files' bytes, checked as [`load`] says.
fn parse(files: &TlsFiles, cert_text: &[u8], key_text: &[u8]) -> Result<CertifiedKey, LoadError> {
    let cert_error = |problem: String| LoadError { key: "tls_cert_file", path: files.cert_file.clone(), problem };
    let key_error = |problem: String| LoadError { key: "tls_key_file", path: files.key_file.clone(), problem };
    let chain = CertificateDer::pem_slice_iter(cert_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| cert_error(format!("is not PEM: {error}")))?;
    if chain.is_empty() {
        return Err(cert_error("holds no certificate (a PEM `BEGIN CERTIFICATE` block)".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_text).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => {
            key_error("holds no private key (a PEM PKCS#8, RSA or EC `PRIVATE KEY` block)".into())
        }
        error => key_error(format!("is not PEM: {error}")),
    })?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| key_error(format!("holds a key TLS cannot use: {error}")))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive is taken as it is (the handshake would then fail).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(key_error(format!(
            "is not the key of the certificate in tls_cert_file ({})",
            files.cert_file.display()
        ))),
        Err(error) => Err(cert_error(format!("holds a certificate that does not parse: {error}"))),
    }
}

/// The pair every new handshake gets, and what the reloads did: rustls asks [`ResolvesServerCert::resolve`] once
/// per full handshake, which copies an `Arc` under a read lock.
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes when last looked at (by the watcher only).
    seen: std::sync::Mutex<Seen>,
    reloaded: AtomicU64,
    refused: AtomicU64,
}

impl Certificates {
    /// Loads the pair `files` names: an error names the key of the file at fault.
    pub fn load(files: TlsFiles) -> Result<Certificates, LoadError> {
        let (cert_text, key_text) = read(&files)?;
        let current = RwLock::new(Arc::new(parse(&files, &cert_text, &key_text)?));
        let seen = std::sync::Mutex::new(Seen { files: Some(fingerprint(&cert_text, &key_text)), unreadable: None });
        Ok(Certificates { files, current, seen, reloaded: AtomicU64::new(0), refused: AtomicU64::new(0) })
    }

    /// The pair in force.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Changed pairs loaded since the start.
    pub fn reloaded(&self) -> u64 {
        self.reloaded.load(Ordering::Relaxed)
    }

    /// Changed pairs refused since the start (the old pair kept serving).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Reads the files, and when their bytes changed loads them: the new pair serves, or the old one stays and the
    /// problem is said once. Blocking file work.
    fn look(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (cert_text, key_text) = match read(&self.files) {
            Ok(texts) => texts,
            Err(error) => {
                // A file gone for a moment is being replaced: looked at again next time, without a word. Another
                // problem (permissions) is said once, not at every look.
                let missing = [&self.files.cert_file, &self.files.key_file].iter().any(|path| !path.exists());
                if !missing && seen.unreadable.as_ref() != Some(&error) {
                    self.refuse(&error);
                    seen.unreadable = Some(error);
                }
                return;
            }
        };
        seen.unreadable = None;
        let now = fingerprint(&cert_text, &key_text);
        if seen.files == Some(now) {
            return;
        }
        let loaded = parse(&self.files, &cert_text, &key_text);
        seen.files = Some(now);
        match loaded {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(pair);
                self.reloaded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    cert_file = %self.files.cert_file.display(), key_file = %self.files.key_file.display(),
                    "loaded the changed TLS certificate; new connections get it"
                );
            }
            Err(error) => self.refuse(&error),
        }
    }

    fn refuse(&self, error: &LoadError) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            key = error.key, file = %error.path.display(), problem = %error.problem,
            "refused the changed TLS certificate files; the previous certificate goes on serving"
        );
    }

    /// A server context on this pair, offering `alpn` (nothing for MQTTS, `http/1.1` for HTTPS).
    pub fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring's provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The files and the counts; nothing of the key.
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .field("reloaded", &self.reloaded())
            .field("refused", &self.refused())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What the watcher saw of the files last time it looked.
#[derive(Debug)]
struct Seen {
    /// A fingerprint of their bytes: a change is a change of content, whatever the file system's timestamps say
    /// (an edit within one tick of its clock keeps the modification time). Not the bytes themselves, so no second
    /// copy of the private key stays in memory.
    files: Option<u64>,
    /// The reading problem last said, so that it is said once.
    unreadable: Option<LoadError>,
}

/// Both files' contents in one number, to tell a change (SipHash: no one chooses these files to collide).
fn fingerprint(cert_text: &[u8], key_text: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (cert_text, key_text).hash(&mut hasher);
    hasher.finish()
}

/// Looks at the files every `every` until `stopped` turns true, and loads them again when either changed. A file
/// that is gone for a moment (being replaced) is looked at again next time, without a warning.
pub async fn watch(certificates: Arc<Certificates>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once; the files were just loaded.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let certificates = certificates.clone();
        // Reading and parsing are blocking file work; they stay off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || certificates.look()).await;
    }
}

/// A connection's byte stream, plain or TLS: one type for the listeners' connection code, no indirection for
/// plain connections.
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }
}

/// Why a client's handshake failed, as a short label for logs (and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No handshake within the deadline (a client that opened TCP and sent nothing, or too little).
    TimedOut,
    /// The client closed or reset the connection during the handshake.
    Closed,
    /// The client ended it with an alert: most often it does not trust the certificate.
    ClientAlert,
    /// What came was not TLS (plain HTTP or MQTT on the TLS port), or not TLS we speak.
    Protocol,
}

impl HandshakeFailure {
    pub fn of(error: &io::Error) -> HandshakeFailure {
        if let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::AlertReceived(_) => HandshakeFailure::ClientAlert,
                _ => HandshakeFailure::Protocol,
            };
        }
        match error.kind() {
            io::ErrorKind::InvalidData => HandshakeFailure::Protocol,
            io::ErrorKind::TimedOut => HandshakeFailure::TimedOut,
            _ => HandshakeFailure::Closed,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::TimedOut => "timed_out",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::ClientAlert => "client_alert",
            HandshakeFailure::Protocol => "protocol",
        }
    }
}

/// The TLS handshake of a connection accepted on `listener`, within `deadline`; a failure is logged at debug and
/// answers `None`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    listener: &'static str,
    deadline: tokio::time::Instant,
) -> Option<Transport> {
    let failure = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => return Some(Transport::Tls(Box::new(tls))),
        Ok(Err(error)) => (HandshakeFailure::of(&error), error.to_string()),
        Err(_) => (HandshakeFailure::TimedOut, "no handshake before the deadline".to_owned()),
    };
    tracing::debug!(%peer, listener, reason = failure.0.label(), error = %failure.1, "tls handshake failed");
    None
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A self-signed certificate for `localhost` and its key, as PEM.
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    fn files_with(directory: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles { cert_file: directory.join("cert.pem"), key_file: directory.join("key.pem") };
        std::fs::write(&files.cert_file, cert).unwrap();
        std::fs::write(&files.key_file, key).unwrap();
        files
    }

    #[test]
    fn a_pair_loads_and_every_bad_file_is_named_with_its_problem() {
        let directory = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let loaded = load(&files_with(directory.path(), &cert, &key)).unwrap();
        assert_eq!(loaded.cert.len(), 1);

        let refused = |cert: &str, key: &str| load(&files_with(directory.path(), cert, key)).unwrap_err();
        let (other_cert, other_key) = self_signed();
        let mismatch = refused(&cert, &other_key);
        assert_eq!(mismatch.key, "tls_key_file");
        assert!(mismatch.problem.contains("is not the key of the certificate"), "{mismatch}");
        let no_certificate = refused(&other_key, &key);
        assert!(no_certificate.key == "tls_cert_file" && no_certificate.problem.contains("no certificate"));
        let no_key = refused(&other_cert, &other_cert);
        assert!(no_key.key == "tls_key_file" && no_key.problem.contains("no private key"), "{no_key}");
        let garbled = refused(&cert.replace("MII", "!!!"), &key);
        assert!(garbled.key == "tls_cert_file" && garbled.problem.contains("not PEM"), "{garbled}");

        let missing =
            TlsFiles { cert_file: directory.path().join("gone.pem"), key_file: directory.path().join("key.pem") };
        let error = load(&missing).unwrap_err();
        assert!(error.key == "tls_cert_file" && error.to_string().contains("gone.pem"), "{error}");
        assert!(error.into_config_error().to_string().starts_with("configuration: tls_cert_file ("));
    }

    #[tokio::test]
    async fn the_watcher_loads_a_changed_pair_and_keeps_the_old_one_over_a_bad_change() {
        let directory = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let files = files_with(directory.path(), &cert, &key);
        let certificates = Arc::new(Certificates::load(files.clone()).unwrap());
        let first = certificates.current();
        let shown = format!("{certificates:?}");
        assert!(shown.contains("key.pem") && !shown.contains("PRIVATE") && !shown.contains(&key[40..60]), "{shown}");
        let (stop, stopped) = watch::channel(false);
        let watcher = tokio::spawn(watch(certificates.clone(), Duration::from_millis(20), stopped));

        // A key that does not match: refused, the first pair stays.
        let (second_cert, second_key) = self_signed();
        std::fs::write(&files.cert_file, &second_cert).unwrap();
        wait_for(|| certificates.refused() >= 1).await;
        assert!(Arc::ptr_eq(&certificates.current(), &first));
        // Its key arrives: loaded.
        std::fs::write(&files.key_file, &second_key).unwrap();
        wait_for(|| certificates.reloaded() == 1).await;
        assert_ne!(certificates.current().cert, first.cert);
        // A file gone for a while is neither loaded nor warned about; the pair in force stays.
        let refused = certificates.refused();
        std::fs::remove_file(&files.key_file).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!((certificates.reloaded(), certificates.refused()), (1, refused));
        // Back as it was, it is no change.
        std::fs::write(&files.key_file, &second_key).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!((certificates.reloaded(), certificates.refused()), (1, refused));
        let _ = stop.send(true);
        watcher.await.unwrap();
    }

    async fn wait_for(condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "not within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn handshake_failures_get_a_short_reason() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        assert_eq!(HandshakeFailure::of(&alert), HandshakeFailure::ClientAlert);
        let garbage = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(HandshakeFailure::of(&garbage).label(), "protocol");
        assert_eq!(HandshakeFailure::of(&io::Error::from(io::ErrorKind::UnexpectedEof)), HandshakeFailure::Closed);
    }
}
