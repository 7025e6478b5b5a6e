//! Reading a range: 10 000 values of one variable through the Ubidots API, newest first, in pages of 1 000 (the
//! largest page it serves), as a dashboard's chart or an export script reads them.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::bail;
use serde_json::Value;

use super::load::{self, Connection};

/// Values in the range, and per page.
const VALUES: usize = 10_000;
const PAGE: usize = 1_000;
/// Values per request when storing them: the Ubidots API takes bodies of at most 10 000 bytes.
const SENT_TOGETHER: usize = 100;
/// Times the whole range is read; the figures are over these.
const REPETITIONS: usize = 7;

/// How long reading the whole range took, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct RangeRead {
    pub values: usize,
    pub pages: usize,
    pub median_ms: f64,
    pub slowest_ms: f64,
}

/// Stores `VALUES` readings of variable `range` of device `device` (`SENT_TOGETHER` a request, with `token`),
/// then reads them all back page by page, `REPETITIONS` times, checking every page is full.
pub async fn time_range_read(address: SocketAddr, device: &str, token: &str) -> anyhow::Result<RangeRead> {
    let mut connection = Connection::open(address).await?;
    let path = format!("/api/v1.6/devices/{device}/range/values");
    for chunk in 0..VALUES / SENT_TOGETHER {
        let dots: Vec<String> = (0..SENT_TOGETHER)
            .map(|n| {
                let sequence = chunk * SENT_TOGETHER + n;
                format!(r#"{{"value": {sequence}, "timestamp": {}}}"#, 1_600_000_000_000u64 + sequence as u64)
            })
            .collect();
        let body = format!("[{}]", dots.join(","));
        let send = load::request("POST", address, &path, &[("x-auth-token", token)], Some(&body));
        connection.send_ok(&send, "storing the range's values").await?;
    }
    let mut totals = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let started = Instant::now();
        let mut read = 0;
        for page in 1..=VALUES / PAGE {
            let query = format!("{path}?page_size={PAGE}&page={page}");
            let request = load::request("GET", address, &query, &[("x-auth-token", token)], None);
            let (status, body) = connection.send(&request).await?;
            if status != 200 {
                bail!("reading page {page} of the range answered {status}");
            }
            let document: Value = serde_json::from_slice(&body)?;
            read += document["results"].as_array().map_or(0, Vec::len);
        }
        if read != VALUES {
            bail!("the range read gave {read} values, not {VALUES}");
        }
        totals.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    totals.sort_by(f64::total_cmp);
    Ok(RangeRead {
        values: VALUES,
        pages: VALUES / PAGE,
        median_ms: totals[totals.len() / 2],
        slowest_ms: totals[totals.len() - 1],
    })
}
