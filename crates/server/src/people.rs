//! People: user accounts, password login with an optional TOTP second factor, sessions of rotating refresh
//! tokens, and the throttle that slows down guessing. Dialects (the native API, AllThingsTalk's `/login`) call
//! these and shape the answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use tessera_core::totp::{self, TotpError, TotpSecret};
use tessera_core::{
    AccountId, Action, Id, Permit, Rights, Scope, Secret, ServerKey, Target, TeamId, TokenKind, UserId,
};
use tessera_store::{Actor, Creator, LoginChallenge, Store, StoreError, Team, TokenRecord, User, UserTotp};

use crate::audit::{self, AuditEvent, EntryExt};
use crate::entropy::{new_id, random_bytes};
use crate::error::{AppError, permit_mismatch};
use crate::time::now_ms;
use crate::tokens::{Caller, NewToken, TokenService};

/// Whether a session is new or replaces the pair of a refresh token.
#[derive(Debug, Clone, Copy)]
enum Rotation<'a> {
    /// A sign-in, recorded in the audit trail with the session it opens.
    NewSession(SignIn),
    Replace(&'a TokenRecord),
}

/// How a sign-in was made, for its audit entry.
#[derive(Debug, Clone, Copy)]
struct SignIn {
    source: IpAddr,
    /// `password`, `totp` or `recovery_code`: the last factor given.
    factor: &'static str,
}

/// Passwords shorter than this are refused.
pub const MIN_PASSWORD_LEN: usize = 10;
/// How long a second-factor challenge lives.
const CHALLENGE_TTL_MS: i64 = 5 * 60 * 1000;
const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "Tessera";

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub phone: String,
    pub is_admin: bool,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser").field("email", &self.email).field("is_admin", &self.is_admin).finish_non_exhaustive()
    }
}

/// A fresh login session: an access token and the refresh token that renews it.
#[derive(Debug)]
pub struct Session {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub email: String,
    pub client_id: String,
}

/// Where a password login stands after the password.
#[derive(Debug)]
pub enum LoginStep {
    Session(Session),
    /// The user has a second factor: present a code with this challenge.
    Challenge {
        challenge: Id,
        user: UserId,
    },
}

/// Why a login step failed. Every wrong credential is `InvalidGrant`, which says nothing of what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the credentials are wrong")]
    InvalidGrant,
    #[error("too many failed attempts; retry after {0:?}")]
    Throttled(Duration),
    #[error(transparent)]
    Failed(#[from] AppError),
}

impl From<StoreError> for LoginError {
    fn from(error: StoreError) -> LoginError {
        LoginError::Failed(AppError::from(error))
    }
}

/// A new second factor waiting for its first code.
#[derive(Debug)]
pub struct TotpEnrollment {
    pub secret: TotpSecret,
    pub uri: String,
    pub qr_svg: String,
}

#[derive(Debug)]
pub struct PeopleService {
    store: Arc<dyn Store>,
    tokens: Arc<TokenService>,
    key: ServerKey,
    throttle: Throttle,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

/// Hashes a password with argon2id at the library's recommended parameters, which the PHC string records so
/// they can be raised later without invalidating existing hashes.
pub fn hash_password(password: &str) -> String {
    match Argon2::default().hash_password(password.as_bytes()) {
        Ok(hash) => hash.to_string(),
        Err(error) => panic!("argon2 failed to hash a password: {error}"),
    }
}

/// Lower-cases and checks an email address.
pub fn normalize_email(text: &str) -> Result<String, AppError> {
    let email = text.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid { Ok(email) } else { Err(AppError::BadRequest(format!("'{}' is not an email address", text.trim()))) }
}

impl PeopleService {
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Arc<TokenService>,
        key: ServerKey,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> PeopleService {
        PeopleService { store, tokens, key, throttle: Throttle::default(), access_ttl, refresh_ttl }
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// Creates a user, with their private team, under a permit to manage the account's users.
    pub async fn create_user(&self, permit: &Permit, new: NewUser) -> Result<User, AppError> {
        if !permit.covers(Action::ManageUsers, &Target::account(permit.account())) {
            return Err(permit_mismatch(permit, "create user"));
        }
        self.insert_user(permit.account(), new).await
    }

    /// Creates a user on the operator's authority (the command line, which holds the data directory).
    pub async fn create_user_as_operator(&self, account: AccountId, new: NewUser) -> Result<User, AppError> {
        self.insert_user(account, new).await
    }

    async fn insert_user(&self, account: AccountId, new: NewUser) -> Result<User, AppError> {
        let email = normalize_email(&new.email)?;
        if new.password.chars().count() < MIN_PASSWORD_LEN {
            return Err(AppError::BadRequest(format!("the password must have at least {MIN_PASSWORD_LEN} characters")));
        }
        let password = new.password;
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|error| AppError::Internal(Box::new(error)))?;
        let now = now_ms();
        let user = User {
            id: UserId(new_id()),
            account,
            email: email.clone(),
            password_hash,
            display_name: new.display_name.trim().to_owned(),
            phone: new.phone.trim().to_owned(),
            is_admin: new.is_admin,
            totp: None,
            created_at_ms: now,
        };
        let private_team = Team {
            id: TeamId(new_id()),
            account,
            tags: Default::default(),
            private_of: Some(user.id),
            created_at_ms: now,
        };
        self.store.insert_user(&user, &private_team).await.map_err(|error| match error {
            StoreError::Conflict(_) => AppError::Conflict(format!("a user with the email {email} exists already")),
            other => AppError::from(other),
        })?;
        Ok(user)
    }

