//! The account's users, for its administrators: the list, adding one, and making one an administrator (or not).
//! `PeopleService` decides, under a `ManageUsers` permit that only an administrator's session gets.

use askama::Template;
use axum::extract::{Path, State};
use tessera_core::{Action, Creator, Target, UserId};
use tessera_store::TokenSelection;

use super::format::{self, Chrome, FormState};
use super::session::{Form, Signed, SignedIn};
use super::tokens::token_notice;
use super::{Failure, PREFIX, PageResult, render_with, see_other};
use crate::app::{App, AppError};
use crate::http::QueryParams;
use crate::people::NewUser;

#[derive(Debug, Clone)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    is_admin: bool,
    second_factor: bool,
    created: String,
    is_you: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    notice: String,
    form: FormState,
}

fn permit(signed: &SignedIn) -> Result<tessera_core::Permit, Failure> {
    Ok(signed.caller.authorize(Action::ManageUsers, &Target::account(signed.caller.account()))?)
}

async fn users_page(app: &App, signed: &SignedIn, notice: String, form: FormState) -> PageResult {
    let permit = permit(signed)?;
    let me = app.people.user_of(&signed.caller).await?;
    let mut users: Vec<UserRow> = app
        .people
        .list_users(&permit)
        .await?
        .into_iter()
        .map(|user| UserRow {
            id: user.id.to_string(),
            is_you: user.id == me.id,
            email: user.email,
            name: user.display_name,
            is_admin: user.is_admin,
            second_factor: user.totp.is_some_and(|totp| totp.enabled),
            created: format::when(user.created_at_ms),
        })
        .collect();
    users.sort_by(|a, b| a.email.cmp(&b.email));
    let status = form.status();
    render_with(status, UsersPage { chrome: Chrome::for_user(&me, signed, "users"), users, notice, form })
}

pub(super) async fn list(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let notice = match query.text("done") {
        Some("added") => "The user is added. They sign in with the password you chose and should change it.".into(),
        Some("admin") => "The user is an account administrator now.".into(),
        Some("member") => "The user is no longer an account administrator.".into(),
        _ => token_notice(&query),
    };
    users_page(&app, &signed, notice, FormState::default()).await
}

pub(super) async fn create(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    let permit = permit(&signed)?;
    let email = form.trimmed("email");
    let name = form.trimmed("name");
    let is_admin = form.checked("admin");
    let failed = |field, message: String| {
        let state = FormState::failed("create", field, message).keep("email", email).keep("name", name);
        if is_admin { state.keep("admin", "on") } else { state }
    };
    if name.chars().count() > 200 {
        return users_page(&app, &signed, String::new(), failed("name", "A name has at most 200 characters.".into()))
            .await;
    }
    let new = NewUser {
        email: email.to_owned(),
        password: form.text("password").to_owned(),
        display_name: name.to_owned(),
        phone: String::new(),
        is_admin,
    };
    match app.people.create_user(&permit, new).await {
        Ok(_) => Ok(see_other(format!("{PREFIX}/users?done=added"))),
        Err(AppError::BadRequest(message)) => {
            let field = if message.contains("password") { "password" } else { "email" };
            users_page(&app, &signed, String::new(), failed(field, super::capitalize(&message))).await
        }
        Err(AppError::Conflict(message)) => {
            users_page(&app, &signed, String::new(), failed("email", super::capitalize(&message))).await
        }
        Err(other) => Err(other.into()),
    }
}

pub(super) async fn set_admin(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    let permit = permit(&signed)?;
    let user: UserId = id.parse().map_err(|_| Failure::App(AppError::NotFound("user")))?;
    let make_admin = form.trimmed("admin") == "yes";
    match app.people.set_admin(&permit, user, make_admin).await {
        Ok(_) => Ok(see_other(format!("{PREFIX}/users?done={}", if make_admin { "admin" } else { "member" }))),
        Err(
            error @ (AppError::Conflict(_) | AppError::BadRequest(_) | AppError::Denied(_) | AppError::NotFound(_)),
        ) => users_page(&app, &signed, String::new(), FormState::failed("admin", "user", super::explain(&error))).await,
        Err(other) => Err(other.into()),
    }
}

/// `POST /console/users/{id}/tokens/revoke`: every token the user made and every session of theirs, revoked at
/// once (an administrator's work: a departing person, a stolen laptop); the page says how many.
pub(super) async fn revoke_tokens(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
) -> PageResult {
    permit(&signed)?;
    let user: UserId = id.parse().map_err(|_| Failure::App(AppError::NotFound("user")))?;
    let selection = TokenSelection { creator: Some(Creator::User(user)), ..TokenSelection::default() };
    match app.tokens.revoke_selection(&signed.caller, selection).await.map_err(AppError::from) {
        Ok(count) => Ok(see_other(format!("{PREFIX}/users?done=tokens-revoked&count={count}"))),
        Err(error @ (AppError::Denied(_) | AppError::BadRequest(_) | AppError::NotFound(_))) => {
            users_page(&app, &signed, String::new(), FormState::failed("admin", "user", super::explain(&error))).await
        }
        Err(other) => Err(other.into()),
    }
}
