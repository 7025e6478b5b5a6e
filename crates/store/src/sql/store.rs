//! The SQL shared by every backend: a module that `sqlite.rs` and `postgres.rs` each declare (`#[path]`), so it is
//! compiled, checked and formatted as Rust once per backend. What a backend supplies is the `use super::…` below:
//! `Db`, `DbRow`, `DbConnection`, `Backend` (the store type, with a `pool`), `begin_write`, `begin_exclusive`,
//! `single_writes`, `close_pools`, `pool_figures`, `tell_in` (the invalidations a change commits with) and the `for_update!`
//! macro. Placeholders are `$N`, which both SQLite and PostgreSQL read as "the N-th bound value". Generics over
//! `sqlx::Database` would bury every statement under trait bounds; this keeps each statement plain.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::{QueryBuilder, Row};
use tessera_core::{
    AccountId, CollectionId, DeviceId, Id, Label, Reading, Role, SecretDigest, TeamId, TokenId, TokenKind, UserId,
    VariableId,
};

use super::{
    Backend, DATABASE_BYTES, Db, DbConnection, DbRow, begin_exclusive, begin_write, close_pools, pool_figures,
    single_writes, tell_in,
};
use crate::codec::*;
use crate::{
    Account, AccountStore, Bootstrap, Collection, CollectionStore, Creator, Device, DeviceFilter, DeviceOrder,
    DeviceQuery, DeviceStore, Downlink, Invalidation, Page, Paged, ReadingBucket, ReadingStore, Store, StoreError,
    StoreFigures, StoreResult, Team, TimeRange, TokenFilter, TokenRecord, TokenStore, TokenUsage, User, Variable,
};
use crate::{AuditEntry, AuditQuery, AuditStore, Outcome, TokenPolicy, TokenSelection};
use crate::{Invite, LoginChallenge, Membership, PeopleStore, UserReach, UserTotp};

fn label_from_column(text: String) -> StoreResult<Label> {
    Label::parse(&text).map_err(|error| corrupt(format!("stored label is invalid: {error}")))
}

/// What revoking or changing these tokens invalidates on every node: each under its secret's digest, and under the
/// digest its last rotation replaced (a node may hold it cached under that one, during the overlap or after it).
fn token_invalidations(tokens: &[TokenRecord]) -> Vec<Invalidation> {
    tokens
        .iter()
        .flat_map(|token| {
            std::iter::once(token.digest)
                .chain(token.previous_digest)
                .map(|digest| Invalidation::Token { id: token.id, digest })
        })
        .collect()
}

/// What a change to a team's collections or its existence invalidates: the reach of each of its members.
async fn members_reach(connection: &mut DbConnection, team: TeamId) -> StoreResult<Vec<Invalidation>> {
    let members: Vec<i64> = sqlx::query_scalar("SELECT user_id FROM team_members WHERE team_id = $1")
        .bind(team.as_i64())
        .fetch_all(&mut *connection)
        .await?;
    Ok(members.into_iter().map(|user| Invalidation::Reach(Creator::User(UserId::from_i64(user)))).collect())
}

/// Readings per INSERT statement: 7 parameters each stays well under SQLite's limit of 32 766 and PostgreSQL's
/// of 65 535.
const READINGS_PER_STATEMENT: usize = 500;

/// Tokens whose usage one transaction records.
const USAGE_PER_TRANSACTION: usize = 100;

/// Devices whose last-seen time one statement advances: a statement of its own holds the write lock for a moment
/// only, as the token usage flush does.
const ACTIVITY_PER_STATEMENT: usize = 100;

/// Devices one `variables_with_last` statement names (one bound parameter each, far under either database's limit).
const DEVICES_PER_STATEMENT: usize = 1000;

/// The escape character of LIKE patterns built from user text: not a backslash, which PostgreSQL reads as an
/// escape inside string literals when `standard_conforming_strings` is off.
const LIKE_ESCAPE: char = '!';