    /// The code of an invite: derived from its id with the server key, so only the digest need be stored and a
    /// listing can still show it.
    pub fn invite_code(&self, invite: Id) -> String {
        let digest = self.key.digest_bytes(format!("invite:{}", invite.as_i64()).as_bytes());
        crate::peers::hex(&digest.0[..16])
    }

    /// The digest kept of a one-time code (invites, recovery codes).
    pub fn digest_code(&self, code: &str) -> tessera_core::SecretDigest {
        self.key.digest_bytes(code.as_bytes())
    }

    /// The private team of the user whose session `caller` is.
    pub async fn private_team(&self, caller: &Caller) -> Result<TeamId, AppError> {
        let user = self.user_of(caller).await?;
        let teams = self.store.teams_of(user.id).await?;
        teams
            .into_iter()
            .find(|(team, _)| team.private_of == Some(user.id))
            .map(|(team, _)| team.id)
            .ok_or_else(|| AppError::Internal(format!("user {} has no private team", user.id).into()))
    }

    /// The account's users, for an account administrator (a `ManageUsers` permit).
    pub async fn list_users(&self, permit: &tessera_core::Permit) -> Result<Vec<User>, AppError> {
        let account = tessera_core::Target::account(permit.account());
        crate::error::require_permit(permit, tessera_core::Action::ManageUsers, &account, "list users")?;
        Ok(self.store.list_users(permit.account()).await?)
    }

    /// Makes `user` an administrator of the account or not, under a permit to manage the account's users, and
    /// answers the user as stored now. An administrator may not remove their own flag (another administrator
    /// must), so an account is never left without one by its last administrator's slip; the store refuses to
    /// demote the last one whoever asks. Every node judges the user's tokens on their new reach from the next
    /// request.
    pub async fn set_admin(&self, permit: &Permit, user: UserId, is_admin: bool) -> Result<User, AppError> {
        let account = permit.account();
        crate::error::require_permit(permit, Action::ManageUsers, &Target::account(account), "set admin")?;
        if !is_admin {
            // Only a user's own session manages users (the core's rule), so the permit's token names who acts.
            let acting = self.store.token(account, permit.token()).await?;
            if acting.creator == Creator::User(user) {
                return Err(AppError::Conflict(
                    "administrators cannot remove their own admin flag: another administrator must, so the \
                     account keeps one"
                        .into(),
                ));
            }
        }
        self.store
            .set_user_admin(account, user, is_admin)
            .await
            .map_err(|error| AppError::from_store("user", error))?;
        self.tokens.reach_changed(Creator::User(user));
        self.store.user(account, user).await.map_err(|error| AppError::from_store("user", error))
    }

    /// Changes the password of the caller's own user (a session of theirs: `ManageOwnLogin`), given the current
    /// one: a stolen session alone must not take the account over. Wrong current passwords are throttled per
    /// user, as login codes are. The user's other login sessions end with the change (a session opened by
    /// whoever knew the old password must not outlive it); the caller's own goes on.
    /// Whether `password` is the session's user's current one, asked before what a stolen session must not do
    /// alone (a new password, a new second factor that would lock the owner out). Throttled per user.
    pub async fn confirm_password(&self, caller: &Caller, password: &str) -> Result<(), LoginError> {
        caller.authorize(Action::ManageOwnLogin, &Target::account(caller.account())).map_err(AppError::from)?;
        let user = self.user_of(caller).await?;
        self.check_current_password(&user, password).await
    }

