-- Imports of objects a store already holds (issue 15, `s3orchestrator import`).
--
-- imports: one row per (store, virtual bucket, prefix): its state and checkpoint. The
-- upstream is listed in key order; after_key is the last upstream key whose outcome is
-- committed (in the same transaction as the objects it imported), so a run that stops
-- resumes after it. owner/taken_ms/expires_ms: the instance running it (one at a time; a
-- dead owner's import is taken over, as claims are). The counters sum over the run:
-- imported (objects, bytes), present (imported before at the same location), kept (the
-- bucket already had the key: the daemon's object wins), skipped (the daemon's own areas,
-- keys it cannot hold, locations another object uses, objects gone before their HEAD).
--
-- import_areas: the first segment of the store's name of every imported object (S3: the
-- upstream key up to its first '/'; directory: the top-level directory or file). A bucket
-- whose own locations would start there may not be configured (checked at start and at
-- reload), so the daemon never writes over imported bytes.

CREATE TABLE imports (
    store TEXT NOT NULL,
    bucket TEXT NOT NULL,
    prefix TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    owner TEXT NOT NULL,
    after_key TEXT NOT NULL,
    imported_objects BIGINT NOT NULL DEFAULT 0,
    imported_bytes BIGINT NOT NULL DEFAULT 0,
    present BIGINT NOT NULL DEFAULT 0,
    kept BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    started_ms BIGINT NOT NULL,
    taken_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    last_error TEXT,
    PRIMARY KEY (store, bucket, prefix)
);

CREATE TABLE import_areas (
    store TEXT NOT NULL,
    area TEXT NOT NULL,
    bucket TEXT NOT NULL,
    PRIMARY KEY (store, area, bucket)
);
