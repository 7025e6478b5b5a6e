//! Users, their second factor, teams, invites and login challenges: the `PeopleStore` half of the shared SQL, a
//! child of `store.rs`, whose imports, helpers and backend items it uses.

use super::*;

/// A condition true while the team (placeholder `$team`) has an admin other than the user (`$user`).
macro_rules! keeps_another_admin {
    ($team:literal, $user:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM team_members other WHERE other.team_id = ",
            $team,
            " AND other.role = 'admin' AND other.user_id != ",
            $user,
            ")"
        )
    };
}

macro_rules! user_columns {
    () => {
        "u.id, u.account_id, u.email, u.password_hash, u.display_name, u.phone, u.is_admin, u.created_at, \
         u.totp_secret, u.totp_enabled, u.totp_last_step"
    };
}

fn user_from_row(row: &DbRow) -> StoreResult<User> {
    let secret: Option<Vec<u8>> = row.try_get(8)?;
    Ok(User {
        id: UserId::from_i64(row.try_get(0)?),
        account: AccountId::from_i64(row.try_get(1)?),
        email: row.try_get(2)?,
        password_hash: row.try_get(3)?,
        display_name: row.try_get(4)?,
        phone: row.try_get(5)?,
        is_admin: row.try_get(6)?,
        created_at_ms: row.try_get(7)?,
        totp: secret
            .map(|secret| -> StoreResult<UserTotp> {
                Ok(UserTotp { secret, enabled: row.try_get(9)?, last_step: row.try_get(10)? })
            })
            .transpose()?,
    })
}

macro_rules! team_columns {
    () => {
        "t.id, t.account_id, t.tags, t.private_of, t.created_at"
    };
}

fn team_from_row(row: &DbRow) -> StoreResult<Team> {
    Ok(Team {
        id: TeamId::from_i64(row.try_get(0)?),
        account: AccountId::from_i64(row.try_get(1)?),
        tags: tags_from_column(row.try_get(2)?)?,
        private_of: row.try_get::<Option<i64>, _>(3)?.map(UserId::from_i64),
        created_at_ms: row.try_get(4)?,
    })
}

fn role_column(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

fn role_from_column(text: &str) -> StoreResult<Role> {
    match text {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        other => Err(corrupt(format!("unknown team role '{other}'"))),
    }
}

fn invite_from_row(row: &DbRow) -> StoreResult<Invite> {
    let digest: Vec<u8> = row.try_get(0)?;
    Ok(Invite {
        id: Id::from_i64(row.try_get(7)?),
        digest: SecretDigest(digest.try_into().map_err(|_| corrupt("invite digest is not 32 bytes"))?),
        team: TeamId::from_i64(row.try_get(1)?),
        created_by: UserId::from_i64(row.try_get(2)?),
        created_at_ms: row.try_get(3)?,
        expires_at_ms: row.try_get(4)?,
        accepted_by: row.try_get::<Option<i64>, _>(5)?.map(UserId::from_i64),
        accepted_at_ms: row.try_get(6)?,
    })
}

/// Takes the team's row lock until the transaction ends, so concurrent membership changes of one team run one
/// after the other and the "at least one admin" check in each sees the other's outcome. (SQLite's write
/// transactions are serial already; PostgreSQL's READ COMMITTED ones are not.)
async fn lock_team(connection: &mut DbConnection, team: TeamId) -> StoreResult<()> {
    sqlx::query(concat!("SELECT id FROM teams WHERE id = $1", for_update!()))
        .bind(team.as_i64())
        .fetch_one(&mut *connection)
        .await?;
    Ok(())
}

impl Backend {
    /// Why a guarded membership change changed nothing: the user is no member, or the team would lose its last
    /// admin.
    async fn why_membership_unchanged(&self, team: TeamId, user: UserId) -> StoreError {
        let member =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team.as_i64())
                .bind(user.as_i64())
                .fetch_one(&self.pool)
                .await;
        match member {
            Ok(0) => StoreError::NotFound,
            Ok(_) => StoreError::Conflict("a team must keep at least one admin".into()),
            Err(error) => error.into(),
        }
    }
}

