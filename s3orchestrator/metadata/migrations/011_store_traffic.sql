-- Monthly traffic per store (issue 15, usage caps): bytes the daemon read from the store
-- (egress) and wrote to it (ingress), and its requests by billing class (A: writes and
-- lists, B: reads and HEADs, other: deletes and aborts), per billing period. Every
-- instance sharing the database adds what it counted (UPDATE ... x = x + ?) every few
-- seconds and reads the totals back for its cap decisions. period_start is the period's
-- first day, 'YYYY-MM-DD' (UTC). Rows of past periods are kept: one per store per month.

CREATE TABLE store_traffic (
    store TEXT NOT NULL,
    period_start TEXT NOT NULL,
    egress_bytes BIGINT NOT NULL DEFAULT 0,
    ingress_bytes BIGINT NOT NULL DEFAULT 0,
    requests_a BIGINT NOT NULL DEFAULT 0,
    requests_b BIGINT NOT NULL DEFAULT 0,
    requests_other BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (store, period_start)
);
