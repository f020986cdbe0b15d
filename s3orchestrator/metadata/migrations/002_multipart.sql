-- Multipart uploads in progress and their parts; part sizes of completed multipart objects.
--
-- A part's bytes count as reserved on its store (see store._read_usage) from the
-- moment the part is stored until its upload is completed (then the kept parts
-- become the object's usage), aborted or expired; a part uploaded again under the
-- same number replaces the row, and so its bytes.

-- JSON array of the part sizes of an object made by CompleteMultipartUpload
-- (GET/HEAD ?partNumber=N); NULL for every other object.
ALTER TABLE objects ADD COLUMN part_sizes TEXT;

CREATE TABLE uploads (
    upload_id TEXT NOT NULL PRIMARY KEY,  -- ours (what clients see), ordered by initiation
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    store TEXT NOT NULL REFERENCES stores (name),
    location TEXT NOT NULL,
    store_upload_id TEXT NOT NULL,        -- the store's (an upstream UploadId)
    content_type TEXT NOT NULL,
    headers TEXT NOT NULL,                -- JSON, as objects.headers
    user_metadata TEXT NOT NULL,          -- JSON, as objects.user_metadata
    checksum_algorithm TEXT,              -- x-amz-checksum-algorithm given at creation, upper-case
    initiated_ms BIGINT NOT NULL
);

CREATE INDEX uploads_by_key ON uploads (bucket, key, upload_id);
CREATE INDEX uploads_by_age ON uploads (initiated_ms);

CREATE TABLE parts (
    upload_id TEXT NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    part_number INTEGER NOT NULL,
    store TEXT NOT NULL REFERENCES stores (name),
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,                   -- hex MD5 of the part's bytes
    store_etag TEXT NOT NULL,             -- the store's tag for it (an upstream part ETag)
    checksums TEXT NOT NULL,              -- JSON: algorithm -> base64 value the client sent
    last_modified_ms BIGINT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);

CREATE INDEX parts_by_store ON parts (store, size);
