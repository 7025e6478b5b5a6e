//! The account page, for its administrators: the account's id, its API keys (the master keys Ubidots scripts
//! exchange for tokens) and its account tokens, generating an account token, revoking every token of a kind at
//! once, and the expiry policy per kind of token (`TokenService::set_policy`, which caps what is minted later).

use askama::Template;
use axum::extract::{Path, State};
use tessera_core::{Action, Permit, Rights, Scope, Target, TokenKind};
use tessera_store::{TokenPolicy, TokenSelection};

use super::format::{self, Chrome, FormState, TokenRow};
use super::session::{Form, Signed, SignedIn};
use super::tokens::{
    KIND_FILTERS, KindChoice, Shown, expiry_from_form, kind_of_filter, mint_and_show, token_notice, token_rows,
};
use super::{Failure, PREFIX, PageResult, render_with, see_other};
use crate::app::{App, AppError};
use crate::http::QueryParams;
use crate::http::native::lifecycle::MAX_POLICY_LIFETIME_SECONDS;
use crate::tokens::NewToken;

/// The kinds an expiry policy is set for here; login sessions live as the server's session settings say.
const POLICY_KINDS: [TokenKind; 6] = [
    TokenKind::ApiKey,
    TokenKind::Account,
    TokenKind::Collection,
    TokenKind::Device,
    TokenKind::Ground,
    TokenKind::Resource,
];

/// The units a lifetime is typed in, largest first (a stored lifetime is shown in the largest that says it
/// exactly).
const LIFETIME_UNITS: [(&str, u64); 4] = [("days", 86_400), ("hours", 3_600), ("minutes", 60), ("seconds", 1)];

/// One kind's policy as its form shows it: what is stored, or what was typed when saving it failed.
#[derive(Debug, Clone)]
struct PolicyRow {
    kind: &'static str,
    label: &'static str,
    max_amount: String,
    max_unit: String,
    default_amount: String,
    default_unit: String,
    max_error: String,
    default_error: String,
    error: String,
}

#[derive(Debug, Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    chrome: Chrome,
    account: String,
    tokens_note: String,
    api_keys: Vec<TokenRow>,
    account_tokens: Vec<TokenRow>,
    policies: Vec<PolicyRow>,
    /// A refusal of a policy for a kind the page has no form for (a login session, posted by hand).
    policy_error: String,
    units: Vec<&'static str>,
    kinds: Vec<KindChoice>,
    back: String,
    notice: String,
    form: FormState,
}

fn administrator(signed: &SignedIn) -> Result<Permit, Failure> {
    // The page is an administrator's: anyone else is refused as the API would refuse them.
    Ok(signed.caller.authorize(Action::ManageUsers, &Target::account(signed.caller.account()))?)
}

/// A lifetime in the largest unit that says it exactly, for its form (empty: none).
fn amount_and_unit(seconds: Option<u64>) -> (String, String) {
    match seconds {
        None => (String::new(), "days".into()),
        Some(seconds) => LIFETIME_UNITS
            .iter()
            .find(|(_, unit)| seconds % unit == 0)
            .map(|(name, unit)| ((seconds / unit).to_string(), (*name).to_owned()))
            .unwrap_or_else(|| (seconds.to_string(), "seconds".into())),
    }
}

/// A lifetime typed in a policy form: `field` (a whole number, empty for none) in the unit of `{field}_unit`.
fn lifetime_from_form(amount: &str, unit: &str) -> Result<Option<u64>, String> {
    if amount.is_empty() {
        return Ok(None);
    }
    let Some((_, unit)) = LIFETIME_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err("Choose days, hours, minutes or seconds.".into());
    };
    let amount: u64 = amount.parse().map_err(|_| format!("'{amount}' is not a whole number."))?;
    match amount.checked_mul(*unit) {
        Some(seconds) if seconds <= MAX_POLICY_LIFETIME_SECONDS => Ok(Some(seconds)),
        _ => Err("A lifetime is at most 100 years.".into()),
    }
}

