//! Slow and greedy clients (issue 13, items 4 and 5): a request's head, a body or an idle keep-alive connection
//! that takes too long is cut off, connections beyond the bound wait until one closes, and a WebSocket client
//! that sends more than the limit is closed. Each test makes the timeout it is about short and the others long.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tessera_server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::helpers::TestServer;

/// The timeout a test is about.
const SHORT: Duration = Duration::from_millis(300);
/// The timeouts it is not about.
const LONG: Duration = Duration::from_secs(60);
/// How much later than its timeout a connection must be closed for the test to pass: a hang fails.
const GRACE: Duration = Duration::from_secs(3);

/// Every timeout long; the test shortens the one it is about.
fn long_timeouts(config: &mut Config) {
    config.http_header_timeout = LONG;
    config.http_body_timeout = LONG;
    config.http_send_timeout = LONG;
    config.http_keep_alive_timeout = LONG;
}

async fn connect(tessera: &TestServer) -> TcpStream {
    TcpStream::connect(tessera.server.as_ref().unwrap().http_addr()).await.expect("the listener takes connections")
}

/// Reads until the server closes the connection, and returns what it sent; fails if it is still open `bound`
/// after the call.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> String {
    let deadline = Instant::now() + bound;
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => panic!(
                "the connection is still open after {bound:?}; it received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Reads one answer whose body has a `content-length`, leaving the connection open.
async fn read_answer(stream: &mut TcpStream) -> String {
    let deadline = Instant::now() + GRACE;
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|length| length.trim().parse::<usize>().ok())
                .expect("the answer has a content-length");
            if body.len() >= length {
                return text;
            }
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer))
            .await
            .expect("an answer arrives")
            .expect("the connection stays open");
        assert!(read > 0, "the connection closed before the answer was complete: {text:?}");
        received.extend_from_slice(&buffer[..read]);
    }
}

fn ingest_head(token: &str, length: usize) -> String {
    format!(
        "POST /api/v1.6/devices/slow-sender HTTP/1.1\r\nHost: tessera\r\nX-Auth-Token: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn half_a_request_line_is_cut_off_at_the_header_timeout() {
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_header_timeout = SHORT;
    })
    .await;
    let mut stream = connect(&tessera).await;
    let started = Instant::now();
    stream.write_all(b"GET /heal").await.unwrap();
    let answer = closed_within(&mut stream, SHORT + GRACE).await;
    assert_eq!(answer, "", "closed without an answer");
    assert!(started.elapsed() >= SHORT - Duration::from_millis(50), "not before the timeout: {:?}", started.elapsed());

    // A connection that sends nothing at all is closed the same way.
    let mut silent = connect(&tessera).await;
    assert_eq!(closed_within(&mut silent, SHORT + GRACE).await, "");
}

