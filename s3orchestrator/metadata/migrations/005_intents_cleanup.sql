-- Write intents and the cleanup queue (issue 13: crash safety, deleting).
--
-- intents: what a write is about to create, recorded in the transaction that reserves
-- its room, before a byte moves: one row per copy, keyed by the copy's reservation. The
-- commit that makes the copy live removes it (same transaction); a write that fails
-- removes it once its partial bytes are gone or queued for cleanup. A row whose owner is
-- dead (a previous run of this host, or past expires_ms) is resolved by the reaper job.
--
-- cleanup: bytes no object describes any more (deleted, overwritten, left by a failed
-- write), queued in the transaction that let go of them and removed from the store by
-- the cleanup job, retried with backoff until the store confirms. Their size stays in
-- stores.used_bytes until then: quota is released only when the bytes are gone.

CREATE TABLE intents (
    reservation_id BIGINT NOT NULL PRIMARY KEY,
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    store TEXT NOT NULL REFERENCES stores (name),
    location TEXT NOT NULL,
    size BIGINT NOT NULL,
    owner TEXT NOT NULL,                  -- the writing instance: host:pid
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL            -- past this, the write is presumed dead
);

CREATE INDEX intents_by_location ON intents (store, location);

CREATE TABLE cleanup (
    id @ID_PRIMARY_KEY@,
    store TEXT NOT NULL REFERENCES stores (name),
    location TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ms BIGINT NOT NULL,
    last_error TEXT
);

CREATE INDEX cleanup_by_next_try ON cleanup (next_try_ms);
CREATE INDEX cleanup_by_location ON cleanup (store, location);

-- The reaper and the cleanup job ask whether a live copy is at a location.
CREATE INDEX copies_by_location ON copies (store, location);
