//! Tokens: every kind the visitor manages in one table (`/console/tokens`, filtered by kind, by disuse and by
//! coming expiry, with a warning of tokens about to expire), Horde's resource tokens generated there, and what
//! every token table's rows post to: rotate (the new secret is the answer, shown once), disable, enable and
//! delete. Which tokens a visitor sees, mints, rotates, disables and deletes is `TokenService`'s answer (the
//! core's token rule), exactly as on the API; a refusal is shown beside the row that asked, on the page it was
//! asked from.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tessera_core::{CollectionId, DeviceId, Rights, Scope, TokenId, TokenKind};
use tessera_store::Page;

use super::format::{self, Chrome, DAY_MS, EXPIRES_SOON_DAYS, FormState, Names, SecretPage, TokenRow};
use super::session::{Form, Signed, SignedIn};
use super::{Failure, PREFIX, PageResult, render, render_with, see_other};
use crate::app::{App, AppError};
use crate::http::QueryParams;
use crate::time::now_ms;
use crate::tokens::{Narrowing, NewToken};

/// Tokens a table shows at most: a collection whose devices each have a token would otherwise render one
/// form per device on every visit.
const TOKENS_SHOWN: u64 = 500;

/// The rows of the tokens the visitor manages at `scope` (every scope when `None`) that `narrowing` keeps,
/// newest first, at most `TOKENS_SHOWN` of them, and a note when there are more. Revoked and expired tokens are
/// not listed (the store leaves them out).
pub(super) async fn token_rows(
    app: &App,
    signed: &SignedIn,
    scope: Option<Scope>,
    narrowing: Narrowing,
    names: &Names,
) -> Result<(Vec<TokenRow>, String), AppError> {
    let listed = app.tokens.list(&signed.caller, scope, narrowing, Page { number: 1, size: TOKENS_SHOWN }).await?;
    let mut tokens = listed.items;
    // A login session is one row (its access token); its refresh token is deleted with it.
    tokens.retain(|token| token.kind != TokenKind::Refresh);
    tokens.sort_by_key(|token| std::cmp::Reverse(token.created_at_ms));
    let this_session = signed.caller.record.family;
    let now = now_ms();
    let rows = tokens.iter().map(|token| TokenRow::of(token, names, this_session, now)).collect();
    let note = if listed.total > TOKENS_SHOWN {
        format!("Showing {TOKENS_SHOWN} of {} tokens; the API lists them all (GET /v1/tokens).", listed.total)
    } else {
        String::new()
    };
    Ok((rows, note))
}

/// The notice a page with a token table shows after one of the table's forms (`?done=…`; a bulk revocation
/// adds `&count=`).
pub(super) fn token_notice(query: &QueryParams) -> String {
    match query.text("done") {
        Some("token-deleted") => "The token is deleted.".into(),
        Some("token-disabled") => {
            "The token is disabled: whatever uses it is refused until it is enabled again.".into()
        }
        Some("token-enabled") => "The token is enabled again.".into(),
        Some("tokens-revoked") => match query.integer_in("count", 0, i64::MAX).ok().flatten().unwrap_or(0) {
            0 => "No token was revoked: none that you manage was left.".into(),
            1 => "1 token is revoked.".into(),
            count => format!("{count} tokens are revoked."),
        },
        _ => String::new(),
    }
}

/// How a new token's page names it and where it leads back to.
pub(super) struct Shown {
    pub section: &'static str,
    pub scope: String,
    pub back: String,
    pub back_label: String,
}

/// Mints `new` for the visitor: the page that shows its secret this once, or the service's refusal in words for
/// the form that asked (`Ok(Err(text))`), or a failure of the server's own.
pub(super) async fn mint_and_show(
    app: &App,
    signed: &SignedIn,
    new: NewToken,
    shown: Shown,
) -> Result<Result<axum::response::Response, String>, Failure> {
    match app.tokens.mint(&signed.caller, new).await {
        Ok((record, secret)) => Ok(Ok(render(SecretPage {
            chrome: Chrome::of(app, signed, shown.section).await?,
            kind: format::kind_text(record.kind),
            name: if record.name.is_empty() { "(unnamed)".into() } else { record.name.clone() },
            scope: shown.scope,
            secret: secret.expose().to_owned(),
            rotation: String::new(),
            back: shown.back,
            back_label: shown.back_label,
        })?)),
        Err(error) => {
            let error = AppError::from(error);
            if matches!(error, AppError::Internal(_) | AppError::Unavailable(_)) {
                return Err(error.into());
            }
            Ok(Err(super::explain(&error)))
        }
    }
}

