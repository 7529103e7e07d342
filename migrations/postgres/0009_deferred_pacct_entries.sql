-- The view SQLite serves from a partial index, a batch-maintained table of personal-account
-- entries and their tail (see the SQLite migration 0010); on PostgreSQL the table itself,
-- with its ordinary index: the same queries run on both engines.
CREATE VIEW entry_by_account AS SELECT account, journal_id, seq, amount_fen FROM journal_entry;
