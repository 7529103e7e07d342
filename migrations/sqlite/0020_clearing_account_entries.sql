-- The entries of the accounts no swipe writes, by account: a bureau's cash (bank:), its
-- prepayment (prepay:) and its netting position (net:) get legs only from enrolments, deposits
-- and clearing. SQLite keeps no index of entries by account (a swipe writes four or more legs:
-- see 0011), so ListJournal of such an account scanned the whole journal for its few
-- transactions. One partial index per prefix: a swipe's entries fall outside every one of them
-- (two comparisons each), and store::journal::list_txs repeats the prefix's range literally, as
-- SQLite uses a partial index only for a query whose own terms imply its WHERE.
-- IF NOT EXISTS: the upgrade tests run the migrations from 0013 on again.
CREATE INDEX IF NOT EXISTS ix_entry_bank ON journal_entry (account, journal_id)
    WHERE account >= 'bank:' AND account < 'bank;';
CREATE INDEX IF NOT EXISTS ix_entry_prepay ON journal_entry (account, journal_id)
    WHERE account >= 'prepay:' AND account < 'prepay;';
CREATE INDEX IF NOT EXISTS ix_entry_net ON journal_entry (account, journal_id)
    WHERE account >= 'net:' AND account < 'net;';
