-- hedgerow coordination tables, PostgreSQL: the KV revisions, the semaphores
-- and the permits of each group (group_name = the lease row's name).
-- Written only in a transaction that first checks the group's lease row
-- names the writer. Keys and names sort bytewise (COLLATE "C"), as in
-- every other store. Revisions and tokens are positive and below 2^63, so
-- SQL orders them; term, incarnations, request ids, tickets and expiries
-- are unsigned 64-bit values stored bit-for-bit in the signed BIGINT.
CREATE TABLE IF NOT EXISTS hedgerow_kv (
    group_name         TEXT    NOT NULL,
    revision           BIGINT  NOT NULL,
    schema_version     INTEGER NOT NULL,
    key                TEXT    COLLATE "C" NOT NULL,
    value              BYTEA   NOT NULL,
    term               BIGINT  NOT NULL,
    origin_node        TEXT    NOT NULL,
    origin_incarnation BIGINT  NOT NULL,
    origin_request     BIGINT  NOT NULL,
    PRIMARY KEY (group_name, revision),
    UNIQUE (group_name, origin_node, origin_incarnation, origin_request)
);
CREATE INDEX IF NOT EXISTS hedgerow_kv_by_key ON hedgerow_kv (group_name, key, revision);
-- Kept after their last permit is freed, so a name's tokens never restart.
CREATE TABLE IF NOT EXISTS hedgerow_semaphores (
    group_name     TEXT    NOT NULL,
    name           TEXT    COLLATE "C" NOT NULL,
    schema_version INTEGER NOT NULL,
    permit_limit   BIGINT  NOT NULL,
    last_token     BIGINT  NOT NULL,
    PRIMARY KEY (group_name, name)
);
CREATE TABLE IF NOT EXISTS hedgerow_permits (
    group_name         TEXT    NOT NULL,
    name               TEXT    COLLATE "C" NOT NULL,
    token              BIGINT  NOT NULL,
    schema_version     INTEGER NOT NULL,
    holder_id          TEXT    NOT NULL,
    holder_incarnation BIGINT  NOT NULL,
    ticket             BIGINT  NOT NULL,
    expires_ns         BIGINT  NOT NULL,
    PRIMARY KEY (group_name, name, token)
);
