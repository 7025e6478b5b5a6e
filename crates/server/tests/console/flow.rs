//! The console as a person uses it, in a real Chromium: a second factor enrolled from the QR page (codes from
//! pyotp, an implementation independent of Tessera's), an organization and its token, a device that appears and
//! changes live when a reading arrives over HTTP, its chart, a device token made and deleted, the organization
//! token rotated with an overlap and the rotation found in the audit trail, and a read-only member refused what
//! the API refuses them. Each main page is saved as a screenshot.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::{Browser, PHONE, screenshot_path};
use crate::helpers::TestServer;

const WAIT: Duration = Duration::from_secs(10);

/// The code an authenticator app shows for `key`, `offset` seconds from now, computed by pyotp.
fn authenticator_code(key: &str, offset_seconds: i64) -> String {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import pyotp, sys, time; print(pyotp.TOTP(sys.argv[1]).at(time.time() + float(sys.argv[2])))",
            key,
            &offset_seconds.to_string(),
        ])
        .output()
        .expect("python3 runs (pyotp is installed by .ci/run)");
    assert!(output.status.success(), "pyotp failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn shot(browser: &Browser, name: &str) {
    browser.screenshot(screenshot_path(&format!("{name}.png"))).await;
}

/// Fills the fields (by CSS selector) and presses the form's submit button, then waits for `then` to appear.
async fn submit(browser: &Browser, fields: &[(&str, &str)], button: &str, then: &str) {
    for (selector, text) in fields {
        let field = browser.find(selector).await;
        field.clear().await;
        field.send_keys(text).await;
    }
    browser.find(button).await.click().await;
    browser.wait_for(then, WAIT).await;
}

async fn sign_in(browser: &Browser, tessera: &TestServer, email: &str, password: &str, then: &str) {
    browser.goto(&tessera.url("/console/login")).await;
    browser.wait_for("#email", WAIT).await;
    submit(browser, &[("#email", email), ("#password", password)], "form button[type=submit]", then).await;
}

async fn sign_out(browser: &Browser) {
    browser.find(".who form button").await.click().await;
    browser.wait_for("#email", WAIT).await;
}

/// A form post made by the page itself (with its form token), as a person could make it with the browser's
/// developer tools: for the routes the page offers no button for.
async fn post_from_page(browser: &Browser, action: &str, fields: Value) {
    let script = "const form = document.createElement('form'); form.method = 'post'; form.action = arguments[0];\
        const add = (name, value) => { const input = document.createElement('input'); input.type = 'hidden';\
          input.name = name; input.value = value; form.appendChild(input); };\
        add('csrf', document.querySelector('input[name=csrf]').value);\
        for (const [name, value] of Object.entries(arguments[1])) add(name, value);\
        document.body.appendChild(form); form.submit();";
    browser.execute(script, &[json!(action), fields]).await;
}

