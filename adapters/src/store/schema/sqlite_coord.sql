-- hedgerow coordination tables, SQLite: the KV revisions, the semaphores
-- and the permits of each group (group_name = the lease row's name).
-- Written only in a transaction that first checks the group's lease row
-- names the writer. Revisions and tokens are positive and below 2^63, so
-- SQL orders them; term, incarnations, request ids, tickets and expiries
-- are unsigned 64-bit values stored bit-for-bit in the signed INTEGER.
CREATE TABLE IF NOT EXISTS hedgerow_kv (
    group_name         TEXT    NOT NULL,
    revision           INTEGER NOT NULL,
    schema_version     INTEGER NOT NULL,
    key                TEXT    NOT NULL,
    value              BLOB    NOT NULL,
    term               INTEGER NOT NULL,
    origin_node        TEXT    NOT NULL,
    origin_incarnation INTEGER NOT NULL,
    origin_request     INTEGER NOT NULL,
    PRIMARY KEY (group_name, revision),
    UNIQUE (group_name, origin_node, origin_incarnation, origin_request)
) STRICT;
CREATE INDEX IF NOT EXISTS hedgerow_kv_by_key ON hedgerow_kv (group_name, key, revision);
-- Kept after their last permit is freed, so a name's tokens never restart.
CREATE TABLE IF NOT EXISTS hedgerow_semaphores (
    group_name     TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    permit_limit   INTEGER NOT NULL,
    last_token     INTEGER NOT NULL,
    PRIMARY KEY (group_name, name)
) STRICT;
CREATE TABLE IF NOT EXISTS hedgerow_permits (
    group_name         TEXT    NOT NULL,
    name               TEXT    NOT NULL,
    token              INTEGER NOT NULL,
    schema_version     INTEGER NOT NULL,
    holder_id          TEXT    NOT NULL,
    holder_incarnation INTEGER NOT NULL,
    ticket             INTEGER NOT NULL,
    expires_ns         INTEGER NOT NULL,
    PRIMARY KEY (group_name, name, token)
) STRICT;
