-- hedgerow lease table, PostgreSQL. One row per group; rows are never
-- deleted, so a group's tokens never restart (dropping the table is an
-- operator error: the next leader would reuse old tokens).
-- token, holder_nonce, expires_ns and version are unsigned 64-bit values
-- stored bit-for-bit in the signed BIGINT (values >= 2^63 read negative).
CREATE TABLE IF NOT EXISTS hedgerow_lease (
    name           TEXT    NOT NULL PRIMARY KEY,
    schema_version INTEGER NOT NULL,
    holder_id      TEXT,
    holder_nonce   BIGINT,
    holder_addr    TEXT,
    token          BIGINT  NOT NULL,
    expires_ns     BIGINT  NOT NULL,
    version        BIGINT  NOT NULL,
    CHECK ((holder_id IS NULL) = (holder_nonce IS NULL)
       AND (holder_id IS NULL) = (holder_addr IS NULL))
);
