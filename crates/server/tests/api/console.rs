//! The web console over plain HTTP (its browser flow is in `tests/console`): sessions in cookies, the form token
//! on every change, the security headers, the refusals the API makes, and the device listing of a large
//! collection. Runs on SQLite and on PostgreSQL like the rest of the API suite.

use std::collections::HashMap;

use reqwest::{Method, StatusCode, header};
use serde_json::json;

use crate::helpers::TestServer;

/// A browser without a browser: cookies kept by hand, redirects not followed (their targets are asserted).
struct Visitor {
    client: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

/// An answer: status, headers, body.
struct Page {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|value| value.to_str().ok()).unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    fn form_token(&self) -> String {
        field_value(&self.body, "csrf").unwrap_or_else(|| panic!("no form token on the page:\n{}", self.body))
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(header::SET_COOKIE).iter().map(|value| value.to_str().unwrap().to_owned()).collect()
    }
}

fn field_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('"').next()?.to_owned())
}

impl Visitor {
    fn new(tessera: &TestServer) -> Visitor {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Visitor { client, base: tessera.base.clone(), cookies: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            request = request.header(header::COOKIE, self.cookie_header());
        }
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await.expect("the request is sent");
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        for cookie in page.set_cookies() {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, Some(form)).await
    }

    /// Posts `form` with the form token of the page at `from`.
    async fn post_from(&mut self, from: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let token = self.get(from).await.form_token();
        let mut fields: Vec<(&str, &str)> = vec![("csrf", &token)];
        fields.extend_from_slice(form);
        self.post(path, &fields).await
    }

    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let token = self.get("/console/login").await.form_token();
        self.post("/console/login", &[("csrf", &token), ("email", email), ("password", password)]).await
    }
}

async fn signed_in_admin(tessera: &TestServer) -> Visitor {
    let mut visitor = Visitor::new(tessera);
    let page = visitor.sign_in(&tessera.admin_email, &tessera.admin_password).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    visitor
}

