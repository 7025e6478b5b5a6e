//! Accepting connections, shared by the HTTP and MQTT listeners: a failing `accept` (the process out of file
//! descriptors, `EMFILE`) is retried after a pause that doubles from 1 ms to 1 s, and reported at most once a
//! second with how often it failed meanwhile.
//!
//! Without the pause the listener stays readable while the connection it cannot take waits in its queue, so the
//! loop spins on the failure, one log line per turn, and starves the tasks whose work would free a descriptor.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The first pause after a failed accept; each failure in a row doubles it.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause between two accepts.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
/// Failures are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The next connection from `listener`, however many failed accepts that takes; each failed one is counted in
/// `errors` (for `/metrics`).
pub(crate) async fn accept(
    listener: &TcpListener,
    failures: &mut AcceptFailures,
    errors: &crate::metrics::Counter,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                failures.succeeded();
                return accepted;
            }
            Err(error) => {
                errors.inc();
                let failure = failures.failed(&error, Instant::now());
                if let Some(count) = failure.report {
                    tracing::warn!(
                        listener = failures.listener, %error, failures = count, pause_ms = failure.pause.as_millis(),
                        "cannot accept connections (out of file descriptors?); pausing before the next try"
                    );
                }
                if !failure.pause.is_zero() {
                    tokio::time::sleep(failure.pause).await;
                }
            }
        }
    }
}

/// Failed accepts in a row: the pause before the next try, and what has not been reported yet.
#[derive(Debug)]
pub(crate) struct AcceptFailures {
    listener: &'static str,
    next_pause: Duration,
    unreported: u64,
    last_report: Option<Instant>,
}

/// What to do about one failed accept.
#[derive(Debug, PartialEq)]
pub(crate) struct Failure {
    /// How long to wait before accepting again (zero for a failure about one connection only).
    pub pause: Duration,
    /// Failures since the last report, when this one is to be reported.
    pub report: Option<u64>,
}

impl AcceptFailures {
    /// `listener` names the listener in reports ("http", "mqtt").
    pub(crate) fn new(listener: &'static str) -> AcceptFailures {
        AcceptFailures { listener, next_pause: FIRST_PAUSE, unreported: 0, last_report: None }
    }

    pub(crate) fn succeeded(&mut self) {
        self.next_pause = FIRST_PAUSE;
    }

    pub(crate) fn failed(&mut self, error: &io::Error, now: Instant) -> Failure {
        // A connection reset or aborted before it was taken says nothing about the listener: the next one is
        // taken at once, and no one needs to hear of it.
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
        ) {
            return Failure { pause: Duration::ZERO, report: None };
        }
        let pause = self.next_pause;
        self.next_pause = (pause * 2).min(LONGEST_PAUSE);
        self.unreported += 1;
        let due = self.last_report.is_none_or(|last| now.duration_since(last) >= REPORT_EVERY);
        let report = due.then(|| {
            self.last_report = Some(now);
            std::mem::take(&mut self.unreported)
        });
        Failure { pause, report }
    }
}

/// The process's soft limit on open files, where the system tells it (Linux: `/proc/self/limits`).
pub(crate) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_many_open_files() -> io::Error {
        io::Error::other("Too many open files (os error 24)")
    }

    #[test]
    fn failures_double_the_pause_up_to_a_second_and_a_success_resets_it() {
        let mut failures = AcceptFailures::new("test");
        let now = Instant::now();
        let pauses: Vec<u128> =
            (0..12).map(|_| failures.failed(&too_many_open_files(), now).pause.as_millis()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 1000]);
        failures.succeeded();
        assert_eq!(failures.failed(&too_many_open_files(), now).pause, FIRST_PAUSE);
    }

    #[test]
    fn failures_are_reported_at_most_once_a_second_with_their_count() {
        let mut failures = AcceptFailures::new("test");
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        assert_eq!(failures.failed(&too_many_open_files(), at(0)).report, Some(1));
        assert_eq!(failures.failed(&too_many_open_files(), at(1)).report, None);
        assert_eq!(failures.failed(&too_many_open_files(), at(500)).report, None);
        assert_eq!(failures.failed(&too_many_open_files(), at(1000)).report, Some(3));
        assert_eq!(failures.failed(&too_many_open_files(), at(1999)).report, None);
        assert_eq!(failures.failed(&too_many_open_files(), at(2000)).report, Some(2));
    }

    #[test]
    fn a_connection_gone_before_it_was_taken_costs_no_pause() {
        let mut failures = AcceptFailures::new("test");
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(failures.failed(&reset, Instant::now()), Failure { pause: Duration::ZERO, report: None });
        assert_eq!(failures.failed(&too_many_open_files(), Instant::now()).pause, FIRST_PAUSE);
    }

    #[test]
    fn the_open_file_limit_is_read_where_the_system_tells_it() {
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some_and(|limit| limit > 0));
        }
    }
}
