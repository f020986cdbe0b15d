-- Instances with leases, reservations owned by them, and usage in counter shards (issue 14).
--
-- instances: every running process, registered at start under its instance id and
-- renewed by a heartbeat (expires_ms: the end of its lease). An instance is dead once
-- its lease has expired, or when it has no row (deregistered at a clean stop,
-- forgotten once expired). A row's started_ms tells a process apart from an earlier
-- one that had the same instance id: what that one left (created before started_ms)
-- belongs to a dead instance too.
--
-- reservations.owner and intents.owner: the instance id of the process that made them.
-- The reaper releases the reservations of dead instances (those without an intent at
-- once; those with one once it resolved the intent's partial bytes). Reservations made
-- before this migration belong to no instance: the first reaper run releases them.
-- The owner's lease replaces the intents' own expiry (intents.expires_ms).
--
-- store_usage: a store's used bytes and object count, split into counter rows (shards)
-- that each transaction adds to one of, summed when read: commits and releases on
-- different connections rarely wait for each other, where one row per store made
-- every commit wait for the previous one. Existing usage moves to shard 0.

CREATE TABLE instances (
    id TEXT NOT NULL PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

ALTER TABLE reservations ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX reservations_by_owner ON reservations (owner);
CREATE INDEX intents_by_owner ON intents (owner);
ALTER TABLE intents DROP COLUMN expires_ms;

CREATE TABLE store_usage (
    store TEXT NOT NULL REFERENCES stores (name),
    shard INTEGER NOT NULL,
    used_bytes BIGINT NOT NULL DEFAULT 0,
    object_count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (store, shard)
);

INSERT INTO store_usage (store, shard, used_bytes, object_count)
    SELECT name, 0, used_bytes, object_count FROM stores;

ALTER TABLE stores DROP COLUMN used_bytes;
ALTER TABLE stores DROP COLUMN object_count;
