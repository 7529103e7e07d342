-- Foundation schema (PostgreSQL). Money is BIGINT fen; unit prices BIGINT micro-yuan;
-- ratios BIGINT basis points (1/10000). Keys are explicit (no SERIAL), so the schema also suits
-- PostgreSQL-wire distributed engines.

CREATE TABLE region (
    code          TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    province_code TEXT NOT NULL,
    bureau_name   TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE institution (
    code                 TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    region               TEXT NOT NULL REFERENCES region (code),
    kind                 BIGINT NOT NULL,
    level                BIGINT NOT NULL,
    cross_region_enabled BOOLEAN NOT NULL,
    status               BIGINT NOT NULL,
    valid_from           DATE NOT NULL,
    valid_until          DATE
);
CREATE INDEX ix_institution_region ON institution (region, kind, code);

CREATE TABLE person (
    psn_no               TEXT PRIMARY KEY,
    home_region          TEXT NOT NULL REFERENCES region (code),
    national_id          TEXT NOT NULL,
    name                 TEXT NOT NULL,
    birth_date           DATE NOT NULL,
    status               BIGINT NOT NULL,
    card_no              TEXT,
    card_status          BIGINT NOT NULL,
    evoucher_token       TEXT,
    assistance_recipient BOOLEAN NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    CONSTRAINT uq_person_national_id UNIQUE (national_id),
    CONSTRAINT uq_person_card_no UNIQUE (card_no),
    CONSTRAINT uq_person_evoucher UNIQUE (evoucher_token)
);
CREATE INDEX ix_person_home ON person (home_region, psn_no);

CREATE TABLE person_insurance (
    psn_no         TEXT NOT NULL REFERENCES person (psn_no),
    insurance_type BIGINT NOT NULL,
    category       BIGINT NOT NULL,
    status         BIGINT NOT NULL,
    PRIMARY KEY (psn_no, insurance_type)
);

-- Maintained balance of a personal account: bounded at write time (never below zero).
-- The journal is the truth; `medsettle verify` proves this row equals it.
CREATE TABLE personal_account (
    psn_no      TEXT PRIMARY KEY REFERENCES person (psn_no),
    balance_fen BIGINT NOT NULL CHECK (balance_fen >= 0)
);

CREATE TABLE catalogue_version (
    region  TEXT PRIMARY KEY REFERENCES region (code),
    version BIGINT NOT NULL
);

CREATE TABLE catalogue_item (
    region         TEXT NOT NULL REFERENCES region (code),
    code           TEXT NOT NULL,
    effective_from DATE NOT NULL,
    name           TEXT NOT NULL,
    kind           BIGINT NOT NULL,
    class          BIGINT NOT NULL,
    b_ratio_bp     BIGINT,
    cap_micros     BIGINT,
    version        BIGINT NOT NULL,
    PRIMARY KEY (region, code, effective_from)
);

CREATE TABLE policy_version (
    region         TEXT NOT NULL REFERENCES region (code),
    version        BIGINT NOT NULL,
    effective_from DATE NOT NULL,
    body           TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (region, version),
    CONSTRAINT uq_policy_effective UNIQUE (region, effective_from)
);

CREATE TABLE filing (
    filing_id             TEXT PRIMARY KEY,
    psn_no                TEXT NOT NULL REFERENCES person (psn_no),
    home_region           TEXT NOT NULL,
    filing_type           BIGINT NOT NULL,
    destination           TEXT NOT NULL,
    valid_from            DATE NOT NULL,
    valid_until           DATE,
    referring_institution TEXT,
    status                BIGINT NOT NULL,
    revoked_on            DATE,
    revoke_reason         TEXT,
    created_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX ix_filing_person ON filing (psn_no, valid_from);

-- Double-entry journal: immutable rows; corrections are new transactions.
CREATE TABLE journal_tx (
    journal_id    TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    reference     TEXT NOT NULL,
    memo          TEXT NOT NULL,
    business_date DATE NOT NULL,
    booked_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE journal_entry (
    journal_id TEXT NOT NULL REFERENCES journal_tx (journal_id),
    seq        BIGINT NOT NULL,
    account    TEXT NOT NULL,
    amount_fen BIGINT NOT NULL,
    PRIMARY KEY (journal_id, seq)
);
CREATE INDEX ix_journal_entry_account ON journal_entry (account, journal_id);

CREATE TABLE api_token (
    token_hash BYTEA PRIMARY KEY,
    token_id   TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    scope      TEXT NOT NULL,
    label      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

-- Idempotency: the first answer to (caller, request id), replayed on retries.
CREATE TABLE idempotency (
    principal    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    rpc          TEXT NOT NULL,
    payload_hash BYTEA NOT NULL,
    response     BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (principal, request_id)
);

CREATE TABLE audit_log (
    audit_id   TEXT PRIMARY KEY,
    principal  TEXT NOT NULL,
    rpc        TEXT NOT NULL,
    request_id TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX ix_audit_principal ON audit_log (principal, audit_id);