/// `expires_days` of a token form: empty for never, else 1 to 36 500 days from now.
pub(super) fn expiry_from_form(form: &Form) -> Result<Option<i64>, String> {
    match form.trimmed("expires_days") {
        "" => Ok(None),
        text => match text.parse::<i64>() {
            Ok(days) if (1..=36_500).contains(&days) => Ok(Some(now_ms() + days * 86_400_000)),
            _ => Err(format!("'{text}' is not a number of days from 1 to 36500.")),
        },
    }
}

#[derive(Debug, Clone)]
pub(super) struct KindChoice {
    pub value: &'static str,
    pub label: &'static str,
}

/// The kinds a person picks from, in a filter and in the account's bulk revocation.
pub(super) const KIND_FILTERS: [KindChoice; 7] = [
    KindChoice { value: "api-key", label: "API keys" },
    KindChoice { value: "account", label: "Account tokens" },
    KindChoice { value: "organization", label: "Organization tokens" },
    KindChoice { value: "device", label: "Device tokens" },
    KindChoice { value: "ground", label: "Ground tokens" },
    KindChoice { value: "resource", label: "Resource tokens" },
    KindChoice { value: "session", label: "Login sessions" },
];

pub(super) fn kind_of_filter(value: &str) -> Option<TokenKind> {
    Some(match value {
        "api-key" => TokenKind::ApiKey,
        "account" => TokenKind::Account,
        "organization" => TokenKind::Collection,
        "device" => TokenKind::Device,
        "ground" => TokenKind::Ground,
        "resource" => TokenKind::Resource,
        "session" => TokenKind::UserAccess,
        _ => return None,
    })
}

/// What the tokens page lists, from its query: a kind, tokens not used for some days, tokens expiring within
/// some days (the names the API's listing takes too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TokenFilters {
    /// A `KIND_FILTERS` value.
    kind: Option<&'static str>,
    unused_days: Option<i64>,
    expiring_days: Option<i64>,
}

impl TokenFilters {
    fn from_query(query: &QueryParams) -> Result<TokenFilters, AppError> {
        let days = |name| match query.text(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(_) => query.integer_in(name, 1, 36_500),
        };
        let kind = query.text("kind").and_then(|text| KIND_FILTERS.iter().find(|choice| choice.value == text));
        Ok(TokenFilters {
            kind: kind.map(|choice| choice.value),
            unused_days: days("unused_for_days")?,
            expiring_days: days("expiring_within_days")?,
        })
    }

    fn narrowing(&self, now: i64) -> Narrowing {
        Narrowing {
            expiring_before_ms: self.expiring_days.map(|days| now + days * DAY_MS),
            unused_since_ms: self.unused_days.map(|days| now - days * DAY_MS),
        }
    }

    /// The tokens page with these filters.
    fn link(&self) -> String {
        let mut parts = Vec::new();
        if let Some(kind) = self.kind {
            parts.push(format!("kind={kind}"));
        }
        if let Some(days) = self.unused_days {
            parts.push(format!("unused_for_days={days}"));
        }
        if let Some(days) = self.expiring_days {
            parts.push(format!("expiring_within_days={days}"));
        }
        if parts.is_empty() { format!("{PREFIX}/tokens") } else { format!("{PREFIX}/tokens?{}", parts.join("&")) }
    }
}

#[derive(Debug, Template)]
#[template(path = "console/tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    tokens_note: String,
    kinds: Vec<KindChoice>,
    kind: &'static str,
    unused_days: String,
    expiring_days: String,
    /// "3 tokens expire within 7 days", or empty, and the listing of just those.
    expiry_warning: String,
    expiry_link: String,
    back: String,
    notice: String,
    form: FormState,
}

