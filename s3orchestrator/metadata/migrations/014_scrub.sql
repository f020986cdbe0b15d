-- The scrubber's passes over the live copies (issue 15): one row per kind of pass,
-- 'stat' (every live copy: a stat or HEAD, size and ETag against the record) and
-- 'checksum' (the live copies on directory stores: every byte read, the MD5 checked).
--
-- A pass walks the copies in primary key order (bucket, key, store) from where it left
-- off: the position of the last copy done is saved as it goes, so a pass resumes after
-- a restart, or on the instance that takes the scrub job's lease over, and a pass costs
-- no write per copy (millions of copies: one UPDATE per batch). started_ms: when the
-- current pass began (or the last one, when none runs); finished_ms: when the last pass
-- finished (NULL: none has yet). A pass runs while finished_ms is NULL or older than
-- started_ms. checked and found: copies checked and found missing or damaged in it.
-- requested_ms: an operator asked for a pass to begin at once (s3orchestrator scrub --now);
-- the next pass of that kind clears it.

CREATE TABLE scrub_passes (
    kind TEXT NOT NULL PRIMARY KEY CHECK (kind IN ('stat', 'checksum')),
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    bucket TEXT @KEY_COLLATE@,            -- the last copy done in the running pass; NULL: none yet
    key TEXT @KEY_COLLATE@,
    store TEXT,
    checked BIGINT NOT NULL DEFAULT 0,
    found BIGINT NOT NULL DEFAULT 0,
    requested_ms BIGINT
);

-- Stores the scrubber stopped letting copies go from (too many findings in one pass: a
-- store that answers but is empty or wrong, such as a disk not mounted or a bucket
-- emptied, would otherwise have every copy on it let go). Kept across restarts and
-- lease moves until an operator lifts it (s3orchestrator scrub --now). found and
-- checked: the copies of the store the passes under way had found wrong and checked
-- then; kind: the pass that found the last; since_ms: when.
CREATE TABLE scrub_suspended (
    store TEXT NOT NULL PRIMARY KEY,
    since_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    found BIGINT NOT NULL,
    checked BIGINT NOT NULL
);
