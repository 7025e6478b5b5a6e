-- Tessera's schema on PostgreSQL: the same tables, columns and rules as the SQLite migrations 0001-0005 reach,
-- in PostgreSQL's types. Ids are 63-bit time-ordered integers made by the server; times are Unix ms (BIGINT).

CREATE TABLE accounts (
    id          BIGINT PRIMARY KEY,
    name        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id              BIGINT  PRIMARY KEY,
    account_id      BIGINT  NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email           TEXT    NOT NULL,  -- lower-cased
    password_hash   TEXT    NOT NULL,  -- argon2id PHC string, parameters included
    display_name    TEXT    NOT NULL DEFAULT '',
    phone           TEXT    NOT NULL DEFAULT '',
    is_admin        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT  NOT NULL,
    totp_secret     BYTEA,
    totp_enabled    BOOLEAN NOT NULL DEFAULT FALSE,
    totp_last_step  BIGINT,
    UNIQUE (account_id, email)
);
CREATE INDEX users_by_email ON users (email);

CREATE TABLE recovery_codes (
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest   BYTEA  NOT NULL,
    used_at  BIGINT,
    PRIMARY KEY (user_id, digest)
);

CREATE TABLE teams (
    id          BIGINT PRIMARY KEY,
    account_id  BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    tags        TEXT   NOT NULL DEFAULT '{}',
    private_of  BIGINT UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id     BIGINT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT   NOT NULL,  -- admin, member
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_by_user ON team_members (user_id);

CREATE TABLE collections (
    id          BIGINT  PRIMARY KEY,
    account_id  BIGINT  NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    is_default  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL,
    team_id     BIGINT  REFERENCES teams (id),
    tags        TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX collections_by_account ON collections (account_id, id);
CREATE INDEX collections_by_team ON collections (team_id);
CREATE UNIQUE INDEX one_default_collection_per_account ON collections (account_id) WHERE is_default;

CREATE TABLE devices (
    id             BIGINT PRIMARY KEY,
    account_id     BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    collection_id  BIGINT NOT NULL REFERENCES collections (id),
    label          TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    imsi           TEXT,
    imei           TEXT,
    tags           TEXT   NOT NULL DEFAULT '{}',
    UNIQUE (account_id, label)
);
CREATE INDEX devices_by_collection ON devices (collection_id, id);
CREATE UNIQUE INDEX devices_by_imsi ON devices (account_id, imsi) WHERE imsi IS NOT NULL;
CREATE UNIQUE INDEX devices_by_imei ON devices (account_id, imei) WHERE imei IS NOT NULL;

CREATE TABLE variables (
    id           BIGINT PRIMARY KEY,
    account_id   BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id    BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    label        TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    unit         TEXT   NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    title        TEXT   NOT NULL DEFAULT '',
    description  TEXT   NOT NULL DEFAULT '',
    kind         TEXT   NOT NULL DEFAULT 'sensor',
    profile      TEXT,
    UNIQUE (device_id, label)
);
CREATE INDEX variables_by_account ON variables (account_id, id);

-- No foreign key, as on SQLite: deleting a variable deletes its readings in the same transaction, and a reading
-- committed by the batching writer for a variable deleted a moment earlier is unreachable (ids are never reused).
-- A foreign key would instead fail the writer's whole batch in that race.
CREATE TABLE readings (
    variable_id  BIGINT NOT NULL,
    ts           BIGINT NOT NULL,
    num          DOUBLE PRECISION,
    json         TEXT,
    bytes        BYTEA,
    context      TEXT,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (variable_id, ts)
);

CREATE TABLE tokens (
    id            BIGINT PRIMARY KEY,
    account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind          TEXT   NOT NULL,
    digest        BYTEA  NOT NULL UNIQUE,  -- HMAC-SHA256 of the secret under the server key
    scope_kind    TEXT   NOT NULL,
    scope_id      BIGINT,
    rights        TEXT   NOT NULL,
    creator_kind  TEXT   NOT NULL,
    creator_id    BIGINT,
    name          TEXT   NOT NULL DEFAULT '',
    tags          TEXT   NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    uses          BIGINT NOT NULL DEFAULT 0,
    family_id     BIGINT,
    resource      TEXT
);
CREATE INDEX tokens_by_scope ON tokens (account_id, scope_kind, scope_id, id);
CREATE INDEX tokens_by_family ON tokens (family_id) WHERE family_id IS NOT NULL;
CREATE INDEX tokens_by_creator ON tokens (account_id, creator_kind, creator_id);

CREATE TABLE invites (
    digest       BYTEA  PRIMARY KEY,
    team_id      BIGINT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_by   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    accepted_by  BIGINT REFERENCES users (id) ON DELETE SET NULL,
    accepted_at  BIGINT,
    id           BIGINT
);
CREATE INDEX invites_by_team ON invites (team_id);

CREATE TABLE login_challenges (
    id          BIGINT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE downlinks (
    id            BIGINT PRIMARY KEY,
    account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id     BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    port          BIGINT NOT NULL,
    payload       BYTEA  NOT NULL,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT
);
CREATE INDEX downlinks_by_device ON downlinks (device_id, id);

-- Secrets every node must agree on: the server key under which token digests are made.
CREATE TABLE shared_secrets (
    name   TEXT  PRIMARY KEY,
    value  BYTEA NOT NULL
);

-- Events between nodes too large for a NOTIFY payload (8000 bytes): the notification carries the row's id.
-- Rows older than an hour are deleted by whichever node publishes next.
CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    payload     TEXT   NOT NULL
);