#[tokio::test]
async fn a_browser_at_the_root_goes_to_the_console_and_api_clients_keep_their_answers() {
    let tessera = TestServer::start().await;
    let visitor = Visitor::new(&tessera);
    let html = visitor.client.get(tessera.url("/")).header(header::ACCEPT, "text/html,*/*;q=0.8").send().await.unwrap();
    assert_eq!(html.status(), StatusCode::SEE_OTHER);
    assert_eq!(html.headers()[header::LOCATION], "/console/");
    // Horde's root answers a client that is no browser, or one that presents a token, as before.
    let api = visitor.client.get(tessera.url("/")).header(header::ACCEPT, "application/json").send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let with_token = visitor
        .client
        .get(tessera.url("/"))
        .header(header::ACCEPT, "text/html")
        .header("x-api-token", "tsr_nothing")
        .send()
        .await
        .unwrap();
    assert_ne!(with_token.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_console_answer_carries_a_strict_policy_and_assets_are_cached_for_good() {
    let tessera = TestServer::start().await;
    let mut visitor = Visitor::new(&tessera);
    for path in ["/console/login", "/console/nowhere", "/console/collections"] {
        let page = visitor.get(path).await;
        let policy = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "no inline script or style is allowed: {policy}");
        assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(page.headers[header::CACHE_CONTROL], "no-store", "{path}");
    }
    let login = visitor.get("/console/login").await;
    assert!(!login.body.contains("<script>") && !login.body.contains(" style="), "no inline script or style");
    let script = login.body.split("<script src=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let asset = visitor.get(&script).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert_eq!(asset.headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(asset.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
    assert_eq!(visitor.get("/console/assets/console-0000000000000000.js").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_session_lives_in_strict_http_only_cookies_and_ends_at_sign_out() {
    let tessera = TestServer::start().await;
    let mut visitor = Visitor::new(&tessera);
    assert_eq!(visitor.get("/console/collections").await.location(), "/console/login", "signed out: to sign-in");
    let wrong = visitor.sign_in(&tessera.admin_email, "not the password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("The email or the password is wrong."));
    assert!(wrong.body.contains(&format!("value=\"{}\"", tessera.admin_email)), "the email typed is kept");

    let page = visitor.sign_in(&tessera.admin_email, &tessera.admin_password).await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/console/"));
    let cookies = page.set_cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for cookie in &cookies {
        assert!(
            cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict") && cookie.contains("Path=/console")
        );
        assert!(!cookie.contains("Secure"), "plain HTTP on loopback: no Secure flag, or the browser drops it");
    }
    assert_eq!(visitor.get("/console/collections").await.status, StatusCode::OK);
    let access = visitor.cookies["tessera_session"].clone();

    // Behind a proxy that says the visitor came over HTTPS, cookies are Secure.
    let token = visitor.get("/console/login").await;
    let behind_proxy = visitor
        .client
        .post(tessera.url("/console/login"))
        .header("x-forwarded-proto", "https")
        .header(
            header::COOKIE,
            format!("tessera_login={}", visitor.cookies.get("tessera_login").cloned().unwrap_or_default()),
        )
        .form(&[
            ("csrf", visitor.cookies.get("tessera_login").cloned().unwrap_or_else(|| token.form_token())),
            ("email", tessera.admin_email.clone()),
            ("password", tessera.admin_password.clone()),
        ])
        .send()
        .await
        .unwrap();
    for cookie in behind_proxy.headers().get_all(header::SET_COOKIE) {
        assert!(cookie.to_str().unwrap().ends_with("; Secure"), "{cookie:?}");
    }

    let signed_out = visitor.post_from("/console/profile", "/console/logout", &[]).await;
    assert_eq!(signed_out.location(), "/console/login");
    assert!(!visitor.cookies.contains_key("tessera_session"), "the cookies are cleared");
    // The old cookie is refused everywhere, not merely forgotten by this browser.
    let mut replay = Visitor::new(&tessera);
    replay.cookies.insert("tessera_session".into(), access.clone());
    assert_eq!(replay.get("/console/collections").await.location(), "/console/login");
    let (status, _) = tessera.native(Method::GET, "/me", &access, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signing out revoked the session");
}

#[tokio::test]
async fn a_post_without_its_form_token_changes_nothing() {
    let tessera = TestServer::start().await;
    let mut visitor = signed_in_admin(&tessera).await;
    for form in [vec![("name", "forged")], vec![("csrf", "0123456789abcdef0123456789abcdef"), ("name", "forged")]] {
        let page = visitor.post("/console/collections", &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains("This form has expired or did not come from this console"));
    }
    // Another visitor's form token is no token here.
    let mut other = signed_in_admin(&tessera).await;
    let theirs = other.get("/console/collections").await.form_token();
    assert_ne!(theirs, visitor.get("/console/collections").await.form_token(), "a token per session");
    let page = visitor.post("/console/collections", &[("csrf", &theirs), ("name", "forged")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // The sign-in form wants the double-submit value of its own cookie.
    let mut stranger = Visitor::new(&tessera);
    let page = stranger
        .post("/console/login", &[("email", &tessera.admin_email), ("password", &tessera.admin_password)])
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let listing = visitor.get("/console/collections").await.body;
    assert!(!listing.contains("forged"), "no forged post created anything");
    let created = visitor.post_from("/console/collections", "/console/collections", &[("name", "real")]).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
}

#[tokio::test]
async fn a_session_whose_access_token_is_gone_is_renewed_once_even_when_a_page_and_its_scripts_ask_at_once() {
    let tessera = TestServer::start().await;
    let mut visitor = signed_in_admin(&tessera).await;
    // An access token that no longer works (as after its hour), beside a live refresh token: each request renews.
    visitor.cookies.insert("tessera_session".into(), "tsu_expired".into());
    let cookies = visitor.cookie_header();
    let requests = (0..6).map(|_| {
        visitor.client.get(tessera.url("/console/collections")).header(header::COOKIE, cookies.clone()).send()
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut renewed = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "every concurrent request is served");
        let set: Vec<String> =
            answer.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        renewed.push(set);
    }
    assert!(renewed.iter().all(|set| set.len() == 2), "each answer carries the renewed pair: {renewed:?}");
    assert!(renewed.windows(2).all(|pair| pair[0] == pair[1]), "all into the same pair: one renewal");
    // The session was not taken for stolen (a refresh token presented twice revokes its session): the renewed
    // pair works, and renews again.
    for cookie in &renewed[0] {
        let (name, value) = cookie.split(';').next().unwrap().split_once('=').unwrap();
        visitor.cookies.insert(name.into(), value.into());
    }
    assert_eq!(visitor.get("/console/collections").await.status, StatusCode::OK);
    visitor.cookies.insert("tessera_session".into(), "tsu_expired".into());
    let again = visitor.get("/console/collections").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.set_cookies().len(), 2, "renewed a second time");
}

#[tokio::test]
async fn the_console_refuses_a_read_only_member_what_the_api_refuses() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let team_page = admin.post_from("/console/teams", "/console/teams", &[("name", "ops")]).await;
    let team = team_page.location().rsplit('/').next().unwrap().to_owned();
    let created =
        admin.post_from("/console/collections", "/console/collections", &[("name", "plant"), ("owner", &team)]).await;
    let collection_path = created.location().to_owned();
    let collection = collection_path.rsplit('/').next().unwrap().to_owned();
    let minted = admin
        .post_from(
            &collection_path,
            &format!("{collection_path}/tokens"),
            &[("kind", "organization"), ("name", "plant")],
        )
        .await;
    assert_eq!(minted.status, StatusCode::OK);
    assert_eq!(minted.headers[header::CACHE_CONTROL], "no-store", "the page with the secret is kept nowhere");
    let secret =
        minted.body.split("id=\"new-secret\" class=\"secret\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    assert!(secret.starts_with("tso_"));
    let collection_page = admin.get(&collection_path).await;
    assert!(!collection_page.body.contains(&secret), "shown once");
    let token_id = collection_page.body.split("data-token=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    admin.post_from(&format!("/console/teams/{team}"), &format!("/console/teams/{team}/invites"), &[]).await;
    let team_body = admin.get(&format!("/console/teams/{team}")).await.body;
    let code = team_body.split("<code id=\"invite-1\">").nth(1).unwrap().split('<').next().unwrap().to_owned();

    tessera.user("reader@example.com", "reader password").await;
    let mut reader = Visitor::new(&tessera);
    reader.sign_in("reader@example.com", "reader password").await;
    let joined = reader.post_from("/console/teams", "/console/teams/accept", &[("code", &code)]).await;
    assert_eq!(joined.status, StatusCode::SEE_OTHER, "{}", joined.body);
    assert_eq!(reader.get(&collection_path).await.status, StatusCode::OK, "a member reads the collection");

    let revoke = reader.post_from(&collection_path, &format!("/console/tokens/{token_id}/delete"), &[]).await;
    assert_eq!(revoke.status, StatusCode::NOT_FOUND, "another's token is not found, as on the API");
    let mint = reader.post_from(&collection_path, &format!("{collection_path}/tokens"), &[("name", "mine")]).await;
    assert_eq!(mint.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(mint.body.contains("You may not do this"), "said next to the form");
    let device = reader.post_from(&collection_path, &format!("{collection_path}/devices"), &[("label", "x1")]).await;
    assert_eq!(device.status, StatusCode::UNPROCESSABLE_ENTITY, "a reader creates no device");
    let delete = reader.post_from(&collection_path, &format!("{collection_path}/delete"), &[]).await;
    assert_eq!(delete.status, StatusCode::UNPROCESSABLE_ENTITY, "nor deletes the collection");
    assert_eq!(reader.get("/console/users").await.status, StatusCode::FORBIDDEN, "users are administrators' work");
    assert_eq!(reader.get("/console/account").await.status, StatusCode::FORBIDDEN);
    let (status, _) =
        tessera.ubidots(Method::POST, "/devices/still-works", &secret, Some(json!({"temperature": 1}))).await;
    assert_eq!(status, StatusCode::OK, "the organization token was not revoked");
    assert!(admin.get(&format!("/console/collections/{collection}")).await.body.contains("still-works"));
}

#[tokio::test]
async fn forms_say_what_is_wrong_next_to_the_field_and_keep_what_was_typed() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let default = admin.get("/console/collections").await.body;
    let path = default.split("href=\"/console/collections/").nth(1).unwrap().split('"').next().unwrap();
    let path = format!("/console/collections/{path}");
    let page =
        admin.post_from(&path, &format!("{path}/devices"), &[("label", "Not A Label!"), ("name", "kept name")]).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"device-label-error\""), "the error sits by the field");
    assert!(page.body.contains("value=\"Not A Label!\"") && page.body.contains("value=\"kept name\""));
    let page = admin.post_from(&path, &format!("{path}/tokens"), &[("name", "t"), ("expires_days", "0")]).await;
    assert!(page.body.contains("id=\"token-expires-error\"") && page.body.contains("value=\"t\""));
    // A foreign "back" is not followed after a deletion (no open redirect).
    let minted = admin.post_from(&path, &format!("{path}/tokens"), &[("name", "gone")]).await;
    assert_eq!(minted.status, StatusCode::OK);
    let listing = admin.get(&path).await.body;
    let id = listing.split("data-token=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let deleted =
        admin.post_from(&path, &format!("/console/tokens/{id}/delete"), &[("back", "https://evil.example/")]).await;
    assert_eq!(deleted.location(), "/console/tokens?done=token-deleted");
}

#[tokio::test]
async fn a_collection_of_many_devices_is_paged_searched_filtered_and_sorted() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("fleet").await;
    let token = tessera.organization_token(&org, "fleet").await["token"].as_str().unwrap().to_owned();
    for device in 0..120 {
        let (status, body) = tessera
            .ubidots(Method::POST, &format!("/devices/unit-{device:03}"), &token, Some(json!({"level": device})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut admin = signed_in_admin(&tessera).await;
    let path = format!("/console/collections/{org}");
    let rows = |body: &str| body.matches("<tr data-device=").count();
    // Every page shows when a device was last seen at once; the order by activity is the store's, written
    // each second (the flush interval): wait for it, a condition with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let first = loop {
        let page = admin.get(&path).await.body;
        if page.find("unit-119").is_some() || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(rows(&first), 50, "a page of 50");
    assert!(!first.contains("class=\"seen\">never"), "every device was seen");
    assert!(first.contains("1–50 of 120"));
    assert!(first.find("unit-119").unwrap() < first.find("unit-000").unwrap_or(usize::MAX), "the most recent first");
    let third = admin.get(&format!("{path}?sort=label&page=3")).await.body;
    assert_eq!(rows(&third), 20);
    assert!(third.contains("unit-100") && !third.contains("unit-099\""), "by label, the last page");
    let search = admin.get(&format!("{path}?q=unit-10")).await.body;
    assert_eq!(rows(&search), 10, "unit-100 to unit-109");
    assert!(search.contains("<strong>100</strong>"), "each variable's last value is shown");
    let underscores = admin.get(&format!("{path}?q=_")).await.body;
    assert_eq!(rows(&underscores), 0, "_ is a character, not a wildcard");
    let quiet = admin.get(&format!("{path}?quiet=5")).await.body;
    assert_eq!(rows(&quiet), 0, "every device was seen within 5 minutes");
    assert!(quiet.contains("No device matches."));
    let bad = admin.get(&format!("{path}?quiet=zero")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_chart_reads_buckets_and_an_export_reads_every_reading() {
    let tessera = TestServer::start().await;
    let org = tessera.organization("charts").await;
    let token = tessera.organization_token(&org, "charts").await["token"].as_str().unwrap().to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    // Ubidots takes at most 10 000 bytes a request: the readings go in chunks.
    for chunk in (0..1_000i64).collect::<Vec<_>>().chunks(150) {
        let dots: Vec<_> = chunk.iter().map(|i| json!({"value": i, "timestamp": now - 1_000_000 + i * 1000})).collect();
        let (status, body) =
            tessera.ubidots(Method::POST, "/devices/meter", &token, Some(json!({"power": dots}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut admin = signed_in_admin(&tessera).await;
    let listing = admin.get(&format!("/console/collections/{org}")).await.body;
    let device = listing.split("href=\"/console/devices/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let page = admin.get(&format!("/console/devices/{device}")).await.body;
    let variable = page.split("<option value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let series = admin.get(&format!("/console/variables/{variable}/series?from={}&to={now}", now - 2_000_000)).await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.body);
    let series: serde_json::Value = serde_json::from_str(&series.body).unwrap();
    let points = series["points"].as_array().unwrap();
    assert!(points.len() <= 600 && points.len() >= 290, "about 300 buckets of the 600: {}", points.len());
    let count: u64 = points.iter().map(|point| point[4].as_u64().unwrap()).sum();
    assert_eq!(count, 1_000, "every reading counted once");
    assert_eq!(points.last().unwrap()[2], json!(999.0), "the last bucket's max");
    let refused = admin.get(&format!("/console/variables/{variable}/series?from={now}&to={}", now - 5)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("'from' must be before 'to'"));

    let export =
        admin.get(&format!("/console/variables/{variable}/export.csv?from={}&to={now}", now - 2_000_000)).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(export.headers[header::CONTENT_DISPOSITION].to_str().unwrap().contains("meter-power-"));
    let lines: Vec<&str> = export.body.lines().collect();
    assert_eq!(lines[0], "time,timestamp_ms,value,context");
    assert_eq!(lines.len(), 1 + 1_000);
    assert!(lines[1].ends_with(",999,"), "newest first: {}", lines[1]);

    // Someone who may not read the variable learns nothing of it.
    tessera.user("outsider@example.com", "outsider password").await;
    let mut outsider = Visitor::new(&tessera);
    outsider.sign_in("outsider@example.com", "outsider password").await;
    let theirs = outsider.get(&format!("/console/variables/{variable}/series")).await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    assert_eq!(outsider.get(&format!("/console/variables/{variable}/export.csv")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(outsider.get(&format!("/console/devices/{device}")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn signing_in_through_the_console_is_throttled_like_the_api() {
    let tessera = TestServer::start().await;
    let mut visitor = Visitor::new(&tessera);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(visitor.sign_in(&tessera.admin_email, "wrong password").await.status);
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(*statuses.last().unwrap(), StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    let page = visitor.sign_in(&tessera.admin_email, &tessera.admin_password).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    assert!(page.body.contains("Too many failed attempts"));
}

#[tokio::test]
async fn a_login_session_deleted_from_the_token_table_is_over_and_not_renewed() {
    let tessera = TestServer::start().await;
    let (_, bea_id) = tessera.user("bea@example.com", "bea's password 1").await;
    let mut bea = Visitor::new(&tessera);
    bea.sign_in("bea@example.com", "bea's password 1").await;
    assert_eq!(bea.get("/console/collections").await.status, StatusCode::OK);
    // An administrator deletes Bea's console session (its one row: the refresh token is not listed apart).
    let mut admin = signed_in_admin(&tessera).await;
    let listing = admin.get("/console/tokens?kind=session").await.body;
    assert!(!listing.contains("Session refresh"), "a session is one row");
    let rows: Vec<&str> = listing.split("<tr data-token=\"").skip(1).collect();
    let beas = rows.iter().find(|row| row.contains("bea@example.com")).expect("Bea's session is listed");
    let id = beas.split('"').next().unwrap();
    let deleted = admin.post_from("/console/tokens", &format!("/console/tokens/{id}/delete"), &[]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    // Her refresh cookie does not bring the session back.
    let page = bea.get("/console/collections").await;
    assert_eq!(page.location(), "/console/login", "the deleted session ends at her next request");
    // On the API too, revoking a session's access token revokes its refresh token.
    let session = tessera.login("bea@example.com", "bea's password 1").await;
    let admin_token = tessera.admin_session().await;
    let (_, listed) = tessera.native(Method::GET, "/tokens", &admin_token, None).await;
    let beas_sessions: Vec<String> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|token| token["kind"] == "user_access" && token["issued_by"]["id"] == json!(bea_id))
        .map(|token| token["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!beas_sessions.is_empty());
    for id in beas_sessions {
        let (status, _) = tessera.native(Method::DELETE, &format!("/tokens/{id}"), &admin_token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, _) = tessera
        .call(Method::POST, "/v1/token/refresh", &[], Some(json!({"refresh_token": session["refresh_token"]})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the session's refresh token went with its access token");
}

#[tokio::test]
async fn a_person_holds_a_bounded_number_of_live_streams() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let listing = admin.get("/console/collections").await.body;
    let collection =
        listing.split("href=\"/console/collections/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let path = format!("/console/collections/{collection}/live");
    let mut open = Vec::new();
    for _ in 0..16 {
        let stream = admin.client.get(tessera.url(&path)).header(header::COOKIE, admin.cookie_header()).send().await;
        let stream = stream.unwrap();
        assert_eq!(stream.status(), StatusCode::OK);
        assert!(stream.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
        open.push(stream);
    }
    let one_more = admin.get(&path).await;
    assert_eq!(one_more.status, StatusCode::TOO_MANY_REQUESTS, "the 17th stream is refused");
    open.pop();
    // A closed stream gives its place back (the server notices when its next write or check fails; the slot is
    // freed once the stream is dropped, which the recheck every second does for a gone client at the latest).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let again = admin.client.get(tessera.url(&path)).header(header::COOKIE, admin.cookie_header()).send().await;
        if again.unwrap().status() == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a closed stream's place was never given back");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let device = admin.get(&format!("/console/collections/{collection}/live?device=nonsense")).await;
    assert_eq!(device.status, StatusCode::NOT_FOUND, "a device filter must name a device id");
}

#[tokio::test]
async fn a_stranger_post_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tessera = TestServer::start().await;
    let address = tessera.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Headers that promise a body, and no body: a trickling client would send it a byte at a time.
    let head = format!(
        "POST /console/login HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
         content-length: 60000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut answer)).await;
    let read = read.expect("answered without waiting for the body").unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

#[tokio::test]
async fn a_second_factor_is_set_up_only_with_the_password() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    // Whoever holds a session without knowing the password cannot bind the account to their phone.
    let refused = admin.post_from("/console/profile", "/console/profile/totp", &[("password", "a guess")]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("id=\"totp-password-error\"") && !refused.body.contains("totp-key"));
    let page =
        admin.post_from("/console/profile", "/console/profile/totp", &[("password", &tessera.admin_password)]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"totp-key\""), "the key, on this one page");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn every_console_change_is_refused_to_whoever_may_not_make_it() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let team = admin.post_from("/console/teams", "/console/teams", &[("name", "ops")]).await.location().to_owned();
    let team_id = team.rsplit('/').next().unwrap().to_owned();
    let form = [("name", "plant"), ("owner", team_id.as_str())];
    let collection = admin.post_from("/console/collections", "/console/collections", &form).await.location().to_owned();
    let device = admin.post_from(&collection, &format!("{collection}/devices"), &[("label", "pump-1")]).await;
    let device = device.location().to_owned();
    assert!(device.starts_with("/console/devices/"), "{device}");
    admin.post_from(&team, &format!("{team}/invites"), &[]).await;
    let team_page = admin.get(&team).await.body;
    let code = team_page.split("<code id=\"invite-1\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    admin.post_from(&team, &format!("{team}/invites"), &[]).await;

    let (_, reader_id) = tessera.user("reader@example.com", "reader password").await;
    tessera.user("outsider@example.com", "outsider password").await;
    let mut reader = Visitor::new(&tessera);
    reader.sign_in("reader@example.com", "reader password").await;
    assert_eq!(
        reader.post_from("/console/teams", "/console/teams/accept", &[("code", &code)]).await.status,
        StatusCode::SEE_OTHER
    );
    let mut outsider = Visitor::new(&tessera);
    outsider.sign_in("outsider@example.com", "outsider password").await;

    // An outsider sees nothing of the collection, its device, its stream or its team.
    for path in [collection.clone(), device.clone(), format!("{collection}/live"), team.clone()] {
        assert_eq!(outsider.get(&path).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    // A read-only member reads, and changes nothing (a token for the collection would be a change there; one
    // for `/` is theirs to make, reaching at each use only what they reach).
    assert_eq!(reader.get(&device).await.status, StatusCode::OK);
    let resource = format!("/collections/{}", collection.rsplit('/').next().unwrap());
    type Refused<'a> = (String, Vec<(&'a str, &'a str)>, StatusCode);
    let refused: Vec<Refused> = vec![
        (format!("{device}/delete"), vec![], StatusCode::FORBIDDEN),
        (format!("{device}/tokens"), vec![("name", "mine")], StatusCode::UNPROCESSABLE_ENTITY),
        (format!("{team}/invites"), vec![], StatusCode::FORBIDDEN),
        (format!("{team}/invites/withdraw"), vec![("code", &code)], StatusCode::FORBIDDEN),
        (format!("{team}/delete"), vec![], StatusCode::FORBIDDEN),
        (format!("{team}/members/{reader_id}"), vec![("role", "admin")], StatusCode::FORBIDDEN),
        (
            "/console/users".into(),
            vec![("email", "x@example.com"), ("password", "password 123")],
            StatusCode::FORBIDDEN,
        ),
        ("/console/account".into(), vec![("name", "mine")], StatusCode::FORBIDDEN),
        ("/console/tokens".into(), vec![("resource", &resource), ("write", "on")], StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (path, form, status) in &refused {
        let page = reader.post_from(&device, path, form).await;
        assert_eq!(page.status, *status, "{path}: {}", page.body);
    }
    let path = format!("/console/users/{reader_id}/admin");
    assert_eq!(
        reader.post_from(&device, &path, &[("admin", "yes")]).await.status,
        StatusCode::FORBIDDEN,
        "no self-made admin"
    );
    let path = format!("{team}/members/{reader_id}/remove");
    assert_eq!(reader.post_from(&device, &path, &[]).await.status, StatusCode::FORBIDDEN);
    // Nothing changed: the device, the team's invite and roles, the users are as they were.
    assert_eq!(admin.get(&device).await.status, StatusCode::OK);
    let team_page = admin.get(&team).await.body;
    assert!(team_page.contains(&code) || team_page.contains("used"), "the invite stands");
    assert!(team_page.contains("member (read only)"), "the reader is still a reader");
    let users = admin.get("/console/users").await.body;
    assert!(!users.contains("x@example.com"), "no user was added");
    assert_eq!(users.matches("account administrator").count(), 1, "nobody became an administrator");
    let (_, tokens) = tessera.native(Method::GET, "/tokens", &tessera.admin_session().await, None).await;
    let kinds: Vec<&str> =
        tokens["tokens"].as_array().unwrap().iter().map(|token| token["kind"].as_str().unwrap()).collect();
    let made = ["device", "resource", "account"];
    assert!(!kinds.iter().any(|kind| made.contains(kind)), "no token was made: {kinds:?}");
}

/// The secret a page shows this once.
fn shown_secret(page: &Page) -> String {
    let start =
        page.body.find("id=\"new-secret\" class=\"secret\">").unwrap_or_else(|| panic!("no secret:\n{}", page.body));
    page.body[start..].split('>').nth(1).unwrap().split('<').next().unwrap().to_owned()
}

/// The id of the first token row whose text holds `name`.
fn token_row_id(html: &str, name: &str) -> String {
    html.split("<tr data-token=\"")
        .skip(1)
        .find(|row| row.split("</tr>").next().unwrap().contains(name))
        .map(|row| row.split('"').next().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no token row holds {name}:\n{html}"))
}

/// The HTML of the token row `id`.
fn token_row<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<tr data-token=\"{id}\"")).unwrap_or_else(|| panic!("no row {id}:\n{html}"));
    html[start..].split("</tr>").next().unwrap()
}

/// Whether `secret` may write a reading to the device labelled `label` (Ubidots).
async fn writes(tessera: &TestServer, secret: &str, label: &str) -> StatusCode {
    tessera.ubidots(Method::POST, &format!("/devices/{label}"), secret, Some(json!({"t": 1}))).await.0
}

/// The administrator's view of the audit trail through the API.
async fn audit_entries(tessera: &TestServer, query: &str) -> Vec<serde_json::Value> {
    let admin = tessera.admin_session().await;
    let (status, body) = tessera.native(Method::GET, &format!("/audit?{query}"), &admin, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().unwrap().clone()
}

/// An organization token minted on the collection's page: `(id, secret)`.
async fn console_collection_token(
    visitor: &mut Visitor,
    collection: &str,
    fields: &[(&str, &str)],
) -> (String, String) {
    let path = format!("/console/collections/{collection}");
    let minted = visitor.post_from(&path, &format!("{path}/tokens"), fields).await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.body);
    let secret = shown_secret(&minted);
    let name = fields.iter().find(|(field, _)| *field == "name").map(|(_, name)| *name).unwrap();
    (token_row_id(&visitor.get(&path).await.body, name), secret)
}

/// A device made on the collection's page (`label`) and a device token minted on its page: the device's path,
/// the token's id and secret.
async fn console_device_token(visitor: &mut Visitor, collection: &str, label: &str) -> (String, String, String) {
    let collection_path = format!("/console/collections/{collection}");
    let device = visitor.post_from(&collection_path, &format!("{collection_path}/devices"), &[("label", label)]).await;
    let device = device.location().to_owned();
    assert!(device.starts_with("/console/devices/"), "{device}");
    let (id, secret) = device_token_on(visitor, &device, &format!("{label} firmware")).await;
    (device, id, secret)
}

async fn device_token_on(visitor: &mut Visitor, device: &str, name: &str) -> (String, String) {
    let minted = visitor.post_from(device, &format!("{device}/tokens"), &[("name", name)]).await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.body);
    let secret = shown_secret(&minted);
    (token_row_id(&visitor.get(device).await.body, name), secret)
}

#[tokio::test]
async fn a_token_rotated_in_the_console_shows_its_new_secret_once_and_the_old_one_works_for_the_overlap() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let org = tessera.organization("Rotating").await;
    let path = format!("/console/collections/{org}");
    let (id, old) = console_collection_token(&mut admin, &org, &[("name", "meters")]).await;
    let listing = admin.get(&path).await.body;
    let row = token_row(&listing, &id);
    for action in ["rotate", "disable", "delete"] {
        assert!(row.contains(&format!("action=\"/console/tokens/{id}/{action}\"")), "{action} in {row}");
    }
    assert_eq!(writes(&tessera, &old, "pump").await, StatusCode::OK);

    let rotate = format!("/console/tokens/{id}/rotate");
    let rotated = admin.post_from(&path, &rotate, &[("overlap", "3600"), ("back", &path)]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_eq!(rotated.headers[header::CACHE_CONTROL], "no-store", "the page with the secret is kept nowhere");
    let new = shown_secret(&rotated);
    assert!(new.starts_with("tso_") && new != old, "{new}");
    assert!(rotated.body.contains("The old secret goes on working until"), "{}", rotated.body);
    assert!(rotated.body.contains("1 hour from now"));
    assert!(rotated.body.contains(&format!("href=\"{path}\"")), "back to the collection");
    assert_eq!(writes(&tessera, &new, "pump").await, StatusCode::OK, "the new secret works at once");
    assert_eq!(writes(&tessera, &old, "pump").await, StatusCode::OK, "the old one within the overlap");
    let listing = admin.get(&path).await.body;
    assert!(!listing.contains(&new), "shown once");
    assert!(token_row(&listing, &id).contains("old secret valid until"), "{}", token_row(&listing, &id));

    // Without an overlap the secret it replaces stops at once, and the one replaced before it with it.
    let again = admin.post_from(&path, &rotate, &[("overlap", "0"), ("back", &path)]).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let newest = shown_secret(&again);
    assert!(again.body.contains("The old secret is refused from now on"));
    assert_eq!(writes(&tessera, &new, "pump").await, StatusCode::UNAUTHORIZED);
    assert_eq!(writes(&tessera, &old, "pump").await, StatusCode::UNAUTHORIZED);
    assert_eq!(writes(&tessera, &newest, "pump").await, StatusCode::OK);

    // A refusal is said beside the row that asked, on the page it was asked from, and changes nothing.
    let month = (31 * 86_400).to_string();
    for (overlap, words) in [(month.as_str(), "at most 2592000 seconds"), ("soon", "is not a number of seconds")] {
        let refused = admin.post_from(&path, &rotate, &[("overlap", overlap), ("back", &path)]).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
        let row = token_row(&refused.body, &id);
        assert!(row.contains("id=\"token-row-error\"") && row.contains(words), "{overlap}: {row}");
        assert!(refused.body.contains("id=\"devices\""), "the collection's page again");
    }
    assert_eq!(writes(&tessera, &newest, "pump").await, StatusCode::OK, "a refused rotation changed nothing");
    // A login session is renewed, not rotated: the page offers no button, and the service refuses it anyway.
    let sessions = admin.get("/console/tokens?kind=session").await.body;
    let session = token_row_id(&sessions, "Login session");
    assert!(!token_row(&sessions, &session).contains("/rotate"), "no rotation offered for a session");
    let back = "/console/tokens?kind=session";
    let refused = admin.post_from(back, &format!("/console/tokens/{session}/rotate"), &[("back", back)]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert!(token_row(&refused.body, &session).contains("renewed with its refresh token"), "{}", refused.body);

    let rotations = audit_entries(&tessera, &format!("event=token.rotated&token={id}")).await;
    assert_eq!(rotations.len(), 2, "{rotations:?}");
    assert_eq!(rotations[1]["detail"]["overlap_seconds"], 3600);
    assert!(rotations[0]["actor"].as_str().unwrap().starts_with("user:"), "the administrator, in person");
}

#[tokio::test]
async fn a_token_disabled_in_the_console_is_refused_until_it_is_enabled_again() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let org = tessera.organization("Switches").await;
    let (device, id, secret) = console_device_token(&mut admin, &org, "boiler").await;
    assert_eq!(writes(&tessera, &secret, "boiler").await, StatusCode::OK);

    let disabled = admin.post_from(&device, &format!("/console/tokens/{id}/disable"), &[("back", &device)]).await;
    assert_eq!(disabled.location(), format!("{device}?done=token-disabled"), "{}", disabled.body);
    assert_eq!(writes(&tessera, &secret, "boiler").await, StatusCode::UNAUTHORIZED);
    let page = admin.get(disabled.location()).await.body;
    assert!(page.contains("The token is disabled"), "the notice says what was done");
    let row = token_row(&page, &id);
    assert!(row.contains("badge off") && row.contains(&format!("/console/tokens/{id}/enable")), "{row}");
    assert!(!row.contains("/disable\""), "{row}");

    let enabled = admin.post_from(&device, &format!("/console/tokens/{id}/enable"), &[("back", &device)]).await;
    assert_eq!(enabled.location(), format!("{device}?done=token-enabled"));
    assert_eq!(writes(&tessera, &secret, "boiler").await, StatusCode::OK, "the same secret works again");
    assert!(admin.get(enabled.location()).await.body.contains("The token is enabled again."));
    // A foreign `back` is not followed (no open redirect).
    let path = format!("/console/tokens/{id}/disable");
    let disabled = admin.post_from(&device, &path, &[("back", "https://evil.example/")]).await;
    assert_eq!(disabled.location(), "/console/tokens?done=token-disabled");
    let path = format!("/console/tokens/{id}/enable");
    admin.post_from(&device, &path, &[("back", "//evil.example/console/")]).await;
    assert_eq!(writes(&tessera, &secret, "boiler").await, StatusCode::OK);

    // A session is ended, not disabled: refused by the service beside its row on the tokens page.
    let sessions = admin.get("/console/tokens?kind=session").await.body;
    let session = token_row_id(&sessions, "Login session");
    let refused = admin.post_from("/console/tokens", &format!("/console/tokens/{session}/disable"), &[]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
    assert!(token_row(&refused.body, &session).contains("ended (revoked), not disabled"), "{}", refused.body);
    let events: Vec<String> = audit_entries(&tessera, &format!("token={id}"))
        .await
        .iter()
        .map(|entry| entry["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(events.contains(&"token.disabled".into()) && events.contains(&"token.enabled".into()), "{events:?}");
}

#[tokio::test]
async fn bulk_revocations_in_the_console_report_their_count_and_the_tokens_are_refused() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let org = tessera.organization("Bulk").await;
    let (_, org_one) = console_collection_token(&mut admin, &org, &[("name", "first")]).await;
    let (_, org_two) = console_collection_token(&mut admin, &org, &[("name", "second")]).await;
    let (pump, _, pump_secret) = console_device_token(&mut admin, &org, "pump-1").await;
    let (valve, _, valve_one) = console_device_token(&mut admin, &org, "valve-1").await;
    let (_, valve_two) = device_token_on(&mut admin, &valve, "valve-1 spare").await;

    // A device's tokens.
    let revoked = admin.post_from(&valve, &format!("{valve}/tokens/revoke"), &[]).await;
    assert_eq!(revoked.location(), format!("{valve}?done=tokens-revoked&count=2"), "{}", revoked.body);
    assert!(admin.get(revoked.location()).await.body.contains("2 tokens are revoked."));
    for secret in [&valve_one, &valve_two] {
        assert_eq!(writes(&tessera, secret, "valve-1").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(writes(&tessera, &pump_secret, "pump-1").await, StatusCode::OK, "another device's token stays");

    // A collection's: its own tokens and its devices'.
    let path = format!("/console/collections/{org}");
    let revoked = admin.post_from(&path, &format!("{path}/tokens/revoke"), &[]).await;
    assert_eq!(revoked.location(), format!("{path}?done=tokens-revoked&count=3"), "{}", revoked.body);
    assert!(admin.get(revoked.location()).await.body.contains("3 tokens are revoked."));
    assert_eq!(writes(&tessera, &pump_secret, "pump-1").await, StatusCode::UNAUTHORIZED);
    for secret in [&org_one, &org_two] {
        assert_eq!(writes(&tessera, secret, "pump-9").await, StatusCode::UNAUTHORIZED);
    }
    let again = admin.post_from(&pump, &format!("{pump}/tokens/revoke"), &[]).await;
    assert!(admin.get(again.location()).await.body.contains("No token was revoked"), "none was left");

    // A user's tokens and sessions.
    let (session, user) = tessera.user("leaver@example.com", "a long password").await;
    let (status, made) =
        tessera.native(Method::POST, "/tokens", &session, Some(json!({"kind": "account", "rights": "read"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let users = admin.get("/console/users").await.body;
    assert!(users.contains(&format!("/console/users/{user}/tokens/revoke")));
    let revoked = admin.post_from("/console/users", &format!("/console/users/{user}/tokens/revoke"), &[]).await;
    let count: u64 = revoked.location().rsplit("count=").next().unwrap().parse().unwrap();
    assert!(revoked.location().starts_with("/console/users?done=tokens-revoked&count=") && count >= 2, "{count}");
    assert!(admin.get(revoked.location()).await.body.contains(&format!("{count} tokens are revoked.")));
    assert_eq!(tessera.native(Method::GET, "/me", &session, None).await.0, StatusCode::UNAUTHORIZED);
    let made = made["secret"].as_str().unwrap();
    assert_eq!(tessera.native(Method::GET, "/collections", made, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(admin.get("/console/users").await.status, StatusCode::OK, "the administrator goes on");

    // Every token of a kind, in the whole account.
    let mut resources = Vec::new();
    for name in ["r1", "r2"] {
        let minted = admin.post_from("/console/tokens", "/console/tokens", &[("resource", "/"), ("name", name)]).await;
        resources.push(shown_secret(&minted));
    }
    let horde =
        async |secret: &str| tessera.call(Method::GET, "/collections", &[("x-api-token", secret)], None).await.0;
    assert_eq!(horde(&resources[0]).await, StatusCode::OK);
    let revoked = admin.post_from("/console/account", "/console/account/tokens/revoke", &[("kind", "resource")]).await;
    assert_eq!(revoked.location(), "/console/account?done=tokens-revoked&count=2", "{}", revoked.body);
    for secret in &resources {
        assert_eq!(horde(secret).await, StatusCode::UNAUTHORIZED);
    }
    let refused = admin.post_from("/console/account", "/console/account/tokens/revoke", &[("kind", "gadget")]).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("id=\"revoke-kind-error\"") && refused.body.contains("Choose a kind of token."));
    let summaries = audit_entries(&tessera, "event=tokens.bulk_revoked").await;
    assert_eq!(summaries.len(), 4, "one per call that revoked something: {summaries:?}");
}

#[tokio::test]
async fn the_expiry_policy_form_stores_a_policy_and_refuses_nonsense_beside_the_form() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let account = admin.get("/console/account").await.body;
    assert!(account.contains("capped"), "the page says longer lifetimes are capped");
    assert!(account.contains("action=\"/console/account/policies/collection\""));
    assert!(!account.contains("/console/account/policies/user_access"), "login sessions take no policy here");
    let policy = |max: &'static str, max_unit: &'static str, default: &'static str, default_unit: &'static str| {
        vec![("max", max), ("max_unit", max_unit), ("default", default), ("default_unit", default_unit)]
    };
    let saved = admin
        .post_from("/console/account", "/console/account/policies/collection", &policy("1", "hours", "10", "minutes"))
        .await;
    assert_eq!(saved.location(), "/console/account?done=policy-saved#policy-collection", "{}", saved.body);
    let expected = json!({"max_lifetime_seconds": 3600, "default_lifetime_seconds": 600});
    let stored = async || {
        let (_, listed) = tessera.native(Method::GET, "/token-policies", &tessera.api_key, None).await;
        listed["policies"]["collection"].clone()
    };
    assert_eq!(stored().await, expected);
    let page = admin.get("/console/account?done=policy-saved").await.body;
    assert!(page.contains("The policy is saved."));
    let form = page.split("id=\"policy-collection\"").nth(1).unwrap().split("</form>").next().unwrap();
    assert!(form.contains("value=\"1\"") && form.contains("value=\"hours\" selected"), "{form}");
    assert!(form.contains("value=\"10\"") && form.contains("value=\"minutes\" selected"), "{form}");
    // A token asked for with a longer lifetime is capped, and so expires soon.
    let org = tessera.organization("Policed").await;
    let (id, _) = console_collection_token(&mut admin, &org, &[("name", "capped"), ("expires_days", "10")]).await;
    assert!(token_row(&admin.get(&format!("/console/collections/{org}")).await.body, &id).contains("expires soon"));

    for (fields, field_id, words, kept) in [
        (policy("1", "hours", "2", "hours"), "policy-collection-error", "longer than the maximum", "value=\"2\""),
        (policy("0", "days", "", "days"), "policy-collection-error", "0 seconds", "value=\"0\""),
        (policy("abc", "days", "", "days"), "policy-collection-max-error", "is not a whole number", "value=\"abc\""),
        (policy("", "days", "5", "fortnights"), "policy-collection-default-error", "Choose days", "value=\"5\""),
    ] {
        let refused = admin.post_from("/console/account", "/console/account/policies/collection", &fields).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{fields:?}: {}", refused.body);
        let form = refused.body.split("id=\"policy-collection\"").nth(1).unwrap().split("</form>").next().unwrap();
        assert!(form.contains(&format!("id=\"{field_id}\"")) && form.contains(words), "{fields:?}: {form}");
        assert!(form.contains(kept), "what was typed is kept: {form}");
        assert_eq!(stored().await, expected, "nothing changed");
    }
    let sessions = admin
        .post_from("/console/account", "/console/account/policies/user_access", &policy("1", "hours", "", "days"))
        .await;
    assert_eq!(sessions.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        sessions.body.contains("id=\"policy-error\"") && sessions.body.contains("take no policy"),
        "{}",
        sessions.body
    );
    let unknown = admin
        .post_from("/console/account", "/console/account/policies/gadget", &policy("1", "hours", "", "days"))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    // Both empty removes the policy.
    admin.post_from("/console/account", "/console/account/policies/collection", &policy("", "days", "", "days")).await;
    assert!(stored().await.is_null(), "{}", stored().await);
}

#[tokio::test]
async fn the_audit_page_lists_what_was_done_and_filters_it_for_administrators() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let org = tessera.organization("Audited").await;
    let path = format!("/console/collections/{org}");
    let (id, secret) = console_collection_token(&mut admin, &org, &[("name", "audited meters")]).await;
    let rotated = admin.post_from(&path, &format!("/console/tokens/{id}/rotate"), &[("overlap", "60")]).await;
    let new = shown_secret(&rotated);

    let all = admin.get("/console/audit").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert!(all.body.contains("href=\"/console/audit\" aria-current=\"page\""), "the administrator's nav has it");
    assert!(all.body.contains("data-event=\"token.minted\"") && all.body.contains("data-event=\"token.rotated\""));
    assert!(!all.body.contains(&secret) && !all.body.contains(&new), "no secret in the trail");
    let rotations = admin.get("/console/audit?event=token.rotated").await.body;
    let rows: Vec<&str> = rotations.split("<tr data-event=\"").skip(1).collect();
    assert_eq!(rows.len(), 1, "{rotations}");
    let row = rows[0];
    assert!(row.starts_with("token.rotated"), "{row}");
    assert!(row.contains("audited meters") && row.contains(&id), "the token by its name: {row}");
    assert!(row.contains(&tessera.admin_email), "the actor by email: {row}");
    assert!(row.contains("127.0.0.1") && row.contains("overlap_seconds:</span> 60"), "{row}");
    assert!(rotations.contains("<option value=\"token.rotated\" selected>"), "the filter is kept");
    let by_token = admin.get(&format!("/console/audit?token={id}&event=token.minted")).await.body;
    assert_eq!(by_token.matches("<tr data-event=\"token.minted\"").count(), 1);
    assert!(!by_token.contains("data-event=\"token.rotated\""));

    // Bad filters are said by the form, with what was typed kept.
    let bad = admin.get("/console/audit?since=yesterday&actor=robot").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("id=\"audit-error\"") && bad.body.contains("value=\"yesterday\""), "{}", bad.body);
    // Older entries, a page at a time, the filters carried along.
    let first = admin.get("/console/audit?limit=1&event=token.minted").await.body;
    let older = first.split("id=\"audit-older\"").next().unwrap().rsplit("href=\"").next().unwrap();
    // The link as a browser reads it (askama writes `&` as `&#38;`).
    let older = older.split('"').next().unwrap().replace("&#38;", "&").replace("&amp;", "&");
    assert!(older.contains("event=token.minted") && older.contains("limit=1") && older.contains("cursor="), "{older}");
    let second = admin.get(&older).await.body;
    let first_id = first.split("<tr data-event=").nth(1).unwrap().split("</tr>").next().unwrap().to_owned();
    let second_id = second.split("<tr data-event=").nth(1).unwrap().split("</tr>").next().unwrap().to_owned();
    assert_ne!(first_id, second_id, "the next page holds the next entry");
    assert!(second.contains(">Newest</a>"));
}

#[tokio::test]
async fn the_tokens_page_filters_by_disuse_and_expiry_and_warns_of_tokens_about_to_expire() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    // Made in the console: the API's helper would exchange the key for an account token, which expires in a day.
    let made = admin.post_from("/console/collections", "/console/collections", &[("name", "Expiring")]).await;
    let org = made.location().rsplit('/').next().unwrap().to_owned();
    let (soon, _) = console_collection_token(&mut admin, &org, &[("name", "soon gone"), ("expires_days", "3")]).await;
    let (later, used) = console_collection_token(&mut admin, &org, &[("name", "for ever")]).await;
    let page = admin.get("/console/tokens").await.body;
    let warning = page.split("id=\"expiry-warning\"").nth(1).expect("a warning").split("</p>").next().unwrap();
    assert!(warning.contains("1 token expires within 7 days."), "{warning}");
    assert!(warning.contains("href=\"/console/tokens?expiring_within_days=7\""), "{warning}");
    assert!(token_row(&page, &soon).contains("class=\"expiring\"") && token_row(&page, &soon).contains("expires soon"));
    assert!(!token_row(&page, &later).contains("expires soon"));
    let expiring = admin.get("/console/tokens?expiring_within_days=7").await.body;
    assert!(
        expiring.contains(&format!("data-token=\"{soon}\"")) && !expiring.contains(&format!("data-token=\"{later}\""))
    );
    assert!(expiring.contains("name=\"expiring_within_days\" type=\"number\" min=\"1\" max=\"36500\" value=\"7\""));
    assert!(!expiring.contains("id=\"expiry-warning\""), "no warning on the list of just those");

    // One of them is used: its row says when and from where, and "not used for a day" leaves it out.
    assert_eq!(writes(&tessera, &used, "meter").await, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let page = admin.get("/console/tokens").await.body;
        let row = token_row(&page, &later).to_owned();
        if row.contains("from <span class=\"address\">127.0.0.1</span>") {
            assert!(row.contains("<td class=\"num\">1"), "one use: {row}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the use is never shown: {row}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let unused = admin.get("/console/tokens?unused_for_days=1").await.body;
    assert!(unused.contains(&format!("data-token=\"{soon}\"")) && !unused.contains(&format!("data-token=\"{later}\"")));
    assert!(unused.contains("name=\"unused_for_days\" type=\"number\" min=\"1\" max=\"36500\" value=\"1\""));
    // The filters go back with a row's form, so what it posts returns to the same listing.
    assert!(token_row(&unused, &soon).contains("name=\"back\" value=\"/console/tokens?unused_for_days=1\""));
    assert_eq!(admin.get("/console/tokens?unused_for_days=zero").await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_lifecycle_forms_are_refused_to_whoever_may_not_use_them_and_change_nothing() {
    let tessera = TestServer::start().await;
    let mut admin = signed_in_admin(&tessera).await;
    let team = admin.post_from("/console/teams", "/console/teams", &[("name", "ops")]).await.location().to_owned();
    let team_id = team.rsplit('/').next().unwrap().to_owned();
    let form = [("name", "plant"), ("owner", team_id.as_str())];
    let collection = admin.post_from("/console/collections", "/console/collections", &form).await.location().to_owned();
    let org = collection.rsplit('/').next().unwrap().to_owned();
    let (token, secret) = console_collection_token(&mut admin, &org, &[("name", "plant meters")]).await;
    let (device, device_token, device_secret) = console_device_token(&mut admin, &org, "pump-1").await;
    admin.post_from(&team, &format!("{team}/invites"), &[]).await;
    let team_page = admin.get(&team).await.body;
    let code = team_page.split("<code id=\"invite-1\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let (_, admin_id) = {
        let session = tessera.admin_session().await;
        let (_, me) = tessera.native(Method::GET, "/me", &session, None).await;
        (session, me["id"].as_str().unwrap().to_owned())
    };

    // Without the form token, nothing is even read.
    let posts = [
        format!("/console/tokens/{token}/rotate"),
        format!("/console/tokens/{token}/disable"),
        format!("{collection}/tokens/revoke"),
        format!("{device}/tokens/revoke"),
        format!("/console/users/{admin_id}/tokens/revoke"),
        "/console/account/tokens/revoke".to_owned(),
        "/console/account/policies/collection".to_owned(),
    ];
    for path in &posts {
        let page = admin.post(path, &[("kind", "organization"), ("max", "1"), ("max_unit", "days")]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
        assert!(page.body.contains("did not come from this console"), "{path}");
    }

    tessera.user("reader@example.com", "reader password").await;
    tessera.user("outsider@example.com", "outsider password").await;
    let mut reader = Visitor::new(&tessera);
    reader.sign_in("reader@example.com", "reader password").await;
    let joined = reader.post_from("/console/teams", "/console/teams/accept", &[("code", &code)]).await;
    assert_eq!(joined.status, StatusCode::SEE_OTHER);
    let mut outsider = Visitor::new(&tessera);
    outsider.sign_in("outsider@example.com", "outsider password").await;

    // A read-only member sees the collection, but no button to change its tokens, and is refused them all.
    let seen = reader.get(&collection).await.body;
    assert!(!seen.contains("/tokens/revoke") && !seen.contains("/rotate"), "no lifecycle button for a reader");
    for visitor in [&mut reader, &mut outsider] {
        for path in [
            format!("/console/tokens/{token}/rotate"),
            format!("/console/tokens/{token}/disable"),
            format!("/console/tokens/{device_token}/enable"),
        ] {
            let page = visitor.post_from("/console/tokens", &path, &[("overlap", "0")]).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: a token one does not manage does not exist");
        }
        for path in [
            format!("/console/users/{admin_id}/tokens/revoke"),
            "/console/account/tokens/revoke".to_owned(),
            "/console/account/policies/collection".to_owned(),
        ] {
            let page = visitor.post_from("/console/tokens", &path, &[("kind", "organization"), ("max", "1")]).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: administrators' work");
        }
        let audit = visitor.get("/console/audit").await;
        assert_eq!(audit.status, StatusCode::FORBIDDEN, "the trail is administrators' only");
        assert!(!visitor.get("/console/tokens").await.body.contains("href=\"/console/audit\""), "no nav link");
    }
    // The member may ask for a collection's or a device's tokens to go: none of them is theirs, so none goes.
    for path in [format!("{collection}/tokens/revoke"), format!("{device}/tokens/revoke")] {
        let page = reader.post_from(&collection, &path, &[]).await;
        assert!(page.location().ends_with("done=tokens-revoked&count=0"), "{path}: {}", page.location());
        assert_eq!(outsider.post_from("/console/tokens", &path, &[]).await.status, StatusCode::FORBIDDEN, "{path}");
    }

    // Nothing changed: the same secrets work, no policy was set, the trail holds no such change.
    assert_eq!(writes(&tessera, &secret, "pump-2").await, StatusCode::OK);
    assert_eq!(writes(&tessera, &device_secret, "pump-1").await, StatusCode::OK);
    let (_, policies) = tessera.native(Method::GET, "/token-policies", &tessera.api_key, None).await;
    assert!(policies["policies"].as_object().unwrap().is_empty(), "{policies}");
    for event in ["token.rotated", "token.disabled", "token.enabled", "tokens.bulk_revoked", "token_policy.changed"] {
        assert!(audit_entries(&tessera, &format!("event={event}")).await.is_empty(), "{event}");
    }
    assert_eq!(admin.get(&collection).await.status, StatusCode::OK, "the administrator is still signed in");
}