/// A LIKE pattern matching labels that contain `text`, with LIKE's own wildcards in it taken literally (labels
/// contain `_`). Lower-cased, as labels are stored: so matching is case-insensitive on both databases (SQLite's
/// LIKE folds ASCII case, PostgreSQL's does not).
fn label_contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for character in text.to_lowercase().chars() {
        if matches!(character, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(character);
    }
    pattern.push('%');
    pattern
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn account_from_row(row: &DbRow) -> StoreResult<Account> {
    Ok(Account { id: AccountId::from_i64(row.try_get(0)?), name: row.try_get(1)?, created_at_ms: row.try_get(2)? })
}

macro_rules! collection_columns {
    () => {
        "id, account_id, name, is_default, created_at, team_id, tags"
    };
}

fn collection_from_row(row: &DbRow) -> StoreResult<Collection> {
    Ok(Collection {
        id: CollectionId::from_i64(row.try_get(0)?),
        account: AccountId::from_i64(row.try_get(1)?),
        name: row.try_get(2)?,
        is_default: row.try_get(3)?,
        created_at_ms: row.try_get(4)?,
        team: row.try_get::<Option<i64>, _>(5)?.map(TeamId::from_i64),
        tags: tags_from_column(row.try_get(6)?)?,
    })
}

macro_rules! device_columns {
    () => {
        "id, account_id, collection_id, label, name, created_at, imsi, imei, tags, last_seen_at"
    };
}

fn device_from_row(row: &DbRow) -> StoreResult<Device> {
    Ok(Device {
        id: DeviceId::from_i64(row.try_get(0)?),
        account: AccountId::from_i64(row.try_get(1)?),
        collection: CollectionId::from_i64(row.try_get(2)?),
        label: label_from_column(row.try_get(3)?)?,
        name: row.try_get(4)?,
        created_at_ms: row.try_get(5)?,
        imsi: row.try_get(6)?,
        imei: row.try_get(7)?,
        tags: tags_from_column(row.try_get(8)?)?,
        last_seen_at_ms: row.try_get(9)?,
    })
}

macro_rules! variable_columns {
    () => {
        "v.id, v.account_id, v.device_id, d.collection_id, v.label, v.name, v.unit, v.created_at, v.title, \
         v.description, v.kind, v.profile"
    };
}

macro_rules! variable_select {
    () => {
        concat!("SELECT ", variable_columns!(), " FROM variables v JOIN devices d ON d.id = v.device_id")
    };
}

fn variable_from_row(row: &DbRow) -> StoreResult<Variable> {
    Ok(Variable {
        id: VariableId::from_i64(row.try_get(0)?),
        account: AccountId::from_i64(row.try_get(1)?),
        device: DeviceId::from_i64(row.try_get(2)?),
        collection: CollectionId::from_i64(row.try_get(3)?),
        label: label_from_column(row.try_get(4)?)?,
        name: row.try_get(5)?,
        unit: row.try_get(6)?,
        created_at_ms: row.try_get(7)?,
        title: row.try_get(8)?,
        description: row.try_get(9)?,
        kind: row.try_get(10)?,
        profile: row
            .try_get::<Option<String>, _>(11)?
            .map(|text| serde_json::from_str(&text).map_err(|_| corrupt("an asset profile is not JSON")))
            .transpose()?,
    })
}

macro_rules! token_columns {
    () => {
        "id, account_id, kind, digest, scope_kind, scope_id, rights, creator_kind, creator_id, name, tags, \
         created_at, expires_at, revoked_at, last_used_at, uses, family_id, resource, disabled_at, last_used_from, \
         previous_digest, previous_valid_until, rotated_at, quota_requests, quota_window_seconds, throttled"
    };
}

fn token_from_row(row: &DbRow) -> StoreResult<TokenRecord> {
    let digest = digest_from_column(row.try_get(3)?)?;
    let uses: i64 = row.try_get(15)?;
    let throttled: i64 = row.try_get(25)?;
    Ok(TokenRecord {
        id: TokenId::from_i64(row.try_get(0)?),
        account: AccountId::from_i64(row.try_get(1)?),
        kind: kind_from_column(row.try_get(2)?)?,
        digest,
        scope: scope_from_columns(row.try_get(4)?, row.try_get(5)?)?,
        rights: rights_from_column(row.try_get(6)?)?,
        creator: creator_from_columns(row.try_get(7)?, row.try_get(8)?)?,
        name: row.try_get(9)?,
        tags: tags_from_column(row.try_get(10)?)?,
        created_at_ms: row.try_get(11)?,
        expires_at_ms: row.try_get(12)?,
        revoked_at_ms: row.try_get(13)?,
        last_used_at_ms: row.try_get(14)?,
        uses: u64::try_from(uses).unwrap_or(0),
        family: row.try_get::<Option<i64>, _>(16)?.map(Id::from_i64),
        resource: row.try_get(17)?,
        disabled_at_ms: row.try_get(18)?,
        last_used_from: address_from_column(row.try_get(19)?)?,
        previous_digest: row.try_get::<Option<Vec<u8>>, _>(20)?.map(digest_from_column).transpose()?,
        previous_valid_until_ms: row.try_get(21)?,
        rotated_at_ms: row.try_get(22)?,
        quota: quota_from_columns(row.try_get(23)?, row.try_get(24)?)?,
        throttled: u64::try_from(throttled).unwrap_or(0),
    })
}

/// A reading from the columns `ts, num, json, bytes, context, received_at`, the row's first six.
fn reading_from_row(variable: VariableId, row: &DbRow) -> StoreResult<Reading> {
    reading_from_columns(variable, row, 0)
}

/// A reading from the six columns of `reading_from_row`, starting at column `first`.
fn reading_from_columns(variable: VariableId, row: &DbRow, first: usize) -> StoreResult<Reading> {
    Ok(Reading {
        variable,
        timestamp_ms: row.try_get(first)?,
        value: value_from_columns(row.try_get(first + 1)?, row.try_get(first + 2)?, row.try_get(first + 3)?)?,
        context: context_from_column(row.try_get(first + 4)?)?,
        received_at_ms: row.try_get(first + 5)?,
    })
}

async fn insert_token_in<'e, E>(executor: E, token: &TokenRecord) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    let (scope_kind, scope_id) = scope_columns(token.scope);
    let (creator_kind, creator_id) = creator_columns(token.creator);
    let (quota_requests, quota_window) = quota_columns(token.quota);
    sqlx::query(
        "INSERT INTO tokens (id, account_id, kind, digest, scope_kind, scope_id, rights, creator_kind, creator_id, \
         name, tags, created_at, expires_at, revoked_at, last_used_at, uses, family_id, resource, disabled_at, \
         quota_requests, quota_window_seconds) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(token.id.as_i64())
    .bind(token.account.as_i64())
    .bind(token.kind.as_str())
    .bind(token.digest.0.as_slice())
    .bind(scope_kind)
    .bind(scope_id)
    .bind(rights_column(token.rights))
    .bind(creator_kind)
    .bind(creator_id)
    .bind(&token.name)
    .bind(tags_column(&token.tags))
    .bind(token.created_at_ms)
    .bind(token.expires_at_ms)
    .bind(token.revoked_at_ms)
    .bind(token.last_used_at_ms)
    .bind(to_i64(token.uses))
    .bind(token.family.map(Id::as_i64))
    .bind(&token.resource)
    .bind(token.disabled_at_ms)
    .bind(quota_requests)
    .bind(quota_window)
    .execute(executor)
    .await?;
    Ok(())
}

/// Audit entries per INSERT statement (11 parameters each).
const AUDIT_PER_STATEMENT: usize = 500;

/// Writes audit entries on `connection`, which is the transaction of the change they record when there is one.
async fn insert_audit_in(connection: &mut DbConnection, entries: &[AuditEntry]) -> StoreResult<()> {
    for chunk in entries.chunks(AUDIT_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Db>::new(
            "INSERT INTO audit_events (id, account_id, at, event, actor_kind, actor_id, token_id, address, outcome, \
             detail, count) ",
        );
        insert.push_values(chunk, |mut row, entry| {
            let (actor_kind, actor_id) = actor_columns(entry.actor);
            row.push_bind(entry.id.as_i64())
                .push_bind(entry.account.as_i64())
                .push_bind(entry.at_ms)
                .push_bind(entry.event.clone())
                .push_bind(actor_kind)
                .push_bind(actor_id)
                .push_bind(entry.token.map(TokenId::as_i64))
                .push_bind(address_column(entry.address))
                .push_bind(entry.outcome.as_str())
                .push_bind(serde_json::Value::Object(entry.detail.clone()).to_string())
                .push_bind(to_i64(entry.count));
        });
        insert.build().execute(&mut *connection).await?;
    }
    Ok(())
}

/// Inserts a device unless its label is taken in the account; answers whether it was inserted.
async fn insert_device_unless_taken<'e, E>(executor: E, device: &Device) -> StoreResult<bool>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    let inserted = sqlx::query(
        "INSERT INTO devices (id, account_id, collection_id, label, name, created_at, imsi, imei, tags, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (account_id, label) DO NOTHING",
    )
    .bind(device.id.as_i64())
    .bind(device.account.as_i64())
    .bind(device.collection.as_i64())
    .bind(device.label.as_str())
    .bind(&device.name)
    .bind(device.created_at_ms)
    .bind(&device.imsi)
    .bind(&device.imei)
    .bind(tags_column(&device.tags))
    .bind(device.last_seen_at_ms)
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

