//! Users and their login: password, second factor, refresh rotation, logout, expiry, throttling.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_core::totp::{TotpSecret, code_at, step_at};

use crate::helpers::{TestServer, client_from, decode};

/// `POST /login` with a form, from `client`.
async fn att_login(tessera: &TestServer, client: &reqwest::Client, form: &[(&str, &str)]) -> (StatusCode, Value) {
    decode(client.post(tessera.url("/login")).form(form).send().await.unwrap()).await
}

fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for character in text.bytes() {
        buffer = (buffer << 5) | alphabet.iter().position(|&c| c == character).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// The authenticator: the code of the current time step (or the next, to avoid replaying one just used).
fn code(secret: &TotpSecret, steps_ahead: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    format!("{:06}", code_at(secret, step_at(now) + steps_ahead))
}

#[tokio::test]
async fn password_login_answers_the_allthingstalk_token_shape() {
    let tessera = TestServer::start().await;
    tessera.user("ada@example.com", "correct horse battery").await;
    let client = reqwest::Client::new();
    let form = [
        ("grant_type", "password"),
        ("username", "Ada@Example.com"),
        ("password", "correct horse battery"),
        ("client_id", "web"),
    ];
    let (status, answer) = att_login(&tessera, &client, &form).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let keys: Vec<&str> = answer.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "token_type",
            "expires_in",
            "refresh_token",
            "as:client_id",
            "userName",
            ".issued",
            ".expires"
        ]
    );
    assert_eq!(answer["token_type"], "bearer");
    assert_eq!(answer["expires_in"], 3599);
    assert_eq!(answer["as:client_id"], "web");
    assert_eq!(answer["userName"], "ada@example.com");
    assert!(answer[".expires"].as_str().unwrap().ends_with(" GMT"));

    // The access token is a token of the one model: the native API accepts it.
    let (status, me) = tessera.native(Method::GET, "/me", answer["access_token"].as_str().unwrap(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "ada@example.com");

    let wrong_password =
        [("grant_type", "password"), ("username", "ada@example.com"), ("password", "nope"), ("client_id", "web")];
    let (status, wrong) = att_login(&tessera, &client, &wrong_password).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong["error"], "invalid_grant");
    let unknown_email =
        [("grant_type", "password"), ("username", "nobody@example.com"), ("password", "nope"), ("client_id", "web")];
    let (status, unknown) = att_login(&tessera, &client, &unknown_email).await;
    assert_eq!((status, &unknown), (StatusCode::BAD_REQUEST, &wrong), "an unknown email looks like a wrong password");
    let bad_client =
        [("grant_type", "password"), ("username", "ada@example.com"), ("password", "x"), ("client_id", "tv")];
    let (_, answer) = att_login(&tessera, &client, &bad_client).await;
    assert_eq!(answer["error"], "invalid_client");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_kills_the_session() {
    let tessera = TestServer::start().await;
    tessera.user("ada@example.com", "correct horse battery").await;
    let client = reqwest::Client::new();
    let login = [
        ("grant_type", "password"),
        ("username", "ada@example.com"),
        ("password", "correct horse battery"),
        ("client_id", "mobile"),
    ];
    let (_, first) = att_login(&tessera, &client, &login).await;
    let first_refresh = first["refresh_token"].as_str().unwrap();

    let refresh = |token: &str| {
        [("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", "mobile")]
            .map(|(a, b)| (a, b.to_owned()))
    };
    let (status, second) =
        decode(client.post(tessera.url("/login")).form(&refresh(first_refresh)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_access = second["access_token"].as_str().unwrap();
    let (status, _) = tessera.native(Method::GET, "/me", second_access, None).await;
    assert_eq!(status, StatusCode::OK);

    // The first refresh token was used: presenting it again revokes the whole session.
    let (status, reused) =
        decode(client.post(tessera.url("/login")).form(&refresh(first_refresh)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reused["error"], "invalid_grant");
    let (status, _) = tessera.native(Method::GET, "/me", second_access, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the new access token died with the session");
    let (status, _) = decode(
        client
            .post(tessera.url("/login"))
            .form(&refresh(second["refresh_token"].as_str().unwrap()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "so did the new refresh token");
}

#[tokio::test]
async fn a_second_factor_is_enrolled_challenged_and_never_replayed() {
    let tessera = TestServer::start().await;
    let (session, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let (status, enrollment) = tessera.native(Method::POST, "/me/totp", &session, None).await;
    assert_eq!(status, StatusCode::OK, "{enrollment}");
    assert!(enrollment["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Tessera:ada@example.com?secret="));
    assert!(enrollment["qr_svg"].as_str().unwrap().contains("<svg"));
    let secret = TotpSecret::from_bytes(base32_decode(enrollment["secret"].as_str().unwrap()));

    let (status, _) = tessera.native(Method::POST, "/me/totp/confirm", &session, Some(json!({"code": "000000"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a wrong code does not turn it on");
    let (status, confirmed) =
        tessera.native(Method::POST, "/me/totp/confirm", &session, Some(json!({"code": code(&secret, 0)}))).await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    let recovery: Vec<String> =
        confirmed["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(recovery.len(), 10);

    let client = reqwest::Client::new();
    let password = [
        ("grant_type", "password"),
        ("username", "ada@example.com"),
        ("password", "correct horse battery"),
        ("client_id", "web"),
    ];
    let (status, challenge) = att_login(&tessera, &client, &password).await;
    assert_eq!(status, StatusCode::OK);
    assert!(challenge.get("access_token").is_none(), "no token before the second factor: {challenge}");
    let mfa = |challenge: &Value, code: &str| {
        [
            ("grant_type", "mfa".to_owned()),
            ("client_id", "web".to_owned()),
            ("mfa_uid", challenge["MfaUid"].as_str().unwrap().to_owned()),
            ("user_id", challenge["UserId"].as_str().unwrap().to_owned()),
            ("code", code.to_owned()),
        ]
    };
    // The confirmation used the current step; the next step's code (one step of drift) logs in.
    let next = code(&secret, 1);
    let (status, tokens) =
        decode(client.post(tessera.url("/login")).form(&mfa(&challenge, &next)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert!(tokens["access_token"].is_string());

    // The same code again, with a fresh challenge, is a replay.
    let (_, challenge) = att_login(&tessera, &client, &password).await;
    let (status, replay) =
        decode(client.post(tessera.url("/login")).form(&mfa(&challenge, &next)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(replay["error"], "invalid_grant");

    // A recovery code works, once.
    let (status, _) =
        decode(client.post(tessera.url("/login")).form(&mfa(&challenge, &recovery[0])).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, challenge) = att_login(&tessera, &client, &password).await;
    let (status, _) =
        decode(client.post(tessera.url("/login")).form(&mfa(&challenge, &recovery[0])).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Disabling needs a current code; the replay guard holds here too. A recovery code turns it off.
    let (status, _) = tessera.native(Method::DELETE, "/me/totp", &session, Some(json!({"code": next}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = tessera.native(Method::DELETE, "/me/totp", &session, Some(json!({"code": recovery[1]}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, me) = tessera.native(Method::GET, "/me", &session, None).await;
    assert_eq!(me["totp_enabled"], false);
    let (_, challenge) = att_login(&tessera, &client, &password).await;
    assert!(challenge["access_token"].is_string(), "no second factor asked any more: {challenge}");

    // Guessing codes with the session is throttled as at login.
    let (status, _) = tessera.native(Method::POST, "/me/totp", &session, None).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..3 {
        let (status, _) =
            tessera.native(Method::POST, "/me/totp/confirm", &session, Some(json!({"code": "999999x"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, throttled) =
        tessera.native(Method::POST, "/me/totp/confirm", &session, Some(json!({"code": "999999x"}))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{throttled}");
}

#[tokio::test]
async fn an_access_token_expires_when_it_says_and_logout_ends_the_session_at_once() {
    let tessera = TestServer::start_with(|config| config.access_token_ttl = Duration::from_secs(1)).await;
    tessera.user("ada@example.com", "correct horse battery").await;
    let session = tessera.login("ada@example.com", "correct horse battery").await;
    assert_eq!(session["expires_in"], 1);
    let access = session["access_token"].as_str().unwrap();
    let (status, _) = tessera.native(Method::GET, "/me", access, None).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = tessera.native(Method::GET, "/me", access, None).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "the access token did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let session = tessera.login("ada@example.com", "correct horse battery").await;
    let (status, renewed) = tessera
        .call(Method::POST, "/v1/token/refresh", &[], Some(json!({"refresh_token": session["refresh_token"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let access = renewed["access_token"].as_str().unwrap();
    let (status, _) = tessera.native(Method::POST, "/logout", access, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tessera.native(Method::GET, "/me", access, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "refused on the very next request");
    let (status, _) = tessera
        .call(Method::POST, "/v1/token/refresh", &[], Some(json!({"refresh_token": renewed["refresh_token"]})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn guessing_is_slowed_down_but_the_owner_elsewhere_gets_in() {
    let tessera = TestServer::start().await;
    tessera.user("ada@example.com", "correct horse battery").await;
    let attacker = client_from("127.0.0.7");
    let guess =
        [("grant_type", "password"), ("username", "ada@example.com"), ("password", "guess"), ("client_id", "web")];
    for _ in 0..3 {
        let (status, _) = att_login(&tessera, &attacker, &guess).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let response = attacker.post(tessera.url("/login")).form(&guess).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // Even the right password waits, from the attacker's address...
    let right = [
        ("grant_type", "password"),
        ("username", "ada@example.com"),
        ("password", "correct horse battery"),
        ("client_id", "web"),
    ];
    let (status, _) = att_login(&tessera, &attacker, &right).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // ...but not from another.
    let (status, answer) = att_login(&tessera, &client_from("127.0.0.8"), &right).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The native login shares the throttle and answers 429 as a problem document.
    let (status, problem) = decode(
        attacker
            .post(tessera.url("/v1/login"))
            .json(&json!({"email": "ada@example.com", "password": "guess"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
}

#[tokio::test]
async fn users_are_managed_by_account_administrators_only() {
    let tessera = TestServer::start().await;
    let admin = tessera.admin_session().await;
    let (status, problem) = tessera
        .native(Method::POST, "/users", &admin, Some(json!({"email": "ada@example.com", "password": "short"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("at least 10"), "{problem}");
    let (session, _) = tessera.user("ada@example.com", "correct horse battery").await;
    let (status, _) = tessera
        .native(
            Method::POST,
            "/users",
            &admin,
            Some(json!({"email": "ADA@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "emails are unique regardless of case");
    let (status, _) = tessera
        .native(
            Method::POST,
            "/users",
            &session,
            Some(json!({"email": "eve@example.com", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a plain user cannot create users");
    let account_token = tessera.account_token().await;
    let (status, _) = tessera.native(Method::GET, "/users", &account_token, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nor can a token");
    let (status, listed) = tessera.native(Method::GET, "/users", &admin, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["users"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains("argon2"), "no password hash leaves the server");
}

#[tokio::test]
async fn a_burst_of_simultaneous_guesses_is_throttled_like_a_sequence() {
    let tessera = TestServer::start().await;
    tessera.user("ada@example.com", "correct horse battery").await;
    let attacker = client_from("127.0.0.9");
    let guess =
        [("grant_type", "password"), ("username", "ada@example.com"), ("password", "guess"), ("client_id", "web")];
    for _ in 0..3 {
        att_login(&tessera, &attacker, &guess).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let request = attacker.post(tessera.url("/login")).form(&guess);
        burst.spawn(async move { request.send().await.unwrap().status() });
    }
    let mut checked = 0;
    while let Some(status) = burst.join_next().await {
        match status.unwrap() {
            StatusCode::BAD_REQUEST => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(checked, 1, "after the delay, one guess is checked and the rest wait");
}

#[tokio::test]
async fn a_refresh_token_presented_many_times_at_once_leaves_no_live_session() {
    let tessera = TestServer::start().await;
    tessera.user("ada@example.com", "correct horse battery").await;
    let session = tessera.login("ada@example.com", "correct horse battery").await;
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let request = tessera.client.post(tessera.url("/v1/token/refresh")).json(&json!({"refresh_token": refresh}));
        racers.spawn(async move { decode(request.send().await.unwrap()).await });
    }
    let mut winners = Vec::new();
    while let Some(outcome) = racers.join_next().await {
        let (status, body) = outcome.unwrap();
        if status == StatusCode::OK {
            winners.push(body);
        }
    }
    assert!(winners.len() <= 1, "one refresh at most: {winners:?}");
    for winner in winners {
        let (status, _) = tessera.native(Method::GET, "/me", winner["access_token"].as_str().unwrap(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "the reuse revoked the winner's access token");
        let (status, _) = tessera
            .call(Method::POST, "/v1/token/refresh", &[], Some(json!({"refresh_token": winner["refresh_token"]})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "and its refresh token");
    }
}

#[tokio::test]
async fn is_admin_must_be_a_boolean() {
    let tessera = TestServer::start().await;
    let admin = tessera.admin_session().await;
    let body = json!({"email": "ada@example.com", "password": "correct horse battery", "is_admin": "yes"});
    let (status, problem) = tessera.native(Method::POST, "/users", &admin, Some(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("is_admin"));
}

/// Issue 15's probe: anyone who knows a user's id sent codes for made-up challenges from many addresses until the
/// per-user second-factor throttle locked the user out. That key counts only for a challenge the password opened.
#[tokio::test]
async fn codes_for_made_up_challenges_do_not_lock_the_user_out() {
    let tessera = TestServer::start().await;
    let (session, user) = tessera.user("bob@example.com", "correct horse battery").await;
    let (_, enrollment) = tessera.native(Method::POST, "/me/totp", &session, None).await;
    let secret = TotpSecret::from_bytes(base32_decode(enrollment["secret"].as_str().unwrap()));
    let (status, _) =
        tessera.native(Method::POST, "/me/totp/confirm", &session, Some(json!({"code": code(&secret, 0)}))).await;
    assert_eq!(status, StatusCode::OK);
    let made_up = tessera_core::Id::generate(1_800_000_000_000, 7).to_string();
    for n in 0..30 {
        let stranger = client_from(&format!("127.0.3.{}", n + 1));
        let form = [
            ("grant_type", "mfa"),
            ("client_id", "web"),
            ("mfa_uid", made_up.as_str()),
            ("user_id", user.as_str()),
            ("code", "000000"),
        ];
        let (status, _) = att_login(&tessera, &stranger, &form).await;
        assert_ne!(status, StatusCode::OK);
    }
    let password = [
        ("grant_type", "password"),
        ("username", "bob@example.com"),
        ("password", "correct horse battery"),
        ("client_id", "web"),
    ];
    let client = reqwest::Client::new();
    let (status, challenge) = att_login(&tessera, &client, &password).await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let form = [
        ("grant_type", "mfa".to_owned()),
        ("client_id", "web".to_owned()),
        ("mfa_uid", challenge["MfaUid"].as_str().unwrap().to_owned()),
        ("user_id", challenge["UserId"].as_str().unwrap().to_owned()),
        ("code", code(&secret, 1)),
    ];
    let (status, tokens) = decode(client.post(tessera.url("/login")).form(&form).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "the owner still signs in: {tokens}");
}