async fn tokens_page(
    app: &App,
    signed: &SignedIn,
    filters: &TokenFilters,
    notice: String,
    form: FormState,
) -> PageResult {
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, signed, "tokens");
    let names = format::names_for(app, signed, &user).await;
    let (mut tokens, tokens_note) = token_rows(app, signed, None, filters.narrowing(now_ms()), &names).await?;
    if let Some(wanted) = filters.kind.and_then(kind_of_filter) {
        tokens.retain(|row| row.kind == format::kind_text(wanted));
    }
    // Said of the rows shown (no read of its own); not again on a listing of only those.
    let expiring = tokens.iter().filter(|row| row.expires_soon).count();
    let only_those = filters.expiring_days.is_some_and(|days| days <= EXPIRES_SOON_DAYS);
    let expiry_warning = match expiring {
        0 => String::new(),
        _ if only_those => String::new(),
        1 => format!("1 token expires within {EXPIRES_SOON_DAYS} days."),
        count => format!("{count} tokens expire within {EXPIRES_SOON_DAYS} days."),
    };
    let expiry_link = TokenFilters { expiring_days: Some(EXPIRES_SOON_DAYS), ..filters.clone() }.link();
    let status = form.status();
    render_with(
        status,
        TokensPage {
            chrome,
            tokens,
            tokens_note,
            kinds: KIND_FILTERS.to_vec(),
            kind: filters.kind.unwrap_or(""),
            unused_days: filters.unused_days.map(|days| days.to_string()).unwrap_or_default(),
            expiring_days: filters.expiring_days.map(|days| days.to_string()).unwrap_or_default(),
            expiry_warning,
            expiry_link,
            back: filters.link(),
            notice,
            form,
        },
    )
}

pub(super) async fn list(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let filters = TokenFilters::from_query(&query)?;
    tokens_page(&app, &signed, &filters, token_notice(&query), FormState::default()).await
}

/// `POST /console/tokens`: a Horde resource token (a path and a write flag), as Horde's `POST /tokens` makes.
pub(super) async fn create_resource_token(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    let resource_text = form.trimmed("resource");
    let name = form.trimmed("name");
    let write = form.checked("write");
    let failed = |field, message: String| {
        let state = FormState::failed("resource", field, message).keep("resource", resource_text).keep("name", name);
        if write { state.keep("write", "on") } else { state }
    };
    if name.chars().count() > 200 {
        return tokens_page(
            &app,
            &signed,
            &TokenFilters::default(),
            String::new(),
            failed("name", "A name has at most 200 characters.".into()),
        )
        .await;
    }
    let resource = match app.tokens.existing_resource(signed.caller.account(), resource_text).await {
        Ok(resource) => resource,
        Err(AppError::BadRequest(problem)) => {
            let state = failed("resource", format!("Not a resource to make a token for: {problem}."));
            return tokens_page(&app, &signed, &TokenFilters::default(), String::new(), state).await;
        }
        Err(other) => return Err(other.into()),
    };
    let rights = if write { Rights::ReadWrite } else { Rights::Read };
    let mut tags = std::collections::BTreeMap::new();
    if !name.is_empty() {
        tags.insert("name".to_owned(), name.to_owned());
    }
    let new = NewToken {
        tags,
        resource: Some(resource.to_string()),
        ..NewToken::new(TokenKind::Resource, resource.scope(), rights, name.to_owned(), None)
    };
    let shown = Shown {
        section: "tokens",
        scope: format!("resource {resource}, {}", format::rights_text(rights)),
        back: format!("{PREFIX}/tokens"),
        back_label: "Back to tokens".into(),
    };
    match mint_and_show(&app, &signed, new, shown).await? {
        Ok(page) => Ok(page),
        Err(refusal) => {
            tokens_page(&app, &signed, &TokenFilters::default(), String::new(), failed("resource", refusal)).await
        }
    }
}

/// Where a form may send the visitor back to: a console path of ours, nothing else (no open redirect).
pub(super) fn back_to(form: &Form, default: &str) -> String {
    let back = form.trimmed("back");
    // Printable ASCII only: anything else cannot be a Location header (a bare 500, after the deletion was done).
    let ours = back.starts_with("/console/")
        && back.bytes().all(|byte| byte.is_ascii_graphic())
        && !back.contains("//")
        && !back.contains("..")
        && !back.contains(['\\', ':']);
    if ours { back.to_owned() } else { default.to_owned() }
}

fn with_done(path: &str, done: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}done={done}")
}

