//! Teams: the visitor's teams, one team's members and roles, its invites (made, copied, withdrawn), joining
//! with an invite code, creating and deleting a team. The rules (only team admins manage a team, nobody changes
//! their own membership, a private team's owner stays its admin) are `TeamService`'s.

use askama::Template;
use axum::extract::{Path, State};
use tessera_core::{Action, Role, TeamId, UserId};

use super::collections::team_name;
use super::format::{self, Chrome, FormState};
use super::session::{Form, Signed, SignedIn};
use super::{Failure, PREFIX, PageResult, render_with, see_other};
use crate::app::{App, AppError};
use crate::http::QueryParams;

#[derive(Debug, Clone)]
struct TeamRow {
    id: String,
    name: String,
    role: &'static str,
    private: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/teams.html")]
struct TeamsPage {
    chrome: Chrome,
    teams: Vec<TeamRow>,
    notice: &'static str,
    form: FormState,
}

/// The visitor's role in a team, as `authorize` answers for it (what the page shows is what they may do).
fn role_in(signed: &SignedIn, team: TeamId) -> &'static str {
    let caller = &signed.caller;
    let team = tessera_core::Target::team(caller.account(), team);
    if super::format::is_account_admin(signed) {
        "account administrator"
    } else if caller.authorize(Action::Write, &team).is_ok() {
        "admin"
    } else if caller.authorize(Action::Read, &team).is_ok() {
        "member"
    } else {
        ""
    }
}

async fn teams_page(app: &App, signed: &SignedIn, notice: &'static str, form: FormState) -> PageResult {
    let user = app.people.user_of(&signed.caller).await?;
    let chrome = Chrome::for_user(&user, signed, "teams");
    let teams = app
        .teams
        .teams_of(&signed.caller)
        .await?
        .iter()
        .map(|team| TeamRow {
            id: team.id.to_string(),
            name: team_name(team, Some(user.id)),
            role: role_in(signed, team.id),
            private: team.private_of.is_some(),
        })
        .collect();
    let status = form.status();
    render_with(status, TeamsPage { chrome, teams, notice, form })
}

pub(super) async fn list(State(app): State<App>, Signed(signed): Signed, query: QueryParams) -> PageResult {
    let notice = match query.text("done") {
        Some("deleted") => "The team is deleted.",
        _ => "",
    };
    teams_page(&app, &signed, notice, FormState::default()).await
}

pub(super) async fn create(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    let name = form.trimmed("name");
    if name.is_empty() || name.chars().count() > 200 {
        let state = FormState::failed("create", "name", "A name of 1 to 200 characters is needed.").keep("name", name);
        return teams_page(&app, &signed, "", state).await;
    }
    let tags = [("name".to_owned(), name.to_owned())].into_iter().collect();
    let (team, _) = app.teams.create(&signed.caller, tags).await?;
    Ok(see_other(format!("{PREFIX}/teams/{}", team.id)))
}

pub(super) async fn accept(State(app): State<App>, Signed(signed): Signed, form: Form) -> PageResult {
    let code = form.trimmed("code");
    match app.teams.accept(&signed.caller, code).await {
        Ok((team, _)) => Ok(see_other(format!("{PREFIX}/teams/{}?done=joined", team.id))),
        Err(error @ (AppError::NotFound(_) | AppError::Conflict(_) | AppError::BadRequest(_))) => {
            let message = match error {
                AppError::NotFound(_) => "No invite has this code, or it was used or withdrawn, or it expired.".into(),
                other => super::explain(&other),
            };
            teams_page(&app, &signed, "", FormState::failed("accept", "code", message).keep("code", code)).await
        }
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Clone)]
struct MemberRow {
    user: String,
    email: String,
    name: String,
    is_admin: bool,
    is_you: bool,
    since: String,
}

