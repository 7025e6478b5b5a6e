//! The HTTP listener: Tessera's own accept loop over hyper, in place of `axum::serve`, which has no timeouts (a
//! client that sent half a request, or nothing, held its connection for ever, and 300 of them took a server with
//! 256 file descriptors off the air). A connection is cut off when its client is too slow:
//!
//! - a request's line and headers must arrive within `http_header_timeout`, counted from the connection's opening
//!   for its first request and from the first byte for later ones (closed without an answer, as nginx does);
//! - a request body may not go `http_body_timeout` without a byte (answered 408, then closed);
//! - an answer may not wait `http_send_timeout` for the client to take a byte (closed), WebSockets and event
//!   streams included;
//! - a connection may stay `http_keep_alive_timeout` between requests (closed);
//!
//! and at most `http_max_connections` are open at once, WebSockets included: at the bound the loop stops
//! accepting until one closes, and the others wait in the listen queue.
//!
//! HTTPS (`https_addr`) is a second listener serving the same routes under the same limits, its connections
//! counted under the same bound. Its TLS handshake runs in the connection's task, inside the first request's
//! header timeout and holding the connection's permit, so a client that opens TCP and never finishes the handshake
//! is cut off like a slow request head; its requests carry [`ReachedOverTls`].
//!
//! What a connection costs (10 000 devices on keep-alive): one task, one timer and one small shared state,
//! allocated when it opens. The timer lives in the stream ([`GuardedStream`]) and is looked at only when a read or
//! a write must wait; it is moved only to an earlier deadline (a later one is taken up when it fires), so a
//! connection that keeps sending requests re-arms it about once per keep-alive timeout, not once per request, and
//! the timeouts cost a request no allocation and about one clock reading. A body's own timer is made only when the body must
//! wait for the client. `ConnectInfo<SocketAddr>` is in every request's extensions, as `axum::serve` put it.
//!
//! Shutdown is `axum::serve`'s graceful one: the loop stops accepting, every connection finishes the request it
//! is serving and closes, and [`serve`] returns when the last has closed. A connection that became a WebSocket
//! has left hyper by then and is not waited for.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::routing::future::RouteFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::Service;
use tower_http::normalize_path::NormalizePath;

use crate::accept::{AcceptFailures, accept};
use crate::config::Config;
use crate::tls::{self, Transport};

/// The routes as the listener serves them (trailing slashes trimmed before routing, every request counted for
/// `/metrics`).
pub type Routes = NormalizePath<crate::http::metrics::CountRequests<Router>>;

/// How slow a client may be, and how many may be connected. See the fields of [`Config`] of the same names.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            header_timeout: config.http_header_timeout,
            body_timeout: config.http_body_timeout,
            send_timeout: config.http_send_timeout,
            keep_alive_timeout: config.http_keep_alive_timeout,
            max_connections: config.http_max_connections,
        }
    }
}

/// The HTTPS listener beside the plain one: its socket and its TLS context.
pub struct HttpsListener {
    pub tcp: TcpListener,
    pub tls: TlsAcceptor,
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `TlsAcceptor` has no `Debug`.
        f.debug_struct("HttpsListener").field("tcp", &self.tcp).finish_non_exhaustive()
    }
}

/// Serves `routes` on `listener`, and on `https` if given, until `stopped` turns true (or its sender is dropped),
/// then finishes the requests in flight and returns. Accept failures are counted under `listener_name` (and
/// `https`).
pub async fn serve(
    listener: TcpListener,
    https: Option<HttpsListener>,
    routes: Routes,
    limits: Limits,
    metrics: Arc<crate::metrics::Metrics>,
    listener_name: &'static str,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    // Every connection holds a receiver: the sender tells them to close, and `closed` says when all have.
    let (closing, closing_seen) = watch::channel(false);
    let mut failures = AcceptFailures::new(listener_name);
    let mut https_failures = AcceptFailures::new("https");
    let accept_errors = metrics.listeners.accept_errors(listener_name);
    let https_accept_errors = &metrics.listeners.https;
    loop {
        // At the bound, nothing is accepted until a connection closes and gives its permit back. One loop takes
        // from both listeners under one permit, so plain and HTTPS connections count together and neither
        // listener holds a permit while it waits.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let https_accept = async {
            match &https {
                Some(https) => {
                    (accept(&https.tcp, &mut https_failures, https_accept_errors).await, Some(https.tls.clone()))
                }
                None => std::future::pending().await,
            }
        };
        let ((stream, peer), tls) = tokio::select! {
            accepted = accept(&listener, &mut failures, accept_errors) => (accepted, None),
            accepted = https_accept => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        // The TLS handshake is the connection task's, so a slow one never holds this loop.
        tokio::spawn(connection(stream, peer, tls, permit, routes.clone(), limits, closing_seen.clone()));
    }
    drop(listener);
    drop(https);
    drop(closing_seen);
    let _ = closing.send(true);
    closing.closed().await;
}

