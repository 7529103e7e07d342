-- Clearing, second part (PostgreSQL): dispute resolution, confirmation deadline, frozen statement
-- figures, netting, prepayments and transfers.

-- What happens to statements still pending after the deadline: 1 auto-confirm, 2 flag.
ALTER TABLE clearing_period ADD COLUMN deadline_action BIGINT NOT NULL DEFAULT 1;
ALTER TABLE clearing_period ADD COLUMN netted_at TIMESTAMPTZ;
ALTER TABLE clearing_period ADD COLUMN settled_at TIMESTAMPTZ;

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
ALTER TABLE statement_line ADD COLUMN dispute_state BIGINT NOT NULL DEFAULT 0;
ALTER TABLE statement_line ADD COLUMN follows TEXT;
ALTER TABLE statement_line ADD COLUMN carried_from TEXT;
ALTER TABLE statement_line ADD COLUMN carried_into TEXT;
ALTER TABLE statement_line ADD COLUMN resolved_at TIMESTAMPTZ;
ALTER TABLE statement_line ADD COLUMN resolution_note TEXT;
UPDATE statement_line SET dispute_state = 1 WHERE disputed;
-- No foreign key to statement: a month close inserts millions of lines, all written by the close
-- itself under ids it has just created, and the per-row key check was a third of the close's
-- time. `medsettle verify` checks every line has its statement.
ALTER TABLE statement_line DROP CONSTRAINT statement_line_statement_id_fkey;
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
    recorded_at    TIMESTAMPTZ,
    bank_reference TEXT,
    value_date     DATE,
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
    value_date     DATE NOT NULL,
    journal_id     TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX ix_prepayment_region ON prepayment_deposit (region, deposit_id);
