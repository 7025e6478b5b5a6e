//! The bare baseline: an axum handler on the same HTTP stack and runtime as `tessera serve`, doing only the
//! unavoidable part of an ingest request: hash the token header (HMAC-SHA256, as Tessera digests secrets) and parse
//! the same JSON body. What Tessera reaches relative to it is what its token check, authorization, writer and
//! durable commit cost.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tessera_core::ServerKey;

pub async fn serve(address: SocketAddr) -> anyhow::Result<()> {
    let key = Arc::new(ServerKey::new(&[7; ServerKey::LEN]));
    let router = axum::Router::new().route("/api/v1.6/devices/{label}", post(ingest)).with_state(key);
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))?;
    println!("Baseline is listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

async fn ingest(State(key): State<Arc<ServerKey>>, headers: HeaderMap, body: Bytes) -> Response {
    let token = headers.get("x-auth-token").map(|value| value.as_bytes()).unwrap_or_default();
    let digest = key.digest_bytes(token);
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not JSON").into_response();
    };
    std::hint::black_box((digest, &parsed));
    axum::Json(serde_json::json!({"temperature": [{"status_code": 201}]})).into_response()
}
