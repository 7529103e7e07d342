-- Statement lines derived from settlements (SQLite). A statement's lines are exactly the
-- settlements of its period and parties (clearing_period, home, treatment, care type → clearing
-- type): closing a month no longer copies them. The close stores each statement's base figures
-- (one GROUP BY over the period's settlements, which cannot change once the month is closed:
-- later reversals land in the open month), and statement_line keeps only the exceptions:
--   * overrides (carried_from IS NULL): a settlement of the statement that is disputed, or a
--     reversal/refund following a dispute — its figures leave the statement's;
--   * carried copies (carried_from set): an accepted line of an earlier statement, counted here.
-- A statement's figures = base figures + the adjustments of its stored lines; `medsettle
-- verify` recomputes the base figures from the settlements.
ALTER TABLE statement ADD COLUMN b_line_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE statement ADD COLUMN b_medfee_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE statement ADD COLUMN b_fund_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE statement ADD COLUMN b_acct_fen BIGINT NOT NULL DEFAULT 0;
UPDATE statement SET (b_line_count, b_medfee_fen, b_fund_fen, b_acct_fen) = (
    SELECT COUNT(*), COALESCE(SUM(st.medfee_fen), 0), COALESCE(SUM(st.fund_fen), 0),
           COALESCE(SUM(st.acct_fen), 0)
    FROM settlement st
    WHERE st.clearing_period = statement.period AND st.home_region = statement.home_region
      AND st.treatment_region = statement.treatment_region
      AND (CASE st.care_type WHEN 1 THEN 11 WHEN 2 THEN 21 WHEN 3 THEN 41 ELSE 51 END) = statement.clearing_type);
-- Plain copies of settlements are derived from now on.
DELETE FROM statement_line WHERE carried_from IS NULL AND dispute_state = 0;
-- A statement's lines in setl_id order straight from the index (paging, exports).
DROP INDEX ix_settlement_period;
CREATE INDEX ix_settlement_period ON settlement (clearing_period, home_region, treatment_region, care_type, setl_id);
-- Reversals and refunds of a settlement (a dispute takes the stated ones along).
CREATE INDEX ix_settlement_reverses ON settlement (reverses) WHERE reverses IS NOT NULL;
-- Lines following a dispute, found when it is resolved.
CREATE INDEX ix_statement_line_follows ON statement_line (follows) WHERE follows IS NOT NULL;
