-- The replication queue: objects that have (or may have) fewer live copies than their
-- bucket's placement asks for. A write answered at its quorum, a copy that failed, or a
-- multipart upload completed on one store adds its object here; the replicator copies
-- from a live copy to another store and removes the row once the object has enough
-- copies. since_ms dates the oldest missing copy (the replication lag).

CREATE TABLE replication (
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    since_ms BIGINT NOT NULL,
    PRIMARY KEY (bucket, key)
);
