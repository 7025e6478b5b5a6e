//! The audit trail and the token policies: the `AuditStore` half of the shared SQL, a child of `store.rs`, whose
//! imports, helpers and backend items it uses.

use super::*;

macro_rules! audit_columns {
    () => {
        "id, account_id, at, event, actor_kind, actor_id, token_id, address, outcome, detail, count"
    };
}

fn audit_from_row(row: &DbRow) -> StoreResult<AuditEntry> {
    let actor_kind: String = row.try_get(4)?;
    let outcome: String = row.try_get(8)?;
    let detail: String = row.try_get(9)?;
    let count: i64 = row.try_get(10)?;
    Ok(AuditEntry {
        id: Id::from_i64(row.try_get(0)?),
        account: AccountId::from_i64(row.try_get(1)?),
        at_ms: row.try_get(2)?,
        event: row.try_get(3)?,
        actor: actor_from_columns(&actor_kind, row.try_get(5)?)?,
        token: row.try_get::<Option<i64>, _>(6)?.map(TokenId::from_i64),
        address: address_from_column(row.try_get(7)?)?,
        outcome: Outcome::from_name(&outcome).ok_or_else(|| corrupt(format!("unknown audit outcome '{outcome}'")))?,
        detail: match serde_json::from_str(&detail) {
            Ok(serde_json::Value::Object(detail)) => detail,
            _ => return Err(corrupt("an audit entry's detail is not a JSON object")),
        },
        count: u64::try_from(count).unwrap_or(0),
    })
}

fn seconds_column(seconds: Option<u64>) -> Option<i64> {
    seconds.map(|seconds| i64::try_from(seconds).unwrap_or(i64::MAX))
}

fn seconds_from_column(seconds: Option<i64>) -> Option<u64> {
    seconds.map(|seconds| u64::try_from(seconds).unwrap_or(0))
}

#[async_trait]
impl AuditStore for Backend {
    async fn insert_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut transaction = begin_write(self).await?;
        insert_audit_in(&mut transaction, entries).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn audit_entries(&self, account: AccountId, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut select = QueryBuilder::<Db>::new(concat!("SELECT ", audit_columns!(), " FROM audit_events"));
        select.push(" WHERE account_id = ").push_bind(account.as_i64());
        if let Some(actor) = query.actor {
            let (kind, id) = actor_columns(actor);
            select.push(" AND actor_kind = ").push_bind(kind).push(" AND actor_id IS NOT DISTINCT FROM ").push_bind(id);
        }
        if let Some(token) = query.token {
            select.push(" AND token_id = ").push_bind(token.as_i64());
        }
        if !query.events.is_empty() {
            select.push(" AND event IN (");
            let mut events = select.separated(", ");
            for event in &query.events {
                events.push_bind(event.clone());
            }
            select.push(")");
        }
        if let Some(since) = query.since_ms {
            select.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = query.until_ms {
            select.push(" AND at < ").push_bind(until);
        }
        if let Some(before) = query.before {
            select.push(" AND id < ").push_bind(before.as_i64());
        }
        select.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(query.limit));
        let rows = select.build().fetch_all(&self.pool).await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn prune_audit(&self, before_ms: i64, limit: u32) -> StoreResult<u64> {
        let deleted = sqlx::query(
            "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(single_writes(self))
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn token_policies(&self, account: AccountId) -> StoreResult<Vec<TokenPolicy>> {
        let rows = sqlx::query(
            "SELECT kind, max_lifetime_seconds, default_lifetime_seconds FROM token_policies WHERE account_id = $1 \
             ORDER BY kind",
        )
        .bind(account.as_i64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenPolicy {
                    kind: kind_from_column(row.try_get(0)?)?,
                    max_lifetime_seconds: seconds_from_column(row.try_get(1)?),
                    default_lifetime_seconds: seconds_from_column(row.try_get(2)?),
                })
            })
            .collect()
    }

    async fn set_token_policy(
        &self,
        account: AccountId,
        policy: &TokenPolicy,
        audit: &[AuditEntry],
    ) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        if policy.max_lifetime_seconds.is_none() && policy.default_lifetime_seconds.is_none() {
            sqlx::query("DELETE FROM token_policies WHERE account_id = $1 AND kind = $2")
                .bind(account.as_i64())
                .bind(policy.kind.as_str())
                .execute(&mut *transaction)
                .await?;
        } else {
            // An upsert: two saves at once on PostgreSQL would otherwise meet as a unique violation.
            sqlx::query(
                "INSERT INTO token_policies (account_id, kind, max_lifetime_seconds, default_lifetime_seconds) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, kind) DO UPDATE SET \
                 max_lifetime_seconds = excluded.max_lifetime_seconds, \
                 default_lifetime_seconds = excluded.default_lifetime_seconds",
            )
            .bind(account.as_i64())
            .bind(policy.kind.as_str())
            .bind(seconds_column(policy.max_lifetime_seconds))
            .bind(seconds_column(policy.default_lifetime_seconds))
            .execute(&mut *transaction)
            .await?;
        }
        insert_audit_in(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }
}
