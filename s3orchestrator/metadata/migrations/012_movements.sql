-- Moving copies between stores (issue 15: store modes, drain, rebalance).
--
-- movements: the persistent queue of wanted moves, one row per copy to move: the copy of
-- bucket/key on from_store goes to to_store (NULL: a store the routing strategy picks).
-- reason: 'drain' (from_store is in mode drain) or 'rebalance'. size: the copy's bytes
-- when queued (for progress). A failed move is retried at next_ms (attempts, last_error).
-- claimed_by / claimed_ms: the instance moving it now; a claim lasts while that
-- instance lives (see the instances table), so at most one mover works on an object
-- and a crashed mover's moves are taken up again once its lease is over.
--
-- movement_totals: what has been moved, per reason and source store, since started_ms
-- (the first time a move of that reason was queued for the store): progress and rate.
--
-- movement_state: one row per name; 'mover' holds whether moving is paused
-- (s3orchestrator movement pause|resume), which survives restarts.

CREATE TABLE movements (
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    from_store TEXT NOT NULL,
    to_store TEXT,
    reason TEXT NOT NULL CHECK (reason IN ('drain', 'rebalance')),
    size BIGINT NOT NULL,
    queued_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    claimed_by TEXT,
    claimed_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, key, from_store)
);

CREATE INDEX movements_by_next ON movements (next_ms);
CREATE INDEX movements_by_store ON movements (from_store, reason);

CREATE TABLE movement_totals (
    reason TEXT NOT NULL,
    store TEXT NOT NULL,
    moved_objects BIGINT NOT NULL DEFAULT 0,
    moved_bytes BIGINT NOT NULL DEFAULT 0,
    started_ms BIGINT NOT NULL,
    PRIMARY KEY (reason, store)
);

CREATE TABLE movement_state (
    name TEXT NOT NULL PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    changed_ms BIGINT NOT NULL
);
