//! Browser tests of the web console: a real headless Chromium (Debian's `chromium` and `chromium-driver`, which
//! `.ci/run` installs) driven over WebDriver by `browser.rs`, against a Tessera of the test's own. Without
//! Chromium each test says plainly that it was skipped. Screenshots land in `target/console-screenshots/`.

pub const STORE: helpers::StoreKind = helpers::StoreKind::Sqlite;

mod browser;
mod flow;
// The API suite's helpers, compiled here too; this suite uses only some of them.
#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::browser::{Browser, PHONE, screenshot_path};
use crate::helpers::TestServer;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A PNG's width and height, from its IHDR chunk (which a PNG must start with).
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(PNG_MAGIC), "not a PNG: {:?}", &png[..png.len().min(16)]);
    assert_eq!(&png[12..16], b"IHDR", "a PNG starts with its IHDR chunk");
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

/// The harness against Tessera's own pages (there is no console yet): `/healthz`, a 404, navigation, script,
/// cookies, the console log and a screenshot.
#[tokio::test]
async fn the_browser_harness_drives_a_real_chromium() {
    let started = Instant::now();
    let Some(browser) = Browser::start().await else { return };
    let browser_ready = started.elapsed();
    let tessera = TestServer::start().await;

    let healthz = tessera.url("/healthz");
    let loading = Instant::now();
    browser.goto(&healthz).await;
    // Seen with `cargo test --test console -- --nocapture`.
    println!("console: Chromium ready in {browser_ready:?}, /healthz loaded {:?} later", loading.elapsed());
    assert_eq!(browser.current_url().await, healthz);
    // Chromium shows a JSON answer as its text in a `<pre>`.
    let shown = browser.wait_until_text("body > pre", "status", Duration::from_secs(5)).await.text().await;
    assert_eq!(serde_json::from_str::<Value>(&shown).expect("the page shows JSON"), json!({"status": "ok"}));
    assert!(browser.page_source().await.contains(r#"<pre>{"status":"ok"}"#), "the document holds the answer");

    let page = browser
        .execute(
            "return {type: document.contentType, agent: navigator.userAgent, viewport: [innerWidth, innerHeight]}",
            &[],
        )
        .await;
    assert_eq!(page["type"], "application/json");
    assert!(page["agent"].as_str().unwrap().contains("HeadlessChrome"), "{page}");
    assert_eq!(page["viewport"], json!([1280, 900]), "the desktop viewport");
    assert_eq!(browser.execute("return arguments[0] + arguments[1]", &[json!(2), json!(40)]).await, json!(42));

    let shot = screenshot_path("harness.png");
    browser.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap_or_else(|error| panic!("{}: {error}", shot.display()));
    assert_eq!(png_size(&png), (1280, 900), "a screenshot of the whole viewport");

    // A path no route has: the browser shows Tessera's 404 as a plain HTTP client gets it.
    let missing = tessera.url("/no-such-route");
    let answer = tessera.client.get(&missing).send().await.unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::NOT_FOUND);
    let expected: Value = answer.json().await.unwrap();
    browser.goto(&missing).await;
    let shown = browser.find("pre").await.text().await;
    assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), expected);
    let logs = browser.console_logs().await;
    assert!(
        logs.iter().any(|line| line.level == "SEVERE"
            && line.message.contains("/no-such-route")
            && line.message.contains("404")),
        "the console log reports the failed load: {logs:?}"
    );

    browser.back().await;
    assert_eq!(browser.current_url().await, healthz);
    browser.execute("document.body.textContent = 'changed by script'", &[]).await;
    browser.refresh().await;
    browser.wait_until_text("pre", |text: &str| text.contains(r#""ok""#), Duration::from_secs(5)).await;

    // A cookie set by script comes back with its flags (a console session cookie is checked the same way).
    browser.execute("document.cookie = 'harness=1; SameSite=Strict; Path=/'", &[]).await;
    let cookie = browser.cookie("harness").await.expect("the cookie is kept");
    assert_eq!((cookie.value.as_str(), cookie.path.as_deref()), ("1", Some("/")));
    assert!(!cookie.http_only && !cookie.secure, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"));
    assert_eq!(browser.cookies().await.len(), 1, "Tessera sets no cookie of its own yet");
}

/// A page of form fields, dialogs and a Content-Security-Policy that refuses an image, as the console's pages
/// will have; served as a `data:` URL, as no Tessera route serves HTML yet.
const FORM_PAGE: &str = r#"<!doctype html>
<html><head><title>Harness form</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width">
</head><body>
<form onsubmit="event.preventDefault(); document.getElementById('out').textContent = 'Hello, ' + this.elements.name.value">
  <label>Name <input name="name" value="draft"></label>
  <label><input type="checkbox" name="agree"> Agree</label>
  <button type="submit">Send</button>
</form>
<p id="out"></p>
<p id="secret" hidden>not shown</p>
<button id="delete" onclick="document.getElementById('out').textContent = confirm('Delete the device?') ? 'deleted' : 'kept'">Delete</button>
<button id="later" onclick="setTimeout(() => { alert('Saved'); document.body.insertAdjacentHTML('beforeend', '<p class=saved>Saved</p>') }, 200)">Save</button>
<img src="https://example.invalid/refused.png" alt="">
</body></html>"#;

/// Elements, typing, dialogs, the console log's CSP violations, and a phone-sized screenshot.
#[tokio::test]
async fn the_browser_harness_fills_forms_answers_dialogs_and_shoots_phone_screens() {
    let Some(browser) = Browser::start().await else { return };
    browser.set_window_size(PHONE.0, PHONE.1).await;
    let page = format!("data:text/html;base64,{}", base64::engine::general_purpose::STANDARD.encode(FORM_PAGE));
    browser.goto(&page).await;
    assert_eq!(browser.title().await, "Harness form");
    assert_eq!(browser.execute("return [innerWidth, innerHeight]", &[]).await, json!([PHONE.0, PHONE.1]));

    let name = browser.find("input[name=name]").await;
    assert_eq!(name.attribute("value").await.as_deref(), Some("draft"));
    assert_eq!(name.attribute("placeholder").await, None);
    name.clear().await;
    name.send_keys("Ada").await;
    assert_eq!(name.property("value").await, json!("Ada"));
    let agree = browser.find("input[name=agree]").await;
    agree.click().await;
    assert_eq!(agree.property("checked").await, json!(true));
    browser.find("form").await.find("button").await.click().await;
    browser.wait_until_text("#out", "Hello, Ada", Duration::from_secs(5)).await;
    assert_eq!(browser.find("form").await.find_all("input").await.len(), 2);
    assert_eq!(browser.find_all("button").await.len(), 3);
    assert!(browser.find("#out").await.is_displayed().await);
    assert!(!browser.find("#secret").await.is_displayed().await, "a hidden element is not displayed");
    assert_eq!(browser.find("#secret").await.text().await, "", "nor is its text");

    let delete = browser.find("#delete").await;
    delete.click().await;
    assert_eq!(browser.dismiss_alert().await, "Delete the device?");
    browser.wait_until_text("#out", "kept", Duration::from_secs(5)).await;
    delete.click().await;
    assert_eq!(browser.accept_alert().await, "Delete the device?");
    browser.wait_until_text("#out", "deleted", Duration::from_secs(5)).await;
    // A dialog that script opens a little after the click is waited for.
    browser.find("#later").await.click().await;
    assert_eq!(browser.accept_alert().await, "Saved");
    assert_eq!(browser.wait_for(".saved", Duration::from_secs(5)).await.text().await, "Saved");
    let out = browser.find("#out").await;
    assert_eq!(browser.execute("return arguments[0].id", &[out.as_arg()]).await, json!("out"));
    assert!(browser.page_source().await.contains(r#"<p id="out">deleted</p>"#));

    let logs = browser.console_logs().await;
    assert!(
        logs.iter()
            .any(|line| line.message.contains("Content Security Policy") && line.message.contains("refused.png")),
        "the console log reports the CSP violation: {logs:?}"
    );

    let shot = screenshot_path("harness-phone.png");
    browser.screenshot(&shot).await;
    assert_eq!(png_size(&std::fs::read(&shot).unwrap()), PHONE, "a phone-sized screenshot");

    // A failed wait names its selector and the page.
    let message = browser.try_wait_for("#never-there", Duration::from_millis(300)).await.expect_err("nothing came");
    assert!(message.contains(r##"wait_for("#never-there")"##) && message.contains("on data:text/html"), "{message}");
    assert!(message.contains("no element matched within 300ms"), "{message}");
}
