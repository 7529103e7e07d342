-- Personal accounts' journal entries kept as totals, like every other account's (0011). An
-- account's entries are only ever read as sums (its balance and number of entries), and the
-- personal accounts' were the one random-key index the swipe writer kept of them
-- (entry_pacct_ix, 0010): one row per entry, so the table grew with every swipe and each merged
-- row dirtied a leaf page of its own. Totals are one row per account: a merge adds each person's
-- entries into their row, and the table grows only with new persons.
--
-- The totals of the personal accounts are computed from the journal itself, up to what
-- account_total already holds for the other accounts (its `upto`); the tail after it is read
-- through the view, as before.
INSERT INTO account_total (account, amount_fen, entries)
    SELECT e.account, SUM(e.amount_fen), COUNT(*)
    FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id
    WHERE t.rowid <= (SELECT upto FROM derived_index WHERE name = 'account_total')
      AND e.account LIKE 'pacct:%'
    GROUP BY e.account;

DROP VIEW account_sums;
CREATE VIEW account_sums AS
    SELECT account, amount_fen, entries FROM account_total
    UNION ALL
    SELECT e.account, e.amount_fen, 1
    -- CROSS JOIN: SQLite's hint to drive from the tail's transactions (by rowid), never from a
    -- scan of every entry.
    FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id
    WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'account_total');

DROP TABLE entry_pacct_ix;
DELETE FROM derived_index WHERE name = 'entry_pacct';
