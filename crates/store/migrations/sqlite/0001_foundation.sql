-- Tessera's first schema: accounts, users, collections, devices, variables, readings and tokens.
-- Ids are 63-bit time-ordered integers made by the server (see tessera-core's id module); times are Unix ms.

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email          TEXT    NOT NULL,  -- lower-cased
    password_hash  TEXT    NOT NULL,  -- argon2id PHC string, parameters included
    display_name   TEXT    NOT NULL DEFAULT '',
    is_admin       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    UNIQUE (account_id, email)
);

CREATE TABLE collections (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    is_default  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX collections_by_account ON collections (account_id, id);
CREATE UNIQUE INDEX one_default_collection_per_account ON collections (account_id) WHERE is_default = 1;

CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    collection_id  INTEGER NOT NULL REFERENCES collections (id),
    label          TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (account_id, label)
);
CREATE INDEX devices_by_collection ON devices (collection_id, id);

CREATE TABLE variables (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id   INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    label       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    unit        TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    UNIQUE (device_id, label)
);
CREATE INDEX variables_by_account ON variables (account_id, id);

-- One reading per variable and millisecond; a second write replaces the first. Exactly one of num, json and
-- bytes is set. No foreign key: deleting a variable deletes its readings in the same transaction, and a
-- reading committed by the batching writer for a variable deleted a moment earlier is unreachable (ids are
-- never reused).
CREATE TABLE readings (
    variable_id  INTEGER NOT NULL,
    ts           INTEGER NOT NULL,
    num          REAL,
    json         TEXT,
    bytes        BLOB,
    context      TEXT,     -- JSON object, NULL when empty
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (variable_id, ts)
) WITHOUT ROWID;

CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL,
    digest        BLOB    NOT NULL UNIQUE,  -- HMAC-SHA256 of the secret under the server key
    scope_kind    TEXT    NOT NULL,         -- account, team, collection, device, all_teams, all_collections
    scope_id      INTEGER,
    rights        TEXT    NOT NULL,         -- read, read_write
    creator_kind  TEXT    NOT NULL,         -- system, token, user
    creator_id    INTEGER,
    name          TEXT    NOT NULL DEFAULT '',
    tags          TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER,
    uses          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_by_scope ON tokens (account_id, scope_kind, scope_id, id);
