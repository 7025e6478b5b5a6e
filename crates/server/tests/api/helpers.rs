//! A Tessera of the test's own, and the few requests most tests start with. The suite runs on the store the test
//! target names in `crate::STORE`: SQLite in a temporary data directory (`tests/api`), or a PostgreSQL schema of
//! the test's own (`tests/api_postgres`).

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tessera_server::{Config, Server};

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub api_key: String,
    pub admin_email: String,
    pub admin_password: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    /// The test's PostgreSQL schema, when the suite runs on PostgreSQL.
    pub database_url: Option<String>,
}

/// The store a test target runs the suite on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// A new, empty schema on the server `TESSERA_TEST_POSTGRES_URL` names, as a database URL whose connections use
/// it. It is left behind (a failed test's data stays for a look) and dropped by a run an hour later.
pub async fn postgres_schema() -> String {
    let base = std::env::var("TESSERA_TEST_POSTGRES_URL").expect("TESSERA_TEST_POSTGRES_URL is set");
    let schema = tessera_store::ScratchSchema::create(&base, "api").await.expect("TESSERA_TEST_POSTGRES_URL answers");
    schema.url().to_owned()
}

impl TestServer {
    pub async fn start() -> TestServer {
        let data_dir = tempfile::tempdir().expect("temporary directory");
        TestServer::start_in(data_dir).await
    }

    pub async fn start_in(data_dir: tempfile::TempDir) -> TestServer {
        TestServer::start_configured(data_dir, |_| {}).await
    }

    /// Starts with configuration changed by `adjust` (shorter token lives, say).
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_configured(tempfile::tempdir().expect("temporary directory"), adjust).await
    }

    async fn start_configured(data_dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let database_url = match crate::STORE {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => Some(postgres_schema().await),
        };
        let mut config = test_config(&data_dir, database_url.clone());
        adjust(&mut config);
        let server = tessera_server::start(config).await.expect("tessera starts");
        let credentials = server.credentials().expect("a fresh data directory is bootstrapped").clone();
        let base = format!("http://{}", server.http_addr());
        TestServer {
            server: Some(server),
            base,
            api_key: credentials.api_key.expose().to_owned(),
            admin_email: credentials.admin_email,
            admin_password: credentials.admin_password,
            client: reqwest::Client::new(),
            data_dir,
            database_url,
        }
    }

    /// Stops the server and starts it again on the same store: no credentials are revealed again.
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let server = tessera_server::start(test_config(&self.data_dir, self.database_url.clone()))
            .await
            .expect("tessera starts again");
        assert!(server.credentials().is_none(), "a second start reveals nothing");
        self.base = format!("http://{}", server.http_addr());
        self.server = Some(server);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with optional headers and JSON body; the answer's status and body (JSON, or a string if not).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request is sent");
        decode(response).await
    }

    /// A Ubidots request with `X-Auth-Token`.
    pub async fn ubidots(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, &format!("/api/v1.6{path}"), &[("x-auth-token", token)], body).await
    }

    /// A native request with `Authorization: Bearer`.
    pub async fn native(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, &format!("/v1{path}"), &[("authorization", &format!("Bearer {token}"))], body).await
    }

    /// `POST auth/token`: an account-wide token.
    pub async fn account_token(&self) -> String {
        let (status, body) =
            self.call(Method::POST, "/api/v1.6/auth/token", &[("x-ubidots-apikey", &self.api_key)], None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A new collection (Ubidots organization); returns its id.
    pub async fn organization(&self, name: &str) -> String {
        let token = self.account_token().await;
        let (status, body) = self.native(Method::POST, "/collections", &token, Some(json!({"name": name}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// A new organization token for `org`; returns the whole answer (`name`, `token`, `id`).
    pub async fn organization_token(&self, org: &str, name: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1.6/auth/tokens/organizations/{org}/"),
                &[("x-ubidots-apikey", &self.api_key)],
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Logs in through the native API; answers the session (`access_token`, `refresh_token`, ...).
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let (status, session) =
            self.call(Method::POST, "/v1/login", &[], Some(json!({"email": email, "password": password}))).await;
        assert_eq!(status, StatusCode::OK, "{session}");
        session
    }

    /// The bootstrap administrator's access token.
    pub async fn admin_session(&self) -> String {
        self.login(&self.admin_email.clone(), &self.admin_password.clone()).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A new user created by the administrator; answers the user's access token and id.
    pub async fn user(&self, email: &str, password: &str) -> (String, String) {
        let admin = self.admin_session().await;
        let (status, user) =
            self.native(Method::POST, "/users", &admin, Some(json!({"email": email, "password": password}))).await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        let session = self.login(email, password).await;
        (session["access_token"].as_str().unwrap().to_owned(), user["id"].as_str().unwrap().to_owned())
    }

    /// A device of the default collection, made by its first Ubidots reading; answers its id.
    pub async fn device_with_reading(&self, label: &str) -> String {
        let account_token = self.account_token().await;
        let (status, _) =
            self.ubidots(Method::POST, &format!("/devices/{label}"), &account_token, Some(json!({"t": 1}))).await;
        assert_eq!(status, StatusCode::OK);
        let (_, sources) = self.ubidots(Method::GET, "/datasources", &account_token, None).await;
        sources["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|source| source["label"] == label)
            .map(|source| source["id"].as_str().unwrap().to_owned())
            .expect("the device is listed")
    }

    /// Stops the server the graceful way, waiting for the last commit.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// A client whose requests come from another loopback address (127.0.0.0/8 all reaches this machine).
pub fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(address.parse::<std::net::IpAddr>().ok()).build().unwrap()
}

pub fn test_config(data_dir: &tempfile::TempDir, database_url: Option<String>) -> Config {
    let mut config = Config::new(data_dir.path().to_path_buf());
    config.database_url = database_url;
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.mqtt_addr = "127.0.0.1:0".parse().unwrap();
    config.mqtt_required = true;
    config
}

pub async fn decode(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body is readable");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub const DENIED: &str = "You do not have permission to perform this action.";
