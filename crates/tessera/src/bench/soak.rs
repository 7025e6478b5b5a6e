//! `tessera bench --soak SECONDS`: hours, not seconds (issue 17). The fleet of `fleet.rs` connected over MQTT and
//! publishing, plus HTTP ingest paced at 70 % of the rate Tessera sustains beside it (measured first, closed
//! loop, as the paced scenario of `mod.rs` does), for SECONDS. Every min(60 s, SECONDS/10) a row: the server's
//! resident memory, the paced ingest's p99 over that interval, and the fleet's delivery p99 and counts over it;
//! printed as they come, as a table at the end, in `--json`, and drawn as an SVG plot.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::fleet::{self, Delivery, FleetMode, Record, Target};
use super::load::{self, Plan};
use super::{Options, round, say, tempfile_dir};

/// Share of the sustained rate the soak's HTTP ingest runs at.
const LOAD_SHARE: f64 = 0.7;

/// One sample of the soak.
#[derive(Debug, Clone, Copy)]
struct SoakRow {
    /// Seconds since the soak began, at the end of the interval.
    at_seconds: f64,
    rss_mib: f64,
    ingest_per_second: f64,
    ingest_p99_ms: f64,
    ingest_errors: u64,
    fleet_sent: u64,
    fleet_delivered: u64,
    fleet_p99_ms: f64,
}

impl SoakRow {
    fn json(&self) -> Value {
        let number = |value: f64| if value.is_finite() { json!(round(value)) } else { Value::Null };
        json!({
            "at_seconds": round(self.at_seconds),
            "rss_mib": round(self.rss_mib),
            "ingest_per_second": round(self.ingest_per_second),
            "ingest_p99_ms": number(self.ingest_p99_ms),
            "ingest_errors": self.ingest_errors,
            "fleet_sent": self.fleet_sent,
            "fleet_delivered": self.fleet_delivered,
            "fleet_p99_ms": number(self.fleet_p99_ms),
        })
    }

    fn line(&self) -> String {
        format!(
            "{:>9.0} {:>9.1} {:>10.0} {:>10.2} {:>7} {:>10} {:>10} {:>10.2}",
            self.at_seconds,
            self.rss_mib,
            self.ingest_per_second,
            self.ingest_p99_ms,
            self.ingest_errors,
            self.fleet_sent,
            self.fleet_delivered,
            self.fleet_p99_ms
        )
    }
}

const HEADER: &str = "elapsed s   RSS MiB  ingest/s ingest p99  errors fleet sent  delivered  fleet p99";

