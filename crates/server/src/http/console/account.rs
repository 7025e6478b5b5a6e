//! The account page, for its administrators: the account's id, its API keys (the master keys Ubidots scripts
//! exchange for tokens) and its account tokens, and generating an account token.

use askama::Template;
use axum::extract::State;
use tessera_core::{Action, Rights, Scope, Target, TokenKind};

use super::format::{self, Chrome, FormState, TokenRow};
use super::session::{Form, Signed, SignedIn};
use super::tokens::{Shown, expiry_from_form, mint_and_show, token_rows};
use super::{PREFIX, PageResult, render_with};
use crate::app::App;
use crate::http::QueryParams;
use crate::tokens::NewToken;

#[derive(Debug, Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    chrome: Chrome,
    account: String,
    tokens_note: String,
    api_keys: Vec<TokenRow>,
    account_tokens: Vec<TokenRow>,
    back: String,
    notice: &'static str,
    form: FormState,
}

async fn account_page(app: &App, signed: &SignedIn, notice: &'static str, form: FormState) -> PageResult {
    // The page is an administrator's: anyone else is refused as the API would refuse them.
    signed.caller.authorize(Action::ManageUsers, &Target::account(signed.caller.account()))?;
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, signed, "account");
    let names = format::names_for(app, signed, &user).await;
    let (rows, tokens_note) = token_rows(app, signed, Some(Scope::Account), &names).await?;
    let (api_keys, account_tokens) = rows.into_iter().partition(|row| row.kind == format::kind_text(TokenKind::ApiKey));
    let account_tokens: Vec<TokenRow> = account_tokens;
    let account_tokens =
        account_tokens.into_iter().filter(|row| row.kind == format::kind_text(TokenKind::Account)).collect();
    let status = form.status();
    render_with(
        status,
        AccountPage {
            chrome,
            account: signed.caller.account().to_string(),
            tokens_note,
            api_keys,
            account_tokens,
            back: format!("{PREFIX}/account"),
            notice,
            form,
        },
    )
}

pub(super) async fn page(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let notice = match query.text("done") {
        Some("token-deleted") => "The token is deleted.",
        _ => "",
    };
    account_page(&app, &signed, notice, FormState::default()).await
}

/// `POST /console/account`: a new account token (Ubidots' `auth/token`: the account's data, for scripts).
pub(super) async fn create_account_token(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    signed.caller.authorize(Action::ManageUsers, &Target::account(signed.caller.account()))?;
    let name = form.trimmed("name");
    let rights = if form.trimmed("rights") == "read" { Rights::Read } else { Rights::ReadWrite };
    let failed = |field, message: String| {
        FormState::failed("token", field, message).keep("name", name).keep("expires_days", form.trimmed("expires_days"))
    };
    if name.chars().count() > 200 {
        return account_page(&app, &signed, "", failed("name", "A name has at most 200 characters.".into())).await;
    }
    let expires_at_ms = match expiry_from_form(&form) {
        Ok(expiry) => expiry,
        Err(message) => return account_page(&app, &signed, "", failed("expires_days", message)).await,
    };
    let new = NewToken::new(TokenKind::Account, Scope::Account, rights, name.to_owned(), expires_at_ms);
    let shown = Shown {
        section: "account",
        scope: format!("the whole account, {}", format::rights_text(rights)),
        back: format!("{PREFIX}/account"),
        back_label: "Back to the account".into(),
    };
    match mint_and_show(&app, &signed, new, shown).await? {
        Ok(page) => Ok(page),
        Err(refusal) => account_page(&app, &signed, "", failed("name", refusal)).await,
    }
}
