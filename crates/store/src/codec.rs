//! How core types are laid out in table columns. Every SQL backend uses the same layout, so the mapping lives here
//! once.

use std::collections::BTreeMap;

use std::net::IpAddr;

use tessera_core::{
    CollectionId, DeviceId, Quota, QuotaSetting, Rights, Scope, SecretDigest, TeamId, TokenId, TokenKind, UserId, Value,
};

use crate::{Actor, Creator, StoreError};

/// A value read from a column that no version of Tessera writes: the database was edited by hand or is corrupt.
pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Internal(what.into().into())
}

pub(crate) fn scope_columns(scope: Scope) -> (&'static str, Option<i64>) {
    match scope {
        Scope::Account => ("account", None),
        Scope::Team(team) => ("team", Some(team.as_i64())),
        Scope::Collection(collection) => ("collection", Some(collection.as_i64())),
        Scope::Device(device) => ("device", Some(device.as_i64())),
        Scope::AllTeams => ("all_teams", None),
        Scope::AllCollections => ("all_collections", None),
    }
}

pub(crate) fn scope_from_columns(kind: &str, id: Option<i64>) -> Result<Scope, StoreError> {
    let needs_id = || id.ok_or_else(|| corrupt(format!("token scope '{kind}' without an id")));
    Ok(match kind {
        "account" => Scope::Account,
        "team" => Scope::Team(TeamId::from_i64(needs_id()?)),
        "collection" => Scope::Collection(CollectionId::from_i64(needs_id()?)),
        "device" => Scope::Device(DeviceId::from_i64(needs_id()?)),
        "all_teams" => Scope::AllTeams,
        "all_collections" => Scope::AllCollections,
        other => return Err(corrupt(format!("unknown token scope kind '{other}'"))),
    })
}

pub(crate) fn rights_column(rights: Rights) -> &'static str {
    match rights {
        Rights::Read => "read",
        Rights::ReadWrite => "read_write",
    }
}

pub(crate) fn rights_from_column(text: &str) -> Result<Rights, StoreError> {
    match text {
        "read" => Ok(Rights::Read),
        "read_write" => Ok(Rights::ReadWrite),
        other => Err(corrupt(format!("unknown token rights '{other}'"))),
    }
}

pub(crate) fn kind_from_column(text: &str) -> Result<TokenKind, StoreError> {
    TokenKind::from_name(text).ok_or_else(|| corrupt(format!("unknown token kind '{text}'")))
}

pub(crate) fn creator_columns(creator: Creator) -> (&'static str, Option<i64>) {
    match creator {
        Creator::System => ("system", None),
        Creator::Token(token) => ("token", Some(token.as_i64())),
        Creator::User(user) => ("user", Some(user.as_i64())),
    }
}

pub(crate) fn creator_from_columns(kind: &str, id: Option<i64>) -> Result<Creator, StoreError> {
    match (kind, id) {
        ("system", _) => Ok(Creator::System),
        ("token", Some(id)) => Ok(Creator::Token(TokenId::from_i64(id))),
        ("user", Some(id)) => Ok(Creator::User(UserId::from_i64(id))),
        (other, _) => Err(corrupt(format!("bad token creator '{other}'"))),
    }
}

pub(crate) fn tags_column(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn tags_from_column(text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|error| corrupt(format!("token tags are not a JSON object: {error}")))
}

/// A reading's value as its three columns `(num, json, bytes)`, exactly one of them set.
pub(crate) fn value_columns(value: &Value) -> (Option<f64>, Option<String>, Option<Vec<u8>>) {
    match value {
        Value::Number(number) => (Some(*number), None, None),
        Value::Json(json) => (None, Some(json.to_string()), None),
        Value::Bytes(bytes) => (None, None, Some(bytes.clone())),
    }
}

pub(crate) fn value_from_columns(
    number: Option<f64>,
    json: Option<String>,
    bytes: Option<Vec<u8>>,
) -> Result<Value, StoreError> {
    match (number, json, bytes) {
        (Some(number), None, None) => Ok(Value::Number(number)),
        (None, Some(json), None) => serde_json::from_str(&json)
            .map(Value::Json)
            .map_err(|error| corrupt(format!("reading holds invalid JSON: {error}"))),
        (None, None, Some(bytes)) => Ok(Value::Bytes(bytes)),
        _ => Err(corrupt("a reading must set exactly one of num, json and bytes")),
    }
}

