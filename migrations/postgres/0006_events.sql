-- The event stream bureaus follow (EventService.FollowEvents), PostgreSQL. Transactions commit
-- concurrently, so events are ordered by the id of the transaction that wrote them (txid) and
-- a reader only returns events of transactions older than every transaction still running
-- (pg_snapshot_xmin of its snapshot): nothing with a smaller (txid, event_id) can appear after
-- it has been read, so a cursor never skips an event.
CREATE TABLE event (
    txid             BIGINT NOT NULL DEFAULT (CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT)),
    event_id         TEXT NOT NULL,
    kind             BIGINT NOT NULL,
    occurred_at      TIMESTAMPTZ NOT NULL,
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
    detail           TEXT NOT NULL,
    PRIMARY KEY (txid, event_id)
);
