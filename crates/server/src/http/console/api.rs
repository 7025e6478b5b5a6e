//! The API reference (`/console/api`): the OpenAPI document that `GET /v1/openapi.json` serves, rendered on the
//! server from that same document (operations grouped by tag, with their parameters, bodies and answers, then the
//! schemas), so the page cannot say other than the document. No script and no outside asset: the strict CSP holds.
//! It shows no data of the account, only what the API is; any signed-in user may read it.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::format::Chrome;
use super::session::Signed;
use super::{PageResult, render_with};
use crate::app::App;
use crate::http::native::openapi::{DOCUMENT_PATH, document};

#[derive(Debug, Clone)]
struct ParameterRow {
    name: String,
    location: String,
    required: bool,
    schema: String,
    description: String,
}

#[derive(Debug, Clone)]
struct ResponseRow {
    status: String,
    description: String,
    content_type: String,
    schema: String,
    schema_link: String,
    headers: String,
}

#[derive(Debug, Clone)]
struct OperationRow {
    anchor: String,
    method: String,
    path: String,
    summary: String,
    description: String,
    secured: bool,
    parameters: Vec<ParameterRow>,
    request: String,
    request_link: String,
    request_description: String,
    responses: Vec<ResponseRow>,
}

#[derive(Debug, Clone)]
struct TagGroup {
    name: String,
    anchor: String,
    description: String,
    /// Set for a vendor dialect: its documentation.
    vendor_docs: String,
    operations: Vec<OperationRow>,
}

#[derive(Debug, Clone)]
struct PropertyRow {
    name: String,
    schema: String,
    schema_link: String,
    required: bool,
    description: String,
}

#[derive(Debug, Clone)]
struct SchemaRow {
    name: String,
    anchor: String,
    description: String,
    /// What it is when it is not an object with properties (a string with values, one of several shapes).
    summary: String,
    properties: Vec<PropertyRow>,
}

#[derive(Debug, Template)]
#[template(path = "console/api.html")]
struct ApiPage {
    chrome: Chrome,
    title: String,
    version: String,
    openapi: String,
    description: String,
    document_path: &'static str,
    groups: Vec<TagGroup>,
    schemas: Vec<SchemaRow>,
}

const METHODS: [&str; 8] = ["get", "post", "put", "patch", "delete", "head", "options", "trace"];

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn anchor(prefix: &str, name: &str) -> String {
    let slug: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    format!("{prefix}-{slug}")
}

/// The name a `$ref` points at.
fn referenced(schema: &Value) -> Option<&str> {
    schema.get("$ref").and_then(Value::as_str).and_then(|reference| reference.rsplit('/').next())
}

