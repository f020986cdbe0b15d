-- What is left of each reason's moves off each store, counted in movement_totals as the
-- movements queue changes (in the transactions that change it), so that the admin API's
-- /status and /movement and every /metrics scrape read one short table instead of
-- grouping the whole queue: left_objects and left_bytes (queued moves and their bytes),
-- failing (queued moves that failed at least once). Every (reason, from_store) with a
-- queued move has its row (queue_moves creates it); the counts start from the queue.
-- (WHERE 1 = 1: SQLite needs a WHERE before the ON CONFLICT of an INSERT ... SELECT.)

ALTER TABLE movement_totals ADD COLUMN left_objects BIGINT NOT NULL DEFAULT 0;
ALTER TABLE movement_totals ADD COLUMN left_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE movement_totals ADD COLUMN failing BIGINT NOT NULL DEFAULT 0;

INSERT INTO movement_totals (reason, store, moved_objects, moved_bytes, started_ms)
SELECT reason, from_store, 0, 0, MIN(queued_ms) FROM movements WHERE 1 = 1 GROUP BY reason, from_store
ON CONFLICT (reason, store) DO NOTHING;

UPDATE movement_totals SET
    left_objects = (SELECT COUNT(*) FROM movements m
                    WHERE m.reason = movement_totals.reason AND m.from_store = movement_totals.store),
    left_bytes = (SELECT COALESCE(SUM(m.size), 0) FROM movements m
                  WHERE m.reason = movement_totals.reason AND m.from_store = movement_totals.store),
    failing = (SELECT COUNT(*) FROM movements m
               WHERE m.reason = movement_totals.reason AND m.from_store = movement_totals.store AND m.attempts > 0);
