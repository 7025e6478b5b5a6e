//! `/teams`: teams, members and invites. Only a team's admins manage it; an admin cannot change their own
//! membership; every user has a private team that cannot be deleted.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde_json::{Value as Json_, json};
use tessera_core::{Action, Permit, Role, Target, TeamId, UserId};
use tessera_store::{Creator, Invite, Membership, Team, User};

use super::{HordeCaller, HordeError, HordeResult, document, merge_tags};
use crate::app::{App, AppError};
use crate::entropy::new_id;
use crate::time::now_ms;
use crate::tokens::Caller;

/// How long an invite code can be accepted.
const INVITE_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/teams", get(list_teams).post(create_team))
        .route("/teams/accept", post(accept_invite))
        .route("/teams/{team}", get(get_team).patch(update_team).delete(delete_team))
        .route("/teams/{team}/members", get(list_members))
        .route("/teams/{team}/members/{user}", patch(set_role).delete(remove_member))
        .route("/teams/{team}/invites", get(list_invites).post(create_invite))
        .route("/teams/{team}/invites/{code}", get(get_invite).delete(delete_invite))
        .route("/teams/{team}/tags/{name}", delete(delete_team_tag))
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

async fn team_json(app: &App, team: &Team) -> Result<Json_, AppError> {
    let members = app.store.members(team.id).await?;
    let mut body = json!({
        "teamId": team.id.to_string(),
        "members": members.iter().map(|(membership, user)| member_json(membership, user)).collect::<Vec<_>>(),
    });
    if !team.tags.is_empty() {
        body["tags"] = json!(team.tags);
    }
    Ok(body)
}

fn team_id(text: &str) -> Result<TeamId, AppError> {
    text.parse().map_err(|_| AppError::NotFound("team"))
}

/// The team, authorized for `action`.
async fn team_for(app: &App, caller: &Caller, action: Action, team: &str) -> Result<(Team, Permit), AppError> {
    let team = team_id(team)?;
    let permit = caller.authorize(action, &Target::team(caller.account(), team))?;
    let team = app.store.team(caller.account(), team).await.map_err(|error| AppError::from_store("team", error))?;
    Ok((team, permit))
}

async fn list_teams(State(app): State<App>, HordeCaller(caller): HordeCaller) -> HordeResult {
    // `/teams` is a resource of its own: only a credential whose scope holds every team of its owner lists it.
    caller.authorize_listing_of(tessera_core::Listing::Teams).map_err(AppError::from)?;
    let user = app.people.user_of(&caller).await?;
    let mut teams = Vec::new();
    for (team, _) in app.store.teams_of(user.id).await.map_err(AppError::from)? {
        if caller.authorize(Action::Read, &Target::team(caller.account(), team.id)).is_ok() {
            teams.push(team_json(&app, &team).await?);
        }
    }
    Ok(Json(json!({ "teams": teams })).into_response())
}

async fn create_team(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    caller.authorize(Action::SelfService, &Target::account(caller.account())).map_err(AppError::from)?;
    let user = app.people.user_of(&caller).await?;
    let document = document(body)?;
    let mut tags = BTreeMap::new();
    if let Some(update) = document.get("tags") {
        merge_tags(&mut tags, update)?;
    }
    let team =
        Team { id: TeamId(new_id()), account: caller.account(), tags, private_of: None, created_at_ms: now_ms() };
    app.store.insert_team(&team, user.id).await.map_err(AppError::from)?;
    app.tokens.reach_changed(Creator::User(user.id));
    Ok((StatusCode::CREATED, Json(team_json(&app, &team).await?)).into_response())
}

async fn get_team(State(app): State<App>, HordeCaller(caller): HordeCaller, Path(team): Path<String>) -> HordeResult {
    let (team, _) = team_for(&app, &caller, Action::Read, &team).await?;
    Ok(Json(team_json(&app, &team).await?).into_response())
}

async fn update_team(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    let document = document(body)?;
    let (mut team, _) = team_for(&app, &caller, Action::Write, &team).await?;
    if let Some(update) = document.get("tags") {
        merge_tags(&mut team.tags, update)?;
        app.store.set_team_tags(team.id, &team.tags).await.map_err(AppError::from)?;
    }
    Ok(Json(team_json(&app, &team).await?).into_response())
}

