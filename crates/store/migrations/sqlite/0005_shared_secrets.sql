-- Secrets every process on this database must agree on (on PostgreSQL, the server key). SQLite keeps its server
-- key in the data directory instead, but the table exists here too so both stores offer the same operations.
CREATE TABLE shared_secrets (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
