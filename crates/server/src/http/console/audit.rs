//! The audit trail, for the account's administrators (`/console/audit`): the filters of `GET /v1/audit`
//! (actor, token, event, since, until; parsed by the API's own `audit_query`), newest first, a page at a time
//! with an "Older" link that carries the cursor and the filters. Only this account's entries are read, and the
//! trail holds no secret (a token is named by its id, and by its name where the page knows it).

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use tessera_core::{Action, Id, Target, TokenId};
use tessera_store::{Actor, AuditEntry, Outcome, Page};

use super::format::{self, Chrome, Names};
use super::session::{Signed, SignedIn};
use super::{PREFIX, PageResult, render_with};
use crate::app::{App, AppError};
use crate::audit::AuditEvent;
use crate::http::native::lifecycle::{actor_text, audit_query};
use crate::http::{QueryParams, percent_encode};

/// The query's filters, kept in the form and carried by the "Older" link.
const FILTERS: [&str; 6] = ["actor", "token", "event", "since", "until", "limit"];

/// Live tokens whose names the page looks up, in one listing.
const TOKEN_NAMES_READ: u64 = 500;

#[derive(Debug, Clone)]
struct AuditRow {
    at: String,
    at_machine: String,
    event: String,
    actor: String,
    /// This page filtered by the entry's actor, and by its token.
    actor_link: String,
    token: String,
    token_id: String,
    token_link: String,
    address: String,
    outcome: &'static str,
    refused: bool,
    count: u64,
    detail: Vec<(String, String)>,
}

#[derive(Debug, Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    actor: String,
    token: String,
    event: String,
    since: String,
    until: String,
    events: Vec<&'static str>,
    entries: Vec<AuditRow>,
    filtered: bool,
    older: String,
    newest: String,
    error: String,
}

/// The audit page with `filters` (and a cursor); an older page of the same filters at `cursor`.
fn link(query: &QueryParams, cursor: Option<Id>) -> String {
    let mut parts: Vec<String> = FILTERS
        .iter()
        .filter_map(|name| {
            let text = query.text(name).map(str::trim).filter(|text| !text.is_empty())?;
            Some(format!("{name}={}", percent_encode(text)))
        })
        .collect();
    if let Some(cursor) = cursor {
        parts.push(format!("cursor={cursor}"));
    }
    if parts.is_empty() { format!("{PREFIX}/audit") } else { format!("{PREFIX}/audit?{}", parts.join("&")) }
}

fn filtered_by(name: &str, value: &str) -> String {
    format!("{PREFIX}/audit?{name}={}", percent_encode(value))
}

/// What a token is called on this page: the names the entries carry (a revoked token's too), and the live
/// tokens' in one listing; no read per entry.
async fn token_names(app: &App, signed: &SignedIn, entries: &[AuditEntry]) -> HashMap<TokenId, String> {
    let mut names = HashMap::new();
    for entry in entries.iter().filter(|entry| entry.event.starts_with("token.")) {
        if let (Some(token), Some(Value::String(name))) = (entry.token, entry.detail.get("name"))
            && !name.is_empty()
        {
            names.entry(token).or_insert_with(|| name.clone());
        }
    }
    let page = Page { number: 1, size: TOKEN_NAMES_READ };
    if let Ok(listed) = app.tokens.list(&signed.caller, None, Default::default(), page).await {
        for token in listed.items {
            let name = if token.name.is_empty() { format::kind_text(token.kind).to_owned() } else { token.name };
            names.insert(token.id, name);
        }
    }
    names
}

fn actor_name(actor: Actor, people: &Names, tokens: &HashMap<TokenId, String>) -> String {
    match actor {
        Actor::User(user) => people.users.get(&user).cloned().unwrap_or_else(|| format!("user {user}")),
        Actor::Token(token) => match tokens.get(&token) {
            Some(name) => format!("{name} (token {token})"),
            None => format!("token {token}"),
        },
        Actor::System => "Tessera".into(),
        Actor::Operator => "the operator (command line)".into(),
        Actor::Anonymous => "anonymous".into(),
    }
}

/// A detail's value as text: strings as they are, anything else as JSON.
fn detail_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

fn row(entry: &AuditEntry, people: &Names, tokens: &HashMap<TokenId, String>) -> AuditRow {
    let actor = actor_text(entry.actor);
    AuditRow {
        at: format::when(entry.at_ms),
        at_machine: format::machine_time(entry.at_ms),
        event: entry.event.clone(),
        actor: actor_name(entry.actor, people, tokens),
        actor_link: filtered_by("actor", &actor),
        token: entry.token.and_then(|token| tokens.get(&token).cloned()).unwrap_or_default(),
        token_id: entry.token.map(|token| token.to_string()).unwrap_or_default(),
        token_link: entry.token.map(|token| filtered_by("token", &token.to_string())).unwrap_or_default(),
        address: entry.address.map(|address| address.to_string()).unwrap_or_default(),
        outcome: entry.outcome.as_str(),
        refused: entry.outcome == Outcome::Refused,
        count: entry.count,
        detail: entry.detail.iter().map(|(key, value)| (key.clone(), detail_text(value))).collect(),
    }
}

/// `GET /console/audit`: the account's trail for its administrators; anyone else gets the console's 403, as
/// `GET /v1/audit` refuses them.
pub(super) async fn page(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let account = signed.caller.account();
    signed.caller.authorize(Action::ManageUsers, &Target::account(account))?;
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, &signed, "audit");
    let kept = |name| query.text(name).unwrap_or("").trim().to_owned();
    let mut page = AuditPage {
        chrome,
        actor: kept("actor"),
        token: kept("token"),
        event: kept("event"),
        since: kept("since"),
        until: kept("until"),
        events: AuditEvent::ALL.iter().map(|event| event.name()).collect(),
        entries: Vec::new(),
        filtered: FILTERS.iter().any(|name| !kept(name).is_empty()),
        older: String::new(),
        newest: if query.text("cursor").is_some_and(|cursor| !cursor.trim().is_empty()) {
            link(&query, None)
        } else {
            String::new()
        },
        error: String::new(),
    };
    let audit = match audit_query(&query) {
        Ok(audit) => audit,
        Err(AppError::BadRequest(problem)) => {
            page.error = format!("{}.", super::capitalize(&problem));
            return render_with(StatusCode::BAD_REQUEST, page);
        }
        Err(other) => return Err(other.into()),
    };
    let entries = app.tokens.audit().entries(account, &audit).await.map_err(AppError::from)?;
    if entries.len() == audit.limit as usize
        && let Some(last) = entries.last()
    {
        page.older = link(&query, Some(last.id));
    }
    let people = format::names_for(&app, &signed, &user).await;
    let tokens = token_names(&app, &signed, &entries).await;
    page.entries = entries.iter().map(|entry| row(entry, &people, &tokens)).collect();
    render_with(StatusCode::OK, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_link_keeps_the_filters_and_carries_the_cursor() {
        let query = QueryParams(
            [("event", "token.rotated"), ("since", "2026-01-31 08:00"), ("cursor", "x"), ("other", "y")]
                .iter()
                .map(|(name, value)| ((*name).into(), (*value).into()))
                .collect(),
        );
        let cursor: Id = "0000000000001".parse().unwrap();
        assert_eq!(
            link(&query, Some(cursor)),
            "/console/audit?event=token.rotated&since=2026-01-31%2008%3A00&cursor=0000000000001"
        );
        assert_eq!(link(&QueryParams::default(), None), "/console/audit");
        assert_eq!(detail_text(&serde_json::json!(3)), "3");
        assert_eq!(detail_text(&serde_json::json!("read")), "read");
    }
}