/// One connection, from its accept until it closes or becomes a WebSocket.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    permit: OwnedSemaphorePermit,
    routes: Routes,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) {
    let exchange = Arc::new(Exchange::new());
    let stream = match tls {
        None => Transport::Plain(stream),
        // The handshake is part of the first request's head: it must end within the header timeout counted from
        // the connection's opening, and it holds the connection's permit meanwhile, so clients that open TCP and
        // never finish the handshake are cut off and bounded like slow request heads.
        Some(acceptor) => {
            let deadline = exchange.opened + limits.header_timeout;
            tokio::select! {
                handshaken = tls::handshake(&acceptor, stream, peer, "https", deadline) => match handshaken {
                    Some(stream) => stream,
                    None => return,
                },
                _ = closing.wait_for(|closing| *closing) => return,
            }
        }
    };
    let over_tls = stream.is_tls();
    let io = TokioIo::new(GuardedStream::new(stream, exchange.clone(), limits, permit));
    let service = ConnectionService { routes, exchange, peer, over_tls, body_timeout: limits.body_timeout };
    let connection = hyper::server::conn::http1::Builder::new()
        // hyper's own header timeout boxes a new timer for every request; the stream's covers it.
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let mut told_to_close = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "http connection ended");
                }
                break;
            }
            _ = closing.wait_for(|closing| *closing), if !told_to_close => {
                told_to_close = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, as far as its read timeouts care, and since when. Written by the stream (a
/// request's first byte), the service (a request taken, the protocol switched) and the answer's body (sent); read
/// by the stream when it must wait. Phase and time share one word, so no reader sees a phase with another's time.
#[derive(Debug)]
struct Exchange {
    opened: Instant,
    /// `since << 2 | phase`, `since` in milliseconds after `opened`, or [`UNDATED`].
    state: AtomicU64,
    /// The request's body timed out: its answer becomes a 408.
    body_timed_out: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for a request's line and headers, or reading them.
    Head = 0,
    /// Between requests.
    Idle = 1,
    /// A request taken and not yet answered in full; its body has its own timer.
    Busy = 2,
    /// No longer HTTP: a WebSocket.
    Upgraded = 3,
}

/// A phase entered on the hot path, without a clock reading: it is dated the first time the stream must wait in
/// it, which for a request's head or an idle connection is right away.
const UNDATED: u64 = u64::MAX >> 2;

impl Exchange {
    fn new() -> Exchange {
        // The first request's head is timed from the connection's opening.
        Exchange { opened: Instant::now(), state: AtomicU64::new(Phase::Head as u64), body_timed_out: false.into() }
    }

    fn pack(phase: Phase, since: u64) -> u64 {
        since << 2 | phase as u64
    }

    fn load(&self) -> (Phase, u64) {
        let state = self.state.load(Ordering::Relaxed);
        let phase = match state & 3 {
            0 => Phase::Head,
            1 => Phase::Idle,
            2 => Phase::Busy,
            _ => Phase::Upgraded,
        };
        (phase, state >> 2)
    }

    fn enter(&self, phase: Phase) {
        self.state.store(Exchange::pack(phase, UNDATED), Ordering::Relaxed);
    }

    /// When the phase `state` describes began, dating it now if it was not.
    fn since(&self, phase: Phase, since: u64) -> Instant {
        if since != UNDATED {
            return self.opened + Duration::from_millis(since);
        }
        let now = Instant::now();
        let millis = u64::try_from(now.duration_since(self.opened).as_millis()).unwrap_or(UNDATED - 1);
        // Only if nothing changed the phase meanwhile.
        let _ = self.state.compare_exchange(
            Exchange::pack(phase, UNDATED),
            Exchange::pack(phase, millis),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        now
    }

    /// Bytes arrived: on an idle connection they begin the next request's head.
    fn bytes_arrived(&self) {
        if self.load().0 == Phase::Idle {
            self.enter(Phase::Head);
        }
    }

    /// An answer was sent in full (or given up): the connection waits for the next request, unless it switched
    /// protocols.
    fn answered(&self) {
        if self.load().0 == Phase::Busy {
            self.enter(Phase::Idle);
        }
    }
}

/// The connection's socket, with its timeouts, and its place under the connection bound: the permit goes back
/// when the socket closes, also when it had become a WebSocket.
#[derive(Debug)]
struct GuardedStream {
    stream: Transport,
    exchange: Arc<Exchange>,
    header_timeout: Duration,
    keep_alive_timeout: Duration,
    send_timeout: Duration,
    /// The one timer: never later than the earliest deadline that applies while a read or a write waits.
    timer: Pin<Box<Sleep>>,
    /// Since when a write has been waiting for the client to take bytes.
    write_blocked_since: Option<Instant>,
    _permit: OwnedSemaphorePermit,
}

impl GuardedStream {
    fn new(stream: Transport, exchange: Arc<Exchange>, limits: Limits, permit: OwnedSemaphorePermit) -> Self {
        // Made now, registered with the runtime's timers only when first polled.
        let timer = Box::pin(tokio::time::sleep_until(exchange.opened + limits.header_timeout));
        GuardedStream {
            stream,
            exchange,
            header_timeout: limits.header_timeout,
            keep_alive_timeout: limits.keep_alive_timeout,
            send_timeout: limits.send_timeout,
            timer,
            write_blocked_since: None,
            _permit: permit,
        }
    }

    /// The earliest deadline that applies now, and what passing it means.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        let (phase, since) = self.exchange.load();
        let read = match phase {
            Phase::Head => Some((
                self.exchange.since(phase, since) + self.header_timeout,
                "the request's line and headers did not arrive within the header timeout",
            )),
            Phase::Idle => Some((
                self.exchange.since(phase, since) + self.keep_alive_timeout,
                "no request within the keep-alive timeout",
            )),
            Phase::Busy | Phase::Upgraded => None,
        };
        let write = self
            .write_blocked_since
            .map(|since| (since + self.send_timeout, "the client took nothing of the answer within the send timeout"));
        match (read, write) {
            (Some(read), Some(write)) => Some(if write.0 < read.0 { write } else { read }),
            (read, write) => read.or(write),
        }
    }

    /// Called when a read or a write must wait: ready with an error once the deadline has passed.
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((deadline, passed)) = self.deadline() else { return Poll::Pending };
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.timer.deadline() >= deadline {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, passed));
            }
            // It fired for an earlier deadline that has since moved on (the next request came in time).
            self.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    fn wrote<T>(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match written {
            Poll::Pending => {
                self.write_blocked_since.get_or_insert_with(Instant::now);
                self.poll_timeout(cx).map(Err)
            }
            ready => {
                self.write_blocked_since = None;
                ready
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => this.poll_timeout(cx).map(Err),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.exchange.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        match this.wrote(cx, flushed) {
            // hyper flushes every time it polls the connection, and after the last byte of each answer, when it
            // does not read again (it reads once a byte arrives): this is where an idle connection's timer is set.
            Poll::Ready(Ok(())) => match this.poll_timeout(cx) {
                Poll::Ready(passed) => Poll::Ready(Err(passed)),
                Poll::Pending => Poll::Ready(Ok(())),
            },
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.wrote(cx, shut)
    }
}

/// In a request's extensions when it came over a TLS connection of Tessera's own (HTTPS), as opposed to a proxy
/// in front saying so (`X-Forwarded-Proto`).
#[derive(Debug, Clone, Copy)]
pub struct ReachedOverTls;

/// The routes as one connection's hyper service: each request gets the peer's address, a body with its timeout,
/// and an answer that tells the connection when it is sent.
#[derive(Debug)]
struct ConnectionService {
    routes: Routes,
    exchange: Arc<Exchange>,
    peer: SocketAddr,
    /// The connection is TLS of Tessera's own: requests carry [`ReachedOverTls`].
    over_tls: bool,
    body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<AnswerBody>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: Request<Incoming>) -> Answer {
        self.exchange.enter(Phase::Busy);
        self.exchange.body_timed_out.store(false, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        if self.over_tls {
            request.extensions_mut().insert(ReachedOverTls);
        }
        let request = request.map(|body| TimedBody {
            body,
            timeout: self.body_timeout,
            stall: None,
            arrived: false,
            timed_out: false,
            exchange: self.exchange.clone(),
        });
        // The router is always ready (its `poll_ready` is `Ready` unconditionally); `call` wants it mutable, and a
        // clone is a reference count, as in `axum::serve`.
        let future = self.routes.clone().call(request);
        Answer { future, exchange: Some(self.exchange.clone()) }
    }
}

pin_project_lite::pin_project! {
    /// The router's answer to one request, made a 408 when the request's body timed out.
    struct Answer {
        #[pin]
        future: crate::http::metrics::Counted<RouteFuture<Infallible>>,
        exchange: Option<Arc<Exchange>>,
    }
}

impl Future for Answer {
    type Output = Result<Response<AnswerBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.future.poll(cx));
        let exchange = this.exchange.take().expect("an answer is not polled after it is ready");
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            exchange.enter(Phase::Upgraded);
        } else if exchange.body_timed_out.load(Ordering::Relaxed) {
            // The handler saw a body it could not read (and said so in its dialect's shape); say why, and close,
            // as the rest of the body may still come.
            *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response.map(|body| AnswerBody { body, exchange })))
    }
}

