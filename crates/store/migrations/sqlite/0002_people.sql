-- People: users with a second factor, teams that own collections, invites, and login sessions.

ALTER TABLE users ADD COLUMN phone TEXT NOT NULL DEFAULT '';
-- The TOTP secret (raw bytes); `totp_enabled` is 0 while an enrollment awaits its first code.
ALTER TABLE users ADD COLUMN totp_secret BLOB;
ALTER TABLE users ADD COLUMN totp_enabled INTEGER NOT NULL DEFAULT 0;
-- The last accepted time step: a code at or below it is refused, so a code works once.
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;

-- One-time recovery codes, kept as HMAC digests like token secrets.
CREATE TABLE recovery_codes (
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest   BLOB    NOT NULL,
    used_at  INTEGER,
    PRIMARY KEY (user_id, digest)
);

CREATE TABLE teams (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    tags        TEXT    NOT NULL DEFAULT '{}',
    -- The user whose private team this is; NULL for shared teams.
    private_of  INTEGER UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE team_members (
    team_id     INTEGER NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT    NOT NULL,  -- admin, member
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_by_user ON team_members (user_id);

-- The team that owns a collection; NULL for collections of the account itself (reached by account admins).
ALTER TABLE collections ADD COLUMN team_id INTEGER REFERENCES teams (id);
CREATE INDEX collections_by_team ON collections (team_id);

CREATE TABLE invites (
    digest       BLOB    PRIMARY KEY,  -- HMAC of the invite code
    team_id      INTEGER NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    created_by   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    accepted_by  INTEGER REFERENCES users (id) ON DELETE SET NULL,
    accepted_at  INTEGER
);
CREATE INDEX invites_by_team ON invites (team_id);

-- Second-factor challenges issued after a correct password; each serves one successful code.
CREATE TABLE login_challenges (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

-- A login session: every access and refresh token descended from one login shares its family, so a reused
-- refresh token or a logout revokes them all.
ALTER TABLE tokens ADD COLUMN family_id INTEGER;
CREATE INDEX tokens_by_family ON tokens (family_id) WHERE family_id IS NOT NULL;
CREATE INDEX tokens_by_creator ON tokens (account_id, creator_kind, creator_id);