/// `POST /console/tokens/{id}/delete`: revokes a token the visitor manages (anyone else's is "not found", as on
/// the API). The visitor's own session is ended by signing out, not here.
pub(super) async fn delete(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    let (token, permit) = app.tokens.managed(&signed.caller, token_id(&id)?).await?;
    if token.family.is_some() && token.family == signed.caller.record.family {
        return Err(Failure::Page(
            StatusCode::CONFLICT,
            "This is the session you are using. Sign out to end it.".into(),
        ));
    }
    app.tokens.revoke(&signed.caller, &permit, &token).await?;
    Ok(see_other(with_done(&back_to(&form, &format!("{PREFIX}/tokens")), "token-deleted")))
}

fn token_id(text: &str) -> Result<TokenId, Failure> {
    text.parse().map_err(|_| Failure::App(AppError::NotFound("token")))
}

/// The page a token table's form was posted from (its `back`), shown again with a refusal beside the row that
/// asked. Anything else is the tokens page.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TablePage {
    Tokens(TokenFilters),
    Collection(CollectionId),
    Device(DeviceId),
    Account,
}

impl TablePage {
    /// `back` is a console path already (`back_to`).
    fn of(back: &str) -> TablePage {
        let (path, query) = back.split_once('?').unwrap_or((back, ""));
        let segments: Vec<&str> = path.strip_prefix(PREFIX).unwrap_or("").trim_matches('/').split('/').collect();
        let tokens_page = || {
            let query = QueryParams(crate::http::form_urlencoded_pairs(query).into_iter().collect());
            TablePage::Tokens(TokenFilters::from_query(&query).unwrap_or_default())
        };
        match segments.as_slice() {
            ["collections", id] => id.parse().map(TablePage::Collection).unwrap_or_else(|_| tokens_page()),
            ["devices", id] => id.parse().map(TablePage::Device).unwrap_or_else(|_| tokens_page()),
            ["account"] => TablePage::Account,
            _ => tokens_page(),
        }
    }

    /// The navigation item of that page.
    fn section(&self) -> &'static str {
        match self {
            TablePage::Tokens(_) => "tokens",
            TablePage::Collection(_) | TablePage::Device(_) => "collections",
            TablePage::Account => "account",
        }
    }

    fn back_label(&self) -> &'static str {
        match self {
            TablePage::Tokens(_) => "Back to the tokens",
            TablePage::Collection(_) => "Back to the collection",
            TablePage::Device(_) => "Back to the device",
            TablePage::Account => "Back to the account",
        }
    }

    /// The page again, with `state` (a refusal beside a row of its token table).
    async fn show(self, app: &App, signed: &SignedIn, state: FormState) -> PageResult {
        match self {
            TablePage::Tokens(filters) => tokens_page(app, signed, &filters, String::new(), state).await,
            TablePage::Collection(id) => super::collections::form_again(app, signed, id, state).await,
            TablePage::Device(id) => super::devices::form_again(app, signed, id, state).await,
            TablePage::Account => super::account::form_again(app, signed, state).await,
        }
    }
}

/// A service's refusal of what a row asked, for the page to show beside that row; the server's own failures
/// (and a session that ended meanwhile) are not the visitor's to read there.
fn refused_in_row(token: &str, error: AppError) -> Result<FormState, Failure> {
    if matches!(error, AppError::Internal(_) | AppError::Unavailable(_)) || error.is_unauthenticated() {
        return Err(error.into());
    }
    Ok(FormState::failed("token-row", "token", super::explain(&error)).keep("token", token))
}

