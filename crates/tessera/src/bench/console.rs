//! `tessera bench --console`: how fast the web console's pages answer with a collection the size users run. A
//! Tessera is filled with 10 000 devices in one collection (each with two variables and a reading, sent by
//! Ubidots HTTP as devices do) and one device with a week of readings at one a second; an administrator signs in
//! through the console's own form, and each page is then requested over keep-alive connections, closed loop, for
//! the run's duration. The target: every page's HTML within 50 ms at the 99th percentile.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;

use super::load::{self, Connection, MakeRequest, Plan};
use super::process::ChildServer;
use super::{Measured, Options, measure, say, tempfile_dir};

/// Devices in the measured collection.
const DEVICES: usize = 10_000;
/// A week at one reading a second, for the chart.
const WEEK_OF_SECONDS: usize = 7 * 24 * 60 * 60;
/// Readings per request while filling the chart's variable (Ubidots takes at most 10 000 bytes a request).
const DOTS_PER_REQUEST: usize = 150;
/// Connections requesting pages at once (people, not devices: a handful).
const CONNECTIONS: usize = 4;
/// The console's target for a page's HTML.
const PAGE_P99_TARGET_MS: f64 = 50.0;

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let data_dir = tempfile_dir()?;
    let data_text = data_dir.to_string_lossy().into_owned();
    say(options, &format!("starting Tessera (data in {data_text})"));
    let mut args = vec!["serve", "--data-dir", &data_text, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"];
    // Filling the store sends hundreds of thousands of requests with one organization token.
    args.extend(super::NEVER_REACHED_QUOTAS);
    let tessera = ChildServer::start(&args, &[]).await?;
    let api_key = tessera.api_key.clone().context("Tessera printed no API key")?;
    let password = tessera.admin_password.clone().context("Tessera printed no admin password")?;
    let address = tessera.http;

    say(options, &format!("filling a collection with {DEVICES} devices"));
    let (collection, organization_token) = organization(address, &api_key).await?;
    fill_devices(address, &organization_token).await?;
    say(options, &format!("sending a week of readings at 1/s ({WEEK_OF_SECONDS}) to one device"));
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    fill_week(address, &organization_token, now_ms).await?;

    let cookie = sign_in(address, &password).await?;
    let mut connection = Connection::open(address).await?;
    let (device, variable) = chart_ids(&mut connection, address, &cookie, &collection).await?;

    let pages: Vec<(&str, String, bool)> = vec![
        ("collections", "/console/collections".into(), true),
        ("collection, first 50 of 10 000 by last activity", format!("/console/collections/{collection}"), true),
        ("collection, page 150 by label", format!("/console/collections/{collection}?sort=label&page=150"), true),
        ("collection, label search", format!("/console/collections/{collection}?q=device-77"), true),
        ("collection, not seen for 5 min", format!("/console/collections/{collection}?quiet=5"), true),
        ("device with a week of readings", format!("/console/devices/{device}"), true),
        ("tokens", "/console/tokens".into(), true),
        ("profile", "/console/profile".into(), true),
        (
            "chart data, a week at 1/s (604 800 readings)",
            format!("/console/variables/{variable}/series?from={}&to={now_ms}", now_ms - 7 * 86_400_000),
            false,
        ),
        (
            "chart data, the last hour",
            format!("/console/variables/{variable}/series?from={}&to={now_ms}", now_ms - 3_600_000),
            false,
        ),
    ];
    let plan = Plan { connections: CONNECTIONS, duration: options.duration, rate: None, expect: 200 };
    let mut results = Vec::new();
    for (name, path, is_page) in pages {
        let request = load::request("GET", address, &path, &[("cookie", &cookie)], None);
        let make: MakeRequest = Arc::new(move |_| request.clone());
        let measured = measure(options, name, &tessera, make, plan, None).await?;
        results.push((measured, is_page));
    }
    tessera.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    report(options, &results);
    Ok(())
}

fn report(options: &Options, results: &[(Measured, bool)]) {
    let pages_met = results
        .iter()
        .filter(|(_, is_page)| *is_page)
        .all(|(measured, _)| measured.outcome.errors == 0 && measured.outcome.quantile_ms(0.99) <= PAGE_P99_TARGET_MS);
    if options.json {
        let document = json!({
            "devices_in_collection": DEVICES,
            "connections": CONNECTIONS,
            "seconds_per_run": options.duration.as_secs_f64(),
            "page_p99_target_ms": PAGE_P99_TARGET_MS,
            "every_page_within_target": pages_met,
            "scenarios": results.iter().map(|(measured, is_page)| {
                let mut value = measured.json();
                value["kind"] = json!(if *is_page { "page" } else { "data" });
                value
            }).collect::<Vec<_>>(),
        });
        println!("{document:#}");
        return;
    }
    println!();
    println!(
        "Console, {DEVICES} devices in one collection, {CONNECTIONS} connections, {} s per page",
        options.duration.as_secs()
    );
    println!("{:<52} {:>9} {:>9} {:>9} {:>9} {:>7}", "request", "per s", "p50 ms", "p99 ms", "p999 ms", "errors");
    for (measured, is_page) in results {
        let outcome = &measured.outcome;
        let p99 = outcome.quantile_ms(0.99);
        let mark = if *is_page && p99 > PAGE_P99_TARGET_MS { "  over target" } else { "" };
        println!(
            "{:<52} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>7}{mark}",
            measured.name,
            outcome.per_second(),
            outcome.quantile_ms(0.5),
            p99,
            outcome.quantile_ms(0.999),
            outcome.errors
        );
    }
    println!("every page's HTML p99 <= {PAGE_P99_TARGET_MS} ms: {}", if pages_met { "yes" } else { "NO" });
}

