//! `TeamService`: teams, their members and invites. Every operation takes the caller or a permit the core gave
//! for the team; the rules of a team (an admin cannot change their own membership, a private team's owner stays
//! its admin, every team keeps an admin, invites serve once) are here and in the store's statements, not in any
//! front end. A change to who reaches what drops this node's cached reach; the store tells the other nodes in the
//! change's own transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_core::{Action, Listing, Permit, Role, Target, TeamId, UserId};
use tessera_store::{Creator, Invite, Membership, Store, Team, User};

use crate::entropy::new_id;
use crate::error::{AppError, permit_mismatch, require_permit};
use crate::people::PeopleService;
use crate::time::now_ms;
use crate::tokens::{Caller, TokenService};

/// How long an invite code can be accepted.
const INVITE_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

pub struct TeamService {
    store: Arc<dyn Store>,
    tokens: Arc<TokenService>,
    people: Arc<PeopleService>,
}

impl std::fmt::Debug for TeamService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamService").finish_non_exhaustive()
    }
}

impl TeamService {
    pub fn new(store: Arc<dyn Store>, tokens: Arc<TokenService>, people: Arc<PeopleService>) -> TeamService {
        TeamService { store, tokens, people }
    }

    /// The team `id`, authorized for `action`.
    pub async fn team(&self, caller: &Caller, action: Action, id: TeamId) -> Result<(Team, Permit), AppError> {
        let permit = caller.authorize(action, &Target::team(caller.account(), id))?;
        let team = self.store.team(caller.account(), id).await.map_err(|error| AppError::from_store("team", error))?;
        Ok((team, permit))
    }

    /// The teams of the caller's user that the caller may read (a `/` or `/teams` scope lists them).
    pub async fn teams_of(&self, caller: &Caller) -> Result<Vec<Team>, AppError> {
        caller.authorize_listing_of(Listing::Teams)?;
        let user = self.people.user_of(caller).await?;
        let teams = self.store.teams_of(user.id).await?;
        Ok(teams
            .into_iter()
            .map(|(team, _)| team)
            .filter(|team| caller.authorize(Action::Read, &Target::team(caller.account(), team.id)).is_ok())
            .collect())
    }

    /// The members of a team the permit reads or changes.
    pub async fn members(&self, permit: &Permit, team: &Team) -> Result<Vec<(Membership, User)>, AppError> {
        let target = Target::team(team.account, team.id);
        if !permit.covers(Action::Read, &target) && !permit.covers(Action::Write, &target) {
            return Err(permit_mismatch(permit, "list members"));
        }
        Ok(self.store.members(team.id).await?)
    }

    /// A new team with the caller's user as its admin, with its members. (The caller's grant predates the team,
    /// so it is answered here rather than read back under a permit the grant could not give yet.)
    pub async fn create(
        &self,
        caller: &Caller,
        tags: BTreeMap<String, String>,
    ) -> Result<(Team, Vec<(Membership, User)>), AppError> {
        caller.authorize(Action::SelfService, &Target::account(caller.account()))?;
        let user = self.people.user_of(caller).await?;
        let team =
            Team { id: TeamId(new_id()), account: caller.account(), tags, private_of: None, created_at_ms: now_ms() };
        self.store.insert_team(&team, user.id).await?;
        self.tokens.reach_changed(Creator::User(user.id));
        let members = self.store.members(team.id).await?;
        Ok((team, members))
    }

    pub async fn set_tags(&self, permit: &Permit, team: &Team) -> Result<(), AppError> {
        require_permit(permit, Action::Write, &team_target(team), "set tags")?;
        Ok(self.store.set_team_tags(team.id, &team.tags).await?)
    }

    /// Deletes a team that owns no collection; its members lose what it gave them.
    pub async fn delete(&self, permit: &Permit, team: &Team) -> Result<(), AppError> {
        require_permit(permit, Action::Write, &team_target(team), "delete")?;
        let members = self.store.members(team.id).await?;
        self.store.delete_team(team.account, team.id).await.map_err(|error| AppError::from_store("team", error))?;
        for (membership, _) in members {
            self.tokens.reach_changed(Creator::User(membership.user));
        }
        Ok(())
    }

