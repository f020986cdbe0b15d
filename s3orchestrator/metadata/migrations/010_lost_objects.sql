-- Objects with no live copy left (issue 13): every copy a read or the replicator relied
-- on was found missing or damaged. Such an object stays listed (its loss is not hidden
-- as a 404) and its GET/HEAD answer 500; the replicator has nothing to copy from, so it
-- is kept out of the replication queue and recorded here instead, for operators
-- (admin status, the manhole's lost_objects(), s3orchestrator_objects_lost). A commit
-- under the key (overwrite), its deletion, or a copy of it made live again removes the row.

CREATE TABLE lost_objects (
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    since_ms BIGINT NOT NULL,
    PRIMARY KEY (bucket, key)
);

-- Objects already without a live copy: lost, and out of the replication queue.
INSERT INTO lost_objects (bucket, key, since_ms)
    SELECT o.bucket, o.key, o.last_modified_ms FROM objects o
    WHERE NOT EXISTS (SELECT 1 FROM copies c WHERE c.bucket = o.bucket AND c.key = o.key AND c.state = 'live');

DELETE FROM replication
    WHERE EXISTS (SELECT 1 FROM lost_objects l WHERE l.bucket = replication.bucket AND l.key = replication.key);

-- The replication queue is read oldest first, and its lag is its oldest entry.
CREATE INDEX replication_by_since ON replication (since_ms, bucket, key);
