-- (Numbered as SQLite's migration of the same change.)
-- What happens to tokens after they are made: disabled without being deleted, their secret rotated with a time
-- the old one still works, a request quota, where they were last used from, and an audit trail of every
-- management event, sign-in and refused credential.

-- A disabled token is refused like a revoked one, and can be enabled again.
ALTER TABLE tokens ADD COLUMN disabled_at BIGINT;
-- The address (IP, as text) the token was last presented from, flushed with its use count.
ALTER TABLE tokens ADD COLUMN last_used_from TEXT;
-- After a rotation: the digest of the secret it replaced, accepted until previous_valid_until (Unix ms).
ALTER TABLE tokens ADD COLUMN previous_digest BYTEA;
ALTER TABLE tokens ADD COLUMN previous_valid_until BIGINT;
ALTER TABLE tokens ADD COLUMN rotated_at BIGINT;
-- The request quota: NULL and NULL for the default of its kind, 0 requests for no limit.
ALTER TABLE tokens ADD COLUMN quota_requests BIGINT;
ALTER TABLE tokens ADD COLUMN quota_window_seconds BIGINT;
-- Requests refused for being over the quota, flushed with the use count.
ALTER TABLE tokens ADD COLUMN throttled BIGINT NOT NULL DEFAULT 0;
-- Whether the trail already says this token expired (each is recorded once, by whichever node sees it first).
ALTER TABLE tokens ADD COLUMN expiry_recorded BOOLEAN NOT NULL DEFAULT FALSE;

CREATE UNIQUE INDEX tokens_by_previous_digest ON tokens (previous_digest) WHERE previous_digest IS NOT NULL;
-- Tokens that expire, for the "expiring within N days" listing.
CREATE INDEX tokens_by_expiry ON tokens (account_id, expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
-- The expiry sweep's work: tokens whose expiry is not yet recorded (login sessions never are). A row leaves it
-- once recorded, so the sweep reads what is due, not every token that ever expired.
CREATE INDEX tokens_expiry_to_record ON tokens (expires_at)
    WHERE expiry_recorded = FALSE AND revoked_at IS NULL AND expires_at IS NOT NULL
    AND kind NOT IN ('user_access', 'refresh');

CREATE TABLE audit_events (
    id          BIGINT PRIMARY KEY,      -- time-ordered: the listing's cursor
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    event       TEXT    NOT NULL,         -- token.minted, token.revoked, login.succeeded, credential.refused, ...
    actor_kind  TEXT    NOT NULL,         -- user, token, system, anonymous
    actor_id    BIGINT,
    token_id    BIGINT,                  -- the token the event is about, if any
    address     TEXT,                     -- the caller's IP address, if the event came from a request
    outcome     TEXT    NOT NULL,         -- ok, refused
    detail      TEXT    NOT NULL DEFAULT '{}',  -- JSON object: what changed, why it was refused
    count       BIGINT NOT NULL DEFAULT 1      -- refusals of one kind from one place are gathered into one entry
);
CREATE INDEX audit_events_by_account ON audit_events (account_id, id);
CREATE INDEX audit_events_by_token ON audit_events (account_id, token_id, id) WHERE token_id IS NOT NULL;
CREATE INDEX audit_events_by_actor ON audit_events (account_id, actor_kind, actor_id, id);
CREATE INDEX audit_events_by_time ON audit_events (at);

-- Per account and kind of token: the longest a new token may live and the expiry it gets when none is asked for.
CREATE TABLE token_policies (
    account_id              BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind                    TEXT    NOT NULL,
    max_lifetime_seconds    BIGINT,
    default_lifetime_seconds BIGINT,
    PRIMARY KEY (account_id, kind)
);
