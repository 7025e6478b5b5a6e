//! The load generator: keep-alive HTTP/1.1 connections, each sending one request after another (closed loop) or
//! at a fixed pace (open loop, latency counted from when the request was due, so a slow server cannot hide its
//! queueing, but not from before the generator's own timer woke an idle connection). A client of our own, a few
//! dozen lines on a socket: it costs far less CPU than a general client, and it shares the machine with the
//! server it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request a connection sends: built per request from its sequence number, so bodies and tokens vary.
pub type MakeRequest = Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>;

/// A request's bytes: method, path, headers and an optional JSON body.
pub fn request(method: &str, host: SocketAddr, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    match body {
        Some(body) => {
            text.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()))
        }
        None => text.push_str("\r\n"),
    }
    text.into_bytes()
}

/// A keep-alive connection that sends a request and reads the whole answer.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(address: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection::over(stream))
    }

    /// A connection on a stream already open (from a source address of the caller's choosing, say).
    pub fn over(stream: TcpStream) -> Connection {
        Connection { stream, buffer: Vec::with_capacity(4096) }
    }

    /// Sends `request` and answers the status code and the body.
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let (status, _, body) = self.exchange(request).await?;
        Ok((status, self.buffer[body].to_vec()))
    }

    /// Sends `request`, which must be answered 200; otherwise fails naming `what` with the answer.
    pub async fn send_ok(&mut self, request: &[u8], what: &str) -> anyhow::Result<()> {
        let (status, _, body) = self.exchange(request).await?;
        anyhow::ensure!(status == 200, "{what}: {status} {}", String::from_utf8_lossy(&self.buffer[body]));
        Ok(())
    }

    /// Sends `request` and answers the status code, the response's head (status line and headers) and the body.
    pub async fn send_with_head(&mut self, request: &[u8]) -> anyhow::Result<(u16, String, Vec<u8>)> {
        let (status, head_end, body) = self.exchange(request).await?;
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        Ok((status, head, self.buffer[body].to_vec()))
    }

    /// Sends `request` and reads the whole answer into the buffer: its status, where its head ends and where its
    /// body lies (nothing is copied, as the load generator's own cost is the benchmark's noise).
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(u16, usize, std::ops::Range<usize>)> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buffer[..end]).context("a non-UTF-8 response head")?;
                let status: u16 = head.get(9..12).and_then(|code| code.parse().ok()).context("no status code")?;
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let body_start = end + 4;
                while self.buffer.len() < body_start + length {
                    self.read_more().await?;
                }
                return Ok((status, end, body_start..body_start + length));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk).await?;
        if read == 0 {
            bail!("the server closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// How to drive the load.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub connections: usize,
    pub duration: Duration,
    /// Requests per second over all connections; `None`: as fast as answers come (closed loop).
    pub rate: Option<f64>,
    /// Answers with this status count as successes.
    pub expect: u16,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies of successful requests, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(f64::EPSILON)
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// Runs `plan` against `address`, calling `progress` about once a second with the requests done so far.
pub async fn run(
    address: SocketAddr,
    make: MakeRequest,
    plan: Plan,
    progress: impl Fn(u64, Duration) + Send + 'static,
) -> anyhow::Result<Outcome> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..plan.connections {
        let make = make.clone();
        let done = done.clone();
        let mut connection = Connection::open(address).await?;
        // Each connection's share of the rate, its sends spread evenly and offset from the others'.
        let interval = plan.rate.map(|rate| Duration::from_secs_f64(plan.connections as f64 / rate));
        let offset = interval.map(|interval| interval.mul_f64(worker as f64 / plan.connections as f64));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let (mut requests, mut errors) = (0u64, 0u64);
            let mut sequence = worker as u64;
            let mut due = started + offset.unwrap_or_default();
            loop {
                // Latency counts from when the request was due, or, if this connection was idle and slept
                // until then, from when it woke: the runtime's timer wakes it up to a millisecond late, which is
                // the load generator's delay, not the server's. A connection still waiting for its previous
                // answer when the next request is due counts from the due time (the server's queueing).
                let counted_from = match interval {
                    Some(_) if Instant::now() < due => {
                        tokio::time::sleep_until(due.into()).await;
                        Instant::now()
                    }
                    Some(_) => due,
                    None => {
                        due = Instant::now();
                        due
                    }
                };
                if due >= deadline {
                    break;
                }
                let request = make(sequence);
                sequence += plan.connections as u64;
                match connection.send(&request).await {
                    Ok((status, _)) if status == plan.expect => {
                        requests += 1;
                        latencies.push(u32::try_from(counted_from.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match Connection::open(address).await {
                            Ok(fresh) => connection = fresh,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                if let Some(interval) = interval {
                    due += interval;
                }
            }
            (requests, errors, latencies)
        });
    }
    let reporter = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            loop {
                ticker.tick().await;
                progress(done.load(Ordering::Relaxed), started.elapsed());
            }
        })
    };
    let mut outcome = Outcome::default();
    while let Some(finished) = workers.join_next().await {
        let (requests, errors, latencies) = finished?;
        outcome.requests += requests;
        outcome.errors += errors;
        outcome.latencies_us.extend(latencies);
    }
    reporter.abort();
    outcome.seconds = started.elapsed().as_secs_f64().min(plan.duration.as_secs_f64());
    outcome.latencies_us.sort_unstable();
    Ok(outcome)
}
