-- Job leases: which instance runs each cluster-wide background job (multipart expiry,
-- reaper, cleanup, replicator). An instance runs a job's rounds only while its row names
-- it and expires_ms (its own clock, milliseconds) lies ahead; it renews the row well before
-- then, and deletes it when it stops cleanly. Another instance takes a row over once it has
-- expired (its holder died). acquired_ms: when the current holder took it.

CREATE TABLE job_leases (
    job TEXT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    acquired_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
