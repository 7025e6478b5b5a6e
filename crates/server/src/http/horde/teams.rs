//! `/teams`: teams, members and invites in Horde's shapes. The rules (only a team's admins manage it; an admin
//! cannot change their own membership; every user has a private team that cannot be deleted) are the team
//! service's.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value as Json_, json};
use tessera_core::{Action, Permit, Role, TeamId, UserId};
use tessera_store::{Invite, Membership, Team, User};

use super::{HordeCaller, HordeResult, document, merge_tags};
use crate::app::{App, AppError};
use crate::http::listed::ListedRouter;
use crate::tokens::Caller;

pub fn routes() -> ListedRouter<App> {
    ListedRouter::new()
        .get("/teams", "List teams", list_teams)
        .post("/teams", "Make a team", create_team)
        .post("/teams/accept", "Accept an invite", accept_invite)
        .get("/teams/{team}", "A team", get_team)
        .patch("/teams/{team}", "Change a team", update_team)
        .delete("/teams/{team}", "Delete a team", delete_team)
        .get("/teams/{team}/members", "A team's members", list_members)
        .patch("/teams/{team}/members/{user}", "Change a member's role", set_role)
        .delete("/teams/{team}/members/{user}", "Remove a member", remove_member)
        .get("/teams/{team}/invites", "A team's invites", list_invites)
        .post("/teams/{team}/invites", "Make an invite", create_invite)
        .get("/teams/{team}/invites/{code}", "An invite", get_invite)
        .delete("/teams/{team}/invites/{code}", "Delete an invite", delete_invite)
        .delete("/teams/{team}/tags/{name}", "Delete a team's tag", delete_team_tag)
}

fn role_text(role: Role) -> &'static str {
    match role {
        Role::Admin => "Admin",
        Role::Member => "Member",
    }
}

fn member_json(membership: &Membership, user: &User) -> Json_ {
    json!({
        "userId": user.id.to_string(),
        "role": role_text(membership.role),
        "name": user.display_name,
        "email": user.email,
        "phone": user.phone,
        "verifiedEmail": false,
        "verifiedPhone": false,
        "connectId": "",
        "gitHubLogin": "",
        "authType": "internal",
        "avatarUrl": "",
    })
}

async fn team_json(app: &App, permit: &Permit, team: &Team) -> Result<Json_, AppError> {
    Ok(team_with_members(team, &app.teams.members(permit, team).await?))
}

fn team_with_members(team: &Team, members: &[(Membership, User)]) -> Json_ {
    let mut body = json!({
        "teamId": team.id.to_string(),
        "members": members.iter().map(|(membership, user)| member_json(membership, user)).collect::<Vec<_>>(),
    });
    if !team.tags.is_empty() {
        body["tags"] = json!(team.tags);
    }
    body
}

/// The team named in the path, authorized for `action`.
async fn team_for(app: &App, caller: &Caller, action: Action, team: &str) -> Result<(Team, Permit), AppError> {
    let team: TeamId = team.parse().map_err(|_| AppError::NotFound("team"))?;
    app.teams.team(caller, action, team).await
}

/// A team as the caller sees it, with its members.
async fn shown_team(app: &App, caller: &Caller, team: &Team) -> Result<Json_, AppError> {
    let (team, permit) = app.teams.team(caller, Action::Read, team.id).await?;
    team_json(app, &permit, &team).await
}

async fn list_teams(State(app): State<App>, HordeCaller(caller): HordeCaller) -> HordeResult {
    let mut teams = Vec::new();
    for team in app.teams.teams_of(&caller).await? {
        teams.push(shown_team(&app, &caller, &team).await?);
    }
    Ok(Json(json!({ "teams": teams })).into_response())
}

async fn create_team(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let mut tags = BTreeMap::new();
    if let Some(update) = document.get("tags") {
        merge_tags(&mut tags, update)?;
    }
    let (team, members) = app.teams.create(&caller, tags).await?;
    Ok((StatusCode::CREATED, Json(team_with_members(&team, &members))).into_response())
}

async fn get_team(State(app): State<App>, HordeCaller(caller): HordeCaller, Path(team): Path<String>) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Read, &team).await?;
    Ok(Json(team_json(&app, &permit, &team).await?).into_response())
}

async fn update_team(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let (mut team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    if let Some(update) = document.get("tags") {
        merge_tags(&mut team.tags, update)?;
        app.teams.set_tags(&permit, &team).await?;
    }
    Ok(Json(team_json(&app, &permit, &team).await?).into_response())
}

async fn delete_team(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    app.teams.delete(&permit, &team).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_members(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Read, &team).await?;
    let members = app.teams.members(&permit, &team).await?;
    let members: Vec<Json_> = members.iter().map(|(membership, user)| member_json(membership, user)).collect();
    Ok(Json(json!({ "members": members })).into_response())
}

fn member_id(text: &str) -> Result<UserId, AppError> {
    text.parse().map_err(|_| AppError::NotFound("member"))
}

async fn set_role(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, user)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let role = match document.get("role").and_then(Json_::as_str).map(str::to_lowercase).as_deref() {
        Some("admin") => Role::Admin,
        Some("member") => Role::Member,
        _ => return Err(AppError::BadRequest("'role' must be \"admin\" or \"member\"".into()).into()),
    };
    let (team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    let (membership, user) = app.teams.set_role(&caller, &permit, &team, member_id(&user)?, role).await?;
    Ok(Json(member_json(&membership, &user)).into_response())
}

async fn remove_member(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, user)): Path<(String, String)>,
) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    app.teams.remove_member(&caller, &permit, &team, member_id(&user)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn invite_json(app: &App, invite: &Invite) -> Json_ {
    json!({
        "code": app.teams.invite_code(invite),
        "createdAt": invite.created_at_ms,
        "expiresAt": invite.expires_at_ms,
        "accepted": invite.accepted_at_ms.is_some(),
    })
}

/// `POST /teams/{id}/invites`: a new invite code, shown this once.
async fn create_invite(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    let (invite, _) = app.teams.invite(&caller, &permit, &team).await?;
    Ok((StatusCode::CREATED, Json(invite_json(&app, &invite))).into_response())
}

async fn list_invites(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    let invites = app.teams.invites(&permit, &team).await?;
    let invites: Vec<Json_> = invites.iter().map(|invite| invite_json(&app, invite)).collect();
    Ok(Json(json!({ "invites": invites })).into_response())
}

async fn get_invite(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, code)): Path<(String, String)>,
) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    let invite = app.teams.invite_by_code(&permit, &team, &code).await?;
    Ok(Json(invite_json(&app, &invite)).into_response())
}

async fn delete_team_tag(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, name)): Path<(String, String)>,
) -> HordeResult {
    let (mut team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    team.tags.remove(&name.to_lowercase());
    app.teams.set_tags(&permit, &team).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /teams/{id}/invites/{code}`: withdraws an invite.
async fn delete_invite(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, code)): Path<(String, String)>,
) -> HordeResult {
    let (team, permit) = team_for(&app, &caller, Action::Write, &team).await?;
    app.teams.withdraw_invite(&permit, &team, &code).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /teams/accept` with `{"code"}`: the caller joins the team as a member.
async fn accept_invite(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let Some(code) = document.get("code").and_then(Json_::as_str) else {
        return Err(AppError::BadRequest("'code' is required".into()).into());
    };
    let (team, members) = app.teams.accept(&caller, code).await?;
    Ok(Json(team_with_members(&team, &members)).into_response())
}
