//! What every page shares: the chrome around it (who is signed in, the form token, the assets), how times,
//! values, scopes and issuers read, and the rows of a token table. Templates get text ready to show, so they
//! hold no logic beyond loops and conditions.

use std::collections::HashMap;

use askama::Template;
use tessera_core::{Rights, Scope, TokenKind, Value};
use tessera_store::{Creator, TokenRecord, User};

use super::assets::Urls;
use super::session::SignedIn;
use super::{Failure, PREFIX};
use crate::app::App;

/// The frame of every signed-in page.
#[derive(Debug, Clone)]
pub(super) struct Chrome {
    pub assets: Urls,
    pub email: String,
    pub is_admin: bool,
    pub csrf: String,
    /// Which item of the navigation is this page's.
    pub section: &'static str,
}

impl Chrome {
    pub async fn of(app: &App, signed: &SignedIn, section: &'static str) -> Result<Chrome, Failure> {
        let user = app.people.user_of(&signed.caller).await?;
        Ok(Chrome::for_user(&user, signed, section))
    }

    pub fn for_user(user: &User, signed: &SignedIn, section: &'static str) -> Chrome {
        Chrome {
            assets: Urls::get(),
            email: user.email.clone(),
            is_admin: is_account_admin(signed),
            csrf: signed.form_token.clone(),
            section,
        }
    }
}

/// Whether the visitor administers the account (the Users and Account pages are theirs), as `authorize` says.
pub(super) fn is_account_admin(signed: &SignedIn) -> bool {
    let account = tessera_core::Target::account(signed.caller.account());
    signed.caller.authorize(tessera_core::Action::ManageUsers, &account).is_ok()
}

/// A page's standalone error (no chrome: it may be shown to someone who is not signed in).
#[derive(Debug, Template)]
#[template(path = "console/error.html")]
pub(super) struct ErrorPage {
    pub assets: Urls,
    pub status: u16,
    pub message: String,
}

/// What a form said was wrong, field by field, and what was typed, so a page shown again keeps it.
#[derive(Debug, Clone, Default)]
pub(super) struct FormState {
    /// Which form on the page this is (a page may hold several).
    pub form: &'static str,
    pub errors: HashMap<&'static str, String>,
    pub values: HashMap<&'static str, String>,
}

impl FormState {
    pub fn failed(form: &'static str, field: &'static str, message: impl Into<String>) -> FormState {
        let mut state = FormState { form, ..FormState::default() };
        state.errors.insert(field, message.into());
        state
    }

    pub fn keep(mut self, field: &'static str, value: &str) -> FormState {
        self.values.insert(field, value.to_owned());
        self
    }

    /// The error of `field` in form `form`, or empty.
    pub fn error(&self, form: &str, field: &str) -> &str {
        if self.form != form {
            return "";
        }
        self.errors.get(field).map(String::as_str).unwrap_or("")
    }

    /// The status of a page that shows this form state: 422 when it shows errors.
    pub fn status(&self) -> axum::http::StatusCode {
        if self.errors.is_empty() { axum::http::StatusCode::OK } else { axum::http::StatusCode::UNPROCESSABLE_ENTITY }
    }

    /// Every error, for a page that does not show the form that failed (a reader posting by hand).
    pub fn all_errors(&self) -> String {
        let mut errors: Vec<&str> = self.errors.values().map(String::as_str).collect();
        errors.sort_unstable();
        errors.join(" ")
    }

    /// What was typed in `field` of form `form`, or empty.
    pub fn value(&self, form: &str, field: &str) -> &str {
        if self.form != form {
            return "";
        }
        self.values.get(field).map(String::as_str).unwrap_or("")
    }
}

/// An instant as people read it, in UTC (the page's script adds "3 min ago" from the `datetime` attribute).
pub(super) fn when(ms: i64) -> String {
    tessera_core::time::readable_utc(ms)
}

/// An instant for a `<time datetime>` attribute.
pub(super) fn machine_time(ms: i64) -> String {
    crate::time::rfc3339(ms)
}