async fn insert_collection_in<'e, E>(executor: E, collection: &Collection) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    sqlx::query(
        "INSERT INTO collections (id, account_id, name, is_default, created_at, team_id, tags) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(collection.id.as_i64())
    .bind(collection.account.as_i64())
    .bind(&collection.name)
    .bind(collection.is_default)
    .bind(collection.created_at_ms)
    .bind(collection.team.map(TeamId::as_i64))
    .bind(tags_column(&collection.tags))
    .execute(executor)
    .await?;
    Ok(())
}

#[async_trait]
impl AccountStore for Backend {
    async fn bootstrap(&self, bootstrap: &Bootstrap) -> StoreResult<bool> {
        // The exclusive transaction makes two processes running `init` at once (or two nodes starting on one
        // database) agree: one creates the account, the other sees it.
        let mut transaction = begin_exclusive(self).await?;
        let created = bootstrap_in(&mut transaction, bootstrap).await?;
        if created {
            transaction.commit().await?;
        }
        Ok(created)
    }

    async fn accounts(&self) -> StoreResult<Vec<Account>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM accounts ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(account_from_row).collect()
    }

    async fn figures(&self, now_ms: i64) -> StoreResult<StoreFigures> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM users), \
             (SELECT count(*) FROM collections), (SELECT count(*) FROM devices), \
             (SELECT count(*) FROM variables), (SELECT count(*) FROM readings)",
        )
        .fetch_one(&self.pool)
        .await?;
        let count =
            |index: usize| -> StoreResult<u64> { Ok(u64::try_from(row.try_get::<i64, _>(index)?).unwrap_or(0)) };
        let kinds = sqlx::query(
            "SELECT kind, count(*) FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1) \
             GROUP BY kind ORDER BY kind",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let live_tokens = kinds
            .iter()
            .map(|kind| {
                let name: String = kind.try_get(0)?;
                let live: i64 = kind.try_get(1)?;
                Ok((kind_from_column(&name)?, u64::try_from(live).unwrap_or(0)))
            })
            .collect::<StoreResult<_>>()?;
        let database_bytes: i64 = sqlx::query_scalar(DATABASE_BYTES).fetch_one(&self.pool).await?;
        Ok(StoreFigures {
            accounts: count(0)?,
            users: count(1)?,
            collections: count(2)?,
            devices: count(3)?,
            variables: count(4)?,
            readings: count(5)?,
            live_tokens,
            database_bytes: u64::try_from(database_bytes).unwrap_or(0),
        })
    }

    async fn shared_secret(&self, name: &str, proposed: &[u8]) -> StoreResult<Vec<u8>> {
        sqlx::query("INSERT INTO shared_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(proposed)
            .execute(single_writes(self))
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM shared_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn account(&self, account: AccountId) -> StoreResult<Account> {
        let row = sqlx::query("SELECT id, name, created_at FROM accounts WHERE id = $1")
            .bind(account.as_i64())
            .fetch_one(&self.pool)
            .await?;
        account_from_row(&row)
    }
}

/// Inserts a user, their private team and their admin membership of it.
pub(crate) async fn insert_user_in(connection: &mut DbConnection, user: &User, private_team: &Team) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO users (id, account_id, email, password_hash, display_name, phone, is_admin, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(user.id.as_i64())
    .bind(user.account.as_i64())
    .bind(&user.email)
    .bind(&user.password_hash)
    .bind(&user.display_name)
    .bind(&user.phone)
    .bind(user.is_admin)
    .bind(user.created_at_ms)
    .execute(&mut *connection)
    .await?;
    insert_team_in(connection, private_team, user.id).await
}

/// Inserts a team and makes `admin` its admin.
pub(crate) async fn insert_team_in(connection: &mut DbConnection, team: &Team, admin: UserId) -> StoreResult<()> {
    sqlx::query("INSERT INTO teams (id, account_id, tags, private_of, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(team.id.as_i64())
        .bind(team.account.as_i64())
        .bind(tags_column(&team.tags))
        .bind(team.private_of.map(UserId::as_i64))
        .bind(team.created_at_ms)
        .execute(&mut *connection)
        .await?;
    sqlx::query("INSERT INTO team_members (team_id, user_id, role, created_at) VALUES ($1, $2, 'admin', $3)")
        .bind(team.id.as_i64())
        .bind(admin.as_i64())
        .bind(team.created_at_ms)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

async fn bootstrap_in(connection: &mut DbConnection, bootstrap: &Bootstrap) -> StoreResult<bool> {
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts").fetch_one(&mut *connection).await?;
    if existing > 0 {
        return Ok(false);
    }
    let account = &bootstrap.account;
    sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(account.id.as_i64())
        .bind(&account.name)
        .bind(account.created_at_ms)
        .execute(&mut *connection)
        .await?;
    insert_collection_in(&mut *connection, &bootstrap.default_collection).await?;
    insert_token_in(&mut *connection, &bootstrap.api_key).await?;
    insert_user_in(&mut *connection, &bootstrap.admin, &bootstrap.admin_team).await?;
    Ok(true)
}

#[async_trait]
impl CollectionStore for Backend {
    async fn insert_collection(&self, collection: &Collection) -> StoreResult<()> {
        let Some(team) = collection.team else {
            return insert_collection_in(single_writes(self), collection).await;
        };
        // The team's members now reach one more collection.
        let mut transaction = begin_write(self).await?;
        insert_collection_in(&mut *transaction, collection).await?;
        let reaches = members_reach(&mut transaction, team).await?;
        tell_in(&mut transaction, &reaches).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn collection(&self, account: AccountId, collection: CollectionId) -> StoreResult<Collection> {
        let row = sqlx::query(concat!(
            "SELECT ",
            collection_columns!(),
            " FROM collections WHERE account_id = $1 AND id = $2"
        ))
        .bind(account.as_i64())
        .bind(collection.as_i64())
        .fetch_one(&self.pool)
        .await?;
        collection_from_row(&row)
    }

    async fn update_collection(&self, collection: &Collection) -> StoreResult<()> {
        let updated = sqlx::query("UPDATE collections SET name = $1, tags = $2 WHERE account_id = $3 AND id = $4")
            .bind(&collection.name)
            .bind(tags_column(&collection.tags))
            .bind(collection.account.as_i64())
            .bind(collection.id.as_i64())
            .execute(single_writes(self))
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn default_collection(&self, account: AccountId) -> StoreResult<Collection> {
        let row = sqlx::query(concat!(
            "SELECT ",
            collection_columns!(),
            " FROM collections WHERE account_id = $1 AND is_default"
        ))
        .bind(account.as_i64())
        .fetch_one(&self.pool)
        .await?;
        collection_from_row(&row)
    }

    async fn list_collections(&self, account: AccountId) -> StoreResult<Vec<Collection>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            collection_columns!(),
            " FROM collections WHERE account_id = $1 ORDER BY id"
        ))
        .bind(account.as_i64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(collection_from_row).collect()
    }

    async fn delete_collection(
        &self,
        account: AccountId,
        collection: CollectionId,
        at_ms: i64,
        audit: &(dyn for<'t> Fn(&'t [TokenRecord]) -> Vec<AuditEntry> + Send + Sync),
    ) -> StoreResult<Vec<TokenRecord>> {
        let mut transaction = begin_write(self).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            collection_columns!(),
            " FROM collections WHERE account_id = $1 AND id = $2",
            for_update!()
        ))
        .bind(account.as_i64())
        .bind(collection.as_i64())
        .fetch_one(&mut *transaction)
        .await?;
        if collection_from_row(&row)?.is_default {
            return Err(StoreError::Conflict("the account's default collection cannot be deleted".into()));
        }
        let devices: i64 = sqlx::query_scalar("SELECT count(*) FROM devices WHERE collection_id = $1")
            .bind(collection.as_i64())
            .fetch_one(&mut *transaction)
            .await?;
        if devices > 0 {
            return Err(StoreError::Conflict(format!("the collection still holds {devices} device(s)")));
        }
        let revoked = sqlx::query(concat!(
            "UPDATE tokens SET revoked_at = $1 WHERE account_id = $2 AND scope_kind = 'collection' AND scope_id = $3 \
             AND revoked_at IS NULL RETURNING ",
            token_columns!()
        ))
        .bind(at_ms)
        .bind(account.as_i64())
        .bind(collection.as_i64())
        .fetch_all(&mut *transaction)
        .await?;
        let revoked = revoked.iter().map(token_from_row).collect::<StoreResult<Vec<_>>>()?;
        sqlx::query("DELETE FROM collections WHERE id = $1")
            .bind(collection.as_i64())
            .execute(&mut *transaction)
            .await?;
        insert_audit_in(&mut transaction, &audit(&revoked)).await?;
        tell_in(&mut transaction, &token_invalidations(&revoked)).await?;
        transaction.commit().await?;
        Ok(revoked)
    }
}

