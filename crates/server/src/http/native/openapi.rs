//! The OpenAPI 3.1 document of Tessera's HTTP API, served at `GET /v1/openapi.json` and rendered by the console
//! at `/console/api`.
//!
//! It is made from the code, so it cannot drift from it: every native route is registered with utoipa-axum's
//! `routes!`, which takes a handler together with its `#[utoipa::path]` description (a route cannot be added
//! without one, and a test below refuses a bare `.route(`); answers are the typed structs of `wire.rs`, described
//! by the same types that are serialized. What every operation shares is added here from what it declares, not
//! written out 30 times: a secured operation answers 401 (with `WWW-Authenticate`) and 429 (over its token's quota,
//! with `Retry-After`), every operation may answer 500 and 503 (with `Retry-After`), and every refusal is an RFC
//! 9457 problem document. The vendor dialects' routes are listed from their own routers' tables
//! (`http::dialect_routes`), each under its dialect's tag with an `x-tessera-dialect` extension and a link to the
//! vendor's documentation; their bodies are the vendors' and are not described here.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use super::wire::ProblemDocument;
use crate::app::App;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera native API",
        description = "Tessera's own HTTP API under `/v1`: JSON in and out, `Authorization: Bearer <token>`, and \
                       every refusal an RFC 9457 problem document (`application/problem+json`). The vendor dialects' \
                       routes (Ubidots, Horde, AllThingsTalk) are listed under their own tags, marked with \
                       `x-tessera-dialect`; their wire formats are the vendors' own.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "sessions", description = "Logging in and out: a session is an access token and a refresh token."),
        (name = "me", description = "The signed-in user's own account and second factor (a user's session only)."),
        (name = "users", description = "The account's users (account administrators only)."),
        (name = "collections", description = "Collections: groups of devices, owned by a team or the account."),
        (name = "tokens", description = "Account and collection tokens, and what happens to tokens after they are \
                                         made: rotation, disabling, quotas, bulk and leak revocation."),
        (name = "device tokens", description = "Device and ground tokens: several per device or collection, \
                                                reaching device data only."),
        (name = "devices", description = "What a device is sent."),
        (name = "events", description = "Readings as they arrive, as Server-Sent Events."),
        (name = "policies", description = "The account's token expiry policies."),
        (name = "audit", description = "The account's audit trail (account administrators only)."),
        (name = "document", description = "This document."),
    ),
    components(schemas(ProblemDocument))
)]
struct NativeApi;

/// The native API as registered under `/v1`: its routes and their description, from one list.
fn native_at_v1() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(NativeApi::openapi()).nest("/v1", super::api())
}

/// The native API's routes, for the server's router (the description is dropped; `document` builds it anew from
/// the same list).
pub fn native_router() -> axum::Router<App> {
    native_at_v1().split_for_parts().0
}

/// The whole document as JSON, made once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = serde_json::to_value(native_at_v1().into_openapi()).unwrap_or_else(|_| json!({}));
        document["components"]["securitySchemes"] = json!({
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "A Tessera token's secret, or a session's access token."}
        });
        complete(&mut document);
        list_dialects(&mut document);
        document
    })
}

fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_json::to_string_pretty(document()).unwrap_or_default())
}

/// This document, in JSON. It describes the API and reveals no data, so it takes no credential.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "document",
    operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json",
               body = Object)),
)]
pub(super) async fn openapi_document() -> Response {
    let mut response = document_text().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn retry_after_header() -> Value {
    json!({
        "description": "Seconds to wait before trying again.",
        "required": true,
        "schema": {"type": "integer", "minimum": 0}
    })
}

/// Fills in what every operation shares, from what each declares.
fn complete(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(operation) = item.get_mut(method).and_then(Value::as_object_mut) else { continue };
            complete_operation(path, operation);
        }
    }
}

fn complete_operation(path: &str, operation: &mut Map<String, Value>) {
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|requirements| requirements.iter().any(|requirement| requirement != &json!({})));
    let serves_the_document = path == DOCUMENT_PATH;
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_owned()).or_insert_with(|| json!({ "description": description }));
    };
    if secured {
        add(
            "401",
            "No credential, or one that is not a working token (malformed, unknown, expired, disabled or revoked).",
        );
        add("429", "The token is over its request quota.");
    }
    if !serves_the_document {
        add("500", "An internal error; the cause is in the server's log.");
        add("503", "The store is unavailable; try again later.");
    }
    for (status, response) in responses.iter_mut() {
        let Some(response) = response.as_object_mut() else { continue };
        if status.as_str() >= "400" {
            response.insert(
                "content".to_owned(),
                json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}),
            );
        }
        let headers = response.entry("headers").or_insert_with(|| json!({}));
        if let Some(headers) = headers.as_object_mut() {
            match status.as_str() {
                "401" => {
                    headers.insert(
                        "WWW-Authenticate".to_owned(),
                        json!({"description": "`Bearer realm=\"tessera\"`", "required": true,
                               "schema": {"type": "string"}}),
                    );
                }
                "429" | "503" => {
                    headers.insert("Retry-After".to_owned(), retry_after_header());
                }
                _ => {}
            }
            if headers.is_empty() {
                response.remove("headers");
            }
        }
    }
}

