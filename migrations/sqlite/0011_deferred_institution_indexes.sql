-- Three more indexes kept in batches (like 0009 and 0010), with one insertion point per
-- institution, principal or account rather than a random one: a settlement by institution and
-- day, an audit record by principal, a journal entry of a fund's, a due's or an institution's
-- account. As ordinary indexes each swipe batch dirtied a leaf page of each of them for every
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

-- The other accounts' journal entries (funds, dues, advances, institutions: the partial index
-- of 0010), with their amounts, as the personal accounts' already are.
DROP INDEX ix_journal_entry_account;
CREATE TABLE entry_acct_ix (
    account    TEXT NOT NULL,
    journal_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    PRIMARY KEY (account, journal_id, seq)
) WITHOUT ROWID;
INSERT INTO entry_acct_ix (account, journal_id, seq, amount_fen)
    SELECT account, journal_id, seq, amount_fen FROM journal_entry
    WHERE account NOT LIKE 'pacct:%';
INSERT INTO derived_index (name, upto)
    VALUES ('entry_acct', (SELECT COALESCE(MAX(rowid), 0) FROM journal_tx));
DROP VIEW entry_by_account;
CREATE VIEW entry_by_account AS
    SELECT account, journal_id, seq, amount_fen FROM entry_acct_ix
    UNION ALL
    SELECT account, journal_id, seq, amount_fen FROM entry_pacct_ix
    UNION ALL
    SELECT e.account, e.journal_id, e.seq, e.amount_fen
    -- CROSS JOIN: SQLite's hint to drive from the tail's transactions (by rowid), never from a
    -- scan of every entry.
    FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id
    WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'entry_acct')
      AND e.account NOT LIKE 'pacct:%'
    UNION ALL
    SELECT e.account, e.journal_id, e.seq, e.amount_fen
    FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id
    WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'entry_pacct')
      AND e.account LIKE 'pacct:%';
