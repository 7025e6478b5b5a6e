//! The server's own figures, in Prometheus' text exposition format (version 0.0.4), for `/metrics`.
//!
//! Hand-rolled on atomics rather than a metrics crate: every figure is a plain `AtomicU64` held by the part that
//! counts it (the writer its commits, a cache its hits, the token service its refusals), and a scrape reads them
//! all and writes the text (`render`). Counting is one relaxed atomic add, with no lock, no allocation and no
//! label lookup on the hot paths; the one place labels are found per event is an HTTP request's route, found in a
//! fixed table of route templates without a lock (`RouteTable`). Nothing here is global: each server has its own
//! figures, so two servers in one process (the tests) never share counts.
//!
//! Label values are bounded by construction: route templates (never a raw path), status codes, and fixed lists of
//! reasons, kinds and caches. Nothing a client sends becomes a label.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections open now).
#[derive(Debug, Default)]
pub struct Gauge(std::sync::atomic::AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency histograms' buckets, in seconds: from half a millisecond (a cached request) to ten
/// seconds (a commit behind a stalled disk).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const LATENCY_BUCKETS_NANOS: [u64; 14] = {
    let mut nanos = [0u64; 14];
    let mut index = 0;
    while index < 14 {
        nanos[index] = (LATENCY_BUCKETS_SECONDS[index] * 1e9) as u64;
        index += 1;
    }
    nanos
};

/// A latency histogram over [`LATENCY_BUCKETS_SECONDS`]: an observation is two relaxed atomic adds (its bucket
/// and the sum, kept in nanoseconds so it adds as an integer). The count is the buckets' total.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last one is above every bound (`+Inf`).
    buckets: [AtomicU64; 15],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_NANOS.iter().position(|bound| nanos <= *bound).unwrap_or(14);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }
}

/// One route's requests by status code, each with its latency histogram. A route answers with few distinct
/// codes; a code beyond the slots is counted under `code="other"` rather than growing anything.
#[derive(Debug)]
struct RouteFigures {
    dialect: &'static str,
    template: Box<str>,
    /// `0` marks a free slot; a slot is claimed once, by compare-and-swap, and keeps its code.
    codes: [AtomicU16; CODES_PER_ROUTE],
    latencies: [Histogram; CODES_PER_ROUTE],
    other_codes: Histogram,
}

const CODES_PER_ROUTE: usize = 12;

/// More than the router has routes (about 150), so every template finds a slot; were it full, further templates
/// would be counted under `route="other"`.
const ROUTE_SLOTS: usize = 512;

/// HTTP requests by dialect, route template and status code. An open-addressing table of route templates whose
/// slots are filled once (`OnceLock`) and never emptied: finding a route's figures is a hash of its template and
/// a comparison, and the first request of a route fills its slot. The set of templates is the router's, so the
/// table's size is bounded by the code, not by clients.
pub struct RouteTable {
    slots: Box<[OnceLock<RouteFigures>]>,
    other: OnceLock<RouteFigures>,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable").finish_non_exhaustive()
    }
}

impl Default for RouteTable {
    fn default() -> RouteTable {
        RouteTable { slots: (0..ROUTE_SLOTS).map(|_| OnceLock::new()).collect(), other: OnceLock::new() }
    }
}

/// FNV-1a: a few nanoseconds for a route template, and no keyed state to set up (no client chooses the keys).
fn fnv1a(parts: [&[u8]; 2]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl RouteFigures {
    fn new(dialect: &'static str, template: &str) -> RouteFigures {
        RouteFigures {
            dialect,
            template: template.into(),
            codes: Default::default(),
            latencies: Default::default(),
            other_codes: Histogram::default(),
        }
    }

    fn observe(&self, code: u16, elapsed: Duration) {
        for (slot, latency) in self.codes.iter().zip(&self.latencies) {
            let held = slot.load(Ordering::Relaxed);
            if held == code {
                return latency.observe(elapsed);
            }
            if held == 0 {
                match slot.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return latency.observe(elapsed),
                    Err(now) if now == code => return latency.observe(elapsed),
                    Err(_) => continue,
                }
            }
        }
        self.other_codes.observe(elapsed);
    }
}

impl RouteTable {
    /// Counts one answer of the route `template` (the router's pattern, e.g. `/v1/devices/{id}`, never the path
    /// requested) in `dialect`.
    pub fn observe(&self, dialect: &'static str, template: &str, code: u16, elapsed: Duration) {
        self.route(dialect, template).observe(code, elapsed);
    }