/// Appends the `WHERE` conditions of a device filter on a query whose devices table is aliased `d`.
fn push_device_filter(query: &mut QueryBuilder<Db>, account: AccountId, filter: &DeviceFilter) {
    query.push(" WHERE d.account_id = ").push_bind(account.as_i64());
    match filter.collections.as_deref() {
        None => {}
        Some([]) => {
            query.push(" AND FALSE");
        }
        Some(collections) => {
            query.push(" AND d.collection_id IN (");
            let mut separated = query.separated(", ");
            for collection in collections {
                separated.push_bind(collection.as_i64());
            }
            query.push(")");
        }
    }
    if let Some(device) = filter.device {
        query.push(" AND d.id = ").push_bind(device.as_i64());
    }
}

#[async_trait]
impl DeviceStore for Backend {
    async fn device(&self, account: AccountId, device: DeviceId) -> StoreResult<Device> {
        let row = sqlx::query(concat!("SELECT ", device_columns!(), " FROM devices WHERE account_id = $1 AND id = $2"))
            .bind(account.as_i64())
            .bind(device.as_i64())
            .fetch_one(&self.pool)
            .await?;
        device_from_row(&row)
    }

    async fn device_by_label(&self, account: AccountId, label: &Label) -> StoreResult<Device> {
        let row =
            sqlx::query(concat!("SELECT ", device_columns!(), " FROM devices WHERE account_id = $1 AND label = $2"))
                .bind(account.as_i64())
                .bind(label.as_str())
                .fetch_one(&self.pool)
                .await?;
        device_from_row(&row)
    }