#[tokio::test]
async fn a_person_runs_tessera_in_the_console() {
    let Some(browser) = Browser::start().await else { return };
    let tessera = TestServer::start().await;
    let admin_email = tessera.admin_email.clone();
    let admin_password = tessera.admin_password.clone();

    // A browser at the root is sent to the console, and to its sign-in page.
    browser.goto(&tessera.url("/")).await;
    browser.wait_for("#email", WAIT).await;
    assert!(browser.current_url().await.ends_with("/console/login"));
    shot(&browser, "01-sign-in").await;

    // A wrong password is said next to the form, and the email typed stays.
    submit(&browser, &[("#email", &admin_email), ("#password", "not the password")], "form button", "#login-error")
        .await;
    assert_eq!(browser.find("#email").await.property("value").await, json!(admin_email));

    sign_in(&browser, &tessera, &admin_email, &admin_password, ".who").await;
    assert!(browser.current_url().await.ends_with("/console/collections"), "{}", browser.current_url().await);
    let session = browser.cookie("tessera_session").await.expect("a session cookie");
    assert!(session.http_only, "the session cookie is HttpOnly");
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    let seen_by_script = browser.execute("return document.cookie", &[]).await;
    assert!(!seen_by_script.as_str().unwrap_or("").contains("tessera_session"), "no script reads the session");

    // The second factor, from the QR page: the key is read off the page as a phone would scan it.
    browser.goto(&tessera.url("/console/profile")).await;
    browser.find("#totp-password").await.send_keys(&admin_password).await;
    browser.find("#enable-totp").await.click().await;
    browser.wait_for(".qr svg", WAIT).await;
    shot(&browser, "02-second-factor-qr").await;
    let key = browser.find("#totp-key").await.text().await;
    assert_eq!(key.len(), 32, "a base32 key of 160 bits: {key}");
    submit(&browser, &[("#confirm-code", &authenticator_code(&key, 0))], "form button.primary", "#recovery-codes")
        .await;
    assert_eq!(browser.find_all("#recovery-codes li").await.len(), 10);
    shot(&browser, "03-recovery-codes").await;
    // Shown once: the profile says the factor is on and shows no key.
    browser.goto(&tessera.url("/console/profile")).await;
    browser.wait_for("#disable-code", WAIT).await;
    assert!(!browser.page_source().await.contains(&key), "the key is never shown again");
    shot(&browser, "04-profile").await;

    // Signing in now takes a code (the next step's: the one just used is spent).
    sign_out(&browser).await;
    sign_in(&browser, &tessera, &admin_email, &admin_password, "#code").await;
    shot(&browser, "05-second-factor-step").await;
    submit(&browser, &[("#code", &authenticator_code(&key, 30))], "form button.primary", "h1").await;
    assert!(browser.current_url().await.ends_with("/console/collections"));

    // A team for the organization, so a member can be given read-only access to it.
    browser.goto(&tessera.url("/console/teams")).await;
    submit(&browser, &[("#team-name", "Greenhouse staff")], "#team-name ~ button", "#members-heading").await;
    let team_url = browser.current_url().await;
    let team_id = team_url.rsplit('/').next().unwrap().to_owned();

    // An organization, its id in the URL and on the page (seed 000).
    browser.goto(&tessera.url("/console/collections")).await;
    browser.wait_for("#collection-name", WAIT).await;
    let owner = browser.find(&format!("#collection-owner option[value='{team_id}']")).await;
    owner.click().await;
    submit(
        &browser,
        &[("#collection-name", "Greenhouse")],
        "form[action='/console/collections'] button",
        "#collection-id",
    )
    .await;
    let collection_url = browser.current_url().await;
    let collection_id = browser.find("#collection-id").await.text().await;
    assert!(collection_url.ends_with(&format!("/console/collections/{collection_id}")), "{collection_url}");

    // An organization token, shown once.
    browser.find("#tokens-heading ~ details summary").await.click().await;
    submit(&browser, &[("#token-name", "greenhouse devices")], "#new-token-form button", "#new-secret").await;
    let secret = browser.find("#new-secret").await.text().await;
    assert!(secret.starts_with("tso_"), "an organization token's secret: {secret}");
    shot(&browser, "06-new-token-once").await;
    browser.goto(&collection_url).await;
    browser.wait_for("#devices", WAIT).await;
    assert!(!browser.page_source().await.contains(&secret), "the secret is not in any later page");
    let listed = browser.find("table.tokens tbody tr").await;
    assert!(listed.text().await.contains("greenhouse devices"));
    let organization_token_id = listed.attribute("data-token").await.unwrap();

    // A reading to a new device label, over HTTP with that token: the row appears, then its value changes, live.
    browser.wait_for("#devices[data-live-state='open']", WAIT).await;
    let send = |value: f64| {
        let client = tessera.client.clone();
        let url = tessera.url("/api/v1.6/devices/sensor-1");
        let secret = secret.clone();
        async move {
            let answer =
                client.post(url).header("X-Auth-Token", secret).json(&json!({"temperature": value})).send().await;
            answer.expect("the reading is sent").status()
        }
    };
    assert_eq!(send(21.5).await, StatusCode::OK);
    browser.wait_until_text("#devices tbody tr td a", "sensor-1", WAIT).await;
    browser.wait_until_text("#devices [data-variable='temperature'] strong", "21.5", WAIT).await;
    assert_eq!(send(22.75).await, StatusCode::OK);
    browser.wait_until_text("#devices [data-variable='temperature'] strong", "22.75", WAIT).await;
    shot(&browser, "07-collection-live").await;

    // The device's page and its chart.
    browser.find("#devices tbody tr td a").await.click().await;
    browser.wait_for("canvas#chart[data-points]", WAIT).await;
    let points = browser.find("canvas#chart").await.attribute("data-points").await.unwrap();
    assert!(points.parse::<u32>().unwrap() >= 1, "the chart drew the readings: {points}");
    assert!(browser.find_all("#device-seen time").await.len() == 1, "the device was seen, and says when");
    let summary = browser.find("#chart-summary").await.text().await;
    assert!(summary.contains("2 readings"), "{summary}");
    shot(&browser, "08-device-chart").await;
    let device_url = browser.current_url().await;

    // A device token: generated, listed, deleted.
    browser.find("#tokens-heading ~ details summary").await.click().await;
    submit(&browser, &[("#device-token-name", "sensor-1 firmware")], "#new-device-token-form button", "#new-secret")
        .await;
    assert!(browser.find("#new-secret").await.text().await.starts_with("tsd_"));
    browser.goto(&device_url).await;
    let row = browser.wait_for("table.tokens tbody tr", WAIT).await;
    assert!(row.text().await.contains("sensor-1 firmware"));
    row.find("button.danger").await.click().await;
    browser.accept_alert().await;
    browser.wait_until_text(".notice.ok", "The token is deleted.", WAIT).await;
    assert!(browser.find_all("table.tokens tbody tr").await.is_empty(), "the device token is gone");

    // The other main pages, for the record.
    for (path, name, ready) in [
        ("/console/collections", "09-collections", "h1"),
        ("/console/tokens", "10-tokens", "table.tokens"),
        ("/console/teams", "11-teams", "h1"),
        ("/console/account", "12-account", "h1"),
    ] {
        browser.goto(&tessera.url(path)).await;
        browser.wait_for(ready, WAIT).await;
        shot(&browser, name).await;
    }

    // The organization token rotated from the tokens page with an hour's overlap: the new secret once, the old
    // one still working (the member below is refused with it, and a device goes on sending with it).
    browser.goto(&tessera.url("/console/tokens")).await;
    let row = browser.wait_for(&format!("tr[data-token='{organization_token_id}']"), WAIT).await;
    row.find("select[name=overlap] option[value='3600']").await.click().await;
    row.find("form.rotate button").await.click().await;
    assert!(browser.accept_alert().await.contains("greenhouse devices"), "a rotation asks first");
    let rotated = browser.wait_for("#new-secret", WAIT).await.text().await;
    assert!(rotated.starts_with("tso_") && rotated != secret, "{rotated}");
    let old_secret = browser.find("#old-secret").await.text().await;
    assert!(old_secret.contains("1 hour from now"), "{old_secret}");
    shot(&browser, "19-rotated-secret").await;
    assert_eq!(send(22.9).await, StatusCode::OK, "the old secret works during the overlap");
    browser.goto(&tessera.url("/console/tokens")).await;
    let until = browser.wait_for(&format!("tr[data-token='{organization_token_id}'] .old-secret"), WAIT).await;
    assert!(until.text().await.contains("old secret valid until"));
    assert!(!browser.page_source().await.contains(&rotated), "the new secret is on no later page");
    shot(&browser, "20-tokens-rotated").await;
    // The trail says so, to the administrator.
    browser.find("nav a[href='/console/audit']").await.click().await;
    browser.wait_for("#audit-filters", WAIT).await;
    browser.find("#audit-event option[value='token.rotated']").await.click().await;
    browser.find("#audit-filters button").await.click().await;
    // The unfiltered page holds such a row too: wait for the filtered one to have loaded, or the row found may be
    // the old page's, gone by the time it is read.
    let deadline = std::time::Instant::now() + WAIT;
    while !browser.current_url().await.contains("event=token.rotated") {
        assert!(std::time::Instant::now() < deadline, "the filtered audit trail never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entry = browser.wait_for("#audit tbody tr[data-event='token.rotated']", WAIT).await.text().await;
    assert!(entry.contains("greenhouse devices") && entry.contains(&admin_email), "{entry}");
    assert_eq!(browser.find_all("#audit tbody tr").await.len(), 1, "only rotations are listed");
    shot(&browser, "21-audit").await;

    // A member, invited to the team, reads the organization but may not revoke its token.
    browser.goto(&tessera.url("/console/users")).await;
    submit(
        &browser,
        &[("#user-email", "member@example.com"), ("#user-name", "Mia Member"), ("#user-password", "member password 1")],
        "form[action='/console/users'] button",
        ".notice.ok",
    )
    .await;
    shot(&browser, "13-users").await;
    browser.goto(&team_url).await;
    browser.find("form[action$='/invites'] button").await.click().await;
    let code = browser.wait_for("#invites code", WAIT).await.text().await;
    shot(&browser, "14-team").await;
    sign_out(&browser).await;
    sign_in(&browser, &tessera, "member@example.com", "member password 1", ".who").await;
    browser.goto(&tessera.url("/console/teams")).await;
    submit(&browser, &[("#invite-code", &code)], "form[action='/console/teams/accept'] button", "#members-heading")
        .await;
    browser.goto(&collection_url).await;
    browser.wait_until_text("#devices tbody tr td a", "sensor-1", WAIT).await;
    assert!(browser.find_all("#danger-heading").await.is_empty(), "a reader is offered no delete");
    // Minting is refused next to the form...
    browser.find("#tokens-heading ~ details summary").await.click().await;
    submit(&browser, &[("#token-name", "mine")], "#new-token-form button", "#token-error").await;
    let refusal = browser.find("#token-error").await.text().await;
    assert!(refusal.contains("may not"), "{refusal}");
    // ...and so is revoking the admin's token, posted from the page by hand.
    post_from_page(&browser, &format!("/console/tokens/{organization_token_id}/delete"), json!({})).await;
    let refused = browser.wait_for(".notice.error", WAIT).await.text().await;
    assert!(refused.contains("No such token"), "{refused}");
    shot(&browser, "15-member-refused").await;
    assert_eq!(send(23.0).await, StatusCode::OK, "the organization token still works");

    // Phone-sized, the collection page still reads.
    browser.set_window_size(PHONE.0, PHONE.1).await;
    browser.goto(&collection_url).await;
    browser.wait_for("#devices", WAIT).await;
    let overflow = browser.execute("return document.documentElement.scrollWidth > window.innerWidth + 1", &[]).await;
    assert_eq!(overflow, json!(false), "no sideways scrolling of the page on a phone");
    shot(&browser, "16-phone-collection").await;
    browser.prefer_dark(true).await;
    browser.refresh().await;
    browser.wait_for("#devices", WAIT).await;
    let background = browser.execute("return getComputedStyle(document.body).backgroundColor", &[]).await;
    assert_eq!(background, json!("rgb(15, 18, 22)"), "the dark palette follows prefers-color-scheme");
    shot(&browser, "17-phone-collection-dark").await;
    browser.set_window_size(1280, 900).await;
    browser.goto(&device_url).await;
    browser.wait_for("canvas#chart[data-points]", WAIT).await;
    shot(&browser, "18-device-chart-dark").await;

    let violations: Vec<_> = browser
        .console_logs()
        .await
        .into_iter()
        // Failed loads are the refusals this test asked for; a script error or a blocked script, style or frame
        // (the Content-Security-Policy at work on something of ours) is a bug.
        .filter(|entry| entry.level == "SEVERE" && entry.source != "network")
        .collect();
    assert!(violations.is_empty(), "the console logged errors (a CSP violation?): {violations:?}");
}

/// The API reference: reached from the navigation, rendered from the document the server serves, an operation
/// found with its parameters and answers, a schema reached by its link, and no CSP violation or script error.
#[tokio::test]
async fn the_api_reference_renders_the_openapi_document() {
    let Some(browser) = Browser::start().await else { return };
    let tessera = TestServer::start().await;
    sign_in(&browser, &tessera, &tessera.admin_email.clone(), &tessera.admin_password.clone(), ".who").await;
    browser.find("nav a[href='/console/api']").await.click().await;
    browser.wait_for("#op-rotate-token", WAIT).await;
    assert!(browser.current_url().await.ends_with("/console/api"));
    let operation = browser.find("#op-rotate-token").await;
    assert_eq!(operation.attribute("data-method").await.as_deref(), Some("POST"));
    assert_eq!(operation.attribute("data-path").await.as_deref(), Some("/v1/tokens/{id}/rotate"));
    let answers = browser.find("#op-rotate-token .api-responses").await.text().await;
    for status in ["200", "400", "401", "404", "429", "503"] {
        assert!(answers.contains(status), "the rotation's answers name {status}: {answers}");
    }
    assert!(answers.contains("application/problem+json"), "{answers}");
    assert!(browser.find("#op-rotate-token .api-parameters").await.text().await.contains("id"));
    // Every operation of the served document is on the page, the vendors' routes under their dialects' tags.
    let document: Value =
        tessera.client.get(tessera.url("/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let listed: usize =
        document["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    assert_eq!(browser.find_all("article.api-operation").await.len(), listed);
    assert!(browser.find("#tag-ubidots").await.text().await.contains("vendor dialect"));
    browser.find("#op-get-token a[href='#schema-token']").await.click().await;
    let token_schema = browser.find("#schema-token").await.text().await;
    assert!(token_schema.contains("replaced_secret_valid_until"), "{token_schema}");
    shot(&browser, "19-api-reference").await;
    let signed_out = tessera.client.get(tessera.url("/console/api")).send().await.unwrap();
    assert!(
        signed_out.url().path().ends_with("/console/login"),
        "the page is for signed-in users: {}",
        signed_out.url()
    );
    let violations: Vec<_> = browser.console_logs().await.into_iter().filter(|entry| entry.level == "SEVERE").collect();
    assert!(violations.is_empty(), "the API page logged errors (a CSP violation?): {violations:?}");
}