#[async_trait]
impl PeopleStore for Backend {
    async fn insert_user(&self, user: &User, private_team: &Team) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        insert_user_in(&mut transaction, user, private_team).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn user(&self, account: AccountId, user: UserId) -> StoreResult<User> {
        let row =
            sqlx::query(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.account_id = $1 AND u.id = $2"))
                .bind(account.as_i64())
                .bind(user.as_i64())
                .fetch_one(&self.pool)
                .await?;
        user_from_row(&row)
    }

    async fn user_by_id(&self, user: UserId) -> StoreResult<User> {
        let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.id = $1"))
            .bind(user.as_i64())
            .fetch_one(&self.pool)
            .await?;
        user_from_row(&row)
    }

    async fn users_by_email(&self, email: &str) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.email = $1 ORDER BY u.id"))
            .bind(email)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn list_users(&self, account: AccountId) -> StoreResult<Vec<User>> {
        let rows =
            sqlx::query(concat!("SELECT ", user_columns!(), " FROM users u WHERE u.account_id = $1 ORDER BY u.id"))
                .bind(account.as_i64())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn set_password_hash(
        &self,
        user: UserId,
        password_hash: &str,
        keep_session: Option<Id>,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<Vec<TokenRecord>> {
        let mut transaction = begin_write(self).await?;
        let account: i64 = sqlx::query_scalar("UPDATE users SET password_hash = $1 WHERE id = $2 RETURNING account_id")
            .bind(password_hash)
            .bind(user.as_i64())
            .fetch_one(&mut *transaction)
            .await?;
        let (creator_kind, creator_id) = creator_columns(Creator::User(user));
        let sessions = [TokenKind::UserAccess.as_str(), TokenKind::Refresh.as_str()];
        // As in `revoke_family`: waits for a refresh of one of these sessions in flight to commit, so that the
        // UPDATE below (a statement of its own, with a snapshot taken after the wait) sees the pair it inserted and
        // revokes that too. In id order, so two such changes cannot deadlock.
        sqlx::query(concat!(
            "SELECT id FROM tokens WHERE account_id = $1 AND creator_kind = $2 AND creator_id = $3 \
             AND kind IN ($4, $5) AND revoked_at IS NULL ORDER BY id",
            for_update!()
        ))
        .bind(account)
        .bind(creator_kind)
        .bind(creator_id)
        .bind(sessions[0])
        .bind(sessions[1])
        .fetch_all(&mut *transaction)
        .await?;
        // Live ones only: expired access tokens stay behind after every refresh, and need no revoking.
        let rows = sqlx::query(concat!(
            "UPDATE tokens SET revoked_at = $1 WHERE account_id = $2 AND creator_kind = $3 AND creator_id = $4 \
             AND kind IN ($5, $6) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1) \
             AND family_id IS DISTINCT FROM $7 RETURNING ",
            token_columns!()
        ))
        .bind(at_ms)
        .bind(account)
        .bind(creator_kind)
        .bind(creator_id)
        .bind(sessions[0])
        .bind(sessions[1])
        .bind(keep_session.map(Id::as_i64))
        .fetch_all(&mut *transaction)
        .await?;
        let revoked = rows.iter().map(token_from_row).collect::<StoreResult<Vec<_>>>()?;
        insert_audit_in(&mut transaction, audit).await?;
        tell_in(&mut transaction, &token_invalidations(&revoked)).await?;
        transaction.commit().await?;
        Ok(revoked)
    }

    async fn set_user_admin(&self, account: AccountId, user: UserId, is_admin: bool) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        // The account's row lock makes concurrent changes of its admins run one after the other, so two
        // administrators demoting each other at once cannot both pass the check below (as `lock_team` for teams).
        sqlx::query(concat!("SELECT id FROM accounts WHERE id = $1", for_update!()))
            .bind(account.as_i64())
            .fetch_one(&mut *transaction)
            .await?;
        let updated = sqlx::query(
            "UPDATE users SET is_admin = $1 WHERE account_id = $2 AND id = $3 AND ($1 OR EXISTS \
             (SELECT 1 FROM users other WHERE other.account_id = $2 AND other.is_admin AND other.id != $3))",
        )
        .bind(is_admin)
        .bind(account.as_i64())
        .bind(user.as_i64())
        .execute(&mut *transaction)
        .await?;
        if updated.rows_affected() == 0 {
            let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE account_id = $1 AND id = $2")
                .bind(account.as_i64())
                .bind(user.as_i64())
                .fetch_one(&mut *transaction)
                .await?;
            if exists == 0 {
                return Err(StoreError::NotFound);
            }
            return Err(StoreError::Conflict("an account must keep at least one administrator".into()));
        }
        // An administrator reaches the whole account: every node must judge the user's tokens anew.
        tell_in(&mut transaction, &[Invalidation::Reach(Creator::User(user))]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn set_totp(
        &self,
        user: UserId,
        current: Option<&UserTotp>,
        totp: Option<&UserTotp>,
        recovery_codes: &[SecretDigest],
        audit: &[AuditEntry],
    ) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        let updated = sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_enabled = $2, totp_last_step = $3 \
             WHERE id = $4 AND totp_secret IS NOT DISTINCT FROM $5 AND totp_enabled = $6",
        )
        .bind(totp.map(|totp| totp.secret.clone()))
        .bind(totp.is_some_and(|totp| totp.enabled))
        .bind(totp.and_then(|totp| totp.last_step))
        .bind(user.as_i64())
        .bind(current.map(|current| current.secret.clone()))
        .bind(current.is_some_and(|current| current.enabled))
        .execute(&mut *transaction)
        .await?;
        if updated.rows_affected() == 0 {
            let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = $1")
                .bind(user.as_i64())
                .fetch_one(&mut *transaction)
                .await?;
            if exists == 0 {
                return Err(StoreError::NotFound);
            }
            return Err(StoreError::Conflict("the second factor was changed meanwhile; try again".into()));
        }
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user.as_i64())
            .execute(&mut *transaction)
            .await?;
        for code in recovery_codes {
            sqlx::query("INSERT INTO recovery_codes (user_id, digest) VALUES ($1, $2)")
                .bind(user.as_i64())
                .bind(code.0.as_slice())
                .execute(&mut *transaction)
                .await?;
        }
        insert_audit_in(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn accept_totp_step(&self, user: UserId, step: i64) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $3)",
        )
        .bind(step)
        .bind(user.as_i64())
        .bind(step)
        .execute(single_writes(self))
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn use_recovery_code(&self, user: UserId, code: &SecretDigest, at_ms: i64) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND digest = $3 AND used_at IS NULL",
        )
        .bind(at_ms)
        .bind(user.as_i64())
        .bind(code.0.as_slice())
        .execute(single_writes(self))
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn user_reach(&self, user: UserId) -> StoreResult<UserReach> {
        let is_admin: bool = sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1")
            .bind(user.as_i64())
            .fetch_one(&self.pool)
            .await?;
        let memberships = sqlx::query("SELECT team_id, role FROM team_members WHERE user_id = $1")
            .bind(user.as_i64())
            .fetch_all(&self.pool)
            .await?;
        let teams = memberships
            .iter()
            .map(|row| Ok((TeamId::from_i64(row.try_get(0)?), role_from_column(row.try_get(1)?)?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let owned = sqlx::query(
            "SELECT c.id, c.team_id FROM collections c JOIN team_members m ON m.team_id = c.team_id WHERE m.user_id = $1",
        )
        .bind(user.as_i64())
        .fetch_all(&self.pool)
        .await?;
        let collections = owned
            .iter()
            .map(|row| Ok((CollectionId::from_i64(row.try_get(0)?), TeamId::from_i64(row.try_get(1)?))))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(UserReach { is_admin, teams, collections })
    }

    async fn insert_team(&self, team: &Team, creator: UserId) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        insert_team_in(&mut transaction, team, creator).await?;
        tell_in(&mut transaction, &[Invalidation::Reach(Creator::User(creator))]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn team(&self, account: AccountId, team: TeamId) -> StoreResult<Team> {
        let row =
            sqlx::query(concat!("SELECT ", team_columns!(), " FROM teams t WHERE t.account_id = $1 AND t.id = $2"))
                .bind(account.as_i64())
                .bind(team.as_i64())
                .fetch_one(&self.pool)
                .await?;
        team_from_row(&row)
    }

    async fn teams_of(&self, user: UserId) -> StoreResult<Vec<(Team, Role)>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            team_columns!(),
            ", m.role FROM teams t JOIN team_members m ON m.team_id = t.id WHERE m.user_id = $1 ORDER BY t.id"
        ))
        .bind(user.as_i64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((team_from_row(row)?, role_from_column(row.try_get(5)?)?))).collect()
    }

    async fn set_team_tags(&self, team: TeamId, tags: &BTreeMap<String, String>) -> StoreResult<()> {
        let updated = sqlx::query("UPDATE teams SET tags = $1 WHERE id = $2")
            .bind(tags_column(tags))
            .bind(team.as_i64())
            .execute(single_writes(self))
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_team(&self, account: AccountId, team: TeamId) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        let private_of: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT private_of FROM teams WHERE account_id = $1 AND id = $2",
            for_update!()
        ))
        .bind(account.as_i64())
        .bind(team.as_i64())
        .fetch_one(&mut *transaction)
        .await?;
        if private_of.is_some() {
            return Err(StoreError::Conflict("a user's private team cannot be deleted".into()));
        }
        let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM collections WHERE team_id = $1")
            .bind(team.as_i64())
            .fetch_one(&mut *transaction)
            .await?;
        if owned > 0 {
            return Err(StoreError::Conflict(format!("the team still owns {owned} collection(s)")));
        }
        let reaches = members_reach(&mut transaction, team).await?;
        sqlx::query("DELETE FROM teams WHERE id = $1").bind(team.as_i64()).execute(&mut *transaction).await?;
        tell_in(&mut transaction, &reaches).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn members(&self, team: TeamId) -> StoreResult<Vec<(Membership, User)>> {
        let rows = sqlx::query(concat!(
            "SELECT m.team_id, m.user_id, m.role, m.created_at, ",
            user_columns!(),
            " FROM team_members m JOIN users u ON u.id = m.user_id WHERE m.team_id = $1 ORDER BY m.created_at, u.id"
        ))
        .bind(team.as_i64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let membership = Membership {
                    team: TeamId::from_i64(row.try_get(0)?),
                    user: UserId::from_i64(row.try_get(1)?),
                    role: role_from_column(row.try_get(2)?)?,
                    created_at_ms: row.try_get(3)?,
                };
                // The user's columns follow the membership's four.
                let user = User {
                    id: UserId::from_i64(row.try_get(4)?),
                    account: AccountId::from_i64(row.try_get(5)?),
                    email: row.try_get(6)?,
                    password_hash: row.try_get(7)?,
                    display_name: row.try_get(8)?,
                    phone: row.try_get(9)?,
                    is_admin: row.try_get(10)?,
                    created_at_ms: row.try_get(11)?,
                    totp: row.try_get::<Option<Vec<u8>>, _>(12)?.map(|secret| UserTotp {
                        secret,
                        enabled: row.try_get(13).unwrap_or(false),
                        last_step: row.try_get(14).unwrap_or(None),
                    }),
                };
                Ok((membership, user))
            })
            .collect()
    }

    async fn set_member_role(&self, team: TeamId, user: UserId, role: Role) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        lock_team(&mut transaction, team).await?;
        let updated = sqlx::query(concat!(
            "UPDATE team_members SET role = $1 WHERE team_id = $2 AND user_id = $3 AND ($1 = 'admin' OR ",
            keeps_another_admin!("$2", "$3"),
            ")"
        ))
        .bind(role_column(role))
        .bind(team.as_i64())
        .bind(user.as_i64())
        .execute(&mut *transaction)
        .await?;
        if updated.rows_affected() == 0 {
            drop(transaction);
            return Err(self.why_membership_unchanged(team, user).await);
        }
        tell_in(&mut transaction, &[Invalidation::Reach(Creator::User(user))]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn remove_member(&self, team: TeamId, user: UserId) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        lock_team(&mut transaction, team).await?;
        let deleted = sqlx::query(concat!(
            "DELETE FROM team_members WHERE team_id = $1 AND user_id = $2 AND (role != 'admin' OR ",
            keeps_another_admin!("$1", "$2"),
            ")"
        ))
        .bind(team.as_i64())
        .bind(user.as_i64())
        .execute(&mut *transaction)
        .await?;
        if deleted.rows_affected() == 0 {
            drop(transaction);
            return Err(self.why_membership_unchanged(team, user).await);
        }
        tell_in(&mut transaction, &[Invalidation::Reach(Creator::User(user))]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn insert_invite(&self, invite: &Invite) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO invites (digest, team_id, created_by, created_at, expires_at, id) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(invite.digest.0.as_slice())
        .bind(invite.team.as_i64())
        .bind(invite.created_by.as_i64())
        .bind(invite.created_at_ms)
        .bind(invite.expires_at_ms)
        .bind(invite.id.as_i64())
        .execute(single_writes(self))
        .await?;
        Ok(())
    }

    async fn invites(&self, team: TeamId) -> StoreResult<Vec<Invite>> {
        let rows = sqlx::query(
            "SELECT digest, team_id, created_by, created_at, expires_at, accepted_by, accepted_at, id FROM invites \
             WHERE team_id = $1 ORDER BY created_at",
        )
        .bind(team.as_i64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invite_from_row).collect()
    }

    async fn delete_invite(&self, team: TeamId, code: &SecretDigest) -> StoreResult<()> {
        let deleted = sqlx::query("DELETE FROM invites WHERE team_id = $1 AND digest = $2")
            .bind(team.as_i64())
            .bind(code.0.as_slice())
            .execute(single_writes(self))
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn accept_invite(&self, code: &SecretDigest, user: UserId, at_ms: i64) -> StoreResult<TeamId> {
        let mut transaction = begin_write(self).await?;
        // The team's row first, then the invite's: the order deleting a team takes them in (its row, then the
        // invites its deletion cascades to), so the two cannot deadlock.
        let team: i64 = sqlx::query_scalar("SELECT team_id FROM invites WHERE digest = $1")
            .bind(code.0.as_slice())
            .fetch_one(&mut *transaction)
            .await?;
        lock_team(&mut transaction, TeamId::from_i64(team)).await?;
        let team: i64 = sqlx::query_scalar(
            "UPDATE invites SET accepted_by = $1, accepted_at = $2 \
             WHERE digest = $3 AND accepted_at IS NULL AND expires_at > $4 RETURNING team_id",
        )
        .bind(user.as_i64())
        .bind(at_ms)
        .bind(code.0.as_slice())
        .bind(at_ms)
        .fetch_one(&mut *transaction)
        .await?;
        sqlx::query(
            "INSERT INTO team_members (team_id, user_id, role, created_at) VALUES ($1, $2, 'member', $3) \
             ON CONFLICT (team_id, user_id) DO NOTHING",
        )
        .bind(team)
        .bind(user.as_i64())
        .bind(at_ms)
        .execute(&mut *transaction)
        .await?;
        tell_in(&mut transaction, &[Invalidation::Reach(Creator::User(user))]).await?;
        transaction.commit().await?;
        Ok(TeamId::from_i64(team))
    }

    async fn insert_challenge(&self, challenge: &LoginChallenge) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO login_challenges (id, user_id, client_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(challenge.id.as_i64())
        .bind(challenge.user.as_i64())
        .bind(&challenge.client_id)
        .bind(challenge.created_at_ms)
        .bind(challenge.expires_at_ms)
        .execute(single_writes(self))
        .await?;
        Ok(())
    }

    async fn challenge(&self, id: Id, user: UserId, now_ms: i64) -> StoreResult<LoginChallenge> {
        let row = sqlx::query(
            "SELECT id, user_id, client_id, created_at, expires_at FROM login_challenges \
             WHERE id = $1 AND user_id = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(id.as_i64())
        .bind(user.as_i64())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(LoginChallenge {
            id: Id::from_i64(row.try_get(0)?),
            user: UserId::from_i64(row.try_get(1)?),
            client_id: row.try_get(2)?,
            created_at_ms: row.try_get(3)?,
            expires_at_ms: row.try_get(4)?,
        })
    }

    async fn use_challenge(&self, id: Id, at_ms: i64) -> StoreResult<bool> {
        let updated = sqlx::query("UPDATE login_challenges SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
            .bind(at_ms)
            .bind(id.as_i64())
            .execute(single_writes(self))
            .await?;
        Ok(updated.rows_affected() == 1)
    }
}
