-- Objects, per-store usage and the quota reservations of uploads in flight.
--
-- Portable SQL (SQLite and PostgreSQL) with engine tokens, see BaseEngine.render_schema:
--   @KEY_COLLATE@     makes TEXT compare bytewise. Empty on SQLite, whose default BINARY
--                     collation compares the UTF-8 bytes with memcmp; COLLATE "C" on
--                     PostgreSQL. Listing (WHERE bucket = ? AND key > ? ORDER BY key
--                     LIMIT ?) walks the primary key index in that order.
--   @ID_PRIMARY_KEY@  an integer key assigned by the database and never reused.

CREATE TABLE stores (
    name TEXT NOT NULL PRIMARY KEY,
    quota_bytes BIGINT NOT NULL,          -- 0 = unlimited
    used_bytes BIGINT NOT NULL DEFAULT 0,
    object_count BIGINT NOT NULL DEFAULT 0,
    config_order INTEGER                  -- position in the configuration; NULL = no longer configured
);

CREATE TABLE objects (
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    store TEXT NOT NULL REFERENCES stores (name),
    location TEXT NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,                   -- unquoted: hex MD5, or hex-N for multipart objects
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,                -- JSON object: stored standard headers by lower-case name
    user_metadata TEXT NOT NULL,          -- JSON object: x-amz-meta-* by lower-case suffix
    last_modified_ms BIGINT NOT NULL,
    PRIMARY KEY (bucket, key)
);

CREATE INDEX objects_by_store ON objects (store);

CREATE TABLE reservations (
    id @ID_PRIMARY_KEY@,
    store TEXT NOT NULL REFERENCES stores (name),
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
