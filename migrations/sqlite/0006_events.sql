-- The event stream bureaus follow (EventService.FollowEvents), SQLite. Writers are serialized
-- (BEGIN IMMEDIATE), so `seq` (the rowid, assigned on insert) grows in commit order: a reader
-- that has seen seq N will never see a smaller one appear later.
CREATE TABLE event (
    seq              INTEGER PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
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
