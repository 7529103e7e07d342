-- The fundings of personal accounts by person: opening balances and deposits (their reference is
-- the psn_no), a handful per person and none per swipe. ListJournal of a personal account reads
-- them and the person's settlements (settlement_by_person) instead of scanning the journal for
-- the account's entries (SQLite keeps no index of entries by account: see store::journal::
-- list_txs). The kinds are store::journal's OPENING_BALANCE and PACCT_DEPOSIT; `medsettle verify`
-- reports a personal-account leg of any other transaction (personal_account_legs_listed).
-- IF NOT EXISTS: the upgrade tests run the migrations from 0013 on again.
CREATE INDEX IF NOT EXISTS ix_journal_tx_pacct_funding ON journal_tx (reference)
    WHERE kind IN ('opening_balance', 'pacct_deposit');