/// `POST /console/tokens/{id}/rotate` (`overlap` in seconds, `back`): a new secret for a token the visitor
/// manages, shown this once as the answer; the old one works for the overlap. Anyone else's token is "not
/// found", as on the API.
pub(super) async fn rotate(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    let back = back_to(&form, &format!("{PREFIX}/tokens"));
    let page = TablePage::of(&back);
    let (token, permit) = app.tokens.managed(&signed.caller, token_id(&id)?).await?;
    let overlap = match form.trimmed("overlap") {
        "" => 0,
        text => match text.parse::<u64>() {
            Ok(seconds) => seconds,
            Err(_) => {
                let message = format!("'{text}' is not a number of seconds for the old secret to go on working.");
                let state = FormState::failed("token-row", "token", message).keep("token", &id);
                return page.show(&app, &signed, state).await;
            }
        },
    };
    // Everything the answer shows is read before the rotation: once it is made, its secret must reach the
    // visitor (with no overlap, the old one already stopped).
    let user = app.people.user_of(&signed.caller).await?;
    let names = format::names_for(&app, &signed, &user).await;
    let chrome = Chrome::for_user(&user, &signed, page.section());
    match app.tokens.rotate(&signed.caller, &permit, &token, Duration::from_secs(overlap)).await {
        Ok((rotated, secret)) => {
            let rotation = match rotated.previous_valid_until_ms.filter(|until| *until > now_ms()) {
                Some(until) => format!(
                    "The old secret goes on working until {} ({} from now), then it is refused: give the new one to \
                     whatever uses this token before then.",
                    format::when(until),
                    format::duration_text(overlap)
                ),
                None => "The old secret is refused from now on: give the new one to whatever uses this token.".into(),
            };
            render(SecretPage {
                chrome,
                kind: format::kind_text(rotated.kind),
                name: if rotated.name.is_empty() { "(unnamed)".into() } else { rotated.name.clone() },
                scope: format::scope_text(&rotated, &names).0,
                secret: secret.expose().to_owned(),
                rotation,
                back_label: page.back_label().into(),
                back,
            })
        }
        Err(error) => {
            let state = refused_in_row(&id, AppError::from(error))?;
            page.show(&app, &signed, state).await
        }
    }
}

/// `POST /console/tokens/{id}/disable`: whatever uses the token is refused until it is enabled again.
pub(super) async fn disable(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    set_enabled(&app, &signed, &id, &form, false).await
}

/// `POST /console/tokens/{id}/enable`: the same secret works again.
pub(super) async fn enable(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    set_enabled(&app, &signed, &id, &form, true).await
}

async fn set_enabled(app: &App, signed: &SignedIn, id: &str, form: &Form, enabled: bool) -> PageResult {
    let back = back_to(form, &format!("{PREFIX}/tokens"));
    let (token, permit) = app.tokens.managed(&signed.caller, token_id(id)?).await?;
    match app.tokens.set_enabled(&signed.caller, &permit, &token, enabled).await {
        Ok(_) => Ok(see_other(with_done(&back, if enabled { "token-enabled" } else { "token-disabled" }))),
        Err(error) => {
            let state = refused_in_row(id, AppError::from(error))?;
            TablePage::of(&back).show(app, signed, state).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(back: &str) -> Form {
        let body = format!("back={}", back.replace('&', "%26"));
        let mut fields = std::collections::HashMap::new();
        for (name, value) in crate::http::form_urlencoded_pairs(&body) {
            fields.insert(name, value);
        }
        Form::from_fields(fields)
    }

    #[test]
    fn a_form_sends_back_only_to_console_paths() {
        assert_eq!(back_to(&form("/console/devices/abc"), "/d"), "/console/devices/abc");
        for foreign in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console/..\\x",
            "/v1/tokens",
            "",
            "/console/\x7f",
            "/console/a\r\nb",
        ] {
            assert_eq!(back_to(&form(foreign), "/d"), "/d", "{foreign}");
        }
        assert_eq!(with_done("/console/tokens?kind=device", "x"), "/console/tokens?kind=device&done=x");
        assert_eq!(with_done("/console/tokens", "x"), "/console/tokens?done=x");
    }

    #[test]
    fn a_refusal_is_shown_again_on_the_page_the_row_was_on() {
        let collection: CollectionId = "0000000000001".parse().unwrap();
        assert_eq!(TablePage::of("/console/collections/0000000000001"), TablePage::Collection(collection));
        assert_eq!(TablePage::of("/console/account"), TablePage::Account);
        let filtered = TablePage::of("/console/tokens?kind=device&unused_for_days=30");
        let filters = TokenFilters { kind: Some("device"), unused_days: Some(30), expiring_days: None };
        assert_eq!(filtered, TablePage::Tokens(filters.clone()));
        assert_eq!(filters.link(), "/console/tokens?kind=device&unused_for_days=30");
        for other in ["/console/collections/nonsense", "/console/tokens?unused_for_days=x", "/console/teams/abc"] {
            assert_eq!(TablePage::of(other), TablePage::Tokens(TokenFilters::default()), "{other}");
        }
    }
}