/// The vendor dialects' routes: listed, tagged by dialect, marked with `x-tessera-dialect`, linked to the
/// vendor's documentation. Their bodies are the vendors' own and are not described.
fn list_dialects(document: &mut Value) {
    let Some(root) = document.as_object_mut() else { return };
    let mut paths = root.remove("paths").and_then(|paths| paths.as_object().cloned()).unwrap_or_default();
    let mut tags = root.remove("tags").and_then(|tags| tags.as_array().cloned()).unwrap_or_default();
    for dialect in crate::http::dialect_routes() {
        tags.push(json!({
            "name": dialect.tag,
            "description": format!("{} (the vendor's wire format, unchanged).", dialect.title),
            "externalDocs": {"description": format!("{} documentation", dialect.title), "url": dialect.docs},
            "x-tessera-dialect": dialect.tag,
        }));
        for route in &dialect.routes {
            let openapi_path = route.path.to_owned();
            let item = paths.entry(openapi_path).or_insert_with(|| json!({}));
            let parameters: Vec<Value> = path_parameters(&route.path)
                .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
                .collect();
            let mut operation = json!({
                "tags": [dialect.tag],
                "summary": route.summary,
                "operationId": format!("{}_{}_{}", dialect.tag, route.method, operation_name(&route.path)),
                "externalDocs": {"url": dialect.docs},
                "x-tessera-dialect": dialect.tag,
                "responses": {"default": {"description": format!("As {} defines it.", dialect.title)}},
            });
            if !parameters.is_empty() {
                operation["parameters"] = Value::Array(parameters);
            }
            if matches!(route.method, "post" | "put" | "patch") {
                operation["requestBody"] = json!({
                    "description": format!("As {} defines it.", dialect.title),
                    "content": {"application/json": {"schema": {}}}
                });
            }
            item[route.method] = operation;
        }
    }
    root.insert("tags".to_owned(), Value::Array(tags));
    root.insert("paths".to_owned(), Value::Object(paths));
}

/// The `{name}`s of a path template.
pub(crate) fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{').and_then(|rest| rest.strip_suffix('}')))
}

fn operation_name(path: &str) -> String {
    let name: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    if name.is_empty() { "root".to_owned() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations() -> Vec<(String, String, Value)> {
        let mut found = Vec::new();
        for (path, item) in document()["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(operation) = item.get(method) {
                    found.push((path.clone(), method.to_owned(), operation.clone()));
                }
            }
        }
        found
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        assert_eq!(document()["openapi"], "3.1.0");
        assert!(document()["components"]["schemas"]["Problem"].is_object());
    }

    /// A route registered past `routes!` would be served undescribed: the native modules have no bare `.route(`.
    #[test]
    fn every_native_route_is_registered_with_its_description() {
        for (name, source) in [
            ("mod.rs", include_str!("mod.rs")),
            ("people.rs", include_str!("people.rs")),
            ("device_tokens.rs", include_str!("device_tokens.rs")),
            ("events.rs", include_str!("events.rs")),
            ("lifecycle.rs", include_str!("lifecycle.rs")),
        ] {
            assert!(!source.contains(&[".", "route("].concat()), "native/{name} registers a route without routes!");
        }
    }

    #[test]
    fn every_native_operation_is_described_whole() {
        let mut ids = std::collections::HashSet::new();
        for (path, method, operation) in operations() {
            if operation.get("x-tessera-dialect").is_some() {
                assert!(!path.starts_with("/v1/"), "{method} {path}: a dialect route under /v1");
                continue;
            }
            assert!(path.starts_with("/v1/"), "{method} {path}");
            let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(!id.is_empty() && ids.insert(id.clone()), "{method} {path}: operation id '{id}' missing or reused");
            assert!(operation["tags"].as_array().is_some_and(|tags| tags.len() == 1), "{method} {path}: one tag");
            assert!(operation["summary"].as_str().is_some_and(|text| !text.is_empty()), "{method} {path}: summary");
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|parameters| {
                    parameters.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect()
                })
                .unwrap_or_default();
            for name in path_parameters(&path) {
                assert!(declared.contains(&name), "{method} {path}: path parameter '{name}' undescribed");
            }
            let responses = operation["responses"].as_object().expect("responses");
            assert!(!responses.contains_key("default"), "{method} {path}: every status is named");
            assert!(responses.keys().any(|status| status.starts_with('2')), "{method} {path}: no success answer");
            for (status, response) in responses {
                if status.as_str() >= "400" {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
        assert!(ids.len() >= 30, "{} native operations", ids.len());
    }

    #[test]
    fn limits_written_in_the_descriptions_are_the_codes() {
        let password = &document()["components"]["schemas"]["NewUser"]["properties"]["password"];
        assert_eq!(password["minLength"], crate::people::MIN_PASSWORD_LEN);
        let overlap = &document()["components"]["schemas"]["Rotation"]["properties"]["overlap_seconds"];
        assert_eq!(overlap["maximum"], crate::tokens::MAX_ROTATION_OVERLAP.as_secs());
        let lifetime = &document()["components"]["schemas"]["PolicyChange"]["properties"]["max_lifetime_seconds"];
        assert_eq!(lifetime["maximum"], super::super::lifecycle::MAX_POLICY_LIFETIME_SECONDS);
        let report = &document()["components"]["schemas"]["LeakReport"]["properties"]["credentials"];
        assert_eq!(report["maxItems"], crate::tokens::MAX_LEAKED_PER_REPORT);
    }

    #[test]
    fn dialect_routes_are_marked_and_linked() {
        let dialects: Vec<(String, String)> = operations()
            .into_iter()
            .filter_map(|(path, _, operation)| {
                operation["x-tessera-dialect"].as_str().map(|dialect| (dialect.to_owned(), path))
            })
            .collect();
        for expected in ["ubidots", "horde", "allthingstalk"] {
            assert!(dialects.iter().any(|(dialect, _)| dialect == expected), "no {expected} route listed");
        }
        for tag in document()["tags"].as_array().unwrap() {
            if tag.get("x-tessera-dialect").is_some() {
                assert!(tag["externalDocs"]["url"].as_str().is_some_and(|url| url.starts_with("https://")));
            }
        }
    }
}