    async fn insert_device_if_absent(&self, device: &Device) -> StoreResult<Device> {
        insert_device_unless_taken(single_writes(self), device).await?;
        self.device_by_label(device.account, &device.label).await
    }

    async fn insert_devices(&self, devices: &[Device]) -> StoreResult<u64> {
        let mut transaction = begin_write(self).await?;
        let mut inserted = 0;
        for device in devices {
            inserted += u64::from(insert_device_unless_taken(&mut *transaction, device).await?);
        }
        transaction.commit().await?;
        Ok(inserted)
    }

    async fn update_device(&self, device: &Device) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        let label: String = sqlx::query_scalar(
            "UPDATE devices SET name = $1, imsi = $2, imei = $3, tags = $4 WHERE account_id = $5 AND id = $6 \
             RETURNING label",
        )
        .bind(&device.name)
        .bind(&device.imsi)
        .bind(&device.imei)
        .bind(tags_column(&device.tags))
        .bind(device.account.as_i64())
        .bind(device.id.as_i64())
        .fetch_one(&mut *transaction)
        .await?;
        // Every node drops its cached copy, so the next lookup by label reads the new name, identities and tags.
        let changed = Invalidation::Device { account: device.account, id: device.id, label: label_from_column(label)? };
        tell_in(&mut transaction, &[changed]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn insert_downlink(&self, downlink: &Downlink) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO downlinks (id, account_id, device_id, port, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(downlink.id.as_i64())
        .bind(downlink.account.as_i64())
        .bind(downlink.device.as_i64())
        .bind(i64::from(downlink.port))
        .bind(downlink.payload.as_slice())
        .bind(downlink.created_at_ms)
        .execute(single_writes(self))
        .await?;
        Ok(())
    }

    async fn downlinks(&self, account: AccountId, device: DeviceId) -> StoreResult<Vec<Downlink>> {
        let rows = sqlx::query(
            "SELECT id, account_id, device_id, port, payload, created_at, delivered_at FROM downlinks \
             WHERE account_id = $1 AND device_id = $2 ORDER BY id",
        )
        .bind(account.as_i64())
        .bind(device.as_i64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let port: i64 = row.try_get(3)?;
                Ok(Downlink {
                    id: Id::from_i64(row.try_get(0)?),
                    account: AccountId::from_i64(row.try_get(1)?),
                    device: DeviceId::from_i64(row.try_get(2)?),
                    port: u16::try_from(port).map_err(|_| corrupt("downlink port out of range"))?,
                    payload: row.try_get(4)?,
                    created_at_ms: row.try_get(5)?,
                    delivered_at_ms: row.try_get(6)?,
                })
            })
            .collect()
    }

