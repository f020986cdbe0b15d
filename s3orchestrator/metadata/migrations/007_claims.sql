-- Claims of store locations (issue 14: per-key serialization in the database).
--
-- A location is claimed before bytes move to it (a write, claimed in the transaction
-- that reserves its room) or are deleted from it (the cleanup job, the reaper, the
-- removal of replaced copies), and until those bytes are settled: committed and
-- published, undone, or deleted. At most one live claim per (store, location): a writer
-- that finds the location claimed waits, a deleter leaves it for later. A claim whose
-- owner is presumed dead (a previous run of this host, or past expires_ms, as for
-- intents) is taken over by the next one to claim the location.

CREATE TABLE claims (
    store TEXT NOT NULL REFERENCES stores (name),
    location TEXT NOT NULL,
    holder TEXT NOT NULL,                 -- who holds it: 'w<reservation id>' (a write), 'c<cleanup id>', 'd<random>'
    owner TEXT NOT NULL,                  -- the holding instance: host:pid
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,           -- past this, the holder is presumed dead
    PRIMARY KEY (store, location)
);

CREATE INDEX claims_by_holder ON claims (holder);