/// A schema in a few words: `Token`, `array of Token`, `string (date-time) or null`, `one of Session,
/// SecondFactorChallenge`, `"read" | "read_write"`.
fn schema_text(schema: &Value) -> String {
    if let Some(name) = referenced(schema) {
        return name.to_owned();
    }
    for (key, joiner) in [("oneOf", "one of "), ("anyOf", "any of "), ("allOf", "all of ")] {
        if let Some(parts) = schema.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = parts.iter().map(schema_text).collect();
            // `T or null` reads better than "one of T, null".
            if parts.len() == 2 && parts.iter().any(|part| part == "null") {
                let other = parts.iter().find(|part| *part != "null").cloned().unwrap_or_default();
                return format!("{other} or null");
            }
            return format!("{joiner}{}", parts.join(", "));
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(Value::to_string).collect::<Vec<_>>().join(" | ");
    }
    let mut types: Vec<String> = match schema.get("type") {
        Some(Value::String(kind)) => vec![kind.clone()],
        Some(Value::Array(kinds)) => kinds.iter().map(text).collect(),
        _ => Vec::new(),
    };
    if let Some(items) = schema.get("items") {
        for kind in types.iter_mut().filter(|kind| *kind == "array") {
            *kind = format!("array of {}", schema_text(items));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        for kind in types.iter_mut().filter(|kind| *kind != "null" && !kind.starts_with("array")) {
            *kind = format!("{kind} ({format})");
        }
    }
    let mut limits = Vec::new();
    for (key, label) in [
        ("minimum", "≥ "),
        ("maximum", "≤ "),
        ("minLength", "length ≥ "),
        ("maxLength", "length ≤ "),
        ("minItems", "items ≥ "),
        ("maxItems", "items ≤ "),
    ] {
        if let Some(limit) = schema.get(key) {
            limits.push(format!("{label}{limit}"));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        limits.push(format!("matching {pattern}"));
    }
    let mut out = if types.is_empty() { "any".to_owned() } else { types.join(" or ") };
    if !limits.is_empty() {
        out = format!("{out}, {}", limits.join(", "));
    }
    out
}

/// The schema a `$ref` (or an array of one) points at, as a link on this page.
fn schema_link(schema: &Value) -> String {
    let target = referenced(schema).or_else(|| schema.get("items").and_then(referenced));
    target.map(|name| format!("#{}", anchor("schema", name))).unwrap_or_default()
}

fn first_content(content: &Value) -> Option<(&String, &Value)> {
    content.as_object().and_then(|content| content.iter().next())
}

fn operation_row(path: &str, method: &str, operation: &Value) -> OperationRow {
    let parameters = operation["parameters"]
        .as_array()
        .map(|parameters| {
            parameters
                .iter()
                .map(|parameter| ParameterRow {
                    name: text(&parameter["name"]),
                    location: text(&parameter["in"]),
                    required: parameter["required"].as_bool().unwrap_or(false),
                    schema: schema_text(&parameter["schema"]),
                    description: text(&parameter["description"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let (request, request_link) = match first_content(&operation["requestBody"]["content"]) {
        Some((content_type, body)) => {
            (format!("{content_type}: {}", schema_text(&body["schema"])), schema_link(&body["schema"]))
        }
        None => (String::new(), String::new()),
    };
    let responses = operation["responses"]
        .as_object()
        .map(|responses| {
            responses
                .iter()
                .map(|(status, response)| {
                    let (content_type, schema, schema_link) = match first_content(&response["content"]) {
                        Some((content_type, body)) => {
                            (content_type.clone(), schema_text(&body["schema"]), self::schema_link(&body["schema"]))
                        }
                        None => (String::new(), String::new(), String::new()),
                    };
                    let headers = response["headers"]
                        .as_object()
                        .map(|headers| headers.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default();
                    ResponseRow {
                        status: status.clone(),
                        description: text(&response["description"]),
                        content_type,
                        schema,
                        schema_link,
                        headers,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let id = text(&operation["operationId"]);
    OperationRow {
        anchor: anchor("op", &id),
        method: method.to_uppercase(),
        path: path.to_owned(),
        summary: text(&operation["summary"]),
        description: text(&operation["description"]),
        secured: operation["security"]
            .as_array()
            .is_some_and(|requirements| requirements.iter().any(|requirement| requirement != &serde_json::json!({}))),
        parameters,
        request,
        request_link,
        request_description: text(&operation["requestBody"]["description"]),
        responses,
    }
}

/// The document's operations, grouped by their tag in the document's order of tags.
fn groups(document: &Value) -> Vec<TagGroup> {
    let mut groups: Vec<TagGroup> = document["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .map(|tag| {
                    let name = text(&tag["name"]);
                    TagGroup {
                        anchor: anchor("tag", &name),
                        name,
                        description: text(&tag["description"]),
                        vendor_docs: if tag.get("x-tessera-dialect").is_some() {
                            text(&tag["externalDocs"]["url"])
                        } else {
                            String::new()
                        },
                        operations: Vec::new(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            let tag = operation["tags"][0].as_str().unwrap_or("other").to_owned();
            let row = operation_row(path, method, operation);
            match groups.iter_mut().find(|group| group.name == tag) {
                Some(group) => group.operations.push(row),
                None => groups.push(TagGroup {
                    anchor: anchor("tag", &tag),
                    name: tag,
                    description: String::new(),
                    vendor_docs: String::new(),
                    operations: vec![row],
                }),
            }
        }
    }
    groups.retain(|group| !group.operations.is_empty());
    groups
}

fn schemas(document: &Value) -> Vec<SchemaRow> {
    let Some(schemas) = document["components"]["schemas"].as_object() else { return Vec::new() };
    schemas
        .iter()
        .map(|(name, schema)| {
            let required: Vec<&str> =
                schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let properties: Vec<PropertyRow> = schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(property, definition)| PropertyRow {
                    name: property.clone(),
                    schema: schema_text(definition),
                    schema_link: schema_link(definition),
                    required: required.contains(&property.as_str()),
                    description: text(&definition["description"]),
                })
                .collect();
            SchemaRow {
                anchor: anchor("schema", name),
                name: name.clone(),
                description: text(&schema["description"]),
                summary: if properties.is_empty() { schema_text(schema) } else { String::new() },
                properties,
            }
        })
        .collect()
}

/// `GET /console/api`.
pub(super) async fn page(State(app): State<App>, Signed(signed): Signed) -> PageResult {
    let chrome = Chrome::of(&app, &signed, "api").await?;
    let document = document();
    let page = ApiPage {
        chrome,
        title: text(&document["info"]["title"]),
        version: text(&document["info"]["version"]),
        openapi: text(&document["openapi"]),
        description: text(&document["info"]["description"]),
        document_path: DOCUMENT_PATH,
        groups: groups(document),
        schemas: schemas(document),
    };
    render_with(StatusCode::OK, page)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schemas_read_in_a_few_words() {
        assert_eq!(schema_text(&json!({"$ref": "#/components/schemas/Token"})), "Token");
        assert_eq!(schema_text(&json!({"type": "array", "items": {"$ref": "#/x/Token"}})), "array of Token");
        assert_eq!(
            schema_text(&json!({"type": ["string", "null"], "format": "date-time"})),
            "string (date-time) or null"
        );
        assert_eq!(schema_text(&json!({"oneOf": [{"type": "null"}, {"$ref": "#/x/Id"}]})), "Id or null");
        assert_eq!(
            schema_text(&json!({"type": "string", "enum": ["read", "read_write"]})),
            "\"read\" | \"read_write\""
        );
        assert_eq!(schema_text(&json!({"type": "integer", "minimum": 1, "maximum": 1000})), "integer, ≥ 1, ≤ 1000");
    }

    #[test]
    fn every_operation_of_the_document_is_on_the_page() {
        let document = document();
        let shown: usize = groups(document).iter().map(|group| group.operations.len()).sum();
        let listed: usize = document["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| METHODS.iter().filter(|method| item.get(**method).is_some()).count())
            .sum();
        assert_eq!(shown, listed);
        assert!(schemas(document).iter().any(|schema| schema.name == "Token" && !schema.properties.is_empty()));
    }
}