    fn route(&self, dialect: &'static str, template: &str) -> &RouteFigures {
        let start = fnv1a([dialect.as_bytes(), template.as_bytes()]) as usize;
        for probe in 0..ROUTE_SLOTS {
            let slot = &self.slots[(start + probe) % ROUTE_SLOTS];
            let figures = slot.get_or_init(|| RouteFigures::new(dialect, template));
            if figures.dialect == dialect && &*figures.template == template {
                return figures;
            }
        }
        self.other.get_or_init(|| RouteFigures::new("other", "other"))
    }

    fn routes(&self) -> impl Iterator<Item = &RouteFigures> {
        self.slots.iter().chain(std::iter::once(&self.other)).filter_map(OnceLock::get)
    }
}

/// The text a scrape answers, written family by family; each family's `# HELP` and `# TYPE` come first.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The kinds of family the exposition knows.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample; `name` is the family's for counters and gauges (whose `_total` is part of the name).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// A family with one sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A counter family with one sample per label value, each named by `label`.
    pub fn counters<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.family(name, Kind::Counter, help);
        for (value, count) in samples {
            self.sample(name, &[(label, value)], count);
        }
    }

    /// A histogram's samples: cumulative buckets, the sum in seconds, the count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let mut cumulative = 0;
        for (index, bucket) in histogram.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = LATENCY_BUCKETS_SECONDS.get(index).map(|bound| bound.to_string());
            self.text.push_str(name);
            self.text.push_str("_bucket");
            self.labels(labels, Some(bound.as_deref().unwrap_or("+Inf")));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = write!(self.text, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {sum}");
        let _ = write!(self.text, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {cumulative}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], bucket: Option<&str>) {
        if labels.is_empty() && bucket.is_none() {
            return;
        }
        self.text.push('{');
        let mut first = true;
        for (name, value) in labels.iter().copied().chain(bucket.map(|bound| ("le", bound))) {
            if !first {
                self.text.push(',');
            }
            first = false;
            self.text.push_str(name);
            self.text.push_str("=\"");
            for character in value.chars() {
                match character {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    other => self.text.push(other),
                }
            }
            self.text.push('"');
        }
        self.text.push('}');
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// The HTTP figures: requests and their latency by dialect, route and status code.
pub fn render_http(out: &mut Exposition, routes: &RouteTable) {
    let mut rows = Vec::new();
    for route in routes.routes() {
        for (slot, latency) in route.codes.iter().zip(&route.latencies) {
            let code = slot.load(Ordering::Relaxed);
            if code != 0 {
                rows.push((route, code.to_string(), latency));
            }
        }
        if route.other_codes.count() > 0 {
            rows.push((route, "other".to_owned(), &route.other_codes));
        }
    }
    rows.sort_by(|a, b| (a.0.dialect, &*a.0.template, &a.1).cmp(&(b.0.dialect, &*b.0.template, &b.1)));
    let labels = |route: &RouteFigures, code: &str| {
        [("dialect", route.dialect), ("route", &*route.template), ("code", code)].map(|(n, v)| (n, v.to_owned()))
    };
    out.family(
        "tessera_http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by dialect, route template and status code.",
    );
    for (route, code, latency) in &rows {
        let labels = labels(route, code);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
        out.sample("tessera_http_requests_total", &labels, latency.count());
    }
    out.family(
        "tessera_http_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's arrival at the router to its answer's head, by dialect, route template and status code.",
    );
    for (route, code, latency) in &rows {
        let labels = labels(route, code);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
        out.histogram("tessera_http_request_duration_seconds", &labels, latency);
    }
}

/// Accept failures of one listener (`accept.rs`): the process out of file descriptors, most likely.
#[derive(Debug, Default)]
pub struct ListenerFigures {
    pub http: Counter,
    pub https: Counter,
    pub mqtt: Counter,
    pub mqtts: Counter,
    pub metrics: Counter,
}

impl ListenerFigures {
    /// The counter of the listener named `listener` ("http", "https", "mqtt", "mqtts", "metrics").
    pub fn accept_errors(&self, listener: &str) -> &Counter {
        match listener {
            "http" => &self.http,
            "https" => &self.https,
            "mqtt" => &self.mqtt,
            "mqtts" => &self.mqtts,
            _ => &self.metrics,
        }
    }
}

/// What the MQTT server counts (`mqtt/`).
#[derive(Debug, Default)]
pub struct MqttFigures {
    /// TCP connections accepted.
    pub accepted: Counter,
    /// Connections that never sent a CONNECT in time, or sent something else first.
    pub refused_no_connect: Counter,
    /// CONNECTs whose credential did not verify.
    pub refused_bad_credentials: Counter,
    /// CONNECTs whose credential reads no data (an API key, a refresh token).
    pub refused_not_authorized: Counter,
    /// Connections past their CONNACK, open now.
    pub connected: Gauge,
    /// Persistent sessions kept for clients that are away, now.
    pub sessions_kept: Gauge,
    /// Kept sessions dropped to make room (at most 10 000 are kept).
    pub sessions_evicted: Counter,
    /// PUBLISH packets received from clients.
    pub received: Counter,
    /// PUBLISH packets sent to clients (deliveries, retained states, commands, what a kept session collected).
    pub sent: Counter,
    /// Publishes dropped for their token's quota.
    pub dropped_quota: Counter,
    /// Messages a kept session lost when its queue was full (the oldest go).
    pub dropped_session_queue: Counter,
    /// Connections ended because the client took no delivery for 5 s.
    pub slow_clients: Counter,
}

/// Why a presented credential was refused (`TokenService::verify` and its kin): the label values of
/// `tessera_credential_refusals_total`, a fixed list.
pub const REFUSAL_REASONS: [&str; 9] = [
    "malformed",
    "unknown",
    "revoked",
    "expired",
    "disabled",
    "secret_replaced",
    "not_taken_here",
    "store_unavailable",
    "other",
];

/// What the token service counts: refused credentials by reason, and requests or publishes refused for their
/// token's quota by the token's kind.
#[derive(Debug, Default)]
pub struct CredentialFigures {
    refusals: [Counter; REFUSAL_REASONS.len()],
    throttled: [Counter; tessera_core::TokenKind::ALL.len()],
    /// Long-lived callers (MQTT connections, kept sessions, streams) judged again.
    pub rechecks: Counter,
}

impl CredentialFigures {
    /// Counts a refusal; `reason` is one of [`REFUSAL_REASONS`] (anything else counts as `other`).
    pub fn refused(&self, reason: &'static str) {
        let index = REFUSAL_REASONS.iter().position(|known| *known == reason).unwrap_or(REFUSAL_REASONS.len() - 1);
        self.refusals[index].inc();
    }

    pub fn throttled(&self, kind: tessera_core::TokenKind) {
        let index = tessera_core::TokenKind::ALL.iter().position(|known| *known == kind).unwrap_or(0);
        self.throttled[index].inc();
    }

    pub fn render(&self, out: &mut Exposition) {
        out.counters(
            "tessera_credential_refusals_total",
            "Presented credentials refused, by reason (a request without any credential is not counted here).",
            "reason",
            REFUSAL_REASONS.iter().copied().zip(self.refusals.iter().map(Counter::get)),
        );
        out.counters(
            "tessera_rate_limited_total",
            "HTTP requests and MQTT publishes refused for their token's quota, by the token's kind.",
            "token_kind",
            tessera_core::TokenKind::ALL.iter().map(|kind| kind.as_str()).zip(self.throttled.iter().map(Counter::get)),
        );
        out.single(
            "tessera_token_rechecks_total",
            Kind::Counter,
            "Long-lived callers (MQTT connections, kept sessions, streams) judged again, on a change event or a \
             deadline of their own.",
            self.rechecks.get(),
        );
    }
}

/// A cache's figures for `tessera_cache_*`: its name, hits, misses and entries now.
#[derive(Debug, Clone, Copy)]
pub struct CacheFigures {
    pub cache: &'static str,
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

pub fn render_caches(out: &mut Exposition, caches: &[CacheFigures]) {
    out.counters(
        "tessera_cache_hits_total",
        "Lookups answered from a cache in memory, by cache.",
        "cache",
        caches.iter().map(|cache| (cache.cache, cache.hits)),
    );
    out.counters(
        "tessera_cache_misses_total",
        "Lookups a cache could not answer, which went on to the store, by cache.",
        "cache",
        caches.iter().map(|cache| (cache.cache, cache.misses)),
    );
    out.family("tessera_cache_entries", Kind::Gauge, "Entries a cache holds now (moka's estimate), by cache.");
    for cache in caches {
        out.sample("tessera_cache_entries", &[("cache", cache.cache)], cache.entries);
    }
}

/// The figures a server's front ends count, held by `App` (the services count their own, and `render` reads
/// both).
#[derive(Debug, Default)]
pub struct Metrics {
    pub http: RouteTable,
    pub listeners: ListenerFigures,
    pub mqtt: MqttFigures,
}

impl Metrics {
    pub fn render_front_ends(&self, out: &mut Exposition) {
        render_http(out, &self.http);
        let listeners = &self.listeners;
        out.counters(
            "tessera_accept_errors_total",
            "Failed accepts of a listener (out of file descriptors, most likely), each followed by a pause.",
            "listener",
            [
                ("http", listeners.http.get()),
                ("https", listeners.https.get()),
                ("mqtt", listeners.mqtt.get()),
                ("mqtts", listeners.mqtts.get()),
                ("metrics", listeners.metrics.get()),
            ],
        );
        let mqtt = &self.mqtt;
        out.single(
            "tessera_mqtt_connections_accepted_total",
            Kind::Counter,
            "MQTT TCP connections accepted.",
            mqtt.accepted.get(),
        );
        out.counters(
            "tessera_mqtt_connections_refused_total",
            "MQTT connections refused before their session began, by reason.",
            "reason",
            [
                ("no_connect", mqtt.refused_no_connect.get()),
                ("bad_credentials", mqtt.refused_bad_credentials.get()),
                ("not_authorized", mqtt.refused_not_authorized.get()),
            ],
        );
        out.single("tessera_mqtt_connections", Kind::Gauge, "MQTT connections open now, past their CONNACK.", {
            mqtt.connected.get()
        });
        out.single(
            "tessera_mqtt_sessions_kept",
            Kind::Gauge,
            "Persistent MQTT sessions kept for clients that are away now.",
            mqtt.sessions_kept.get(),
        );
        out.single(
            "tessera_mqtt_sessions_evicted_total",
            Kind::Counter,
            "Kept MQTT sessions dropped to make room for newer ones.",
            mqtt.sessions_evicted.get(),
        );
        out.single(
            "tessera_mqtt_messages_received_total",
            Kind::Counter,
            "MQTT PUBLISH packets received from clients.",
            mqtt.received.get(),
        );
        out.single(
            "tessera_mqtt_messages_sent_total",
            Kind::Counter,
            "MQTT PUBLISH packets sent to clients.",
            mqtt.sent.get(),
        );
        out.counters(
            "tessera_mqtt_messages_dropped_total",
            "MQTT messages dropped: publishes over their token's quota, and deliveries a session's full queue lost \
             (a connected client's that writes too slowly, or a kept session's while its client is away).",
            "reason",
            [("quota", mqtt.dropped_quota.get()), ("session_queue_full", mqtt.dropped_session_queue.get())],
        );
        out.single(
            "tessera_mqtt_slow_clients_total",
            Kind::Counter,
            "MQTT connections ended because the client took no delivery for 5 seconds.",
            mqtt.slow_clients.get(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_observation_in_its_bucket_and_renders_them_cumulatively() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(200));
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_secs(60));
        let mut out = Exposition::default();
        out.histogram("x_seconds", &[("a", "b")], &histogram);
        let text = out.into_text();
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"0.001\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum{a=\"b\"} 60.0012\n"), "{text}");
        assert!(text.contains("x_seconds_count{a=\"b\"} 3\n"), "{text}");
    }

    #[test]
    fn routes_keep_their_own_figures_and_codes_beyond_the_slots_count_as_other() {
        let table = RouteTable::default();
        for code in 200..(200 + CODES_PER_ROUTE as u16 + 3) {
            table.observe("native", "/v1/devices/{id}", code, Duration::from_millis(1));
        }
        table.observe("native", "/v1/devices/{id}", 200, Duration::from_millis(1));
        table.observe("horde", "/v1/devices/{id}", 200, Duration::from_millis(1));
        let mut out = Exposition::default();
        render_http(&mut out, &table);
        let text = out.into_text();
        let line = |labels: &str| format!("tessera_http_requests_total{{{labels}}}");
        assert!(text.contains(&(line("dialect=\"native\",route=\"/v1/devices/{id}\",code=\"200\"") + " 2\n")));
        assert!(text.contains(&(line("dialect=\"native\",route=\"/v1/devices/{id}\",code=\"other\"") + " 3\n")));
        assert!(text.contains(&(line("dialect=\"horde\",route=\"/v1/devices/{id}\",code=\"200\"") + " 1\n")));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("x", &[("a", "q\"b\\n\n")], 1);
        assert_eq!(out.into_text(), "x{a=\"q\\\"b\\\\n\\n\"} 1\n");
    }
}