    /// Gives `user` the `role`; answers their membership as it is now.
    pub async fn set_role(
        &self,
        caller: &Caller,
        permit: &Permit,
        team: &Team,
        user: UserId,
        role: Role,
    ) -> Result<(Membership, User), AppError> {
        require_permit(permit, Action::Write, &team_target(team), "set role")?;
        Self::another_member(caller, team, user, role == Role::Member)?;
        self.store.set_member_role(team.id, user, role).await.map_err(|error| AppError::from_store("member", error))?;
        self.tokens.reach_changed(Creator::User(user));
        let members = self.store.members(team.id).await?;
        members.into_iter().find(|(membership, _)| membership.user == user).ok_or(AppError::NotFound("member"))
    }

    pub async fn remove_member(
        &self,
        caller: &Caller,
        permit: &Permit,
        team: &Team,
        user: UserId,
    ) -> Result<(), AppError> {
        require_permit(permit, Action::Write, &team_target(team), "remove member")?;
        Self::another_member(caller, team, user, true)?;
        self.store.remove_member(team.id, user).await.map_err(|error| AppError::from_store("member", error))?;
        self.tokens.reach_changed(Creator::User(user));
        Ok(())
    }

    /// An admin cannot change their own membership, and a change that takes `user`'s admin role away is refused
    /// where the team cannot spare it: the owner of a private team stays its admin (and every team keeps at
    /// least one admin, which the store checks in the statement that changes the membership).
    fn another_member(caller: &Caller, team: &Team, user: UserId, takes_admin_away: bool) -> Result<(), AppError> {
        if caller.record.creator == Creator::User(user) {
            return Err(AppError::Denied(tessera_core::Denial::OwnMembership));
        }
        if takes_admin_away && team.private_of == Some(user) {
            return Err(AppError::Conflict("the owner of a private team stays its admin".into()));
        }
        Ok(())
    }

    /// A new invite to the team and its code, shown this once (the store keeps only its digest).
    pub async fn invite(&self, caller: &Caller, permit: &Permit, team: &Team) -> Result<(Invite, String), AppError> {
        require_permit(permit, Action::Write, &team_target(team), "invite")?;
        let inviter = self.people.user_of(caller).await?;
        let id = new_id();
        let code = self.people.invite_code(id);
        let now = now_ms();
        let invite = Invite {
            digest: self.people.digest_code(&code),
            team: team.id,
            created_by: inviter.id,
            created_at_ms: now,
            expires_at_ms: now + INVITE_TTL_MS,
            accepted_by: None,
            accepted_at_ms: None,
            id,
        };
        self.store.insert_invite(&invite).await?;
        Ok((invite, code))
    }

    /// The team's invites (admins only).
    pub async fn invites(&self, permit: &Permit, team: &Team) -> Result<Vec<Invite>, AppError> {
        require_permit(permit, Action::Write, &team_target(team), "invites")?;
        Ok(self.store.invites(team.id).await?)
    }

    /// The invite with `code`, of the team.
    pub async fn invite_by_code(&self, permit: &Permit, team: &Team, code: &str) -> Result<Invite, AppError> {
        let digest = self.people.digest_code(code.trim());
        let invites = self.invites(permit, team).await?;
        invites.into_iter().find(|invite| invite.digest == digest).ok_or(AppError::NotFound("invite"))
    }

    pub async fn withdraw_invite(&self, permit: &Permit, team: &Team, code: &str) -> Result<(), AppError> {
        require_permit(permit, Action::Write, &team_target(team), "withdraw invite")?;
        self.store
            .delete_invite(team.id, &self.people.digest_code(code.trim()))
            .await
            .map_err(|error| AppError::from_store("invite", error))
    }

    /// The code an invite is shown with.
    pub fn invite_code(&self, invite: &Invite) -> String {
        self.people.invite_code(invite.id)
    }

    /// The caller's user joins the team an invite code is for, as a member; an invite serves once. Answers the
    /// team with its members.
    pub async fn accept(&self, caller: &Caller, code: &str) -> Result<(Team, Vec<(Membership, User)>), AppError> {
        caller.authorize(Action::SelfService, &Target::account(caller.account()))?;
        let user = self.people.user_of(caller).await?;
        let team = self
            .store
            .accept_invite(&self.people.digest_code(code.trim()), user.id, now_ms())
            .await
            .map_err(|error| AppError::from_store("invite", error))?;
        self.tokens.reach_changed(Creator::User(user.id));
        let team =
            self.store.team(caller.account(), team).await.map_err(|error| AppError::from_store("team", error))?;
        let members = self.store.members(team.id).await?;
        Ok((team, members))
    }
}

fn team_target(team: &Team) -> Target {
    Target::team(team.account, team.id)
}
