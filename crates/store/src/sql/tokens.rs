//! Tokens: the `TokenStore` half of the shared SQL, a child of `store.rs`, whose imports, helpers and backend
//! items it uses. Every change of a token writes its audit entries in its own transaction.

use super::*;

/// Sets `column` of a live token of `account` to `value`, with `audit`, telling every node; answers the token as it
/// is now. `NotFound` if there is no such live token.
async fn set_live_token_column(
    store: &Backend,
    account: AccountId,
    token: TokenId,
    column: &'static str,
    value: Option<i64>,
    audit: &[AuditEntry],
) -> StoreResult<TokenRecord> {
    let mut transaction = begin_write(store).await?;
    let statement = format!(
        "UPDATE tokens SET {column} = $1 WHERE account_id = $2 AND id = $3 AND revoked_at IS NULL RETURNING {}",
        token_columns!()
    );
    // `column` is one of this module's literals, never outside text.
    let row = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(value)
        .bind(account.as_i64())
        .bind(token.as_i64())
        .fetch_one(&mut *transaction)
        .await?;
    let changed = token_from_row(&row)?;
    insert_audit_in(&mut transaction, audit).await?;
    tell_in(&mut transaction, &token_invalidations(std::slice::from_ref(&changed))).await?;
    transaction.commit().await?;
    Ok(changed)
}

#[async_trait]
impl TokenStore for Backend {
    async fn insert_token(&self, token: &TokenRecord, audit: &[AuditEntry]) -> StoreResult<()> {
        if audit.is_empty() {
            return insert_token_in(single_writes(self), token).await;
        }
        self.insert_tokens(std::slice::from_ref(token), audit).await
    }

    async fn insert_tokens(&self, tokens: &[TokenRecord], audit: &[AuditEntry]) -> StoreResult<()> {
        let mut transaction = begin_write(self).await?;
        for token in tokens {
            insert_token_in(&mut *transaction, token).await?;
        }
        insert_audit_in(&mut transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn token_by_digest(&self, digest: &SecretDigest) -> StoreResult<TokenRecord> {
        // Two lookups of one unique index each (an OR across both columns would scan on PostgreSQL).
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE digest = $1 UNION ALL SELECT ",
            token_columns!(),
            " FROM tokens WHERE previous_digest = $1"
        ))
        .bind(digest.0.as_slice())
        .fetch_one(&self.pool)
        .await?;
        token_from_row(&row)
    }

    async fn token(&self, account: AccountId, token: TokenId) -> StoreResult<TokenRecord> {
        let row = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens WHERE account_id = $1 AND id = $2"))
            .bind(account.as_i64())
            .bind(token.as_i64())
            .fetch_one(&self.pool)
            .await?;
        token_from_row(&row)
    }

    async fn list_tokens(
        &self,
        account: AccountId,
        filter: TokenFilter,
        now_ms: i64,
        page: Page,
    ) -> StoreResult<Paged<TokenRecord>> {
        let push_filter = |query: &mut QueryBuilder<Db>| {
            query.push(" WHERE account_id = ").push_bind(account.as_i64()).push(" AND revoked_at IS NULL");
            query.push(" AND (expires_at IS NULL OR expires_at > ").push_bind(now_ms).push(")");
            // `IS` compares NULLs as equal, so scopes and creators without an id match too.
            if let Some((kind, id)) = filter.scope.map(scope_columns) {
                query
                    .push(" AND scope_kind = ")
                    .push_bind(kind)
                    .push(" AND scope_id IS NOT DISTINCT FROM ")
                    .push_bind(id);
            }
            if let Some((kind, id)) = filter.creator.map(creator_columns) {
                query
                    .push(" AND creator_kind = ")
                    .push_bind(kind)
                    .push(" AND creator_id IS NOT DISTINCT FROM ")
                    .push_bind(id);
            }
            if let Some(before) = filter.expires_before_ms {
                query.push(" AND expires_at IS NOT NULL AND expires_at < ").push_bind(before);
            }
            if let Some(since) = filter.unused_since_ms {
                query.push(" AND (last_used_at IS NULL OR last_used_at < ").push_bind(since).push(")");
            }
        };
        let mut count = QueryBuilder::<Db>::new("SELECT count(*) FROM tokens");
        push_filter(&mut count);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut select = QueryBuilder::<Db>::new(concat!("SELECT ", token_columns!(), " FROM tokens"));
        push_filter(&mut select);
        select.push(" ORDER BY id LIMIT ").push_bind(to_i64(page.size));
        select.push(" OFFSET ").push_bind(to_i64(page.offset()));
        let rows = select.build().fetch_all(&self.pool).await?;
        let items = rows.iter().map(token_from_row).collect::<StoreResult<_>>()?;
        Ok(Paged { total: total as u64, items })
    }

