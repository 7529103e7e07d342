-- Clearing, second part (SQLite): dispute resolution, confirmation deadline, frozen statement
-- figures, netting, prepayments and transfers.

-- What happens to statements still pending after the deadline: 1 auto-confirm, 2 flag.
ALTER TABLE clearing_period ADD COLUMN deadline_action BIGINT NOT NULL DEFAULT 1;
ALTER TABLE clearing_period ADD COLUMN netted_at TEXT;
ALTER TABLE clearing_period ADD COLUMN settled_at TEXT;

-- Figures frozen when the statement is confirmed (NULL while pending); netting uses these and
-- verify checks them against the lines.
ALTER TABLE statement ADD COLUMN auto_confirmed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE statement ADD COLUMN overdue BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE statement ADD COLUMN f_line_count BIGINT;
ALTER TABLE statement ADD COLUMN f_medfee_fen BIGINT;
ALTER TABLE statement ADD COLUMN f_fund_fen BIGINT;
ALTER TABLE statement ADD COLUMN f_acct_fen BIGINT;
ALTER TABLE statement ADD COLUMN f_disputed_count BIGINT;
ALTER TABLE statement ADD COLUMN f_disputed_due_fen BIGINT;
ALTER TABLE statement ADD COLUMN f_due_fen BIGINT;

-- dispute_state: 0 none, 1 disputed, 2 accepted (joins the next closed period), 3 rejected
-- (the institution must reverse it). `disputed` stays true for 1..3: the line is out of this
-- statement's figures. `follows`: a reversal or refund that follows the dispute of the line it
-- reverses. `carried_from`: the statement an accepted line came from; `carried_into`: the
-- statement it went to.
-- The table is rebuilt clustered by its key (WITHOUT ROWID: a statement's lines are stored
-- together, so confirming or reading a statement reads them in one range) and without the
-- foreign key to statement: a month close inserts millions of
-- lines, all written by the close itself under ids it has just created, and a per-row key check
-- was a third of the close's time. `medsettle verify` checks every line has its statement.
CREATE TABLE statement_line_v2 (
    statement_id    TEXT NOT NULL,
    setl_id         TEXT NOT NULL,
    reverses        TEXT,
    medfee_fen      BIGINT NOT NULL,
    fund_fen        BIGINT NOT NULL,
    acct_fen        BIGINT NOT NULL,
    disputed        BOOLEAN NOT NULL,
    dispute_reason  TEXT,
    dispute_state   BIGINT NOT NULL DEFAULT 0,
    follows         TEXT,
    carried_from    TEXT,
    carried_into    TEXT,
    resolved_at     TEXT,
    resolution_note TEXT,
    PRIMARY KEY (statement_id, setl_id)
) WITHOUT ROWID;
INSERT INTO statement_line_v2 (statement_id, setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed,
    dispute_reason, dispute_state)
SELECT statement_id, setl_id, reverses, medfee_fen, fund_fen, acct_fen, disputed, dispute_reason,
    CASE WHEN disputed THEN 1 ELSE 0 END
FROM statement_line;
DROP TABLE statement_line;
ALTER TABLE statement_line_v2 RENAME TO statement_line;
-- Closing a month groups its settlements by (home, treatment, clearing type): with care_type
-- in the period index that grouping reads the index alone.
DROP INDEX ix_settlement_period;
CREATE INDEX ix_settlement_period ON settlement (clearing_period, home_region, treatment_region, care_type);
-- Partial indexes: a month close inserts millions of lines, and only the few disputed ones need
-- finding (reversals following a dispute; accepted lines waiting to be carried).
CREATE INDEX ix_statement_line_disputed ON statement_line (setl_id) WHERE dispute_state IN (1, 3);
CREATE INDEX ix_statement_line_to_carry ON statement_line (statement_id)
    WHERE dispute_state = 2 AND carried_into IS NULL;
-- Reversal and refund lines by the settlement they reverse (a dispute takes them along).
CREATE INDEX ix_statement_line_reverses ON statement_line (reverses) WHERE reverses IS NOT NULL;

-- One row per bureau taking part in a period's netting. Amounts in fen.
CREATE TABLE net_position (
    period            TEXT NOT NULL REFERENCES clearing_period (period),
    region            TEXT NOT NULL,
    -- What it owes as home bureau (confirmed statements).
    payable_fen       BIGINT NOT NULL,
    -- What it is owed as treatment bureau.
    receivable_fen    BIGINT NOT NULL,
    -- receivable − payable; the positions of a period sum to 0.
    net_fen           BIGINT NOT NULL,
    prepay_before_fen BIGINT NOT NULL,
    prepay_drawn_fen  BIGINT NOT NULL,
    warning_line_fen  BIGINT NOT NULL,
    PRIMARY KEY (period, region)
);

-- Instructions that settle the positions (at most bureaus − 1 per period). Of `amount_fen`,
-- `prepay_fen` is drawn from the payer's prepayment (booked at netting) and `bank_fen` is the
-- bank transfer the payer makes and records.
CREATE TABLE transfer_instruction (
    instruction_id TEXT PRIMARY KEY,
    period         TEXT NOT NULL REFERENCES clearing_period (period),
    seq            BIGINT NOT NULL,
    payer          TEXT NOT NULL,
    receiver       TEXT NOT NULL,
    amount_fen     BIGINT NOT NULL,
    prepay_fen     BIGINT NOT NULL,
    bank_fen       BIGINT NOT NULL,
    recorded_at    TEXT,
    bank_reference TEXT,
    value_date     TEXT,
    journal_id     TEXT,
    CONSTRAINT uq_instruction_seq UNIQUE (period, seq)
);

-- Prepayment (预付金) held for a home bureau: a maintained, locked balance (it bounds draw-downs)
-- equal to the journal account prepay:{region}; verify checks both.
CREATE TABLE prepayment_account (
    region      TEXT PRIMARY KEY,
    balance_fen BIGINT NOT NULL CHECK (balance_fen >= 0)
);

-- Prepayment deposits.
CREATE TABLE prepayment_deposit (
    deposit_id     TEXT PRIMARY KEY,
    region         TEXT NOT NULL,
    amount_fen     BIGINT NOT NULL,
    bank_reference TEXT NOT NULL,
    value_date     TEXT NOT NULL,
    journal_id     TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX ix_prepayment_region ON prepayment_deposit (region, deposit_id);
