//! `/metrics`: the server's figures for Prometheus, and the layer that counts every HTTP request by dialect, route
//! template and status code.
//!
//! Who may read them: on the main HTTP listener, only a scraper presenting `Authorization: Bearer
//! <metrics_token>` (compared in constant time); without a `metrics_token` configured, `/metrics` there is a 404
//! like any route that does not exist. `metrics_addr` starts a listener of its own serving only `/metrics`
//! (bound where the operator chooses: loopback, or a monitoring network), which asks for the token too when one is
//! configured. Neither is on by default. The figures say how busy the server is and how often credentials fail,
//! which an outsider has no business reading; they never hold a token, a label value a client chose, or a path.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use crate::app::{App, AppError};
use crate::metrics::{Exposition, Kind, Metrics, render_caches};

use super::Dialect;

tokio::task_local! {
    /// The route template the router matched for the request being served, set by `NoteRoute` (a route layer,
    /// which runs after routing) and read by `CountRequests` (outside the router, which sees no match): a cell
    /// rather than a response extension, whose first insert would allocate a map per request.
    static MATCHED_ROUTE: Cell<Option<MatchedPath>>;
}

/// Around the whole router (not a layer of it: axum applies a router's layers to each route, each in a `Route`
/// that boxes a clone of its service and its future on every request): times every request and counts its answer
/// under the template the router matched (or `unmatched`, in the dialect whose part of the URL space the path is
/// in). A tower service of its own rather than `middleware::from_fn`, which boxes two futures per request: this
/// adds no allocation, only the clock read twice, a clone of the `Arc` and the figures' atomic adds.
#[derive(Debug, Clone)]
pub struct CountRequestsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests { inner, metrics: self.0.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct CountRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<axum::http::Request<B>> for CountRequests<S>
where
    S: Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Counted<S::Future> {
        let path_dialect = Dialect::of_path(request.uri().path());
        // The router finds the route when it is first polled, inside the slot's scope.
        let inner = MATCHED_ROUTE.scope(Cell::new(None), self.inner.call(request));
        Counted { inner, started: Instant::now(), path_dialect, metrics: self.metrics.clone() }
    }
}

pin_project_lite::pin_project! {
    /// A request being served, counted when its answer is ready.
    pub struct Counted<F> {
        #[pin]
        inner: tokio::task::futures::TaskLocalFuture<Cell<Option<MatchedPath>>, F>,
        started: Instant,
        path_dialect: Dialect,
        metrics: Arc<Metrics>,
    }
}

impl<F> std::fmt::Debug for Counted<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted").field("started", &self.started).finish_non_exhaustive()
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let outcome = std::task::ready!(this.inner.as_mut().poll(context));
        let matched = this.inner.take_value().and_then(Cell::into_inner);
        if let Ok(response) = &outcome {
            let code = response.status().as_u16();
            let elapsed = this.started.elapsed();
            match &matched {
                Some(template) => {
                    this.metrics.http.observe(dialect_label(template.as_str()), template.as_str(), code, elapsed)
                }
                None => this.metrics.http.observe(this.path_dialect.label(), "unmatched", code, elapsed),
            }
        }
        Poll::Ready(outcome)
    }
}

/// Notes the matched route's template for `CountRequests`, an `Arc<str>` cloned into the request's slot. Given to
/// the router's outermost layer (`http::router`) beside the catch-panic layer every route has anyway, so it runs
/// after routing, on every route and the fallback, and adds no `Route` of its own.
#[derive(Debug, Clone)]
pub struct NoteRouteLayer;

impl<S> Layer<S> for NoteRouteLayer {
    type Service = NoteRoute<S>;

    fn layer(&self, inner: S) -> NoteRoute<S> {
        NoteRoute(inner)
    }
}

#[derive(Debug, Clone)]
pub struct NoteRoute<S>(S);

impl<S> Service<Request> for NoteRoute<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> S::Future {
        if let Some(template) = request.extensions().get::<MatchedPath>() {
            let _ = MATCHED_ROUTE.try_with(|slot| slot.set(Some(template.clone())));
        }
        self.0.call(request)
    }
}

/// The dialect label of a route template: the dialect whose prefix it is under, `server` for the probes and
/// `/metrics`.
fn dialect_label(template: &str) -> &'static str {
    match template {
        "/healthz" | "/readyz" | "/metrics" => "server",
        _ => Dialect::of_path(template).label(),
    }
}

