//! The bare baselines: an axum handler on the same HTTP stack and runtime as `tessera serve`, doing only the
//! unavoidable part of an ingest request: hash the token header (HMAC-SHA256, as Tessera digests secrets) and parse
//! the same JSON body. What Tessera reaches relative to it is what its token check, authorization, writer and
//! durable commit cost.
//!
//! The no-op baseline stores nothing, which no durable server can approach. The durable one (`--durable-file`)
//! is the true limit of a server that answers only once a reading is on disk: each request hands its body to one
//! writer thread, which appends everything queued since its last turn to a file, calls `fdatasync` once for the
//! whole batch (group commit), and only then lets those requests answer.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tessera_core::ServerKey;
use tokio::sync::oneshot;

/// A body to append, and who waits for it to be on disk.
type Append = (Bytes, oneshot::Sender<()>);

#[derive(Clone)]
struct Baseline {
    key: Arc<ServerKey>,
    /// The group-committing writer, for the durable baseline.
    durable: Option<mpsc::Sender<Append>>,
}

pub async fn serve(address: SocketAddr, durable_file: Option<PathBuf>) -> anyhow::Result<()> {
    let durable = match durable_file {
        Some(path) => Some(start_writer(&path)?),
        None => None,
    };
    let state = Baseline { key: Arc::new(ServerKey::new(&[7; ServerKey::LEN])), durable };
    let router = axum::Router::new().route("/api/v1.6/devices/{label}", post(ingest)).with_state(state);
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))?;
    println!("Baseline is listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

/// The writer thread: takes whatever is queued, appends it with one write, syncs once, answers them all.
fn start_writer(path: &Path) -> anyhow::Result<mpsc::Sender<Append>> {
    let mut file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the durable baseline's file {}", path.display()))?;
    let (sender, receiver) = mpsc::channel::<Append>();
    std::thread::Builder::new().name("baseline-writer".into()).spawn(move || {
        let mut batch = Vec::new();
        let mut bytes = Vec::new();
        // Ends when the server (every sender) is gone.
        while let Ok(first) = receiver.recv() {
            batch.push(first);
            batch.extend(receiver.try_iter());
            for (body, _) in &batch {
                bytes.extend_from_slice(body);
                bytes.push(b'\n');
            }
            if let Err(error) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
                eprintln!("the durable baseline cannot write its file: {error}");
                std::process::exit(1);
            }
            bytes.clear();
            for (_, written) in batch.drain(..) {
                let _ = written.send(());
            }
        }
    })?;
    Ok(sender)
}

async fn ingest(State(baseline): State<Baseline>, headers: HeaderMap, body: Bytes) -> Response {
    let token = headers.get("x-auth-token").map(|value| value.as_bytes()).unwrap_or_default();
    let digest = baseline.key.digest_bytes(token);
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    std::hint::black_box((digest, &parsed));
    if let Some(writer) = &baseline.durable {
        let (written, on_disk) = oneshot::channel();
        if writer.send((body, written)).is_err() || on_disk.await.is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "the writer stopped").into_response();
        }
    }
    axum::Json(serde_json::json!({"temperature": [{"status_code": 201}]})).into_response()
}