    async fn revoke_token(
        &self,
        account: AccountId,
        token: TokenId,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<TokenRecord> {
        set_live_token_column(self, account, token, "revoked_at", Some(at_ms), audit).await
    }

    async fn update_token(&self, token: &TokenRecord, audit: &[AuditEntry]) -> StoreResult<TokenRecord> {
        let mut transaction = begin_write(self).await?;
        let (scope_kind, scope_id) = scope_columns(token.scope);
        let (quota_requests, quota_window) = quota_columns(token.quota);
        let row = sqlx::query(concat!(
            "UPDATE tokens SET scope_kind = $1, scope_id = $2, rights = $3, name = $4, tags = $5, resource = $6, \
             quota_requests = $9, quota_window_seconds = $10 \
             WHERE account_id = $7 AND id = $8 AND revoked_at IS NULL RETURNING ",
            token_columns!()
        ))
        .bind(scope_kind)
        .bind(scope_id)
        .bind(rights_column(token.rights))
        .bind(&token.name)
        .bind(tags_column(&token.tags))
        .bind(&token.resource)
        .bind(token.account.as_i64())
        .bind(token.id.as_i64())
        .bind(quota_requests)
        .bind(quota_window)
        .fetch_one(&mut *transaction)
        .await?;
        let changed = token_from_row(&row)?;
        insert_audit_in(&mut transaction, audit).await?;
        // The row as it is: a rotation may have come in between the caller's read and this change, and caches
        // hold the token under the secrets it has now.
        tell_in(&mut transaction, &token_invalidations(std::slice::from_ref(&changed))).await?;
        transaction.commit().await?;
        Ok(changed)
    }

    async fn consume_token(&self, token: TokenId, at_ms: i64) -> StoreResult<bool> {
        let updated = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at_ms)
            .bind(token.as_i64())
            .execute(single_writes(self))
            .await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn rotate_tokens(&self, consumed: TokenId, tokens: &[TokenRecord], at_ms: i64) -> StoreResult<bool> {
        let mut transaction = begin_write(self).await?;
        let updated = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(at_ms)
            .bind(consumed.as_i64())
            .execute(&mut *transaction)
            .await?;
        if updated.rows_affected() != 1 {
            return Ok(false);
        }
        for token in tokens {
            insert_token_in(&mut *transaction, token).await?;
        }
        transaction.commit().await?;
        Ok(true)
    }

    async fn revoke_family(&self, family: Id, at_ms: i64, audit: &[AuditEntry]) -> StoreResult<Vec<TokenRecord>> {
        let mut transaction = begin_write(self).await?;
        // Waits for a rotation of this family in flight to commit, so that the UPDATE below (a statement of its
        // own, with a snapshot taken after the wait) sees the pair the rotation inserted and revokes it too.
        sqlx::query(concat!("SELECT id FROM tokens WHERE family_id = $1", for_update!()))
            .bind(family.as_i64())
            .fetch_all(&mut *transaction)
            .await?;
        let rows = sqlx::query(concat!(
            "UPDATE tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL RETURNING ",
            token_columns!()
        ))
        .bind(at_ms)
        .bind(family.as_i64())
        .fetch_all(&mut *transaction)
        .await?;
        let revoked = rows.iter().map(token_from_row).collect::<StoreResult<Vec<_>>>()?;
        insert_audit_in(&mut transaction, audit).await?;
        tell_in(&mut transaction, &token_invalidations(&revoked)).await?;
        transaction.commit().await?;
        Ok(revoked)
    }

    async fn revoke_tokens_of(
        &self,
        account: AccountId,
        creator: Creator,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<Vec<TokenRecord>> {
        let (kind, id) = creator_columns(creator);
        let mut transaction = begin_write(self).await?;
        let rows = sqlx::query(concat!(
            "UPDATE tokens SET revoked_at = $1 WHERE account_id = $2 AND creator_kind = $3 AND creator_id IS NOT DISTINCT FROM $4 \
             AND revoked_at IS NULL RETURNING ",
            token_columns!()
        ))
        .bind(at_ms)
        .bind(account.as_i64())
        .bind(kind)
        .bind(id)
        .fetch_all(&mut *transaction)
        .await?;
        let revoked = rows.iter().map(token_from_row).collect::<StoreResult<Vec<_>>>()?;
        insert_audit_in(&mut transaction, audit).await?;
        tell_in(&mut transaction, &token_invalidations(&revoked)).await?;
        transaction.commit().await?;
        Ok(revoked)
    }

    async fn record_token_usage(&self, usage: &[TokenUsage]) -> StoreResult<()> {
        // Rows are updated in id order, as every other writer of several token rows would, so two nodes flushing
        // usage of the same tokens at once cannot deadlock.
        let mut usage: Vec<&TokenUsage> = usage.iter().collect();
        usage.sort_by_key(|entry| entry.token);
        // Small transactions of one statement each (autocommit: one round trip, not BEGIN, UPDATE, COMMIT): the
        // write lock is held for a moment at a time, so readings waiting to be committed are not held up behind
        // thousands of token rows.
        for chunk in usage.chunks(USAGE_PER_TRANSACTION) {
            // The address goes with the time: it is the last use's only when that use is the latest known.
            let mut update = QueryBuilder::<Db>::new(
                "UPDATE tokens SET uses = tokens.uses + usage.column2, throttled = tokens.throttled + usage.column5, \
                 last_used_from = CASE WHEN tokens.last_used_at IS NULL OR tokens.last_used_at <= usage.column3 \
                 THEN COALESCE(usage.column4, tokens.last_used_from) ELSE tokens.last_used_from END, \
                 last_used_at = CASE \
                 WHEN tokens.last_used_at IS NULL OR tokens.last_used_at < usage.column3 THEN usage.column3 \
                 ELSE tokens.last_used_at END FROM (",
            );
            update.push_values(chunk, |mut row, entry| {
                row.push_bind(entry.token.as_i64())
                    .push_bind(to_i64(entry.uses))
                    .push_bind(entry.last_used_at_ms)
                    .push_bind(address_column(entry.last_used_from))
                    .push_bind(to_i64(entry.throttled));
            });
            update.push(") AS usage WHERE tokens.id = usage.column1");
            update.build().execute(single_writes(self)).await?;
        }
        Ok(())
    }
    async fn rotate_secret(
        &self,
        account: AccountId,
        token: TokenId,
        digest: &SecretDigest,
        previous_valid_until_ms: i64,
        at_ms: i64,
        audit: &[AuditEntry],
    ) -> StoreResult<TokenRecord> {
        let mut transaction = begin_write(self).await?;
        let before = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM tokens WHERE account_id = $1 AND id = $2 AND revoked_at IS NULL",
            for_update!()
        ))
        .bind(account.as_i64())
        .bind(token.as_i64())
        .fetch_one(&mut *transaction)
        .await?;
        let before = token_from_row(&before)?;
        let row = sqlx::query(concat!(
            "UPDATE tokens SET previous_digest = digest, digest = $1, previous_valid_until = $2, rotated_at = $3 \
             WHERE account_id = $4 AND id = $5 RETURNING ",
            token_columns!()
        ))
        .bind(digest.0.as_slice())
        .bind(previous_valid_until_ms)
        .bind(at_ms)
        .bind(account.as_i64())
        .bind(token.as_i64())
        .fetch_one(&mut *transaction)
        .await?;
        let rotated = token_from_row(&row)?;
        insert_audit_in(&mut transaction, audit).await?;
        // Caches hold the token under the secret it had (and under one replaced before, which stops now).
        tell_in(&mut transaction, &token_invalidations(std::slice::from_ref(&before))).await?;
        transaction.commit().await?;
        Ok(rotated)
    }