fn policy_rows(policies: &[TokenPolicy], form: &FormState) -> Vec<PolicyRow> {
    POLICY_KINDS
        .iter()
        .map(|kind| {
            let stored = policies.iter().find(|policy| policy.kind == *kind);
            let (max_amount, max_unit) = amount_and_unit(stored.and_then(|policy| policy.max_lifetime_seconds));
            let (default_amount, default_unit) =
                amount_and_unit(stored.and_then(|policy| policy.default_lifetime_seconds));
            let mut row = PolicyRow {
                kind: kind.as_str(),
                label: format::kind_text(*kind),
                max_amount,
                max_unit,
                default_amount,
                default_unit,
                max_error: String::new(),
                default_error: String::new(),
                error: String::new(),
            };
            if form.value("policy", "kind") == kind.as_str() {
                // What was typed stays, beside what was wrong with it.
                row.max_amount = form.value("policy", "max").to_owned();
                row.max_unit = form.value("policy", "max_unit").to_owned();
                row.default_amount = form.value("policy", "default").to_owned();
                row.default_unit = form.value("policy", "default_unit").to_owned();
                row.max_error = form.error("policy", "max").to_owned();
                row.default_error = form.error("policy", "default").to_owned();
                row.error = form.error("policy", "policy").to_owned();
            }
            row
        })
        .collect()
}

async fn account_page(app: &App, signed: &SignedIn, notice: String, form: FormState) -> PageResult {
    administrator(signed)?;
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, signed, "account");
    let names = format::names_for(app, signed, &user).await;
    let (rows, tokens_note) = token_rows(app, signed, Some(Scope::Account), Default::default(), &names).await?;
    let (api_keys, account_tokens) = rows.into_iter().partition(|row| row.kind == format::kind_text(TokenKind::ApiKey));
    let account_tokens: Vec<TokenRow> = account_tokens;
    let account_tokens =
        account_tokens.into_iter().filter(|row| row.kind == format::kind_text(TokenKind::Account)).collect();
    let policies = app.tokens.policies(&signed.caller).await?;
    let offered = POLICY_KINDS.iter().any(|kind| form.value("policy", "kind") == kind.as_str());
    let policy_error = if form.form == "policy" && !offered { form.all_errors() } else { String::new() };
    let status = form.status();
    render_with(
        status,
        AccountPage {
            chrome,
            account: signed.caller.account().to_string(),
            tokens_note,
            api_keys,
            account_tokens,
            policies: policy_rows(&policies, &form),
            policy_error,
            units: LIFETIME_UNITS.iter().map(|(name, _)| *name).collect(),
            kinds: KIND_FILTERS.to_vec(),
            back: format!("{PREFIX}/account"),
            notice,
            form,
        },
    )
}

/// The account page shown again after one of its forms (or a row of its token tables) failed.
pub(super) async fn form_again(app: &App, signed: &SignedIn, form: FormState) -> PageResult {
    account_page(app, signed, String::new(), form).await
}

pub(super) async fn page(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let notice = match query.text("done") {
        Some("policy-saved") => "The policy is saved. It applies to the tokens made from now on.".into(),
        _ => token_notice(&query),
    };
    account_page(&app, &signed, notice, FormState::default()).await
}

/// `POST /console/account`: a new account token (Ubidots' `auth/token`: the account's data, for scripts).
pub(super) async fn create_account_token(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    administrator(&signed)?;
    let name = form.trimmed("name");
    let rights = if form.trimmed("rights") == "read" { Rights::Read } else { Rights::ReadWrite };
    let failed = |field, message: String| {
        FormState::failed("token", field, message).keep("name", name).keep("expires_days", form.trimmed("expires_days"))
    };
    if name.chars().count() > 200 {
        return form_again(&app, &signed, failed("name", "A name has at most 200 characters.".into())).await;
    }
    let expires_at_ms = match expiry_from_form(&form) {
        Ok(expiry) => expiry,
        Err(message) => return form_again(&app, &signed, failed("expires_days", message)).await,
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
        Err(refusal) => form_again(&app, &signed, failed("name", refusal)).await,
    }
}

