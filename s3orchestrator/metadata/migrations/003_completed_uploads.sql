-- Multipart uploads completed recently, so that a CompleteMultipartUpload retried after
-- it succeeded (an SDK retries when the first answer was lost) is answered again with
-- the same result, as S3 does, instead of NoSuchUpload. Written in the transaction that
-- completes the upload; rows older than [multipart] completed_retention are pruned by
-- the multipart expiry job.

CREATE TABLE completed_uploads (
    upload_id TEXT NOT NULL PRIMARY KEY,
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    store TEXT NOT NULL,
    etag TEXT NOT NULL,                   -- the object's ETag the Complete answered, unquoted
    parts TEXT NOT NULL,                  -- JSON array of [part number, part ETag] the Complete listed
    completed_ms BIGINT NOT NULL
);

CREATE INDEX completed_uploads_by_age ON completed_uploads (completed_ms);