    async fn check_current_password(&self, user: &User, password: &str) -> Result<(), LoginError> {
        let keys = [ThrottleKey::PasswordChange(user.id)];
        self.throttle.attempt(&keys, now_ms())?;
        let (hash, current) = (user.password_hash.clone(), password.to_owned());
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &current))
            .await
            .map_err(|error| AppError::Internal(Box::new(error)))?;
        if !matches {
            tracing::info!(user = %user.id, "refused: the current password is wrong");
            return Err(AppError::BadRequest("the current password is not correct".into()).into());
        }
        self.throttle.succeeded(&keys);
        Ok(())
    }

    pub async fn change_password(&self, caller: &Caller, current: &str, new: &str) -> Result<(), LoginError> {
        caller.authorize(Action::ManageOwnLogin, &Target::account(caller.account())).map_err(AppError::from)?;
        let user = self.user_of(caller).await?;
        if new.chars().count() < MIN_PASSWORD_LEN {
            return Err(AppError::BadRequest(format!(
                "the new password must have at least {MIN_PASSWORD_LEN} characters"
            ))
            .into());
        }
        self.check_current_password(&user, current).await?;
        let new = new.to_owned();
        let new_hash = tokio::task::spawn_blocking(move || hash_password(&new))
            .await
            .map_err(|error| AppError::Internal(Box::new(error)))?;
        let entry = audit::by(caller, AuditEvent::PasswordChanged);
        let revoked =
            self.store.set_password_hash(user.id, &new_hash, caller.record.family, now_ms(), &[entry]).await?;
        self.tokens.forget(&revoked);
        tracing::info!(user = %user.id, sessions_ended = revoked.len(), "password changed");
        Ok(())
    }

    /// The user a session belongs to.
    pub async fn user_of(&self, caller: &Caller) -> Result<User, AppError> {
        match caller.record.creator {
            // A session, or a Horde token acting as its owner.
            Creator::User(user) if matches!(caller.record.kind, TokenKind::UserAccess | TokenKind::Resource) => {
                self.store.user(caller.account(), user).await.map_err(|error| AppError::from_store("user", error))
            }
            _ => Err(AppError::Denied(tessera_core::Denial::UsersOnly)),
        }
    }

    /// Step one: email and password. Throttled per address and per (email, address).
    pub async fn login_with_password(
        &self,
        email: &str,
        password: &str,
        client_id: &str,
        source: IpAddr,
    ) -> Result<LoginStep, LoginError> {
        let email = email.trim().to_lowercase();
        let address = source;
        let source = source_key(source);
        let keys = [ThrottleKey::Address(source), ThrottleKey::Login(email.clone(), source)];
        self.throttle.attempt(&keys, now_ms())?;
        let candidates = self.store.users_by_email(&email).await?;
        let known: Vec<(AccountId, UserId)> = candidates.iter().map(|user| (user.account, user.id)).collect();
        let user = self.first_matching_password(candidates, password.to_owned()).await?;
        let Some(user) = user else {
            tracing::info!(%source, "login failed: wrong email or password");
            let audit = self.tokens.audit();
            if known.is_empty() {
                audit.refused(None, AuditEvent::LoginFailed, Actor::Anonymous, None, Some(address), "unknown email");
            }
            for (account, user) in known {
                audit.refused(
                    Some(account),
                    AuditEvent::LoginFailed,
                    Actor::User(user),
                    None,
                    Some(address),
                    "wrong password",
                );
            }
            return Err(LoginError::InvalidGrant);
        };
        self.throttle.succeeded(&keys);
        if user.totp.as_ref().is_some_and(|totp| totp.enabled) {
            let now = now_ms();
            let challenge = LoginChallenge {
                id: new_id(),
                user: user.id,
                client_id: client_id.to_owned(),
                created_at_ms: now,
                expires_at_ms: now + CHALLENGE_TTL_MS,
            };
            self.store.insert_challenge(&challenge).await?;
            return Ok(LoginStep::Challenge { challenge: challenge.id, user: user.id });
        }
        let sign_in = SignIn { source: address, factor: "password" };
        Ok(LoginStep::Session(self.new_session(&user, client_id, sign_in).await?))
    }

    /// Verifies the password against each candidate (normally one). With no candidate, a dummy hash is verified so
    /// that an unknown email costs the same time as a wrong password.
    async fn first_matching_password(
        &self,
        candidates: Vec<User>,
        password: String,
    ) -> Result<Option<User>, LoginError> {
        let found = tokio::task::spawn_blocking(move || {
            if candidates.is_empty() {
                let _ = verify_password(dummy_hash(), &password);
                return None;
            }
            candidates.into_iter().find(|user| verify_password(&user.password_hash, &password))
        })
        .await
        .map_err(|error| LoginError::Failed(AppError::Internal(Box::new(error))))?;
        Ok(found)
    }

    /// Step two: the code (or a recovery code) for a challenge.
    pub async fn login_with_code(
        &self,
        challenge: Id,
        user: UserId,
        code: &str,
        client_id: &str,
        source: IpAddr,
    ) -> Result<Session, LoginError> {
        let address = source;
        let source = source_key(source);
        // Per address, per user from that address, and per user from anywhere: someone who has the password
        // could otherwise guess codes from many addresses (each accepted code spans three time steps). The
        // per-user key counts only once the challenge is shown to be this user's (the password was right): any
        // stranger knowing a user's id could otherwise send codes for made-up challenges and lock them out.
        let keys = [ThrottleKey::Address(source), ThrottleKey::User(user, source)];
        self.throttle.attempt(&keys, now_ms())?;
        match self.store.challenge(challenge, user, now_ms()).await {
            Ok(issued) if issued.client_id == client_id => {}
            Ok(_) | Err(StoreError::NotFound) => return Err(LoginError::InvalidGrant),
            Err(error) => return Err(error.into()),
        }
        let user_keys = [ThrottleKey::SecondFactor(user)];
        self.throttle.attempt(&user_keys, now_ms())?;
        let outcome = self.check_challenge_code(challenge, user, code, client_id).await;
        let user = match outcome {
            Ok(user) => user,
            Err(LoginError::InvalidGrant) => {
                tracing::info!(%source, %user, "second factor failed");
                if let Ok(known) = self.store.user_by_id(user).await {
                    let reason = "wrong second-factor code";
                    let actor = Actor::User(user);
                    self.tokens.audit().refused(
                        Some(known.account),
                        AuditEvent::LoginFailed,
                        actor,
                        None,
                        Some(address),
                        reason,
                    );
                }
                return Err(LoginError::InvalidGrant);
            }
            Err(other) => return Err(other),
        };
        self.throttle.succeeded(&user_keys);
        self.throttle.succeeded(&keys);
        // A TOTP code is digits; anything else that was accepted was a recovery code.
        let factor = if code.trim().chars().all(|c| c.is_ascii_digit()) { "totp" } else { "recovery_code" };
        Ok(self.new_session(&user, client_id, SignIn { source: address, factor }).await?)
    }

    async fn check_challenge_code(
        &self,
        challenge: Id,
        user: UserId,
        code: &str,
        client_id: &str,
    ) -> Result<User, LoginError> {
        let now = now_ms();
        match self.store.challenge(challenge, user, now).await {
            // The code must come from the client the password came from.
            Ok(issued) if issued.client_id == client_id => {}
            Ok(_) => return Err(LoginError::InvalidGrant),
            Err(StoreError::NotFound) => return Err(LoginError::InvalidGrant),
            Err(error) => return Err(error.into()),
        }
        let user = self.store.user_by_id(user).await?;
        let Some(totp) = user.totp.clone().filter(|totp| totp.enabled) else {
            return Err(LoginError::InvalidGrant);
        };
        if !self.accept_code(&user, &totp, code, now).await? {
            return Err(LoginError::InvalidGrant);
        }
        // The challenge serves one successful code.
        if !self.store.use_challenge(challenge, now).await? {
            return Err(LoginError::InvalidGrant);
        }
        Ok(user)
    }

    /// Accepts a current TOTP code once, or an unused recovery code.
    async fn accept_code(&self, user: &User, totp: &UserTotp, code: &str, now: i64) -> Result<bool, StoreError> {
        let secret = TotpSecret::from_bytes(totp.secret.clone());
        match totp::verify(&secret, code, now, totp.last_step) {
            Ok(step) => self.store.accept_totp_step(user.id, step).await,
            Err(TotpError::Malformed) => {
                let digest = self.key.digest_bytes(normalize_recovery_code(code).as_bytes());
                self.store.use_recovery_code(user.id, &digest, now).await
            }
            Err(TotpError::Wrong | TotpError::Replayed) => Ok(false),
        }
    }

    /// Step three: a refresh token for a new pair. The refresh token rotates; presenting one that was already used
    /// revokes the whole session, since one of the two presenters must be a thief.
    pub async fn refresh(&self, presented: &str, client_id: &str, source: IpAddr) -> Result<Session, LoginError> {
        let keys = [ThrottleKey::Address(source_key(source))];
        self.throttle.attempt(&keys, now_ms())?;
        let audit = self.tokens.audit();
        let unknown =
            |reason| audit.refused(None, AuditEvent::CredentialRefused, Actor::Anonymous, None, Some(source), reason);
        let Ok(secret) = Secret::parse(presented.trim()) else {
            unknown("malformed refresh token");
            return Err(LoginError::InvalidGrant);
        };
        let record = match self.store.token_by_digest(&self.tokens.digest(&secret)).await {
            Ok(record) if record.kind == TokenKind::Refresh => record,
            Ok(_) | Err(StoreError::NotFound) => {
                unknown("unknown refresh token");
                return Err(LoginError::InvalidGrant);
            }
            Err(error) => return Err(error.into()),
        };
        let now = now_ms();
        if record.revoked_at_ms.is_some() {
            self.revoke_session_of(&record, "a used refresh token was presented again", source).await?;
            return Err(LoginError::InvalidGrant);
        }
        if record.expires_at_ms.is_some_and(|expires| now >= expires) {
            let (actor, token) = (Actor::Token(record.id), Some(record.id));
            audit.refused(
                Some(record.account),
                AuditEvent::CredentialRefused,
                actor,
                token,
                Some(source),
                "refresh token expired",
            );
            return Err(LoginError::InvalidGrant);
        }
        let Creator::User(user) = record.creator else { return Err(LoginError::InvalidGrant) };
        let user = match self.store.user_by_id(user).await {
            Ok(user) => user,
            Err(StoreError::NotFound) => return Err(LoginError::InvalidGrant),
            Err(error) => return Err(error.into()),
        };
        // The old refresh token is consumed in the same transaction that stores the new pair: a concurrent
        // presentation of it either loses here (and revokes the family, new pair included) or finds it consumed.
        match self.open_session(&user, client_id, Rotation::Replace(&record)).await? {
            Some(session) => {
                self.throttle.succeeded(&keys);
                Ok(session)
            }
            None => {
                self.revoke_session_of(&record, "a refresh token was presented twice at once", source).await?;
                Err(LoginError::InvalidGrant)
            }
        }
    }

    async fn revoke_session_of(&self, record: &TokenRecord, reason: &str, source: IpAddr) -> Result<(), StoreError> {
        let Some(family) = record.family else { return Ok(()) };
        let actor = match record.creator {
            Creator::User(user) => Actor::User(user),
            _ => Actor::Anonymous,
        };
        let entry = audit::entry(record.account, actor, AuditEvent::RefreshTokenReused)
            .about(record.id)
            .coming_from(Some(source))
            .refused()
            .with("reason", reason);
        let revoked = self.store.revoke_family(family, now_ms(), &[entry]).await?;
        self.tokens.forget(&revoked);
        tracing::warn!(token = %record.id, session = ?family, revoked = revoked.len(), reason, "session revoked");
        Ok(())
    }

    /// Ends the caller's session: its access and refresh tokens stop working at once.
    pub async fn logout(&self, caller: &Caller) -> Result<(), AppError> {
        let Some(family) = caller.record.family else {
            return Err(AppError::BadRequest("only a login session can be logged out".into()));
        };
        let entry = audit::by(caller, AuditEvent::Logout).about(caller.record.id);
        let revoked = self.store.revoke_family(family, now_ms(), &[entry]).await?;
        self.tokens.forget(&revoked);
        Ok(())
    }

    async fn new_session(&self, user: &User, client_id: &str, sign_in: SignIn) -> Result<Session, AppError> {
        self.open_session(user, client_id, Rotation::NewSession(sign_in))
            .await?
            .ok_or_else(|| AppError::Internal("a new session cannot collide".into()))
    }

    /// Stores a new access and refresh token for `user`: a new session at login, or the next pair of a session
    /// when rotating, in which case `None` means the old refresh token had been used already.
    async fn open_session(
        &self,
        user: &User,
        client_id: &str,
        rotation: Rotation<'_>,
    ) -> Result<Option<Session>, AppError> {
        let now = now_ms();
        let family = match rotation {
            Rotation::NewSession(_) => new_id(),
            Rotation::Replace(old) => old.family.unwrap_or_else(new_id),
        };
        let expires_at_ms = now + self.access_ttl.as_millis() as i64;
        let creator = Creator::User(user.id);
        let access = NewToken::new(
            TokenKind::UserAccess,
            Scope::Account,
            Rights::ReadWrite,
            format!("session ({client_id})"),
            Some(expires_at_ms),
        );
        let refresh = NewToken::new(
            TokenKind::Refresh,
            Scope::Account,
            Rights::ReadWrite,
            format!("refresh ({client_id})"),
            Some(now + self.refresh_ttl.as_millis() as i64),
        );
        let (access_record, access_token) = self.tokens.prepare(user.account, creator, access, Some(family));
        let (refresh_record, refresh_token) = self.tokens.prepare(user.account, creator, refresh, Some(family));
        let records = [access_record, refresh_record];
        match rotation {
            Rotation::NewSession(sign_in) => {
                // The session and the record of the sign-in commit together.
                let entry = audit::entry(user.account, Actor::User(user.id), AuditEvent::LoginSucceeded)
                    .about(records[0].id)
                    .coming_from(Some(sign_in.source))
                    .with("client_id", client_id)
                    .with("factor", sign_in.factor);
                self.store.insert_tokens(&records, &[entry]).await?;
            }
            Rotation::Replace(old) => {
                if !self.store.rotate_tokens(old.id, &records, now).await? {
                    return Ok(None);
                }
            }
        }
        Ok(Some(Session {
            access_token,
            refresh_token,
            issued_at_ms: now,
            expires_at_ms,
            email: user.email.clone(),
            client_id: client_id.to_owned(),
        }))
    }

    /// Starts TOTP enrollment: a new secret, not yet in force until a code confirms it.
    pub async fn start_totp(&self, caller: &Caller, user: &User) -> Result<TotpEnrollment, AppError> {
        if user.totp.as_ref().is_some_and(|totp| totp.enabled) {
            return Err(AppError::Conflict("a second factor is already enabled; disable it first".into()));
        }
        let secret = TotpSecret::from_bytes(random_bytes::<{ totp::SECRET_BYTES }>().to_vec());
        let pending = UserTotp { secret: secret.as_bytes().to_vec(), enabled: false, last_step: None };
        let entry = audit::by(caller, AuditEvent::SecondFactorEnrollmentStarted);
        self.store.set_totp(user.id, user.totp.as_ref(), Some(&pending), &[], &[entry]).await?;
        let uri = secret.otpauth_uri(ISSUER, &user.email);
        let qr_svg = qrcode::QrCode::new(uri.as_bytes())
            .map(|code| code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build())
            .map_err(|error| AppError::Internal(Box::new(error)))?;
        Ok(TotpEnrollment { secret, uri, qr_svg })
    }

    /// Confirms enrollment with a valid code; returns one-time recovery codes, shown this once. Wrong codes are
    /// throttled per user, as at login.
    pub async fn confirm_totp(&self, caller: &Caller, user: &User, code: &str) -> Result<Vec<String>, LoginError> {
        let Some(pending) = user.totp.as_ref().filter(|totp| !totp.enabled) else {
            return Err(AppError::Conflict("no second-factor enrollment is waiting; start one first".into()).into());
        };
        let keys = [ThrottleKey::SecondFactorChange(user.id)];
        self.throttle.attempt(&keys, now_ms())?;
        let secret = TotpSecret::from_bytes(pending.secret.clone());
        let step = totp::verify(&secret, code, now_ms(), None)
            .map_err(|error| AppError::BadRequest(format!("the code was not accepted: {error}")))?;
        self.throttle.succeeded(&keys);
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let digests: Vec<_> =
            codes.iter().map(|code| self.key.digest_bytes(code.replace('-', "").as_bytes())).collect();
        let enabled = UserTotp { secret: pending.secret.clone(), enabled: true, last_step: Some(step) };
        let entry = audit::by(caller, AuditEvent::SecondFactorEnabled).with("recovery_codes", digests.len());
        self.store.set_totp(user.id, Some(pending), Some(&enabled), &digests, &[entry]).await?;
        Ok(codes)
    }

    /// Turns the second factor off; needs a current code (or a recovery code, for someone who lost the
    /// authenticator). Wrong codes are throttled per user: whoever holds a stolen session cannot guess codes to
    /// turn the second factor off.
    pub async fn disable_totp(&self, caller: &Caller, user: &User, code: &str) -> Result<(), LoginError> {
        let Some(totp) = user.totp.as_ref().filter(|totp| totp.enabled) else {
            return Err(AppError::Conflict("no second factor is enabled".into()).into());
        };
        let keys = [ThrottleKey::SecondFactorChange(user.id)];
        self.throttle.attempt(&keys, now_ms())?;
        if !self.accept_code(user, totp, code, now_ms()).await? {
            return Err(AppError::BadRequest("the code was not accepted".into()).into());
        }
        self.throttle.succeeded(&keys);
        let entry = audit::by(caller, AuditEvent::SecondFactorDisabled);
        self.store.set_totp(user.id, Some(totp), None, &[], &[entry]).await?;
        Ok(())
    }
}

fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A valid argon2id hash of a random password, verified when an email is unknown so that its answer takes as long
/// as a wrong password's.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(&crate::entropy::new_secret(TokenKind::ApiKey).expose()[4..]))
}

/// Ten characters of base32 in two groups, like `k3m9q-x7r2t`.
fn new_recovery_code() -> String {
    let text = crate::entropy::new_secret(TokenKind::Refresh).expose()[4..14].to_owned();
    format!("{}-{}", &text[..5], &text[5..])
}

fn normalize_recovery_code(code: &str) -> String {
    code.trim().to_lowercase().replace(['-', ' '], "")
}

/// What failed attempts are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    /// Everything tried from one address, whatever the account.
    Address(IpAddr),
    /// Passwords tried for one email from one address.
    Login(String, IpAddr),
    /// Codes tried for one user from one address.
    User(UserId, IpAddr),
    /// Codes tried to turn a user's second factor on or off, from a session of theirs (wherever it is used: only
    /// someone holding their session can add to this count).
    SecondFactorChange(UserId),
    /// Current passwords tried to change a user's password, from a session of theirs (as `SecondFactorChange`):
    /// whoever holds a stolen session cannot guess the password through it.
    PasswordChange(UserId),
    /// Codes tried for one user's sign-in, from any address.
    SecondFactor(UserId),
}

