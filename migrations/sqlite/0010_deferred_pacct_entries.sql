-- Personal-account journal entries indexed in batches, like a person's settlements (0009):
-- their key (one account per person) is random, so as entries of ix_journal_entry_account each
-- swipe paid from an account dirtied one more leaf page. The other accounts (funds, dues,
-- advances, institutions) are few and their entries append: they keep an ordinary index, now
-- partial. The view entry_by_account reads the three parts: other accounts' entries (the
-- partial index: the view repeats its condition word for word, which is how SQLite knows it
-- may use it), personal-account entries merged into entry_pacct_ix, and personal-account
-- entries of the journal transactions committed since (the tail, by journal_tx rowid:
-- transactions are never deleted).
DROP INDEX ix_journal_entry_account;
CREATE INDEX ix_journal_entry_account ON journal_entry (account, journal_id)
    WHERE account NOT LIKE 'pacct:%';

CREATE TABLE entry_pacct_ix (
    account    TEXT NOT NULL,
    journal_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL,
    PRIMARY KEY (account, journal_id, seq)
) WITHOUT ROWID;

INSERT INTO entry_pacct_ix (account, journal_id, seq, amount_fen)
    SELECT account, journal_id, seq, amount_fen FROM journal_entry WHERE account LIKE 'pacct:%';
INSERT INTO derived_index (name, upto)
    VALUES ('entry_pacct', (SELECT COALESCE(MAX(rowid), 0) FROM journal_tx));

CREATE VIEW entry_by_account AS
    SELECT account, journal_id, seq, amount_fen FROM journal_entry
    WHERE account NOT LIKE 'pacct:%'
    UNION ALL
    SELECT account, journal_id, seq, amount_fen FROM entry_pacct_ix
    UNION ALL
    SELECT e.account, e.journal_id, e.seq, e.amount_fen
    -- CROSS JOIN: SQLite's hint to drive from the tail's transactions (by rowid), never from a
    -- scan of every entry.
    FROM journal_tx t CROSS JOIN journal_entry e ON e.journal_id = t.journal_id
    WHERE t.rowid > (SELECT upto FROM derived_index WHERE name = 'entry_pacct')
      AND e.account LIKE 'pacct:%';