/// `POST /console/account/tokens/revoke` (`kind`): every token of that kind in the account, revoked at once
/// (`TokenService::revoke_selection`); the page says how many.
pub(super) async fn revoke_kind(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    administrator(&signed)?;
    let chosen = form.trimmed("kind");
    let Some(kind) = kind_of_filter(chosen) else {
        let state = FormState::failed("revoke", "kind", "Choose a kind of token.").keep("kind", chosen);
        return form_again(&app, &signed, state).await;
    };
    let selection = TokenSelection { kind: Some(kind), ..TokenSelection::default() };
    match app.tokens.revoke_selection(&signed.caller, selection).await.map_err(AppError::from) {
        Ok(count) => Ok(see_other(format!("{PREFIX}/account?done=tokens-revoked&count={count}"))),
        Err(error @ (AppError::Denied(_) | AppError::BadRequest(_) | AppError::NotFound(_))) => {
            let state = FormState::failed("revoke", "kind", super::explain(&error)).keep("kind", chosen);
            form_again(&app, &signed, state).await
        }
        Err(other) => Err(other.into()),
    }
}

/// `POST /console/account/policies/{kind}` (`max`, `max_unit`, `default`, `default_unit`; an empty amount is
/// none): the account's expiry policy for one kind of token. The service refuses what the API refuses (a
/// default longer than the maximum, a lifetime of 0, a login session), said beside the form.
pub(super) async fn set_policy(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(kind): Path<String>,
    form: Form,
) -> PageResult {
    let permit = administrator(&signed)?;
    let kind = TokenKind::from_name(&kind).ok_or(Failure::App(AppError::NotFound("token kind")))?;
    let fields = ["max", "max_unit", "default", "default_unit"];
    let failed = |field, message: String| {
        fields
            .iter()
            .fold(FormState::failed("policy", field, message), |state, name| state.keep(name, form.trimmed(name)))
            .keep("kind", kind.as_str())
    };
    let max = match lifetime_from_form(form.trimmed("max"), form.trimmed("max_unit")) {
        Ok(max) => max,
        Err(message) => return form_again(&app, &signed, failed("max", message)).await,
    };
    let default = match lifetime_from_form(form.trimmed("default"), form.trimmed("default_unit")) {
        Ok(default) => default,
        Err(message) => return form_again(&app, &signed, failed("default", message)).await,
    };
    let policy = TokenPolicy { kind, max_lifetime_seconds: max, default_lifetime_seconds: default };
    match app.tokens.set_policy(&signed.caller, &permit, policy).await.map_err(AppError::from) {
        Ok(()) => Ok(see_other(format!("{PREFIX}/account?done=policy-saved#policy-{}", kind.as_str()))),
        Err(error @ (AppError::Denied(_) | AppError::BadRequest(_) | AppError::NotFound(_))) => {
            form_again(&app, &signed, failed("policy", super::explain(&error))).await
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifetime_reads_and_shows_in_its_unit() {
        assert_eq!(lifetime_from_form("", "days"), Ok(None));
        assert_eq!(lifetime_from_form("90", "days"), Ok(Some(90 * 86_400)));
        assert_eq!(lifetime_from_form("10", "minutes"), Ok(Some(600)));
        assert!(lifetime_from_form("-1", "days").is_err());
        assert!(lifetime_from_form("1.5", "hours").is_err());
        assert!(lifetime_from_form("1", "fortnights").is_err());
        assert!(lifetime_from_form("36501", "days").is_err(), "more than 100 years");
        assert_eq!(amount_and_unit(Some(3_600)), ("1".to_owned(), "hours".to_owned()));
        assert_eq!(amount_and_unit(Some(90)), ("90".to_owned(), "seconds".to_owned()));
        assert_eq!(amount_and_unit(None), (String::new(), "days".to_owned()));
    }
}