    async fn set_token_disabled(
        &self,
        account: AccountId,
        token: TokenId,
        disabled_at_ms: Option<i64>,
        audit: &[AuditEntry],
    ) -> StoreResult<TokenRecord> {
        set_live_token_column(self, account, token, "disabled_at", disabled_at_ms, audit).await
    }

    async fn select_tokens(
        &self,
        account: AccountId,
        selection: TokenSelection,
        now_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<TokenRecord>> {
        let mut query = QueryBuilder::<Db>::new(concat!("SELECT ", token_columns!(), " FROM tokens"));
        push_selection(&mut query, account, selection, now_ms);
        query.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_tokens(
        &self,
        account: AccountId,
        tokens: &[TokenId],
        at_ms: i64,
        audit: &(dyn for<'t> Fn(&'t [TokenRecord]) -> Vec<AuditEntry> + Send + Sync),
    ) -> StoreResult<Vec<TokenRecord>> {
        let mut transaction = begin_write(self).await?;
        let mut revoked = Vec::new();
        let mut ids: Vec<i64> = tokens.iter().map(|token| token.as_i64()).collect();
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(DEVICES_PER_STATEMENT) {
            // The rows are locked in id order first, as every writer of several token rows does (two nodes
            // cannot deadlock), and a session's other half is taken with it.
            let mut lock = QueryBuilder::<Db>::new("SELECT id FROM tokens WHERE account_id = ");
            lock.push_bind(account.as_i64()).push(" AND revoked_at IS NULL AND (id IN (");
            push_ids(&mut lock, chunk);
            lock.push(") OR family_id IN (SELECT family_id FROM tokens WHERE family_id IS NOT NULL AND id IN (");
            push_ids(&mut lock, chunk);
            lock.push("))) ORDER BY id").push(for_update!());
            let locked: Vec<i64> = lock.build_query_scalar().fetch_all(&mut *transaction).await?;
            if locked.is_empty() {
                continue;
            }
            // A statement of its own, with a snapshot taken after the wait: a refresh that committed a new pair
            // meanwhile is seen and revoked too (as in `revoke_family`; the locked ids alone would miss it).
            let mut update = QueryBuilder::<Db>::new("UPDATE tokens SET revoked_at = ");
            update.push_bind(at_ms).push(" WHERE account_id = ").push_bind(account.as_i64());
            update.push(" AND revoked_at IS NULL AND (id IN (");
            push_ids(&mut update, chunk);
            update.push(") OR family_id IN (SELECT family_id FROM tokens WHERE family_id IS NOT NULL AND id IN (");
            push_ids(&mut update, chunk);
            update.push("))) RETURNING ").push(token_columns!());
            let rows = update.build().fetch_all(&mut *transaction).await?;
            for row in &rows {
                revoked.push(token_from_row(row)?);
            }
        }
        insert_audit_in(&mut transaction, &audit(&revoked)).await?;
        tell_in(&mut transaction, &token_invalidations(&revoked)).await?;
        transaction.commit().await?;
        Ok(revoked)
    }

    async fn record_expiries(
        &self,
        now_ms: i64,
        limit: u32,
        entry: &(dyn for<'t> Fn(&'t TokenRecord) -> AuditEntry + Send + Sync),
    ) -> StoreResult<Vec<TokenRecord>> {
        let mut transaction = begin_write(self).await?;
        let rows = sqlx::query(concat!(
            "UPDATE tokens SET expiry_recorded = TRUE WHERE id IN (SELECT id FROM tokens \
             WHERE expires_at IS NOT NULL AND expires_at <= $1 AND revoked_at IS NULL AND expiry_recorded = FALSE \
             AND kind NOT IN ('user_access', 'refresh') ORDER BY id LIMIT $2) AND expiry_recorded = FALSE RETURNING ",
            token_columns!()
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *transaction)
        .await?;
        let expired = rows.iter().map(token_from_row).collect::<StoreResult<Vec<_>>>()?;
        let entries: Vec<AuditEntry> = expired.iter().map(entry).collect();
        insert_audit_in(&mut transaction, &entries).await?;
        transaction.commit().await?;
        Ok(expired)
    }
}

/// The `WHERE` of a token selection: the account's live tokens that `selection` takes.
fn push_selection(query: &mut QueryBuilder<Db>, account: AccountId, selection: TokenSelection, now_ms: i64) {
    query.push(" WHERE account_id = ").push_bind(account.as_i64()).push(" AND revoked_at IS NULL");
    query.push(" AND (expires_at IS NULL OR expires_at > ").push_bind(now_ms).push(")");
    if let Some((kind, id)) = selection.creator.map(creator_columns) {
        query.push(" AND creator_kind = ").push_bind(kind).push(" AND creator_id IS NOT DISTINCT FROM ").push_bind(id);
    }
    if let Some(collection) = selection.collection {
        query
            .push(" AND ((scope_kind = 'collection' AND scope_id = ")
            .push_bind(collection.as_i64())
            .push(") OR (scope_kind = 'device' AND scope_id IN (SELECT id FROM devices WHERE collection_id = ")
            .push_bind(collection.as_i64())
            .push(")))");
    }
    if let Some(device) = selection.device {
        query.push(" AND scope_kind = 'device' AND scope_id = ").push_bind(device.as_i64());
    }
    match selection.kind {
        // A login session is its access and refresh tokens: asking for either takes both, so a session whose
        // access token ran out (its refresh token still live) is not passed over.
        Some(TokenKind::UserAccess | TokenKind::Refresh) => {
            query.push(" AND kind IN ('user_access', 'refresh')");
        }
        Some(kind) => {
            query.push(" AND kind = ").push_bind(kind.as_str());
        }
        None => {}
    }
    if let Some(before) = selection.expires_before_ms {
        query.push(" AND expires_at IS NOT NULL AND expires_at < ").push_bind(before);
    }
    if let Some(since) = selection.unused_since_ms {
        query.push(" AND (last_used_at IS NULL OR last_used_at < ").push_bind(since).push(")");
    }
    if let Some(after) = selection.after {
        query.push(" AND id > ").push_bind(after.as_i64());
    }
}

/// `$a, $b, …` for the ids (never empty: callers skip an empty set).
fn push_ids(query: &mut QueryBuilder<Db>, ids: &[i64]) {
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
}
