//! The signed-in person's own page: their second factor (enrolled from a QR code, confirmed with a code, its
//! recovery codes shown once; disabled with a code) and their password.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;

use super::format::{Chrome, FormState};
use super::session::{Form, Signed, SignedIn};
use super::{Failure, PREFIX, PageResult, render, render_with, see_other};
use crate::app::App;
use crate::http::QueryParams;
use crate::people::LoginError;

#[derive(Debug, Template)]
#[template(path = "console/profile.html")]
struct ProfilePage {
    chrome: Chrome,
    email: String,
    display_name: String,
    is_admin: bool,
    /// "off", "pending" (enrollment started, never confirmed) or "on".
    second_factor: &'static str,
    notice: &'static str,
    form: FormState,
}

#[derive(Debug, Template)]
#[template(path = "console/totp_enroll.html")]
struct EnrollPage {
    chrome: Chrome,
    /// The QR code (SVG made by the `qrcode` crate from the otpauth URI: no text of the user's in it but the
    /// email, which the crate encodes as modules, not markup).
    qr_svg: String,
    /// The key as text, for phones that cannot scan; empty when the page is shown again after a wrong code.
    key: String,
    error: String,
}

#[derive(Debug, Template)]
#[template(path = "console/recovery_codes.html")]
struct RecoveryCodesPage {
    chrome: Chrome,
    codes: Vec<String>,
}

fn notice_of(query: &QueryParams) -> &'static str {
    match query.text("done") {
        Some("totp-on") => "Your second factor is on. Signing in now asks for a code.",
        Some("totp-off") => "Your second factor is off.",
        Some("password") => "Your password is changed. Your other sessions were signed out.",
        _ => "",
    }
}

async fn profile_page(app: &App, signed: &SignedIn, notice: &'static str, form: FormState) -> PageResult {
    let user = app.people.user_of(&signed.caller).await?;
    let second_factor = match &user.totp {
        None => "off",
        Some(totp) if totp.enabled => "on",
        Some(_) => "pending",
    };
    let status = form.status();
    render_with(
        status,
        ProfilePage {
            chrome: Chrome::for_user(&user, signed, "profile"),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            is_admin: user.is_admin,
            second_factor,
            notice,
            form,
        },
    )
}

pub(super) async fn page(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    profile_page(&app, &signed, notice_of(&query), FormState::default()).await
}

/// The caller may change their own login (a user's session, as the API's `/v1/me/totp` requires).
fn own_login(signed: &SignedIn) -> Result<(), Failure> {
    let account = tessera_core::Target::account(signed.caller.account());
    signed.caller.authorize(tessera_core::Action::ManageOwnLogin, &account)?;
    Ok(())
}

pub(super) async fn start_totp(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    own_login(&signed)?;
    // The password first: someone who took over a session must not bind the account to their own phone.
    if let Err(error) = app.people.confirm_password(&signed.caller, form.text("password")).await {
        let message = match error {
            LoginError::Throttled(wait) => {
                format!("Too many wrong passwords. Try again in {} s.", wait.as_secs().max(1))
            }
            LoginError::InvalidGrant | LoginError::Failed(crate::app::AppError::BadRequest(_)) => {
                "That is not your current password.".to_owned()
            }
            LoginError::Failed(other) => return Err(Failure::App(other)),
        };
        return profile_page(&app, &signed, "", FormState::failed("totp", "password", message)).await;
    }
    let user = app.people.user_of(&signed.caller).await?;
    let enrollment = app.people.start_totp(&signed.caller, &user).await?;
    // The crate's SVG starts with an XML declaration, which has no place inside HTML.
    let qr_svg = match enrollment.qr_svg.find("<svg") {
        Some(start) => enrollment.qr_svg[start..].to_owned(),
        None => enrollment.qr_svg.clone(),
    };
    render(EnrollPage {
        chrome: Chrome::for_user(&user, &signed, "profile"),
        qr_svg,
        key: enrollment.secret.to_base32(),
        error: String::new(),
    })
}

pub(super) async fn confirm_totp(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    own_login(&signed)?;
    let user = app.people.user_of(&signed.caller).await?;
    match app.people.confirm_totp(&signed.caller, &user, form.trimmed("code")).await {
        Ok(codes) => render(RecoveryCodesPage { chrome: Chrome::for_user(&user, &signed, "profile"), codes }),
        Err(error) => {
            let message = match error {
                LoginError::Throttled(wait) => {
                    format!("Too many wrong codes. Try again in {} s.", wait.as_secs().max(1))
                }
                LoginError::InvalidGrant => "That code was not accepted.".to_owned(),
                LoginError::Failed(crate::app::AppError::Conflict(text)) => {
                    return profile_page(&app, &signed, "", FormState::failed("totp", "code", text)).await;
                }
                LoginError::Failed(crate::app::AppError::BadRequest(_)) => {
                    "That code was not accepted. Check the phone's clock, and type the code it shows now.".to_owned()
                }
                LoginError::Failed(other) => return Err(Failure::App(other)),
            };
            // The key is not shown again: the app on the phone has it already, or the person starts over.
            render_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                EnrollPage {
                    chrome: Chrome::for_user(&user, &signed, "profile"),
                    qr_svg: String::new(),
                    key: String::new(),
                    error: message,
                },
            )
        }
    }
}

pub(super) async fn disable_totp(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    own_login(&signed)?;
    let user = app.people.user_of(&signed.caller).await?;
    match app.people.disable_totp(&signed.caller, &user, form.trimmed("code")).await {
        Ok(()) => Ok(see_other(format!("{PREFIX}/profile?done=totp-off"))),
        Err(error) => {
            let message = match error {
                LoginError::Throttled(wait) => {
                    format!("Too many wrong codes. Try again in {} s.", wait.as_secs().max(1))
                }
                LoginError::InvalidGrant => "That code was not accepted.".to_owned(),
                LoginError::Failed(crate::app::AppError::BadRequest(text) | crate::app::AppError::Conflict(text)) => {
                    super::capitalize(&text)
                }
                LoginError::Failed(other) => return Err(Failure::App(other)),
            };
            profile_page(&app, &signed, "", FormState::failed("disable", "code", message)).await
        }
    }
}

pub(super) async fn change_password(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    let (current, new) = (form.text("current"), form.text("new"));
    if new != form.text("repeat") {
        let state = FormState::failed("password", "repeat", "The two new passwords differ.");
        return profile_page(&app, &signed, "", state).await;
    }
    match app.people.change_password(&signed.caller, current, new).await {
        Ok(()) => Ok(see_other(format!("{PREFIX}/profile?done=password"))),
        Err(error) => {
            let (field, message) = match error {
                LoginError::Throttled(wait) => {
                    ("current", format!("Too many wrong passwords. Try again in {} s.", wait.as_secs().max(1)))
                }
                LoginError::InvalidGrant => ("current", "That is not your current password.".to_owned()),
                LoginError::Failed(crate::app::AppError::BadRequest(text)) => {
                    let field = if text.contains("current") { "current" } else { "new" };
                    (field, super::capitalize(&text))
                }
                LoginError::Failed(other) => return Err(Failure::App(other)),
            };
            profile_page(&app, &signed, "", FormState::failed("password", field, message)).await
        }
    }
}