async fn organization(address: SocketAddr, api_key: &str) -> anyhow::Result<(String, String)> {
    let mut connection = Connection::open(address).await?;
    let exchange = load::request("POST", address, "/api/v1.6/auth/token", &[("x-ubidots-apikey", api_key)], None);
    let account_token = super::json_field(&mut connection, &exchange, 201, "token").await?;
    let bearer = format!("Bearer {account_token}");
    let create =
        load::request("POST", address, "/v1/collections", &[("authorization", &bearer)], Some(r#"{"name": "fleet"}"#));
    let collection = super::json_field(&mut connection, &create, 201, "id").await?;
    let path = format!("/api/v1.6/auth/tokens/organizations/{collection}/");
    let mint = load::request("POST", address, &path, &[("x-ubidots-apikey", api_key)], Some(r#"{"name": "fleet"}"#));
    let token = super::json_field(&mut connection, &mint, 201, "token").await?;
    Ok((collection, token))
}

/// Each device's first reading, which creates it (and its variables) as a real device's would.
async fn fill_devices(address: SocketAddr, token: &str) -> anyhow::Result<()> {
    const SENDERS: usize = 8;
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let token = token.to_owned();
        senders.spawn(async move {
            let mut connection = Connection::open(address).await?;
            for device in (sender..DEVICES).step_by(SENDERS) {
                let body = format!(r#"{{"temperature": {}, "humidity": {}}}"#, device % 40, device % 100);
                let path = format!("/api/v1.6/devices/device-{device}");
                let request = load::request("POST", address, &path, &[("x-auth-token", &token)], Some(&body));
                connection.send_ok(&request, &format!("creating device-{device}")).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = senders.join_next().await {
        done??;
    }
    Ok(())
}

async fn fill_week(address: SocketAddr, token: &str, now_ms: i64) -> anyhow::Result<()> {
    let mut connection = Connection::open(address).await?;
    let first = now_ms - (WEEK_OF_SECONDS as i64) * 1000;
    for start in (0..WEEK_OF_SECONDS).step_by(DOTS_PER_REQUEST) {
        let dots: Vec<String> = (start..(start + DOTS_PER_REQUEST).min(WEEK_OF_SECONDS))
            .map(|second| {
                let value = 20.0 + 5.0 * ((second as f64) / 3600.0).sin();
                format!(r#"{{"value": {value:.3}, "timestamp": {}}}"#, first + second as i64 * 1000)
            })
            .collect();
        let body = format!(r#"{{"temperature": [{}]}}"#, dots.join(","));
        let request = load::request("POST", address, "/api/v1.6/devices/week", &[("x-auth-token", token)], Some(&body));
        connection.send_ok(&request, "sending a week of readings").await?;
    }
    Ok(())
}

/// Signs in through the console's form, as a browser does, and answers the session's cookies.
async fn sign_in(address: SocketAddr, password: &str) -> anyhow::Result<String> {
    let mut connection = Connection::open(address).await?;
    let (_, head, _) = connection.send_with_head(&load::request("GET", address, "/console/login", &[], None)).await?;
    let nonce = cookies_of(&head).into_iter().find(|(name, _)| name == "tessera_login").context("no login cookie")?.1;
    let body =
        format!("csrf={nonce}&email=admin%40tessera.local&password={}", tessera_server::http::percent_encode(password));
    let request = format!(
        "POST /console/login HTTP/1.1\r\nhost: {address}\r\ncookie: tessera_login={nonce}\r\ncontent-type: \
         application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, head, _) = connection.send_with_head(request.as_bytes()).await?;
    if status != 303 {
        bail!("the console's sign-in answered {status}");
    }
    let session: Vec<String> = cookies_of(&head)
        .into_iter()
        .filter(|(name, _)| name == "tessera_session" || name == "tessera_refresh")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if session.len() != 2 {
        bail!("the console's sign-in set no session cookies");
    }
    Ok(session.join("; "))
}

fn cookies_of(head: &str) -> Vec<(String, String)> {
    head.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.eq_ignore_ascii_case("set-cookie") {
                return None;
            }
            let pair = value.trim().split(';').next()?;
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The device with a week of readings, and its variable, as its collection's page links them.
async fn chart_ids(
    connection: &mut Connection,
    address: SocketAddr,
    cookie: &str,
    collection: &str,
) -> anyhow::Result<(String, String)> {
    let path = format!("/console/collections/{collection}?q=week");
    let (status, body) = connection.send(&load::request("GET", address, &path, &[("cookie", cookie)], None)).await?;
    let page = String::from_utf8_lossy(&body);
    let device = page
        .split("href=\"/console/devices/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .with_context(|| format!("the collection page ({status}) links no device"))?
        .to_owned();
    let path = format!("/console/devices/{device}");
    let (_, body) = connection.send(&load::request("GET", address, &path, &[("cookie", cookie)], None)).await?;
    let page = String::from_utf8_lossy(&body);
    let variable = page
        .split("<option value=\"")
        .skip(1)
        .find(|option| option.contains("data-label=\"temperature\""))
        .and_then(|option| option.split('"').next())
        .context("the device page offers no chart of temperature")?
        .to_owned();
    Ok((device, variable))
}
