-- The views SQLite serves from batch-maintained index tables plus their tails (see the SQLite
-- migration 0011); on PostgreSQL the tables themselves, with their ordinary indexes
-- (ix_settlement_inst_day, ix_audit_principal, ix_journal_entry_account): the same queries run
-- on both engines.
CREATE VIEW settlement_by_institution AS
    SELECT institution, business_date, setl_id FROM settlement;
CREATE VIEW audit_by_principal AS SELECT principal, audit_id FROM audit_log;
-- An account's parts to be summed (SQLite: totals, merged entries and tails); here its entries.
DROP VIEW entry_by_account;
CREATE VIEW account_sums AS SELECT account, amount_fen, 1 AS entries FROM journal_entry;