impl Dialect {
    fn label(self) -> &'static str {
        match self {
            Dialect::Native => "native",
            Dialect::Ubidots => "ubidots",
            Dialect::AllThingsTalk => "allthingstalk",
            Dialect::Horde => "horde",
            Dialect::Console => "console",
        }
    }
}

/// `/metrics` on the main listener: only with the configured token; without one configured, no such route.
pub(crate) async fn scrape_on_main_listener(State(app): State<App>, headers: HeaderMap) -> Response {
    if app.config.metrics_token.is_none() {
        return Dialect::Horde.answer(AppError::NotFound("route"));
    }
    scrape(&app, &headers)
}

/// The router of the `metrics_addr` listener: `/metrics` only.
pub fn dedicated_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(|State(app): State<App>, headers: HeaderMap| async move { scrape(&app, &headers) }))
        .layer(NoteRouteLayer)
        .with_state(app)
}

fn scrape(app: &App, headers: &HeaderMap) -> Response {
    if let Some(expected) = &app.config.metrics_token
        && !super::bearer_secret(headers).is_some_and(|presented| same_secret(presented, expected))
    {
        let mut refusal = (
            StatusCode::UNAUTHORIZED,
            "/metrics takes the configured metrics_token as `Authorization: Bearer <token>`\n",
        )
            .into_response();
        refusal.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"metrics\""));
        return refusal;
    }
    let mut response = render(app).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether two secrets are equal, in time that depends on neither: their SHA-256 digests (of fixed length, so the
/// length of neither shows) compared without stopping at the first difference.
fn same_secret(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.iter().zip(expected.iter()).fold(0u8, |difference, (a, b)| difference | (a ^ b)) == 0
}

/// Every figure of the server, as Prometheus' text format: the front ends' (`App::metrics`) and the services'
/// own, read now. No store query: the pools' sizes are what sqlx holds in memory.
pub fn render(app: &App) -> String {
    let mut out = Exposition::default();
    out.family("tessera_build_info", Kind::Gauge, "Always 1; the version of Tessera serving, as a label.");
    out.sample("tessera_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    app.metrics.render_front_ends(&mut out);
    app.tokens.figures().render(&mut out);
    out.single(
        "tessera_rate_limit_counters",
        Kind::Gauge,
        "Tokens whose request counter this node holds now (only live tokens that were used recently).",
        app.tokens.quotas().counted(),
    );
    let caches: Vec<_> = app
        .tokens
        .cache_figures()
        .into_iter()
        .chain(app.data.cache_figures())
        .chain(app.data.writer().last_readings_figures())
        .collect();
    render_caches(&mut out, &caches);

    let writer = app.data.writer();
    let stats = writer.stats();
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let failed_readings = load(&stats.failed_readings);
    out.single(
        "tessera_readings_committed_total",
        Kind::Counter,
        "Readings committed to the store (accepted and durable).",
        load(&stats.readings).saturating_sub(failed_readings),
    );
    out.single(
        "tessera_readings_failed_total",
        Kind::Counter,
        "Readings whose commit failed (their senders were answered with the error).",
        failed_readings,
    );
    out.single(
        "tessera_readings_refused_total",
        Kind::Counter,
        "Readings refused for their value (an instant out of range, against the asset's profile); a body that does \
         not parse shows only in the HTTP figures.",
        app.data.refused_readings(),
    );
    out.single(
        "tessera_writer_batches_total",
        Kind::Counter,
        "Transactions of readings the batching writer ran, failed ones included.",
        load(&stats.commits),
    );
    out.single(
        "tessera_writer_batch_failures_total",
        Kind::Counter,
        "Transactions of readings that failed.",
        load(&stats.failed_commits),
    );
    out.single(
        "tessera_writer_requests_total",
        Kind::Counter,
        "Write requests (HTTP requests, MQTT publishes) the writer's transactions answered.",
        load(&stats.requests),
    );
    out.family(
        "tessera_writer_commit_duration_seconds",
        Kind::Histogram,
        "Time the store took to commit one batch of readings.",
    );
    out.histogram("tessera_writer_commit_duration_seconds", &[], &stats.commit_latency);
    let (depth, capacity) = writer.queue_depth();
    out.single("tessera_writer_queue_depth", Kind::Gauge, "Write requests waiting for the writer now.", depth);
    out.single(
        "tessera_writer_queue_capacity",
        Kind::Gauge,
        "Write requests that may wait for the writer before senders wait for room (writer_queue).",
        capacity,
    );

    let hub = &app.hub;
    let (published, delivered) = hub.published_and_delivered();
    out.single(
        "tessera_hub_readings_published_total",
        Kind::Counter,
        "Readings handed to this node's live consumers (while any listened), this node's and those heard from others.",
        published,
    );
    out.single(
        "tessera_hub_deliveries_total",
        Kind::Counter,
        "Readings times the live consumers that took them (MQTT connections and kept sessions, streams).",
        delivered,
    );
    out.counters(
        "tessera_hub_dropped_total",
        "Readings live consumers lost because they fell behind the hub (the oldest go), by kind of consumer.",
        "consumer",
        crate::hub::Consumer::ALL.map(|consumer| (consumer.as_str(), hub.dropped(consumer))),
    );
    out.single(
        "tessera_hub_commands_published_total",
        Kind::Counter,
        "Actuator commands passed on to this node's listeners.",
        hub.commands_published(),
    );
    out.single("tessera_hub_consumers", Kind::Gauge, "Live consumers of readings now.", hub.consumers());

    let pools = app.store_pools();
    let pool_family = |out: &mut Exposition, name: &str, help: &str, value: fn(&tessera_store::PoolFigures) -> u32| {
        out.family(name, Kind::Gauge, help);
        for pool in &pools {
            out.sample(name, &[("pool", pool.pool)], value(pool));
        }
    };
    pool_family(
        &mut out,
        "tessera_store_pool_connections",
        "Connections a store pool holds open now (sqlx does not tell acquire waits).",
        |pool| pool.open,
    );
    pool_family(&mut out, "tessera_store_pool_idle_connections", "Open connections idle in a pool now.", |pool| {
        pool.idle
    });
    pool_family(&mut out, "tessera_store_pool_max_connections", "The most connections a pool opens.", |pool| pool.max);

    if let Some((cluster, live_dropped)) = app.peers.figures() {
        out.single(
            "tessera_cluster_connected",
            Kind::Gauge,
            "1 while the event connection (PostgreSQL LISTEN) is up and this node hears the others, else 0.",
            u8::from(app.peers.in_touch()),
        );
        out.single(
            "tessera_cluster_events_sent_total",
            Kind::Counter,
            "Live-data events (readings, commands) this node published with NOTIFY; cache invalidations travel in \
             their change's own transaction and are not counted here.",
            cluster.sent.get(),
        );
        out.single(
            "tessera_cluster_events_given_up_total",
            Kind::Counter,
            "Live-data events given up after the database refused them for 5 seconds.",
            cluster.given_up.get(),
        );
        out.single(
            "tessera_cluster_events_dropped_total",
            Kind::Counter,
            "Live-data events dropped because the queue to the other nodes was full.",
            live_dropped,
        );
        out.single(
            "tessera_cluster_events_heard_total",
            Kind::Counter,
            "Events from other nodes heard and applied (this node's own echoes are not counted).",
            cluster.heard.get(),
        );
        out.single(
            "tessera_cluster_events_missed_total",
            Kind::Counter,
            "Times events may have been missed (the listener said so, or its connection was lost): each empties the \
             caches.",
            cluster.missed.get(),
        );
        out.single(
            "tessera_cluster_disconnections_total",
            Kind::Counter,
            "Times the event connection was lost.",
            cluster.disconnections.get(),
        );
    }
    out.into_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_they_are() {
        assert!(same_secret("a-metrics-token-0123", "a-metrics-token-0123"));
        assert!(!same_secret("a-metrics-token-0124", "a-metrics-token-0123"));
        assert!(!same_secret("", "a-metrics-token-0123"));
        assert!(!same_secret("a-metrics-token-01234", "a-metrics-token-0123"));
    }

    #[test]
    fn templates_name_their_dialect() {
        assert_eq!(dialect_label("/v1/devices/{id}"), "native");
        assert_eq!(dialect_label("/api/v1.6/devices/{label}"), "ubidots");
        assert_eq!(dialect_label("/device/{id}/asset/{name}/state"), "allthingstalk");
        assert_eq!(dialect_label("/collections/{id}"), "horde");
        assert_eq!(dialect_label("/metrics"), "server");
    }
}
