//! Tokens: every kind the visitor manages in one table (`/console/tokens`), Horde's resource tokens generated
//! there, and the delete button every token table has. Which tokens a visitor sees, mints and deletes is
//! `TokenService`'s answer (the core's token rule), exactly as on the API.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tessera_core::{Rights, Scope, TokenKind};
use tessera_store::Page;

use super::format::{self, Chrome, FormState, Names, SecretPage, TokenRow};
use super::session::{Form, Signed, SignedIn};
use super::{Failure, PREFIX, PageResult, render, render_with, see_other};
use crate::app::{App, AppError};
use crate::http::QueryParams;
use crate::time::now_ms;
use crate::tokens::NewToken;

/// Tokens a table shows at most: a collection whose devices each have a token would otherwise render one
/// form per device on every visit.
const TOKENS_SHOWN: u64 = 500;

/// The rows of the tokens the visitor manages at `scope` (every scope when `None`), newest first, at most
/// `TOKENS_SHOWN` of them, and a note when there are more. Revoked tokens are not listed (the store leaves them
/// out).
pub(super) async fn token_rows(
    app: &App,
    signed: &SignedIn,
    scope: Option<Scope>,
    names: &Names,
) -> Result<(Vec<TokenRow>, String), AppError> {
    let listed =
        app.tokens.list(&signed.caller, scope, Default::default(), Page { number: 1, size: TOKENS_SHOWN }).await?;
    let mut tokens = listed.items;
    // A login session is one row (its access token); its refresh token is deleted with it.
    tokens.retain(|token| token.kind != TokenKind::Refresh);
    tokens.sort_by_key(|token| std::cmp::Reverse(token.created_at_ms));
    let this_session = signed.caller.record.family;
    let rows = tokens.iter().map(|token| TokenRow::of(token, names, this_session)).collect();
    let note = if listed.total > TOKENS_SHOWN {
        format!("Showing {TOKENS_SHOWN} of {} tokens; the API lists them all (GET /v1/tokens).", listed.total)
    } else {
        String::new()
    };
    Ok((rows, note))
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
struct KindChoice {
    value: &'static str,
    label: &'static str,
}

const KIND_FILTERS: [KindChoice; 7] = [
    KindChoice { value: "api-key", label: "API keys" },
    KindChoice { value: "account", label: "Account tokens" },
    KindChoice { value: "organization", label: "Organization tokens" },
    KindChoice { value: "device", label: "Device tokens" },
    KindChoice { value: "ground", label: "Ground tokens" },
    KindChoice { value: "resource", label: "Resource tokens" },
    KindChoice { value: "session", label: "Login sessions" },
];

fn kind_of_filter(value: &str) -> Option<TokenKind> {
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

#[derive(Debug, Template)]
#[template(path = "console/tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    tokens_note: String,
    kinds: Vec<KindChoice>,
    kind: String,
    back: String,
    notice: &'static str,
    form: FormState,
}

async fn tokens_page(app: &App, signed: &SignedIn, kind: &str, notice: &'static str, form: FormState) -> PageResult {
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, signed, "tokens");
    let names = format::names_for(app, signed, &user).await;
    let wanted = kind_of_filter(kind);
    let (mut tokens, tokens_note) = token_rows(app, signed, None, &names).await?;
    if let Some(wanted) = wanted {
        tokens.retain(|row| row.kind == format::kind_text(wanted));
    }
    let status = form.status();
    let kind = if wanted.is_some() { kind.to_owned() } else { String::new() };
    let back = if kind.is_empty() { format!("{PREFIX}/tokens") } else { format!("{PREFIX}/tokens?kind={kind}") };
    render_with(
        status,
        TokensPage { chrome, tokens, tokens_note, kinds: KIND_FILTERS.to_vec(), kind, back, notice, form },
    )
}

pub(super) async fn list(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let notice = match query.text("done") {
        Some("token-deleted") => "The token is deleted.",
        _ => "",
    };
    tokens_page(&app, &signed, query.text("kind").unwrap_or(""), notice, FormState::default()).await
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
        return tokens_page(&app, &signed, "", "", failed("name", "A name has at most 200 characters.".into())).await;
    }
    let resource = match app.tokens.existing_resource(signed.caller.account(), resource_text).await {
        Ok(resource) => resource,
        Err(AppError::BadRequest(problem)) => {
            let state = failed("resource", format!("Not a resource to make a token for: {problem}."));
            return tokens_page(&app, &signed, "", "", state).await;
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
        Err(refusal) => tokens_page(&app, &signed, "", "", failed("resource", refusal)).await,
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
    let id = id.parse().map_err(|_| Failure::App(AppError::NotFound("token")))?;
    let (token, permit) = app.tokens.managed(&signed.caller, id).await?;
    if token.family.is_some() && token.family == signed.caller.record.family {
        return Err(Failure::Page(
            StatusCode::CONFLICT,
            "This is the session you are using. Sign out to end it.".into(),
        ));
    }
    app.tokens.revoke(&signed.caller, &permit, &token).await?;
    Ok(see_other(with_done(&back_to(&form, &format!("{PREFIX}/tokens")), "token-deleted")))
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
}
