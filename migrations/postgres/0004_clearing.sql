-- Clearing periods and statements (PostgreSQL). Statement ids are deterministic, so closing the
-- same period on the same data always gives the same statements.

CREATE TABLE clearing_period (
    period           TEXT PRIMARY KEY,
    status           BIGINT NOT NULL,
    closed_at        TIMESTAMPTZ NOT NULL,
    confirm_deadline DATE NOT NULL
);

CREATE TABLE statement (
    statement_id     TEXT PRIMARY KEY,
    period           TEXT NOT NULL REFERENCES clearing_period (period),
    home_region      TEXT NOT NULL,
    treatment_region TEXT NOT NULL,
    clearing_type    BIGINT NOT NULL,
    status           BIGINT NOT NULL,
    confirmed_at     TIMESTAMPTZ,
    CONSTRAINT uq_statement_parties UNIQUE (period, home_region, treatment_region, clearing_type)
);
CREATE INDEX ix_statement_home ON statement (home_region, period);
CREATE INDEX ix_statement_treatment ON statement (treatment_region, period);

CREATE TABLE statement_line (
    statement_id   TEXT NOT NULL REFERENCES statement (statement_id),
    setl_id        TEXT NOT NULL,
    reverses       TEXT,
    medfee_fen     BIGINT NOT NULL,
    fund_fen       BIGINT NOT NULL,
    acct_fen       BIGINT NOT NULL,
    disputed       BOOLEAN NOT NULL,
    dispute_reason TEXT,
    PRIMARY KEY (statement_id, setl_id)
);