#[derive(Debug, Clone)]
struct InviteRow {
    code: String,
    created: String,
    expires: String,
    accepted: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/team.html")]
struct TeamPage {
    chrome: Chrome,
    id: String,
    name: String,
    private: bool,
    your_role: &'static str,
    manages: bool,
    members: Vec<MemberRow>,
    invites: Vec<InviteRow>,
    collections: Vec<(String, String)>,
    notice: &'static str,
    form: FormState,
}

fn team_id(text: &str) -> Result<TeamId, Failure> {
    text.parse().map_err(|_| Failure::App(AppError::NotFound("team")))
}

async fn team_page(app: &App, signed: &SignedIn, id: TeamId, notice: &'static str, form: FormState) -> PageResult {
    let caller = &signed.caller;
    let (team, permit) = app.teams.team(caller, Action::Read, id).await?;
    let user = app.people.user_of(caller).await?;
    let manages = caller.authorize(Action::Write, &tessera_core::Target::team(caller.account(), id)).is_ok();
    let members = app
        .teams
        .members(&permit, &team)
        .await?
        .into_iter()
        .map(|(membership, member)| MemberRow {
            user: member.id.to_string(),
            email: member.email.clone(),
            name: member.display_name.clone(),
            is_admin: membership.role == Role::Admin,
            is_you: member.id == user.id,
            since: format::when(membership.created_at_ms),
        })
        .collect();
    let invites = if manages {
        let (_, write_permit) = app.teams.team(caller, Action::Write, id).await?;
        app.teams
            .invites(&write_permit, &team)
            .await?
            .iter()
            .map(|invite| InviteRow {
                code: app.teams.invite_code(invite),
                created: format::when(invite.created_at_ms),
                expires: format::when(invite.expires_at_ms),
                accepted: invite.accepted_by.is_some(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let collections = app
        .readable_collections(caller)
        .await?
        .into_iter()
        .filter(|collection| collection.team == Some(id))
        .map(|collection| (collection.id.to_string(), collection.name))
        .collect();
    let status = form.status();
    render_with(
        status,
        TeamPage {
            chrome: Chrome::for_user(&user, signed, "teams"),
            id: id.to_string(),
            name: team_name(&team, Some(user.id)),
            private: team.private_of.is_some(),
            your_role: role_in(signed, id),
            manages,
            members,
            invites,
            collections,
            notice,
            form,
        },
    )
}

pub(super) async fn page(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    query: QueryParams,
) -> PageResult {
    let notice = match query.text("done") {
        Some("joined") => "Welcome to the team.",
        Some("role") => "The role is changed.",
        Some("removed") => "The member is removed.",
        Some("withdrawn") => "The invite is withdrawn.",
        _ => "",
    };
    team_page(&app, &signed, team_id(&id)?, notice, FormState::default()).await
}

/// A team operation's refusal, shown on the team's page next to the form that asked.
async fn refused_on_team_page(
    app: &App,
    signed: &SignedIn,
    id: TeamId,
    form: &'static str,
    error: AppError,
) -> PageResult {
    match error {
        AppError::Denied(_) | AppError::Conflict(_) | AppError::BadRequest(_) | AppError::NotFound(_) => {
            team_page(app, signed, id, "", FormState::failed(form, "team", super::explain(&error))).await
        }
        other => Err(other.into()),
    }
}

pub(super) async fn delete(State(app): State<App>, Signed(signed): Signed, Path(id): Path<String>) -> PageResult {
    let id = team_id(&id)?;
    let (team, permit) = app.teams.team(&signed.caller, Action::Write, id).await?;
    match app.teams.delete(&permit, &team).await {
        Ok(()) => Ok(see_other(format!("{PREFIX}/teams?done=deleted"))),
        Err(error) => refused_on_team_page(&app, &signed, id, "delete", error).await,
    }
}

fn user_id(text: &str) -> Result<UserId, Failure> {
    text.parse().map_err(|_| Failure::App(AppError::NotFound("member")))
}

pub(super) async fn set_role(
    State(app): State<App>,
    Signed(signed): Signed,
    Path((id, user)): Path<(String, String)>,
    form: Form,
) -> PageResult {
    let (id, user) = (team_id(&id)?, user_id(&user)?);
    let role = match form.trimmed("role") {
        "admin" => Role::Admin,
        "member" => Role::Member,
        _ => {
            return refused_on_team_page(
                &app,
                &signed,
                id,
                "members",
                AppError::BadRequest("choose admin or member".into()),
            )
            .await;
        }
    };
    let (team, permit) = app.teams.team(&signed.caller, Action::Write, id).await?;
    match app.teams.set_role(&signed.caller, &permit, &team, user, role).await {
        Ok(_) => Ok(see_other(format!("{PREFIX}/teams/{id}?done=role"))),
        Err(error) => refused_on_team_page(&app, &signed, id, "members", error).await,
    }
}

pub(super) async fn remove_member(
    State(app): State<App>,
    Signed(signed): Signed,
    Path((id, user)): Path<(String, String)>,
) -> PageResult {
    let (id, user) = (team_id(&id)?, user_id(&user)?);
    let (team, permit) = app.teams.team(&signed.caller, Action::Write, id).await?;
    match app.teams.remove_member(&signed.caller, &permit, &team, user).await {
        Ok(()) => Ok(see_other(format!("{PREFIX}/teams/{id}?done=removed"))),
        Err(error) => refused_on_team_page(&app, &signed, id, "members", error).await,
    }
}

pub(super) async fn invite(State(app): State<App>, Signed(signed): Signed, Path(id): Path<String>) -> PageResult {
    let id = team_id(&id)?;
    let (team, permit) = app.teams.team(&signed.caller, Action::Write, id).await?;
    match app.teams.invite(&signed.caller, &permit, &team).await {
        // The code stays listed for the team's admins (it is derived, not stored), so the page shows it.
        Ok(_) => Ok(see_other(format!("{PREFIX}/teams/{id}#invites"))),
        Err(error) => refused_on_team_page(&app, &signed, id, "invites", error).await,
    }
}

pub(super) async fn withdraw_invite(
    State(app): State<App>,
    Signed(signed): Signed,
    Path(id): Path<String>,
    form: Form,
) -> PageResult {
    let id = team_id(&id)?;
    let (team, permit) = app.teams.team(&signed.caller, Action::Write, id).await?;
    match app.teams.withdraw_invite(&permit, &team, form.trimmed("code")).await {
        Ok(()) => Ok(see_other(format!("{PREFIX}/teams/{id}?done=withdrawn"))),
        Err(error) => refused_on_team_page(&app, &signed, id, "invites", error).await,
    }
}