/// A value as one line of text.
pub(super) fn value_text(value: &Value) -> String {
    match value {
        Value::Number(number) => {
            let magnitude = number.abs();
            if number.fract() == 0.0 && magnitude < 1e15 {
                format!("{number:.0}")
            } else if (1e-3..1e15).contains(&magnitude) {
                // Six decimals, trailing zeros dropped: 0.1 + 0.2 reads 0.3.
                let text = format!("{number:.6}");
                text.trim_end_matches('0').trim_end_matches('.').to_owned()
            } else {
                // Very small or very large: the shortest exact form, never a rounded 0.
                format!("{number:e}")
            }
        }
        Value::Json(json) => {
            let text = json.to_string();
            if text.chars().count() > 80 { format!("{}…", text.chars().take(79).collect::<String>()) } else { text }
        }
        Value::Bytes(bytes) => format!("{} bytes", bytes.len()),
    }
}

pub(super) fn kind_text(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::ApiKey => "API key",
        TokenKind::Account => "Account token",
        TokenKind::Collection => "Organization token",
        TokenKind::Device => "Device token",
        TokenKind::Ground => "Ground token",
        TokenKind::UserAccess => "Login session",
        TokenKind::Refresh => "Session refresh",
        TokenKind::Resource => "Resource token",
    }
}

pub(super) fn rights_text(rights: Rights) -> &'static str {
    match rights {
        Rights::Read => "read",
        Rights::ReadWrite => "read and write",
    }
}

/// A token expiring within this many days is highlighted in every token table, and the tokens page warns of it.
pub(super) const EXPIRES_SOON_DAYS: i64 = 7;

/// One row of a token table.
#[derive(Debug, Clone)]
pub(super) struct TokenRow {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    pub scope: String,
    pub scope_link: String,
    pub rights: &'static str,
    pub created: String,
    pub created_machine: String,
    pub expires: String,
    pub expires_machine: String,
    /// It expires within `EXPIRES_SOON_DAYS`.
    pub expires_soon: bool,
    pub last_used: String,
    pub last_used_machine: String,
    /// The address it was last presented from, or empty.
    pub last_used_from: String,
    pub uses: u64,
    /// Requests refused for being over its quota.
    pub throttled: u64,
    pub disabled: bool,
    /// During a rotation's overlap: until when the replaced secret still works (empty otherwise).
    pub old_secret_until: String,
    pub old_secret_until_machine: String,
    /// Rotating and disabling are offered: a login session is ended (deleted) instead, as the service says.
    pub rotatable: bool,
    pub issued_by: String,
    /// The caller's own session: it cannot delete itself here (signing out does that).
    pub is_this_session: bool,
}

/// Names the console shows for ids: users by email, collections by name.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub users: HashMap<tessera_core::UserId, String>,
    pub collections: HashMap<tessera_core::CollectionId, String>,
}

impl TokenRow {
    pub fn of(token: &TokenRecord, names: &Names, this_session: Option<tessera_core::Id>, now_ms: i64) -> TokenRow {
        let (scope, scope_link) = scope_text(token, names);
        let old_secret_until = token.previous_valid_until_ms.filter(|until| *until > now_ms);
        TokenRow {
            id: token.id.to_string(),
            kind: kind_text(token.kind),
            name: if token.name.is_empty() { "(unnamed)".into() } else { token.name.clone() },
            scope,
            scope_link,
            rights: rights_text(token.rights),
            created: when(token.created_at_ms),
            created_machine: machine_time(token.created_at_ms),
            expires: token.expires_at_ms.map(when).unwrap_or_else(|| "never".into()),
            expires_machine: token.expires_at_ms.map(machine_time).unwrap_or_default(),
            // A login session's hour is renewed by its refresh token: no warning for that.
            expires_soon: !matches!(token.kind, TokenKind::UserAccess | TokenKind::Refresh)
                && token.expires_at_ms.is_some_and(|at| at > now_ms && at - now_ms <= EXPIRES_SOON_DAYS * DAY_MS),
            last_used: token.last_used_at_ms.map(when).unwrap_or_else(|| "never".into()),
            last_used_machine: token.last_used_at_ms.map(machine_time).unwrap_or_default(),
            last_used_from: token.last_used_from.map(|address| address.to_string()).unwrap_or_default(),
            uses: token.uses,
            throttled: token.throttled,
            disabled: token.disabled_at_ms.is_some(),
            old_secret_until: old_secret_until.map(when).unwrap_or_default(),
            old_secret_until_machine: old_secret_until.map(machine_time).unwrap_or_default(),
            rotatable: !matches!(token.kind, TokenKind::UserAccess | TokenKind::Refresh),
            issued_by: match token.creator {
                Creator::System => "Tessera (first start)".into(),
                Creator::Token(id) => format!("token {id}"),
                Creator::User(user) => names.users.get(&user).cloned().unwrap_or_else(|| format!("user {user}")),
            },
            is_this_session: this_session.is_some() && token.family == this_session,
        }
    }
}