pub(crate) fn context_column(context: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    (!context.is_empty()).then(|| serde_json::Value::Object(context.clone()).to_string())
}

pub(crate) fn context_from_column(
    text: Option<String>,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    match text {
        None => Ok(serde_json::Map::new()),
        Some(text) => match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(corrupt("a reading's context is not a JSON object")),
        },
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        match error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(ref database) if database.is_unique_violation() => {
                StoreError::Conflict(database.message().to_owned())
            }
            // A row refers to one that does not exist (any more): the collection or device it belongs to was
            // deleted, or never was.
            sqlx::Error::Database(ref database) if database.is_foreign_key_violation() => StoreError::NotFound,
            // PostgreSQL: "character not in repertoire" / "untranslatable character": a NUL in a text value.
            sqlx::Error::Database(ref database) if matches!(database.code().as_deref(), Some("22021" | "22P05")) => {
                StoreError::Invalid("text may not contain the NUL character (U+0000)".into())
            }
            // PostgreSQL's connection exceptions (class 08) and "shutting down / cannot connect now" (57P01-03):
            // the database is going or gone, which is worth a retry, not a bug report.
            sqlx::Error::Database(ref database)
                if database.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")) =>
            {
                StoreError::Unavailable(Box::new(error))
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(Box::new(error)),
            other => StoreError::Internal(Box::new(other)),
        }
    }
}

pub(crate) fn digest_from_column(bytes: Vec<u8>) -> Result<SecretDigest, StoreError> {
    let digest: [u8; 32] = bytes.try_into().map_err(|_| corrupt("token digest is not 32 bytes"))?;
    Ok(SecretDigest(digest))
}

pub(crate) fn address_column(address: Option<IpAddr>) -> Option<String> {
    address.map(|address| address.to_string())
}

pub(crate) fn address_from_column(text: Option<String>) -> Result<Option<IpAddr>, StoreError> {
    text.map(|text| text.parse().map_err(|_| corrupt(format!("stored address '{text}' is not an IP address"))))
        .transpose()
}

/// A quota as `(quota_requests, quota_window_seconds)`: both NULL for the kind's default, 0 requests for none.
pub(crate) fn quota_columns(quota: QuotaSetting) -> (Option<i64>, Option<i64>) {
    match quota {
        QuotaSetting::KindDefault => (None, None),
        QuotaSetting::Unlimited => (Some(0), None),
        QuotaSetting::Limited(Quota { requests, window_seconds }) => {
            (Some(i64::from(requests)), Some(i64::from(window_seconds)))
        }
    }
}

pub(crate) fn quota_from_columns(requests: Option<i64>, window: Option<i64>) -> Result<QuotaSetting, StoreError> {
    let bad = || corrupt(format!("bad token quota {requests:?} per {window:?} s"));
    Ok(match (requests, window) {
        (None, _) => QuotaSetting::KindDefault,
        (Some(0), _) => QuotaSetting::Unlimited,
        (Some(requests), Some(window)) => QuotaSetting::Limited(Quota {
            requests: u32::try_from(requests).map_err(|_| bad())?,
            window_seconds: u32::try_from(window).ok().filter(|window| *window > 0).ok_or_else(bad)?,
        }),
        (Some(_), None) => return Err(bad()),
    })
}

pub(crate) fn actor_columns(actor: Actor) -> (&'static str, Option<i64>) {
    match actor {
        Actor::User(user) => ("user", Some(user.as_i64())),
        Actor::Token(token) => ("token", Some(token.as_i64())),
        Actor::System => ("system", None),
        Actor::Operator => ("operator", None),
        Actor::Anonymous => ("anonymous", None),
    }
}

pub(crate) fn actor_from_columns(kind: &str, id: Option<i64>) -> Result<Actor, StoreError> {
    match (kind, id) {
        ("user", Some(id)) => Ok(Actor::User(UserId::from_i64(id))),
        ("token", Some(id)) => Ok(Actor::Token(TokenId::from_i64(id))),
        ("system", _) => Ok(Actor::System),
        ("operator", _) => Ok(Actor::Operator),
        ("anonymous", _) => Ok(Actor::Anonymous),
        (other, _) => Err(corrupt(format!("bad audit actor '{other}'"))),
    }
}