impl ThrottleKey {
    /// Failures allowed before each further attempt must wait. An address may hide many people (NAT), so it gets
    /// more room than one login from it.
    fn free_failures(&self) -> u32 {
        match self {
            ThrottleKey::Address(_) => 20,
            // Only the one who has the user's password pays for these, from wherever they try.
            ThrottleKey::SecondFactor(_) => 10,
            ThrottleKey::Login(..)
            | ThrottleKey::User(..)
            | ThrottleKey::SecondFactorChange(_)
            | ThrottleKey::PasswordChange(_) => 3,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: i64,
}

/// Exponential back-off on failed logins and codes. Failures are counted per address and per (login, address),
/// never per account alone: a correct login from one address is never delayed by another address's failures.
#[derive(Debug, Default)]
struct Throttle {
    failures: Mutex<HashMap<ThrottleKey, Failures>>,
}

const THROTTLE_FORGET_MS: i64 = 60 * 60 * 1000;
const THROTTLE_MAX_DELAY_MS: i64 = 15 * 60 * 1000;

impl Throttle {
    fn delay_ms(key: &ThrottleKey, count: u32) -> i64 {
        let free = key.free_failures();
        if count < free {
            return 0;
        }
        let doublings = (count - free).min(20);
        (1000_i64 << doublings).min(THROTTLE_MAX_DELAY_MS)
    }

    /// Counts an attempt before its work is done, or refuses it while any of its keys must wait. Counting first
    /// means a burst of simultaneous guesses is throttled as a sequence would be.
    fn attempt(&self, keys: &[ThrottleKey], now: i64) -> Result<(), LoginError> {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let wait = keys
            .iter()
            .filter_map(|key| failures.get(key).map(|entry| (key, entry)))
            .filter(|(_, entry)| now - entry.last_ms < THROTTLE_FORGET_MS)
            .map(|(key, entry)| entry.last_ms + Throttle::delay_ms(key, entry.count) - now)
            .max()
            .unwrap_or(0);
        if wait > 0 {
            return Err(LoginError::Throttled(Duration::from_millis(wait as u64)));
        }
        if failures.len() > 100_000 {
            failures.retain(|_, entry| now - entry.last_ms < THROTTLE_FORGET_MS);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert(Failures { count: 0, last_ms: now });
            if now - entry.last_ms >= THROTTLE_FORGET_MS {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last_ms = now;
        }
        Ok(())
    }

    /// Forgives a successful attempt: the login's own count is cleared, the address gets its attempt back.
    fn succeeded(&self, keys: &[ThrottleKey]) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in keys {
            match key {
                ThrottleKey::Address(_) => {
                    if let Some(entry) = failures.get_mut(key) {
                        entry.count = entry.count.saturating_sub(1);
                        if entry.count == 0 {
                            failures.remove(key);
                        }
                    }
                }
                ThrottleKey::Login(..)
                | ThrottleKey::User(..)
                | ThrottleKey::SecondFactor(_)
                | ThrottleKey::SecondFactorChange(_)
                | ThrottleKey::PasswordChange(_) => {
                    failures.remove(key);
                }
            }
        }
    }
}

/// The address failures are counted against: IPv4 as is, IPv6 by its /64, which one subscriber usually holds
/// whole.
fn source_key(address: IpAddr) -> IpAddr {
    crate::tokens::address_block(address)
}

#[cfg(test)]
mod tests {
    use tessera_core::Reach;
    use tessera_store::SqliteStore;

    use super::*;
    use crate::tokens::VerifyError;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A people service over a bootstrapped in-memory store, with the token service it shares and the
    /// bootstrap administrator's email and password.
    async fn people() -> (PeopleService, Arc<TokenService>, String, String) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let key = ServerKey::new(&[0; ServerKey::LEN]);
        let credentials = crate::bootstrap::bootstrap(store.as_ref(), &key).await.unwrap().unwrap();
        let tokens =
            Arc::new(TokenService::new(store.clone(), key.clone(), 100, crate::audit::for_tests(&store).await));
        let ttl = (Duration::from_secs(900), Duration::from_secs(86_400));
        let people = PeopleService::new(store, tokens.clone(), key, ttl.0, ttl.1);
        (people, tokens, credentials.admin_email, credentials.admin_password)
    }

    async fn login(people: &PeopleService, email: &str, password: &str) -> Result<Session, LoginError> {
        match people.login_with_password(email, password, "test", HERE).await? {
            LoginStep::Session(session) => Ok(session),
            LoginStep::Challenge { .. } => panic!("no second factor was enrolled"),
        }
    }

    fn refused_as(outcome: Result<(), LoginError>, wanted: &str) {
        match outcome {
            Err(LoginError::Failed(AppError::BadRequest(message))) => assert!(message.contains(wanted), "{message}"),
            other => panic!("expected a refusal saying '{wanted}', got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_password_change_needs_the_current_password_and_ends_the_other_sessions() {
        let (people, tokens, email, password) = people().await;
        let own = login(&people, &email, &password).await.unwrap();
        let other = login(&people, &email, &password).await.unwrap();
        let caller = tokens.verify(own.access_token.expose(), None).await.unwrap();
        // The other session is cached: the change must drop it from the cache, not only revoke it in the store.
        tokens.verify(other.access_token.expose(), None).await.unwrap();

        refused_as(people.change_password(&caller, &password, "too short").await, "at least 10 characters");
        refused_as(people.change_password(&caller, "not the password", "a new passphrase").await, "not correct");
        people.change_password(&caller, &password, "a new passphrase").await.unwrap();

        assert!(matches!(
            tokens.verify(other.access_token.expose(), None).await,
            Err(VerifyError::Dead(tessera_core::Denial::Revoked))
        ));
        assert!(matches!(
            people.refresh(other.refresh_token.expose(), "test", HERE).await,
            Err(LoginError::InvalidGrant)
        ));
        tokens.verify(own.access_token.expose(), None).await.expect("the caller's own session goes on");
        people.refresh(own.refresh_token.expose(), "test", HERE).await.expect("and can be refreshed");
        assert!(matches!(login(&people, &email, &password).await, Err(LoginError::InvalidGrant)));
        login(&people, &email, "a new passphrase").await.expect("the new password logs in");
    }

    #[tokio::test]
    async fn wrong_current_passwords_are_throttled_per_user() {
        let (people, tokens, email, password) = people().await;
        let session = login(&people, &email, &password).await.unwrap();
        let caller = tokens.verify(session.access_token.expose(), None).await.unwrap();
        for _ in 0..3 {
            refused_as(people.change_password(&caller, "a guess at it", "a new passphrase").await, "not correct");
        }
        let throttled = people.change_password(&caller, &password, "a new passphrase").await;
        assert!(matches!(throttled, Err(LoginError::Throttled(_))), "even the right one must wait: {throttled:?}");
        assert!(login(&people, &email, &password).await.is_ok(), "the password is unchanged");
    }

    #[tokio::test]
    async fn an_admin_flag_change_is_seen_at_the_next_verify_and_an_admin_cannot_drop_their_own() {
        let (people, tokens, email, password) = people().await;
        let admin =
            tokens.verify(login(&people, &email, &password).await.unwrap().access_token.expose(), None).await.unwrap();
        let permit = admin.authorize(Action::ManageUsers, &Target::account(admin.account())).unwrap();
        let new = NewUser {
            email: "bob@example.com".into(),
            password: "bob's passphrase".into(),
            display_name: "Bob".into(),
            phone: String::new(),
            is_admin: false,
        };
        let bob = people.create_user(&permit, new).await.unwrap();
        let bob_session = login(&people, "bob@example.com", "bob's passphrase").await.unwrap();
        let reach = async || tokens.verify(bob_session.access_token.expose(), None).await.unwrap().grant.creator_reach;
        assert!(matches!(reach().await, Reach::Limited { .. }));

        let Creator::User(admin_user) = admin.record.creator else { panic!("a session is its user's") };
        match people.set_admin(&permit, admin_user, false).await {
            Err(AppError::Conflict(message)) => assert!(message.contains("their own admin flag"), "{message}"),
            other => panic!("an admin removed their own flag: {other:?}"),
        }
        // Bob's reach is cached from the verify above; the change must reach his very next request.
        assert!(people.set_admin(&permit, bob.id, true).await.unwrap().is_admin);
        assert_eq!(reach().await, Reach::Account(Rights::ReadWrite));
        assert!(!people.set_admin(&permit, bob.id, false).await.unwrap().is_admin);
        assert!(matches!(reach().await, Reach::Limited { .. }));
        assert!(matches!(people.set_admin(&permit, UserId(new_id()), true).await, Err(AppError::NotFound("user"))));
    }

    #[test]
    fn failures_back_off_per_login_and_address_but_not_across_addresses() {
        let throttle = Throttle::default();
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let owner: IpAddr = "10.0.0.2".parse().unwrap();
        let attacked = |address| [ThrottleKey::Address(address), ThrottleKey::Login("ada@example.com".into(), address)];
        for _ in 0..3 {
            assert!(throttle.attempt(&attacked(attacker), 0).is_ok());
        }
        let Err(LoginError::Throttled(wait)) = throttle.attempt(&attacked(attacker), 0) else {
            panic!("not throttled")
        };
        assert_eq!(wait, Duration::from_secs(1));
        assert!(throttle.attempt(&attacked(attacker), 1000).is_ok(), "the delay passes");
        let Err(LoginError::Throttled(wait)) = throttle.attempt(&attacked(attacker), 1000) else { panic!() };
        assert_eq!(wait, Duration::from_secs(2), "and doubles");
        assert!(throttle.attempt(&attacked(owner), 1000).is_ok(), "another address is not delayed");
        throttle.succeeded(&attacked(owner));
        throttle.succeeded(&attacked(attacker));
        assert!(throttle.attempt(&attacked(attacker), 1000).is_ok(), "a success forgives the login's count");
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64_bit_prefix() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(source_key(one), source_key(other));
        assert_ne!(source_key(one), source_key("2001:db8:1:3::1".parse().unwrap()));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source_key(v4), v4);
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email(" Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "@example.com", "ada@", "a b@example.com", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
