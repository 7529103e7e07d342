-- A pharmacy swipe has no visit, yet its settlement's NULL mdtrt_id went into
-- ix_settlement_visit all the same: one more leaf page written by every swipe batch (at 5,000
-- swipes/s ≈ 1.1 of the ≈ 49 pages a batch logs in the WAL). Settlements are looked up by visit
-- only as `mdtrt_id = ?`, which implies `mdtrt_id IS NOT NULL`, so SQLite uses the partial index
-- for it.
DROP INDEX ix_settlement_visit;
CREATE INDEX ix_settlement_visit ON settlement (mdtrt_id) WHERE mdtrt_id IS NOT NULL;
