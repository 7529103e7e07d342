-- A settlement's request id indexed once. The idempotency row of the call that booked a
-- settlement already holds (caller, request id) under its key; it now names the settlement too,
-- and the lookups by request id (GetSettlement, the 冲正 by request id) go through it. The
-- settlement's own unique index on (institution, request_id) held the same request ids a second
-- time: with one insertion point per institution, each swipe batch dirtied a leaf of it for
-- every pharmacy in the batch (≈ 13 % of the pages a batch logs in the WAL). Uniqueness stays
-- where it was enforced first: the idempotency key (a call that books a settlement stores its
-- row in the same transaction).
--
-- SQLite cannot drop a table constraint, so the settlement table is rebuilt (its rowids kept:
-- the batch-maintained indexes' tails are found by rowid), with its indexes and the two views
-- that read it. store::Db::migrate runs migrations with foreign keys off and checks them after
-- (SQLite's procedure for rebuilding a table that others reference: purchase_line does).
ALTER TABLE idempotency ADD COLUMN setl_id TEXT;
UPDATE idempotency SET setl_id = s.setl_id
    FROM settlement AS s
    WHERE idempotency.principal = 'institution:' || s.institution
      AND idempotency.request_id = s.request_id;

CREATE TABLE settlement_rebuilt (
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
    request_id        TEXT NOT NULL
);
INSERT INTO settlement_rebuilt (rowid, setl_id, kind, reverses, reversed_by, mdtrt_id, psn_no,
    home_region, treatment_region, institution, insurance_type, care_type, settled_at,
    business_date, clearing_period, service_year, medfee_fen, fulamt_fen, overlmt_fen,
    preself_fen, inscp_fen, dedc_fen, hifp_fen, hifmi_fen, maf_fen, fund_fen, psn_part_fen,
    acct_fen, cash_fen, balance_after_fen, d_annual_ded_fen, d_burden_fen, d_admissions,
    line_count, explanation, journal_id, request_id)
SELECT rowid, setl_id, kind, reverses, reversed_by, mdtrt_id, psn_no,
    home_region, treatment_region, institution, insurance_type, care_type, settled_at,
    business_date, clearing_period, service_year, medfee_fen, fulamt_fen, overlmt_fen,
    preself_fen, inscp_fen, dedc_fen, hifp_fen, hifmi_fen, maf_fen, fund_fen, psn_part_fen,
    acct_fen, cash_fen, balance_after_fen, d_annual_ded_fen, d_burden_fen, d_admissions,
    line_count, explanation, journal_id, request_id
FROM settlement ORDER BY rowid;

-- Renaming checks every view, so those reading the old table go first and come back after.
DROP VIEW settlement_by_person;
DROP VIEW settlement_by_institution;
DROP TABLE settlement;
ALTER TABLE settlement_rebuilt RENAME TO settlement;

CREATE INDEX ix_settlement_period
    ON settlement (clearing_period, home_region, treatment_region, care_type, setl_id);
CREATE INDEX ix_settlement_reverses ON settlement (reverses) WHERE reverses IS NOT NULL;
CREATE INDEX ix_settlement_visit ON settlement (mdtrt_id) WHERE mdtrt_id IS NOT NULL;

CREATE VIEW settlement_by_person AS
    SELECT psn_no, setl_id FROM settlement_person_ix
    UNION ALL
    SELECT psn_no, setl_id FROM settlement
    WHERE rowid > (SELECT upto FROM derived_index WHERE name = 'settlement_person');
CREATE VIEW settlement_by_institution AS
    SELECT institution, business_date, setl_id FROM settlement_inst_ix
    UNION ALL
    -- NOT INDEXED: the tail is found by rowid alone, never by an index of the institution's
    -- settlements.
    SELECT institution, business_date, setl_id FROM settlement NOT INDEXED
    WHERE rowid > (SELECT upto FROM derived_index WHERE name = 'settlement_inst');
