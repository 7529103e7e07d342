-- Hospital settlement (SQLite): visits, fee lines, settlements, accumulators.
-- Visits and settlements are keyed for the treatment region; accumulators for the person
-- (whose psn_no starts with the home region).

CREATE TABLE visit (
    mdtrt_id         TEXT PRIMARY KEY,
    institution      TEXT NOT NULL REFERENCES institution (code),
    treatment_region TEXT NOT NULL,
    visit_no         TEXT NOT NULL,
    psn_no           TEXT NOT NULL REFERENCES person (psn_no),
    home_region      TEXT NOT NULL,
    insurance_type   BIGINT NOT NULL,
    care_type        BIGINT NOT NULL,
    diagnoses        TEXT NOT NULL,
    begin_date       TEXT NOT NULL,
    end_date         TEXT,
    status           BIGINT NOT NULL,
    filing_id        TEXT,
    setl_id          TEXT,
    created_at       TEXT NOT NULL,
    CONSTRAINT uq_visit_number UNIQUE (institution, visit_no)
);
CREATE INDEX ix_visit_person ON visit (psn_no);

-- A fee line with its split, computed at upload from the catalogue in force on fee_date.
CREATE TABLE fee_line (
    mdtrt_id          TEXT NOT NULL REFERENCES visit (mdtrt_id),
    line_no           TEXT NOT NULL,
    code              TEXT NOT NULL,
    name              TEXT NOT NULL,
    qty_scaled        BIGINT NOT NULL,
    price_micros      BIGINT NOT NULL,
    fee_date          TEXT NOT NULL,
    refund_of         TEXT,
    class             BIGINT NOT NULL,
    cap_micros        BIGINT,
    b_ratio_bp        BIGINT,
    catalogue_version BIGINT NOT NULL,
    amount_fen        BIGINT NOT NULL,
    fulamt_fen        BIGINT NOT NULL,
    overlmt_fen       BIGINT NOT NULL,
    preself_fen       BIGINT NOT NULL,
    inscp_fen         BIGINT NOT NULL,
    setl_id           TEXT,
    PRIMARY KEY (mdtrt_id, line_no)
);

CREATE TABLE settlement (
    setl_id           TEXT PRIMARY KEY,
    kind              BIGINT NOT NULL,
    reverses          TEXT,
    reversed_by       TEXT,
    mdtrt_id          TEXT,
    psn_no            TEXT NOT NULL REFERENCES person (psn_no),
    home_region       TEXT NOT NULL,
    treatment_region  TEXT NOT NULL,
    institution       TEXT NOT NULL,
    insurance_type    BIGINT NOT NULL,
    care_type         BIGINT NOT NULL,
    settled_at        TEXT NOT NULL,
    business_date     TEXT NOT NULL,
    clearing_period   TEXT NOT NULL,
    service_year      BIGINT NOT NULL,
    medfee_fen        BIGINT NOT NULL,
    fulamt_fen        BIGINT NOT NULL,
    overlmt_fen       BIGINT NOT NULL,
    preself_fen       BIGINT NOT NULL,
    inscp_fen         BIGINT NOT NULL,
    dedc_fen          BIGINT NOT NULL,
    hifp_fen          BIGINT NOT NULL,
    hifmi_fen         BIGINT NOT NULL,
    maf_fen           BIGINT NOT NULL,
    fund_fen          BIGINT NOT NULL,
    psn_part_fen      BIGINT NOT NULL,
    acct_fen          BIGINT NOT NULL,
    cash_fen          BIGINT NOT NULL,
    balance_after_fen BIGINT,
    d_annual_ded_fen  BIGINT NOT NULL,
    d_burden_fen      BIGINT NOT NULL,
    d_admissions      BIGINT NOT NULL,
    line_count        BIGINT NOT NULL,
    explanation       TEXT NOT NULL,
    journal_id        TEXT NOT NULL,
    request_id        TEXT NOT NULL,
    CONSTRAINT uq_settlement_request UNIQUE (institution, request_id)
);
CREATE INDEX ix_settlement_visit ON settlement (mdtrt_id);
CREATE INDEX ix_settlement_person ON settlement (psn_no, setl_id);
CREATE INDEX ix_settlement_inst_day ON settlement (institution, business_date, setl_id);
CREATE INDEX ix_settlement_period ON settlement (clearing_period, home_region, treatment_region);

-- A person's year-to-date figures per insurance type: maintained and locked at write time
-- (caps and deductibles are bounds); `verify` proves them equal to their settlements.
CREATE TABLE accumulator (
    psn_no         TEXT NOT NULL REFERENCES person (psn_no),
    insurance_type BIGINT NOT NULL,
    year           BIGINT NOT NULL,
    annual_ded_fen BIGINT NOT NULL,
    fund_fen       BIGINT NOT NULL,
    burden_fen     BIGINT NOT NULL,
    ci_fen         BIGINT NOT NULL,
    maf_fen        BIGINT NOT NULL,
    admissions     BIGINT NOT NULL,
    PRIMARY KEY (psn_no, insurance_type, year)
);
