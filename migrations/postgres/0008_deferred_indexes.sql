-- The view SQLite serves from a batch-maintained index table plus a tail (see the SQLite
-- migration 0009). PostgreSQL logs index changes as small records, not whole pages, so its
-- ordinary index (ix_settlement_person) stays and the view is the table itself: the same
-- query runs on both engines.
CREATE VIEW settlement_by_person AS SELECT psn_no, setl_id FROM settlement;