    async fn list_devices(&self, account: AccountId, filter: &DeviceFilter, page: Page) -> StoreResult<Paged<Device>> {
        let mut count = QueryBuilder::<Db>::new("SELECT count(*) FROM devices d");
        push_device_filter(&mut count, account, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut select = QueryBuilder::<Db>::new(concat!("SELECT ", device_columns!(), " FROM devices d"));
        push_device_filter(&mut select, account, filter);
        select.push(" ORDER BY d.id LIMIT ").push_bind(to_i64(page.size));
        select.push(" OFFSET ").push_bind(to_i64(page.offset()));
        let rows = select.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(device_from_row).collect::<StoreResult<_>>()?;
        Ok(Paged { total: total as u64, items })
    }

    async fn delete_device(&self, account: AccountId, device: DeviceId) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        sqlx::query(
            "DELETE FROM readings WHERE variable_id IN \
             (SELECT v.id FROM variables v WHERE v.device_id = $1 AND v.account_id = $2)",
        )
        .bind(device.as_i64())
        .bind(account.as_i64())
        .execute(&mut *transaction)
        .await?;
        let label: String = sqlx::query_scalar("DELETE FROM devices WHERE account_id = $1 AND id = $2 RETURNING label")
            .bind(account.as_i64())
            .bind(device.as_i64())
            .fetch_one(&mut *transaction)
            .await?;
        let deleted = Invalidation::Device { account, id: device, label: label_from_column(label)? };
        tell_in(&mut transaction, &[deleted]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn record_device_activity(&self, activity: &[(DeviceId, i64)]) -> StoreResult<()> {
        // One time per device (an UPDATE … FROM with two rows for one device would apply either), the latest.
        let mut latest: Vec<(DeviceId, i64)> = activity.to_vec();
        latest.sort_unstable_by_key(|&(device, seen)| (device, std::cmp::Reverse(seen)));
        latest.dedup_by_key(|(device, _)| *device);
        // In id order and in small statements of their own, as `record_token_usage` and for its reasons: two nodes
        // flushing the same devices cannot deadlock, and readings waiting to commit are not held up behind a
        // fleet's worth of rows. A row whose stored time is as late already is not written at all.
        for chunk in latest.chunks(ACTIVITY_PER_STATEMENT) {
            let mut update = QueryBuilder::<Db>::new("UPDATE devices SET last_seen_at = seen.column2 FROM (");
            update.push_values(chunk, |mut row, (device, seen)| {
                row.push_bind(device.as_i64()).push_bind(*seen);
            });
            update.push(
                ") AS seen WHERE devices.id = seen.column1 \
                 AND (devices.last_seen_at IS NULL OR devices.last_seen_at < seen.column2)",
            );
            update.build().execute(single_writes(self)).await?;
        }
        Ok(())
    }

    async fn device_overview(
        &self,
        account: AccountId,
        collection: CollectionId,
        query: &DeviceQuery,
        page: Page,
    ) -> StoreResult<Paged<Device>> {
        let push_filter = |select: &mut QueryBuilder<Db>| {
            // The account is checked once, on the collection, not on each device row: `d.account_id` is in no
            // index of a collection's devices, so checking it per row fetched every row of the table for the
            // count and for a deep page (10 000 table lookups a request; 7 ms of a page's 8). Collection ids
            // are unique across accounts, so the devices of this collection are this account's.
            select.push(" WHERE d.collection_id = ").push_bind(collection.as_i64());
            select.push(" AND EXISTS (SELECT 1 FROM collections c WHERE c.id = ").push_bind(collection.as_i64());
            select.push(" AND c.account_id = ").push_bind(account.as_i64()).push(")");
            if let Some(text) = &query.label_contains {
                select.push(" AND d.label LIKE ").push_bind(label_contains_pattern(text));
                select.push(format_args!(" ESCAPE '{LIKE_ESCAPE}'"));
            }
            if let Some(since) = query.not_seen_since_ms {
                select.push(" AND (d.last_seen_at IS NULL OR d.last_seen_at < ").push_bind(since).push(")");
            }
        };
        let mut count = QueryBuilder::<Db>::new("SELECT count(*) FROM devices d");
        push_filter(&mut count);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut select = QueryBuilder::<Db>::new(concat!("SELECT ", device_columns!(), " FROM devices d"));
        push_filter(&mut select);
        select.push(match query.order {
            // Labels are unique in an account, so they order a collection's devices fully.
            DeviceOrder::Label => " ORDER BY d.label",
            // NULLS LAST is what SQLite does for DESC anyway; PostgreSQL puts NULLs first unless told.
            DeviceOrder::LastActivity => " ORDER BY d.last_seen_at DESC NULLS LAST, d.id",
        });
        select.push(" LIMIT ").push_bind(to_i64(page.size));
        select.push(" OFFSET ").push_bind(to_i64(page.offset()));
        let rows = select.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(device_from_row).collect::<StoreResult<_>>()?;
        Ok(Paged { total: total as u64, items })
    }

    async fn variable(&self, account: AccountId, variable: VariableId) -> StoreResult<Variable> {
        let row = sqlx::query(concat!(variable_select!(), " WHERE v.account_id = $1 AND v.id = $2"))
            .bind(account.as_i64())
            .bind(variable.as_i64())
            .fetch_one(&self.pool)
            .await?;
        variable_from_row(&row)
    }

    async fn variable_by_label(&self, device: DeviceId, label: &Label) -> StoreResult<Variable> {
        let row = sqlx::query(concat!(variable_select!(), " WHERE v.device_id = $1 AND v.label = $2"))
            .bind(device.as_i64())
            .bind(label.as_str())
            .fetch_one(&self.pool)
            .await?;
        variable_from_row(&row)
    }

    async fn insert_variable_if_absent(&self, variable: &Variable) -> StoreResult<Variable> {
        sqlx::query(
            "INSERT INTO variables (id, account_id, device_id, label, name, unit, created_at, title, description, \
             kind, profile) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (device_id, label) DO NOTHING",
        )
        .bind(variable.id.as_i64())
        .bind(variable.account.as_i64())
        .bind(variable.device.as_i64())
        .bind(variable.label.as_str())
        .bind(&variable.name)
        .bind(&variable.unit)
        .bind(variable.created_at_ms)
        .bind(&variable.title)
        .bind(&variable.description)
        .bind(&variable.kind)
        .bind(variable.profile.as_ref().map(|profile| profile.to_string()))
        .execute(single_writes(self))
        .await?;
        self.variable_by_label(variable.device, &variable.label).await
    }

    async fn update_variable(&self, variable: &Variable) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        let (device, label): (i64, String) = sqlx::query_as(
            "UPDATE variables SET name = $1, unit = $2, title = $3, description = $4, kind = $5, profile = $6 \
             WHERE account_id = $7 AND id = $8 RETURNING device_id, label",
        )
        .bind(&variable.name)
        .bind(&variable.unit)
        .bind(&variable.title)
        .bind(&variable.description)
        .bind(&variable.kind)
        .bind(variable.profile.as_ref().map(|profile| profile.to_string()))
        .bind(variable.account.as_i64())
        .bind(variable.id.as_i64())
        .fetch_one(&mut *transaction)
        .await?;
        let changed = Invalidation::Variable {
            device: DeviceId::from_i64(device),
            id: variable.id,
            label: label_from_column(label)?,
        };
        tell_in(&mut transaction, &[changed]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn list_variables(
        &self,
        account: AccountId,
        filter: &DeviceFilter,
        page: Page,
    ) -> StoreResult<Paged<Variable>> {
        let mut count =
            QueryBuilder::<Db>::new("SELECT count(*) FROM variables v JOIN devices d ON d.id = v.device_id");
        push_device_filter(&mut count, account, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut select = QueryBuilder::<Db>::new(variable_select!());
        push_device_filter(&mut select, account, filter);
        select.push(" ORDER BY v.id LIMIT ").push_bind(to_i64(page.size));
        select.push(" OFFSET ").push_bind(to_i64(page.offset()));
        let rows = select.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(variable_from_row).collect::<StoreResult<_>>()?;
        Ok(Paged { total: total as u64, items })
    }

    async fn delete_variable(&self, account: AccountId, variable: VariableId) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        let (device, label): (i64, String) =
            sqlx::query_as("DELETE FROM variables WHERE account_id = $1 AND id = $2 RETURNING device_id, label")
                .bind(account.as_i64())
                .bind(variable.as_i64())
                .fetch_one(&mut *transaction)
                .await?;
        let deleted = Invalidation::Variable {
            device: DeviceId::from_i64(device),
            id: variable,
            label: label_from_column(label)?,
        };
        tell_in(&mut transaction, &[deleted]).await?;
        sqlx::query("DELETE FROM readings WHERE variable_id = $1")
            .bind(variable.as_i64())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn variables_with_last(
        &self,
        account: AccountId,
        devices: &[DeviceId],
    ) -> StoreResult<Vec<(Variable, Option<Reading>)>> {
        let position: HashMap<DeviceId, usize> =
            devices.iter().enumerate().rev().map(|(index, device)| (*device, index)).collect();
        // A device named twice is looked up once (it could otherwise fall into two statements).
        let unique: Vec<DeviceId> =
            devices.iter().enumerate().filter(|(index, device)| position[device] == *index).map(|(_, d)| *d).collect();
        let mut found = Vec::new();
        for chunk in unique.chunks(DEVICES_PER_STATEMENT) {
            // Each variable's last reading by its key, at the timestamp one descent of the key finds. The account
            // is checked with `+`, which keeps SQLite (it keeps no statistics) from walking every device of the
            // account along the account's index instead of looking up the ids asked for; PostgreSQL ignores it.
            let mut select = QueryBuilder::<Db>::new(concat!(
                "SELECT ",
                variable_columns!(),
                ", r.ts, r.num, r.json, r.bytes, r.context, r.received_at \
                 FROM variables v JOIN devices d ON d.id = v.device_id \
                 LEFT JOIN readings r ON r.variable_id = v.id \
                 AND r.ts = (SELECT max(m.ts) FROM readings m WHERE m.variable_id = v.id) \
                 WHERE +d.account_id = "
            ));
            select.push_bind(account.as_i64()).push(" AND d.id IN (");
            let mut separated = select.separated(", ");
            for device in chunk {
                separated.push_bind(device.as_i64());
            }
            select.push(") ORDER BY v.device_id, v.label");
            for row in select.build().fetch_all(&self.pool).await? {
                let variable = variable_from_row(&row)?;
                // The reading's six columns follow the variable's twelve.
                let last = match row.try_get::<Option<i64>, _>(12)? {
                    Some(_) => Some(reading_from_columns(variable.id, &row, 12)?),
                    None => None,
                };
                found.push((variable, last));
            }
        }
        // Stable: each device's variables stay in label order.
        found.sort_by_key(|(variable, _)| position.get(&variable.device).copied());
        Ok(found)
    }
}

/// The upsert of a chunk of readings. Readings of a variable deleted while they waited in the writer's queue are
/// dropped: the delete came after them, so they are gone as if written first and deleted with it, and no orphan
/// row stays.
fn readings_insert(chunk: &[&Reading]) -> QueryBuilder<Db> {
    let mut insert = QueryBuilder::<Db>::new(
        "INSERT INTO readings (variable_id, ts, num, json, bytes, context, received_at) \
         SELECT column1, column2, column3, column4, column5, column6, column7 FROM (",
    );
    insert.push_values(chunk, |mut row, reading| {
        let (number, json, bytes) = value_columns(&reading.value);
        row.push_bind(reading.variable.as_i64())
            .push_bind(reading.timestamp_ms)
            .push_bind(number)
            .push_bind(json)
            .push_bind(bytes)
            .push_bind(context_column(&reading.context))
            .push_bind(reading.received_at_ms);
    });
    insert.push(
        ") AS incoming WHERE EXISTS (SELECT 1 FROM variables WHERE variables.id = incoming.column1) \
         ON CONFLICT (variable_id, ts) DO UPDATE SET num = excluded.num, json = excluded.json, \
         bytes = excluded.bytes, context = excluded.context, received_at = excluded.received_at",
    );
    insert
}

#[async_trait]
impl ReadingStore for Backend {
    async fn insert_readings(&self, readings: &[Reading]) -> StoreResult<()> {
        if readings.is_empty() {
            return Ok(());
        }
        // One statement may not set a row twice (PostgreSQL refuses), so of readings sharing a variable and a
        // timestamp only the last is written: the same outcome as writing them in order.
        let mut last_of = HashMap::with_capacity(readings.len());
        for (index, reading) in readings.iter().enumerate() {
            last_of.insert((reading.variable, reading.timestamp_ms), index);
        }
        let mut unique: Vec<&Reading> = readings
            .iter()
            .enumerate()
            .filter(|(index, reading)| last_of[&(reading.variable, reading.timestamp_ms)] == *index)
            .map(|(_, reading)| reading)
            .collect();
        // In key order, so two nodes' batches that share rows take their locks in the same order (no deadlock).
        unique.sort_by_key(|reading| (reading.variable, reading.timestamp_ms));
        // A batch of one statement (the usual case) is a transaction of its own: one round trip to the database
        // instead of three (BEGIN, the statement, COMMIT).
        if unique.len() <= READINGS_PER_STATEMENT {
            readings_insert(&unique).build().execute(single_writes(self)).await?;
            return Ok(());
        }
        let mut transaction = begin_write(self).await?;
        for chunk in unique.chunks(READINGS_PER_STATEMENT) {
            readings_insert(chunk).build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn readings(&self, variable: VariableId, range: TimeRange, page: Page) -> StoreResult<Paged<Reading>> {
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM readings WHERE variable_id = $1 AND ts BETWEEN $2 AND $3")
                .bind(variable.as_i64())
                .bind(range.start_ms)
                .bind(range.end_ms)
                .fetch_one(&self.pool)
                .await?;
        let rows = sqlx::query(
            "SELECT ts, num, json, bytes, context, received_at FROM readings \
             WHERE variable_id = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts DESC LIMIT $4 OFFSET $5",
        )
        .bind(variable.as_i64())
        .bind(range.start_ms)
        .bind(range.end_ms)
        .bind(to_i64(page.size))
        .bind(to_i64(page.offset()))
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(|row| reading_from_row(variable, row)).collect::<StoreResult<_>>()?;
        Ok(Paged { total: total as u64, items })
    }

    async fn device_readings(
        &self,
        account: AccountId,
        filter: &DeviceFilter,
        range: TimeRange,
        limit: u64,
    ) -> StoreResult<Vec<(DeviceId, Reading)>> {
        let mut query = QueryBuilder::<Db>::new(
            "SELECT r.ts, r.num, r.json, r.bytes, r.context, r.received_at, r.variable_id, d.id FROM readings r \
             JOIN variables v ON v.id = r.variable_id JOIN devices d ON d.id = v.device_id",
        );
        push_device_filter(&mut query, account, filter);
        query.push(" AND r.ts BETWEEN ").push_bind(range.start_ms).push(" AND ").push_bind(range.end_ms);
        query.push(" ORDER BY r.ts DESC, r.variable_id DESC LIMIT ").push_bind(to_i64(limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let variable = VariableId::from_i64(row.try_get(6)?);
                Ok((DeviceId::from_i64(row.try_get(7)?), reading_from_row(variable, row)?))
            })
            .collect()
    }

    async fn readings_newest(&self, variable: VariableId, range: TimeRange, limit: u32) -> StoreResult<Vec<Reading>> {
        let rows = sqlx::query(
            "SELECT ts, num, json, bytes, context, received_at FROM readings \
             WHERE variable_id = $1 AND ts BETWEEN $2 AND $3 ORDER BY ts DESC LIMIT $4",
        )
        .bind(variable.as_i64())
        .bind(range.start_ms)
        .bind(range.end_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| reading_from_row(variable, row)).collect()
    }

    async fn last_reading(&self, variable: VariableId) -> StoreResult<Option<Reading>> {
        let row = sqlx::query(
            "SELECT ts, num, json, bytes, context, received_at FROM readings WHERE variable_id = $1 \
             ORDER BY ts DESC LIMIT 1",
        )
        .bind(variable.as_i64())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| reading_from_row(variable, &row)).transpose()
    }

    async fn delete_readings(&self, variable: VariableId, range: TimeRange) -> StoreResult<u64> {
        let deleted = sqlx::query("DELETE FROM readings WHERE variable_id = $1 AND ts BETWEEN $2 AND $3")
            .bind(variable.as_i64())
            .bind(range.start_ms)
            .bind(range.end_ms)
            .execute(single_writes(self))
            .await?;
        Ok(deleted.rows_affected())
    }

    async fn reading_buckets(
        &self,
        variable: VariableId,
        range: TimeRange,
        bucket_ms: i64,
    ) -> StoreResult<Vec<ReadingBucket>> {
        if bucket_ms <= 0 {
            return Err(StoreError::Invalid(format!("a bucket lasts at least 1 ms, not {bucket_ms}")));
        }
        if range.end_ms < range.start_ms {
            return Ok(Vec::new());
        }
        // `ts - start` must not overflow in the database (PostgreSQL refuses; SQLite would turn it into a float).
        if range.end_ms.checked_sub(range.start_ms).is_none() {
            return Err(StoreError::Invalid("the range is too wide to divide into buckets".into()));
        }
        let rows = sqlx::query(
            "SELECT (ts - $2) / $4, count(*), min(num), max(num), avg(num), min(ts), max(ts) FROM readings \
             WHERE variable_id = $1 AND ts BETWEEN $2 AND $3 AND num IS NOT NULL GROUP BY 1 ORDER BY 1",
        )
        .bind(variable.as_i64())
        .bind(range.start_ms)
        .bind(range.end_ms)
        .bind(bucket_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let bucket: i64 = row.try_get(0)?;
                let count: i64 = row.try_get(1)?;
                Ok(ReadingBucket {
                    // Within the range, so no overflow: `bucket * bucket_ms` is at most `end - start`.
                    start_ms: range.start_ms + bucket * bucket_ms,
                    count: u64::try_from(count).unwrap_or(0),
                    min: row.try_get(2)?,
                    max: row.try_get(3)?,
                    mean: row.try_get(4)?,
                    first_ms: row.try_get(5)?,
                    last_ms: row.try_get(6)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Store for Backend {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(single_writes(self)).await?;
        Ok(())
    }

    async fn close(&self) {
        close_pools(self).await;
    }

    fn pools(&self) -> Vec<crate::PoolFigures> {
        pool_figures(self)
    }
}

/// Tokens: the `TokenStore` half.
#[path = "tokens.rs"]
#[allow(clippy::duplicate_mod, reason = "compiled once per backend, with its parent")]
mod tokens;

/// The audit trail and token policies: the `AuditStore` half.
#[path = "audit.rs"]
#[allow(clippy::duplicate_mod, reason = "compiled once per backend, with its parent")]
mod audit;

/// Users, second factors, teams, invites and login challenges: the `PeopleStore` half.
#[path = "people.rs"]
#[allow(clippy::duplicate_mod, reason = "compiled once per backend, with its parent")]
mod people;