async fn delete_team(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
) -> HordeResult {
    let (team, _) = team_for(&app, &caller, Action::Write, &team).await?;
    let members = app.store.members(team.id).await.map_err(AppError::from)?;
    app.store.delete_team(caller.account(), team.id).await.map_err(|error| AppError::from_store("team", error))?;
    for (membership, _) in members {
        app.tokens.reach_changed(Creator::User(membership.user));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_members(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
) -> HordeResult {
    let (team, _) = team_for(&app, &caller, Action::Read, &team).await?;
    let members = app.store.members(team.id).await.map_err(AppError::from)?;
    let members: Vec<Json_> = members.iter().map(|(membership, user)| member_json(membership, user)).collect();
    Ok(Json(json!({ "members": members })).into_response())
}

/// The member named in the path, who must not be the caller: an admin cannot change their own membership.
async fn other_member(app: &App, caller: &Caller, team: &str, user: &str) -> Result<(Team, UserId), HordeError> {
    let (team, _) = team_for(app, caller, Action::Write, team).await?;
    let user: UserId = user.parse().map_err(|_| AppError::NotFound("member"))?;
    if caller.record.creator == Creator::User(user) {
        return Err(HordeError::new(StatusCode::FORBIDDEN, "An admin cannot change their own membership"));
    }
    Ok((team, user))
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
    let (team, user) = other_member(&app, &caller, &team, &user).await?;
    if role == Role::Member {
        keeps_an_admin(&team, user)?;
    }
    app.store.set_member_role(team.id, user, role).await.map_err(|error| AppError::from_store("member", error))?;
    app.tokens.reach_changed(Creator::User(user));
    let members = app.store.members(team.id).await.map_err(AppError::from)?;
    let member = members
        .iter()
        .find(|(membership, _)| membership.user == user)
        .map(|(membership, user)| member_json(membership, user))
        .ok_or(AppError::NotFound("member"))?;
    Ok(Json(member).into_response())
}

async fn remove_member(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, user)): Path<(String, String)>,
) -> HordeResult {
    let (team, user) = other_member(&app, &caller, &team, &user).await?;
    keeps_an_admin(&team, user)?;
    app.store.remove_member(team.id, user).await.map_err(|error| AppError::from_store("member", error))?;
    app.tokens.reach_changed(Creator::User(user));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Refuses a change that would take `user`'s admin role away where the team cannot spare it: the owner of a
/// private team stays its admin (and every team keeps at least one admin, which the store enforces).
fn keeps_an_admin(team: &Team, user: UserId) -> Result<(), AppError> {
    if team.private_of == Some(user) {
        return Err(AppError::Conflict("the owner of a private team stays its admin".into()));
    }
    // That the team keeps an admin is checked by the store, in the statement that changes the membership.
    Ok(())
}

fn invite_json(app: &App, invite: &Invite) -> Json_ {
    json!({
        "code": app.people.invite_code(invite.id),
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
    let (team, _) = team_for(&app, &caller, Action::Write, &team).await?;
    let inviter = app.people.user_of(&caller).await?;
    let id = new_id();
    let code = app.people.invite_code(id);
    let now = now_ms();
    let invite = Invite {
        digest: app.people.digest_code(&code),
        team: team.id,
        created_by: inviter.id,
        created_at_ms: now,
        expires_at_ms: now + INVITE_TTL_MS,
        accepted_by: None,
        accepted_at_ms: None,
        id,
    };
    app.store.insert_invite(&invite).await.map_err(AppError::from)?;
    Ok((StatusCode::CREATED, Json(invite_json(&app, &invite))).into_response())
}

async fn list_invites(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path(team): Path<String>,
) -> HordeResult {
    let (team, _) = team_for(&app, &caller, Action::Write, &team).await?;
    let invites = app.store.invites(team.id).await.map_err(AppError::from)?;
    let invites: Vec<Json_> = invites.iter().map(|invite| invite_json(&app, invite)).collect();
    Ok(Json(json!({ "invites": invites })).into_response())
}

async fn get_invite(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, code)): Path<(String, String)>,
) -> HordeResult {
    let (team, _) = team_for(&app, &caller, Action::Write, &team).await?;
    let digest = app.people.digest_code(code.trim());
    let invites = app.store.invites(team.id).await.map_err(AppError::from)?;
    let invite = invites.iter().find(|invite| invite.digest == digest).ok_or(AppError::NotFound("invite"))?;
    Ok(Json(invite_json(&app, invite)).into_response())
}

async fn delete_team_tag(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, name)): Path<(String, String)>,
) -> HordeResult {
    let (mut team, _) = team_for(&app, &caller, Action::Write, &team).await?;
    team.tags.remove(&name.to_lowercase());
    app.store.set_team_tags(team.id, &team.tags).await.map_err(AppError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /teams/{id}/invites/{code}`: withdraws an invite.
async fn delete_invite(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    Path((team, code)): Path<(String, String)>,
) -> HordeResult {
    let (team, _) = team_for(&app, &caller, Action::Write, &team).await?;
    app.store
        .delete_invite(team.id, &app.people.digest_code(code.trim()))
        .await
        .map_err(|error| AppError::from_store("invite", error))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /teams/accept` with `{"code"}`: the caller joins the team as a member.
async fn accept_invite(
    State(app): State<App>,
    HordeCaller(caller): HordeCaller,
    body: Result<Bytes, BytesRejection>,
) -> HordeResult {
    caller.authorize(Action::SelfService, &Target::account(caller.account())).map_err(AppError::from)?;
    let user = app.people.user_of(&caller).await?;
    let document = document(body)?;
    let Some(code) = document.get("code").and_then(Json_::as_str) else {
        return Err(AppError::BadRequest("'code' is required".into()).into());
    };
    let team = app
        .store
        .accept_invite(&app.people.digest_code(code.trim()), user.id, now_ms())
        .await
        .map_err(|error| AppError::from_store("invite", error))?;
    app.tokens.reach_changed(Creator::User(user.id));
    let team = app.store.team(caller.account(), team).await.map_err(|error| AppError::from_store("team", error))?;
    Ok(Json(team_json(&app, &team).await?).into_response())
}
