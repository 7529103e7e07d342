-- Events keep their id without an index of it. The stream is read by `seq` (the rowid) alone on
-- SQLite; `event_id` is unique by construction — a settlement's event is 'S' || setl_id, any
-- other's a fresh id (store::events) — and never looked up, yet its UNIQUE index was a second
-- B-tree every swipe batch wrote a leaf of (≈ 4 % of the pages a commit logs at 5,000 swipes/s).
-- PostgreSQL keeps its own (its cursor is (txid, event_id)).
--
-- SQLite cannot drop a UNIQUE constraint, so the table is rebuilt, `seq` kept. Running this
-- again rebuilds the same table (the upgrade tests run the migrations from 0013 on again).
CREATE TABLE event_rebuilt (
    seq              INTEGER PRIMARY KEY,
    event_id         TEXT NOT NULL,
    kind             BIGINT NOT NULL,
    occurred_at      TEXT NOT NULL,
    -- '' for events about a whole period (every bureau sees them).
    home_region      TEXT NOT NULL,
    treatment_region TEXT NOT NULL,
    reference        TEXT NOT NULL,
    period           TEXT NOT NULL,
    amount_fen       BIGINT NOT NULL,
    institution      TEXT NOT NULL,
    reverses         TEXT NOT NULL,
    medfee_fen       BIGINT NOT NULL,
    fund_fen         BIGINT NOT NULL,
    acct_fen         BIGINT NOT NULL,
    detail           TEXT NOT NULL
);
INSERT INTO event_rebuilt (seq, event_id, kind, occurred_at, home_region, treatment_region,
    reference, period, amount_fen, institution, reverses, medfee_fen, fund_fen, acct_fen, detail)
SELECT seq, event_id, kind, occurred_at, home_region, treatment_region,
    reference, period, amount_fen, institution, reverses, medfee_fen, fund_fen, acct_fen, detail
FROM event ORDER BY seq;
DROP TABLE event;
ALTER TABLE event_rebuilt RENAME TO event;
