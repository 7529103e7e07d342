-- Three more indexes kept in batches (like 0009 and 0010), with one insertion point per
-- institution, principal or account rather than a random one: a settlement by institution and
-- day, an audit record by principal, a journal entry of a fund's, a due's or an institution's
-- account (this one replaced by totals, see below). As ordinary indexes each swipe batch dirtied a leaf page of each of them for every
-- pharmacy in the batch (with splits, 40–70 pages of each per commit: together ≈ 40 % of the
-- pages a batch logs in the WAL). The swipe writer now copies their rows into clustered index
-- tables every few thousand rows (store::derived::merge: sorted, each leaf written once per
-- merge), and the views below add the rows committed since (the tails, by rowid: settlements,
-- audit records and journal transactions are never deleted), so reads through them are exact
-- at every moment.

-- A settlement by institution and business day (reconciliation).
DROP INDEX ix_settlement_inst_day;
CREATE TABLE settlement_inst_ix (
    institution   TEXT NOT NULL,
    business_date TEXT NOT NULL,
    setl_id       TEXT NOT NULL,
    PRIMARY KEY (institution, business_date, setl_id)
) WITHOUT ROWID;
INSERT INTO settlement_inst_ix (institution, business_date, setl_id)
    SELECT institution, business_date, setl_id FROM settlement;
INSERT INTO derived_index (name, upto)
    VALUES ('settlement_inst', (SELECT COALESCE(MAX(rowid), 0) FROM settlement));
CREATE VIEW settlement_by_institution AS
    SELECT institution, business_date, setl_id FROM settlement_inst_ix
    UNION ALL
    -- NOT INDEXED: the tail is found by rowid alone (the planner would otherwise search the
    -- institution's settlements by uq_settlement_request, all of them).
    SELECT institution, business_date, setl_id FROM settlement NOT INDEXED
    WHERE rowid > (SELECT upto FROM derived_index WHERE name = 'settlement_inst');

-- An audit record by principal (ListAudit of one principal).
DROP INDEX ix_audit_principal;
CREATE TABLE audit_principal_ix (
    principal TEXT NOT NULL,
    audit_id  TEXT NOT NULL,
    PRIMARY KEY (principal, audit_id)
) WITHOUT ROWID;
INSERT INTO audit_principal_ix (principal, audit_id) SELECT principal, audit_id FROM audit_log;
INSERT INTO derived_index (name, upto)
    VALUES ('audit_principal', (SELECT COALESCE(MAX(rowid), 0) FROM audit_log));
CREATE VIEW audit_by_principal AS
    SELECT principal, audit_id FROM audit_principal_ix
    UNION ALL
    -- NOT INDEXED: the tail is found by rowid alone (to keep the order of a read newest first
    -- the planner would otherwise walk the whole log by audit_id).
    SELECT principal, audit_id FROM audit_log NOT INDEXED
    WHERE rowid > (SELECT upto FROM derived_index WHERE name = 'audit_principal');

-- The other accounts (funds, dues, advances, institutions: the partial index of 0010) are
-- read only as sums — an account's balance and number of entries, the balances of accounts with
-- a prefix — so they keep no index of their entries at all: each merge adds the tail's entries,
-- summed by account, into account_total (a few rows per account, however many entries). The view
-- account_sums gives every account's parts to be summed: the totals, the personal accounts'
-- merged entries, and both tails' entries.
DROP INDEX ix_journal_entry_account;
CREATE TABLE account_total (
    account    TEXT NOT NULL PRIMARY KEY,
    amount_fen INTEGER NOT NULL,
    entries    INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO account_total (account, amount_fen, entries)
    SELECT account, SUM(amount_fen), COUNT(*) FROM journal_entry
    WHERE account NOT LIKE 'pacct:%' GROUP BY account;
INSERT INTO derived_index (name, upto)
    VALUES ('account_total', (SELECT COALESCE(MAX(rowid), 0) FROM journal_tx));
DROP VIEW entry_by_account;
CREATE VIEW account_sums AS
    SELECT account, amount_fen, entries FROM account_total
    UNION ALL
    SELECT account, amount_fen, 1 FROM entry_pacct_ix
    UNION ALL
    SELECT e.account, e.amount_fen, 1
    -- CROSS JOIN: SQLite's hint to drive from the tail's transactions (by rowid), never from a
    -- scan of every entry.
    FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id
    WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'account_total')
      AND e.account NOT LIKE 'pacct:%'
    UNION ALL
    SELECT e.account, e.amount_fen, 1
    FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id
    WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'entry_pacct')
      AND e.account LIKE 'pacct:%';