/// An answer's body, which marks the connection idle when it is done with (sent, or given up).
#[derive(Debug)]
struct AnswerBody {
    body: Body,
    exchange: Arc<Exchange>,
}

impl hyper::body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        self.exchange.answered();
    }
}

/// A request body that gives up when no byte of it arrives for `timeout`: between reads, so a slow but steady
/// upload goes on. Its timer is made the first time it must wait, so a body that came with its headers costs none.
#[derive(Debug)]
struct TimedBody {
    body: Incoming,
    timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    /// A frame arrived since the timer was last set.
    arrived: bool,
    timed_out: bool,
    exchange: Arc<Exchange>,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Read(hyper::Error),
    #[error("no part of the body arrived within {0:?}")]
    TimedOut(Duration),
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.arrived = true;
                Poll::Ready(frame.map(|frame| frame.map_err(BodyError::Read)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let stall = this.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if std::mem::take(&mut this.arrived) {
                    stall.as_mut().reset(Instant::now() + timeout);
                }
                ready!(stall.as_mut().poll(cx));
                this.timed_out = true;
                this.exchange.body_timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(BodyError::TimedOut(timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    const LONG: Duration = Duration::from_secs(60);
    const SEND_TIMEOUT: Duration = Duration::from_millis(300);

    /// The server's end of a fresh loopback connection as the listener guards it, answering a request (so only
    /// the send timeout applies), and the client's end.
    async fn answering_stream() -> (GuardedStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await.unwrap();
        let exchange = Arc::new(Exchange::new());
        exchange.enter(Phase::Busy);
        let limits = Limits {
            header_timeout: LONG,
            body_timeout: LONG,
            send_timeout: SEND_TIMEOUT,
            keep_alive_timeout: LONG,
            max_connections: 1,
        };
        (GuardedStream::new(Transport::Plain(server), exchange, limits, permit), client)
    }

    #[tokio::test]
    async fn an_answer_the_client_does_not_take_fails_at_the_send_timeout() {
        let (mut stream, _client) = answering_stream().await;
        let chunk = vec![0; 64 * 1024];
        let started = Instant::now();
        let error = loop {
            assert!(started.elapsed() < Duration::from_secs(10), "writes still succeed");
            if let Err(error) = stream.write_all(&chunk).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(started.elapsed() >= SEND_TIMEOUT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_client_that_takes_its_answer_slowly_is_not_cut_off() {
        // The send timeout is between writes: a reader that pauses but keeps taking what came keeps the
        // connection, however long the answer takes in all.
        let (mut stream, client) = answering_stream().await;
        let reader = tokio::spawn(async move {
            let mut buffer = vec![0; 256 * 1024];
            let mut total = 0;
            loop {
                tokio::time::sleep(SEND_TIMEOUT / 3).await;
                client.readable().await.unwrap();
                loop {
                    match client.try_read(&mut buffer) {
                        Ok(0) => return total,
                        Ok(read) => total += read,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return total,
                    }
                }
            }
        });
        let chunk = vec![0; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < SEND_TIMEOUT * 4 {
            stream.write_all(&chunk).await.expect("a slow reader is not cut off");
        }
        drop(stream);
        assert!(reader.await.unwrap() > 0);
    }
}
