-- The Horde dialect: tags on collections and devices, device IMSI/IMEI, a token's resource path, invite ids from
-- which their codes are derived, and the queue of messages waiting to go down to devices.

ALTER TABLE collections ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';

ALTER TABLE devices ADD COLUMN imsi TEXT;
ALTER TABLE devices ADD COLUMN imei TEXT;
ALTER TABLE devices ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
CREATE UNIQUE INDEX devices_by_imsi ON devices (account_id, imsi) WHERE imsi IS NOT NULL;
CREATE UNIQUE INDEX devices_by_imei ON devices (account_id, imei) WHERE imei IS NOT NULL;

-- The normalised resource path a Horde token was created with (NULL for other tokens).
ALTER TABLE tokens ADD COLUMN resource TEXT;

ALTER TABLE invites ADD COLUMN id INTEGER;

CREATE TABLE downlinks (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_id     INTEGER NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    port          INTEGER NOT NULL,
    payload       BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER
);
CREATE INDEX downlinks_by_device ON downlinks (device_id, id);
