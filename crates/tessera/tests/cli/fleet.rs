//! `tessera bench --fleet` and `--soak` at a small size: the figures are there and every reading arrives (their
//! size is the benchmark's business, not the suite's).

use serde_json::Value;

use super::tessera;

/// A small fleet over MQTT and HTTP against Tessera, and over MQTT against the bench's own Mosquitto where it is
/// installed: every reading published in the window reaches the application that follows its device, nothing
/// reaches one that does not, and the JSON carries every figure the table prints.
#[tokio::test]
async fn a_small_fleet_delivers_every_reading_and_reports_every_figure() {
    let mosquitto = std::path::Path::new("/usr/sbin/mosquitto").is_file()
        && std::path::Path::new("/usr/bin/mosquitto_passwd").is_file();
    let modes = if mosquitto { "mqtt,http,mosquitto" } else { "mqtt,http" };
    let output = tessera()
        .args(["bench", "--fleet", "--json", "--fleet-devices", "300", "--fleet-subscribers", "3"])
        .args(["--fleet-interval", "1", "--fleet-warmup", "1", "--fleet-window", "3", "--fleet-modes", modes])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(figures["fleet"]["devices"], 300, "{figures:#}");
    assert_eq!(figures["targets"]["p99_ms"], 20.0);
    assert_eq!(figures["targets"]["kib_per_device"], 16.0);
    let servers = figures["servers"].as_array().unwrap();
    let names: Vec<&str> = servers.iter().map(|server| server["server"].as_str().unwrap()).collect();
    let expected: &[&str] =
        if mosquitto { &["Tessera MQTT", "Tessera HTTP", "Mosquitto"] } else { &["Tessera MQTT", "Tessera HTTP"] };
    assert_eq!(names, expected);
    for server in servers {
        assert_eq!(
            (&server["devices"], &server["connected"], &server["subscribers"]),
            (&300.into(), &300.into(), &3.into()),
            "{server:#}"
        );
        // One reading per device a second for 3 s: about 900 in the window, every one delivered to its follower.
        let published = server["published_in_window"].as_u64().unwrap();
        assert!(published >= 800, "{server:#}");
        assert_eq!(server["delivered_in_window"].as_u64(), Some(published), "{server:#}");
        assert_eq!(server["delivered_percent"], 100.0, "{server:#}");
        for errors in ["connects_refused", "publishes_failed", "http_non_2xx", "connections_lost", "misrouted"] {
            assert_eq!(server["errors"][errors], 0, "{errors}: {server:#}");
        }
        assert!(server["connect_per_second"].as_f64().unwrap() > 0.0, "{server:#}");
        assert!(server["connect_server_cpu_seconds"].as_f64().is_some(), "{server:#}");
        let latency = &server["latency_ms"];
        let (p50, p99, p999) =
            (latency["p50"].as_f64().unwrap(), latency["p99"].as_f64().unwrap(), latency["p999"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{server:#}");
        for figure in ["idle", "publishing"] {
            assert!(server["rss_kib_per_device"][figure].as_f64().is_some(), "{figure}: {server:#}");
        }
        assert!(server["rss_mib"]["publishing"].as_f64().unwrap() > 0.5, "{server:#}");
        assert!(server["server_cpu_us_per_delivered"].as_f64().unwrap() > 0.0, "{server:#}");
        assert!(server["server_cpu_cores_silent"].as_f64().unwrap() >= 0.0, "{server:#}");
    }
    if mosquitto {
        assert!(figures["tessera_ahead_of_mosquitto_on_p99"].is_boolean(), "{figures:#}");
        assert!(figures["tessera_memory_per_device_to_mosquitto"].is_number(), "{figures:#}");
    }
}

/// A short soak gives a row per interval (a tenth of the soak here), each with the server's memory, the paced
/// ingest's p99 and the fleet's deliveries, and writes the SVG plot.
#[tokio::test]
async fn a_short_soak_samples_rows_and_writes_its_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("soak.svg");
    let output = tessera()
        .args(["bench", "--soak", "10", "--json", "--seconds", "1", "--connections", "2", "--devices", "3"])
        .args(["--fleet-devices", "60", "--fleet-subscribers", "2", "--fleet-interval", "1", "--fleet-warmup", "1"])
        .arg("--soak-plot")
        .arg(&plot)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let figures: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(figures["sample_interval_seconds"], 1.0, "{figures:#}");
    assert!(figures["sustained_per_second"].as_f64().unwrap() > 0.0, "{figures:#}");
    let rows = figures["rows"].as_array().unwrap();
    assert!((9..=11).contains(&rows.len()), "{figures:#}");
    for row in rows {
        assert!(row["rss_mib"].as_f64().unwrap() > 1.0, "{row}");
        assert!(row["ingest_per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["ingest_p99_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["ingest_errors"], 0, "{row}");
        // 60 devices at one reading a second each: about 60 an interval, all of them delivered.
        assert!(row["fleet_sent"].as_u64().unwrap() > 30, "{row}");
        assert!(row["fleet_delivered"].as_u64().unwrap() > 30, "{row}");
    }
    assert_eq!((&figures["fleet_connections_lost"], &figures["fleet_misrouted"]), (&0.into(), &0.into()));
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 3, "{svg}");
    assert_eq!(figures["plot"], plot.display().to_string());
}