#[tokio::test]
async fn half_the_headers_are_cut_off_at_the_header_timeout() {
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_header_timeout = SHORT;
    })
    .await;
    let mut stream = connect(&tessera).await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: tessera\r\nX-Half: ").await.unwrap();
    assert_eq!(closed_within(&mut stream, SHORT + GRACE).await, "");
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_timeout() {
    // Slowloris: each byte comes well within the timeout, the whole head never does.
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_header_timeout = SHORT;
    })
    .await;
    let mut stream = connect(&tessera).await;
    let started = Instant::now();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: tessera\r\n").await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let mut ticker = tokio::time::interval(Duration::from_millis(30));
    let mut buffer = [0; 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => {
                assert!(matches!(read, Ok(0) | Err(_)), "no answer to an unfinished head: {read:?}");
                break;
            }
            _ = ticker.tick() => {
                assert!(started.elapsed() < SHORT + GRACE, "still open after {:?}", started.elapsed());
                if writer.write_all(b"X-Slow: a\r\n").await.is_err() {
                    break;
                }
            }
        }
    }
    assert!(started.elapsed() >= SHORT - Duration::from_millis(50), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_the_connection_closed() {
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_body_timeout = SHORT;
    })
    .await;
    let token = tessera.account_token().await;
    let mut stream = connect(&tessera).await;
    let body = br#"{"temperature": 21.5}"#;
    stream.write_all(ingest_head(&token, body.len()).as_bytes()).await.unwrap();
    stream.write_all(&body[..8]).await.unwrap();
    let started = Instant::now();
    let answer = closed_within(&mut stream, SHORT + GRACE).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(started.elapsed() >= SHORT - Duration::from_millis(50), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_slow_but_steady_body_is_read_to_its_end() {
    // The body timeout is between reads: a body that keeps coming is not cut off, however long it takes in all.
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_body_timeout = SHORT;
    })
    .await;
    let token = tessera.account_token().await;
    let mut stream = connect(&tessera).await;
    let body = format!("{}{}", " ".repeat(10), r#"{"temperature": 21.5}"#);
    stream.write_all(ingest_head(&token, body.len()).as_bytes()).await.unwrap();
    let started = Instant::now();
    for piece in body.as_bytes().chunks(3) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(SHORT / 3).await;
    }
    assert!(started.elapsed() > SHORT * 2, "the body took longer than the timeout in all");
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_keep_alive_timeout() {
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_keep_alive_timeout = SHORT;
    })
    .await;
    let mut stream = connect(&tessera).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: tessera\r\n\r\n";
    // Requests within the timeout keep the connection, each one starting its wait anew.
    for _ in 0..3 {
        stream.write_all(request).await.unwrap();
        assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(SHORT * 2 / 3).await;
    }
    stream.write_all(request).await.unwrap();
    assert!(read_answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    assert_eq!(closed_within(&mut stream, SHORT + GRACE).await, "");
    assert!(idle_since.elapsed() >= SHORT - Duration::from_millis(50), "{:?}", idle_since.elapsed());
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_until_slow_ones_are_cut_off() {
    const BOUND: usize = 3;
    let header_timeout = Duration::from_millis(800);
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_header_timeout = header_timeout;
        config.http_max_connections = BOUND;
    })
    .await;
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..BOUND {
        silent.push(connect(&tessera).await);
    }
    // The kernel completes the next connection's handshake, but Tessera does not take it while at the bound.
    let mut waiting = connect(&tessera).await;
    waiting.write_all(b"GET /healthz HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buffer = [0; 64];
    let early = tokio::time::timeout(header_timeout / 2, waiting.read(&mut buffer)).await;
    assert!(early.is_err(), "answered while the bound was taken: {early:?}");
    let answer = closed_within(&mut waiting, header_timeout + GRACE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(opened.elapsed() >= header_timeout - Duration::from_millis(50), "{:?}", opened.elapsed());
    for mut stream in silent {
        assert_eq!(closed_within(&mut stream, GRACE).await, "");
    }
    let (status, _) = tessera.call(Method::GET, "/healthz", &[], None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn event_streams_and_websockets_outlive_the_keep_alive_and_header_timeouts() {
    // A stream is a request in flight, and a WebSocket no longer HTTP: neither times out for being quiet.
    let tessera = TestServer::start_with(|config| {
        long_timeouts(config);
        config.http_header_timeout = SHORT;
        config.http_keep_alive_timeout = SHORT;
    })
    .await;
    let org = tessera.organization("Quiet").await;
    let token = tessera.account_token().await;
    let mut events = tessera
        .client
        .get(tessera.url(&format!("/v1/collections/{org}/events")))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let mut request =
        format!("{}/collections/{org}/from", tessera.base.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("x-api-token", token.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the stream opens");

    tokio::time::sleep(SHORT * 3).await;
    let org_token = tessera.organization_token(&org, "sender").await;
    let sender = org_token["token"].as_str().unwrap();
    let (status, _) = tessera
        .ubidots(Method::POST, "/devices/quiet-1", sender, Some(json!({"t": {"value": 7, "timestamp": 1000}})))
        .await;
    assert_eq!(status, StatusCode::OK);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = String::new();
    while !received.contains("event: reading") {
        let chunk = tokio::time::timeout_at(deadline, events.chunk()).await.expect("an event arrives").unwrap();
        received.push_str(std::str::from_utf8(&chunk.expect("the event stream is still open")).unwrap());
    }
    let message = tokio::time::timeout_at(deadline, socket.next()).await.expect("a message arrives");
    let message = message.expect("the WebSocket is still open").unwrap();
    assert!(message.to_text().unwrap().contains("\"data\""), "{message}");
}

/// A Horde `/from` WebSocket with `websocket_max_message_size` set to `limit`.
async fn from_stream(
    limit: usize,
) -> (TestServer, tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>) {
    let tessera = TestServer::start_with(|config| config.websocket_max_message_size = limit).await;
    let org = tessera.organization("Listening").await;
    let token = tessera.account_token().await;
    let mut request =
        format!("{}/collections/{org}/from", tessera.base.replace("http://", "ws://")).into_client_request().unwrap();
    request.headers_mut().insert("x-api-token", token.parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("the stream opens");
    (tessera, socket)
}

/// Reads until the server ends the WebSocket: its close frame or the connection's end. Fails after `GRACE`.
async fn websocket_closed(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) {
    let deadline = Instant::now() + GRACE;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("the WebSocket is still open after {GRACE:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn a_websocket_message_over_the_limit_closes_the_stream() {
    let (_tessera, mut socket) = from_stream(1024).await;
    // Within the limit, what the client sends is let be.
    socket.send(Message::text("x".repeat(1000))).await.unwrap();
    socket.send(Message::Ping(b"still there?".to_vec().into())).await.unwrap();
    let pong = tokio::time::timeout(GRACE, socket.next()).await.expect("a pong").unwrap().unwrap();
    assert!(matches!(pong, Message::Pong(_)), "{pong:?}");

    socket.send(Message::text("x".repeat(2000))).await.unwrap();
    websocket_closed(&mut socket).await;
}

#[tokio::test]
async fn websocket_fragments_adding_up_over_the_limit_close_the_stream() {
    // Each fragment is small; the unfinished message they make is not kept beyond the limit.
    let (_tessera, mut socket) = from_stream(1024).await;
    for kind in [Data::Text, Data::Continue, Data::Continue] {
        let fragment = Frame::message(vec![b'x'; 600], OpCode::Data(kind), false);
        if socket.send(Message::Frame(fragment)).await.is_err() {
            break;
        }
    }
    websocket_closed(&mut socket).await;
}

#[tokio::test]
async fn a_websocket_frame_announcing_more_than_the_limit_closes_the_stream_before_it_arrives() {
    let (_tessera, mut socket) = from_stream(1024).await;
    // The head of a masked 15 MB text frame and a few bytes of it: the server must not wait for the rest.
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&(15_000_000u64).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    head.extend_from_slice(&[0; 64]);
    let tcp = match socket.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        other => panic!("a plain connection, not {other:?}"),
    };
    tcp.write_all(&head).await.unwrap();
    websocket_closed(&mut socket).await;
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_and_idle_connections_do_not_hold_it_up() {
    let mut tessera = TestServer::start_with(long_timeouts).await;
    let token = tessera.account_token().await;
    let address = tessera.server.as_ref().unwrap().http_addr();
    let mut idle = connect(&tessera).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: tessera\r\n\r\n").await.unwrap();
    assert!(read_answer(&mut idle).await.starts_with("HTTP/1.1 200"));
    let mut in_flight = connect(&tessera).await;
    let body = br#"{"temperature": 21.5}"#;
    in_flight.write_all(ingest_head(&token, body.len()).as_bytes()).await.unwrap();
    in_flight.write_all(&body[..8]).await.unwrap();

    let server = tessera.server.take().unwrap();
    let stopping = tokio::spawn(server.shutdown());
    // Stopped accepting: new connections are refused.
    let deadline = Instant::now() + GRACE;
    while TcpStream::connect(address).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after {GRACE:?}");
        tokio::task::yield_now().await;
    }
    assert_eq!(closed_within(&mut idle, GRACE).await, "", "an idle connection is closed at shutdown");
    assert!(!stopping.is_finished(), "shutdown waits for the request in flight");
    in_flight.write_all(&body[8..]).await.unwrap();
    let answer = closed_within(&mut in_flight, GRACE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(GRACE, stopping).await.expect("shutdown completes").unwrap();
}