/// The interval between two samples: a minute, or a tenth of a short soak (at least a second).
pub fn sample_interval(soak: Duration) -> Duration {
    (soak / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// What the fleet sent and delivered since the last call: (sent, delivered, delivery p99 in ms).
fn drain(record: &Record) -> (u64, u64, f64) {
    let sent = std::mem::take(&mut *record.sent_us.lock().unwrap()).len() as u64;
    let deliveries: Vec<Delivery> = std::mem::take(&mut *record.deliveries.lock().unwrap());
    let mut latencies: Vec<u32> = deliveries.iter().map(|delivery| delivery.latency_us).collect();
    let (_, p99, _) = fleet::quantiles_ms(&mut latencies);
    (sent, latencies.len() as u64, p99)
}

pub async fn run(options: &Options, soak: Duration) -> anyhow::Result<()> {
    let shape = &options.fleet_shape;
    fleet::check_descriptors(options, shape.devices, shape.subscribers + options.connections)?;
    let data_dir = tempfile_dir()?;
    say(options, &format!("starting Tessera (data in {})", data_dir.display()));
    let tessera = fleet::start_tessera(&data_dir).await?;
    let pid = tessera.pid().context("Tessera has no pid")?;
    say(options, &format!("provisioning {} fleet devices and {} applications", shape.devices, shape.subscribers));
    let fleet = fleet::provision(&tessera, &data_dir, shape.devices, shape.subscribers).await?;
    say(options, &format!("creating {} HTTP ingest devices, each with its own token", options.devices));
    let api_key = tessera.api_key.clone().context("Tessera printed no API key")?;
    let tokens = Arc::new(super::provision(tessera.http, &api_key, options.devices).await?);

    let target = Target {
        mode: FleetMode::Mqtt,
        pid,
        mqtt: tessera.mqtt.context("Tessera printed no MQTT address")?,
        http: Some(tessera.http),
    };
    let origin = Instant::now();
    let record = Arc::new(Record::default());
    let mut subscribers = fleet::start_subscribers(target, &fleet, &record, origin).await?;
    let (links, refused) = fleet::connect_devices(target, &fleet).await;
    say(
        options,
        &format!("fleet connected ({refused} refused); publishing for the {:.0} s warm-up", shape.warmup.as_secs_f64()),
    );
    let start = Instant::now() + Duration::from_millis(100);
    // Publishing outlasts the soak by a margin; the tasks are aborted when it ends.
    let stop = start + shape.warmup + options.duration + soak + Duration::from_secs(3600);
    let mut devices = fleet::start_publishing(target, &fleet, links, &record, origin, start, stop, shape.interval);
    // The sustained rate is measured beside the fleet in its steady state, not beside its first readings.
    tokio::time::sleep_until((start + shape.warmup).into()).await;
    say(options, "measuring the sustained HTTP ingest rate beside the fleet");

    let closed = Plan { connections: options.connections, duration: options.duration, rate: None, expect: 200 };
    let sustained = load::run(
        tessera.http,
        super::ubidots_ingest(tessera.http, tokens.clone(), 1_700_000_000_000),
        closed,
        |_, _| {},
    )
    .await?
    .per_second();
    let paced_rate = sustained * LOAD_SHARE;
    let interval = sample_interval(soak);
    say(
        options,
        &format!(
            "sustained {sustained:.0}/s; soaking {} s at {paced_rate:.0}/s with the fleet publishing, a row every {} s",
            soak.as_secs(),
            interval.as_secs_f64()
        ),
    );
    say(options, HEADER);
    drain(&record);
    let began = Instant::now();
    let mut rows = Vec::new();
    let samples = (soak.as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
    for segment in 1..=samples {
        let plan = Plan { rate: Some(paced_rate), duration: interval, ..closed };
        // 10^8 timestamps per interval: far more than it sends, so no two readings of a device share one.
        let make = super::ubidots_ingest(tessera.http, tokens.clone(), 1_700_000_000_000 + segment * 100_000_000);
        let outcome = load::run(tessera.http, make, plan, |_, _| {}).await?;
        let (fleet_sent, fleet_delivered, fleet_p99_ms) = drain(&record);
        let row = SoakRow {
            at_seconds: began.elapsed().as_secs_f64(),
            rss_mib: tessera.rss_kib() / 1024.0,
            ingest_per_second: outcome.per_second(),
            ingest_p99_ms: outcome.quantile_ms(0.99),
            ingest_errors: outcome.errors,
            fleet_sent,
            fleet_delivered,
            fleet_p99_ms,
        };
        say(options, &row.line());
        rows.push(row);
    }
    devices.abort_all();
    subscribers.abort_all();
    while devices.join_next().await.is_some() {}
    while subscribers.join_next().await.is_some() {}
    let connections_lost = record.connections_lost.load(std::sync::atomic::Ordering::Relaxed);
    let misrouted = record.misrouted.load(std::sync::atomic::Ordering::Relaxed);
    tessera.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);

    std::fs::write(&options.soak_plot, plot(&rows, shape.devices, paced_rate))
        .with_context(|| format!("writing the plot to {}", options.soak_plot.display()))?;
    let first_rss = rows.first().map_or(0.0, |row| row.rss_mib);
    let last_rss = rows.last().map_or(0.0, |row| row.rss_mib);
    if options.json {
        let document = json!({
            "soak_seconds": soak.as_secs(),
            "sample_interval_seconds": interval.as_secs_f64(),
            "fleet": {"devices": shape.devices, "subscribers": shape.subscribers, "interval_seconds": shape.interval.as_secs_f64()},
            "connections": options.connections,
            "sustained_per_second": round(sustained),
            "paced_per_second": round(paced_rate),
            "rss_mib_first": round(first_rss),
            "rss_mib_last": round(last_rss),
            "fleet_connects_refused": refused,
            "fleet_connections_lost": connections_lost,
            "fleet_misrouted": misrouted,
            "plot": options.soak_plot.display().to_string(),
            "rows": rows.iter().map(SoakRow::json).collect::<Vec<_>>(),
        });
        println!("{document:#}");
        return Ok(());
    }
    println!("\n{HEADER}");
    for row in &rows {
        println!("{}", row.line());
    }
    println!(
        "\n{} devices over MQTT ({} applications), one reading each every {:.1} s, plus HTTP ingest at {:.0}/s \
         ({:.0} % of the {sustained:.0}/s sustained beside the fleet, {} connections); RSS {first_rss:.1} MiB at \
         the first sample, {last_rss:.1} MiB at the last; fleet connects refused {refused}, connections lost \
         {connections_lost}, misrouted {misrouted}. Plot: {}",
        shape.devices,
        shape.subscribers,
        shape.interval.as_secs_f64(),
        paced_rate,
        LOAD_SHARE * 100.0,
        options.connections,
        options.soak_plot.display()
    );
    Ok(())
}

/// The soak drawn by hand as SVG: resident memory (left axis) and the two p99s (right axis) over time.
fn plot(rows: &[SoakRow], devices: usize, paced_rate: f64) -> String {
    const WIDTH: f64 = 900.0;
    const HEIGHT: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 70.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 50.0;
    let (plot_width, plot_height) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let finite = |value: f64| if value.is_finite() { value } else { 0.0 };
    let last_time = rows.last().map_or(1.0, |row| row.at_seconds).max(1.0);
    let in_minutes = last_time >= 600.0;
    let max_rss = rows.iter().map(|row| row.rss_mib).fold(1.0, f64::max) * 1.15;
    let max_ms =
        rows.iter().map(|row| finite(row.ingest_p99_ms).max(finite(row.fleet_p99_ms))).fold(1.0, f64::max) * 1.15;
    let x = |seconds: f64| LEFT + plot_width * seconds / last_time;
    let y_rss = |mib: f64| TOP + plot_height * (1.0 - mib / max_rss);
    let y_ms = |ms: f64| TOP + plot_height * (1.0 - finite(ms) / max_ms);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="20" font-size="14">tessera bench --soak: {devices} devices over MQTT + HTTP ingest at {paced_rate:.0}/s</text>"#
    );
    for tick in 0..=5 {
        let fraction = f64::from(tick) / 5.0;
        let y = TOP + plot_height * (1.0 - fraction);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text><text x="{:.1}" y="{:.1}">{:.1}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            y + 4.0,
            max_rss * fraction,
            LEFT + plot_width + 6.0,
            y + 4.0,
            max_ms * fraction
        );
        let seconds = last_time * fraction;
        let label = if in_minutes { format!("{:.0}", seconds / 60.0) } else { format!("{seconds:.0}") };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            x(seconds),
            TOP + plot_height + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">elapsed ({})</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 10.0,
        if in_minutes { "minutes" } else { "seconds" }
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">server RSS (MiB)</text>"#,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" transform="rotate(90 {:.1} {:.1})" text-anchor="middle">p99 of the interval (ms)</text>"#,
        WIDTH - 16.0,
        TOP + plot_height / 2.0,
        WIDTH - 16.0,
        TOP + plot_height / 2.0
    );
    type Series<'a> = (&'a str, &'a str, &'a dyn Fn(&SoakRow) -> f64);
    let series: [Series; 3] = [
        ("server RSS (MiB, left)", "#1f77b4", &|row| y_rss(row.rss_mib)),
        ("HTTP ingest p99 (ms, right)", "#d62728", &|row| y_ms(row.ingest_p99_ms)),
        ("fleet delivery p99 (ms, right)", "#2ca02c", &|row| y_ms(row.fleet_p99_ms)),
    ];
    for (index, (name, colour, y)) in series.iter().enumerate() {
        let points: Vec<String> = rows.iter().map(|row| format!("{:.1},{:.1}", x(row.at_seconds), y(row))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for point in &points {
            let (cx, cy) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>"#);
        }
        let legend_x = LEFT + 10.0 + 240.0 * index as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x:.1}" y1="38" x2="{:.1}" y2="38" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="42">{name}</text>"#,
            legend_x + 18.0,
            legend_x + 24.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_every_minute_or_a_tenth_of_a_short_soak() {
        assert_eq!(sample_interval(Duration::from_secs(3600)), Duration::from_secs(60));
        assert_eq!(sample_interval(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(sample_interval(Duration::from_secs(5)), Duration::from_secs(1));
    }

    #[test]
    fn the_plot_is_one_svg_with_a_line_per_series() {
        let row = |at_seconds, rss_mib| SoakRow {
            at_seconds,
            rss_mib,
            ingest_per_second: 100.0,
            ingest_p99_ms: 3.0,
            ingest_errors: 0,
            fleet_sent: 10,
            fleet_delivered: 10,
            fleet_p99_ms: f64::NAN,
        };
        let svg = plot(&[row(60.0, 50.0), row(120.0, 52.0)], 10, 100.0);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(!svg.contains("NaN"), "{svg}");
    }
}