/// A day in milliseconds.
pub(super) const DAY_MS: i64 = 86_400_000;

/// A span of seconds in the largest unit that says it exactly: "1 hour", "7 days", "90 seconds".
pub(super) fn duration_text(seconds: u64) -> String {
    let (count, unit) = match seconds {
        0 => return "no time".into(),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if count == 1 { format!("1 {unit}") } else { format!("{count} {unit}s") }
}

pub(super) fn scope_text(token: &TokenRecord, names: &Names) -> (String, String) {
    if let Some(resource) = &token.resource {
        return (format!("resource {resource}"), String::new());
    }
    match token.scope {
        Scope::Account => ("the whole account".into(), String::new()),
        Scope::Team(team) => (format!("team {team}"), format!("{PREFIX}/teams/{team}")),
        Scope::Collection(collection) => {
            let name = names.collections.get(&collection).cloned().unwrap_or_else(|| collection.to_string());
            (format!("collection {name}"), format!("{PREFIX}/collections/{collection}"))
        }
        Scope::Device(device) => (format!("device {device}"), format!("{PREFIX}/devices/{device}")),
        Scope::AllTeams => ("every team".into(), String::new()),
        Scope::AllCollections => ("every collection".into(), String::new()),
    }
}

/// The names of users and collections a token table shows, read once per page.
pub(super) async fn names_for(app: &App, signed: &SignedIn, user: &User) -> Names {
    let mut names = Names::default();
    let account = tessera_core::Target::account(signed.caller.account());
    if let Ok(permit) = signed.caller.authorize(tessera_core::Action::ManageUsers, &account) {
        if let Ok(users) = app.people.list_users(&permit).await {
            names.users = users.into_iter().map(|user| (user.id, user.email)).collect();
        }
    } else {
        names.users.insert(user.id, user.email.clone());
    }
    if let Ok(collections) = app.readable_collections(&signed.caller).await {
        names.collections = collections.into_iter().map(|collection| (collection.id, collection.name)).collect();
    }
    names
}

/// A new token's secret, or a rotated token's new one, shown this once.
#[derive(Debug, Template)]
#[template(path = "console/secret.html")]
pub(super) struct SecretPage {
    pub chrome: Chrome,
    pub kind: &'static str,
    pub name: String,
    pub scope: String,
    pub secret: String,
    /// After a rotation: what becomes of the secret it replaced (empty for a new token).
    pub rotation: String,
    /// Where to go on from here, and what it is called.
    pub back: String,
    pub back_label: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(value_text(&Value::Number(21.0)), "21");
        assert_eq!(value_text(&Value::Number(21.5)), "21.5");
        assert_eq!(value_text(&Value::Number(0.1 + 0.2)), "0.3");
        assert_eq!(value_text(&Value::Number(2.5e-7)), "2.5e-7", "a small value is not shown as 0");
        assert_eq!(value_text(&Value::Number(1.7e18)), "1.7e18");
        assert_eq!(value_text(&Value::Bytes(vec![1, 2, 3])), "3 bytes");
        assert_eq!(value_text(&Value::Json(serde_json::json!({"a": 1}))), "{\"a\":1}");
    }

    #[test]
    fn instants_read_in_utc() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_764_780_601_123), "2025-12-03 16:50:01 UTC");
    }

    #[test]
    fn spans_read_in_their_largest_exact_unit() {
        assert_eq!(duration_text(3_600), "1 hour");
        assert_eq!(duration_text(7 * 86_400), "7 days");
        assert_eq!(duration_text(90), "90 seconds");
        assert_eq!(duration_text(600), "10 minutes");
    }

    #[test]
    fn a_form_state_answers_only_for_its_own_form() {
        let state = FormState::failed("device", "label", "bad").keep("label", "x y");
        assert_eq!(state.error("device", "label"), "bad");
        assert_eq!(state.value("device", "label"), "x y");
        assert_eq!(state.error("token", "label"), "");
        assert_eq!(state.value("token", "label"), "");
    }
}
