-- A person's settlements, indexed in batches rather than per row. The key (a person) is
-- random: kept as an ordinary index, every swipe dirtied one leaf page of it, and SQLite's WAL
-- logs whole pages. Instead the swipe writer copies the rows into this clustered table every
-- few thousand settlements (store::derived::merge: sorted, each leaf written once per merge),
-- and the view below adds the rows committed since (the tail, found by rowid: settlements are
-- never deleted, so rowids ascend in commit order) — reads through the view are exact at every
-- moment.
DROP INDEX ix_settlement_person;

CREATE TABLE settlement_person_ix (
    psn_no  TEXT NOT NULL,
    setl_id TEXT NOT NULL,
    PRIMARY KEY (psn_no, setl_id)
) WITHOUT ROWID;

-- The last rowid of the source table copied into each index table.
CREATE TABLE derived_index (
    name TEXT PRIMARY KEY,
    upto INTEGER NOT NULL
);

INSERT INTO settlement_person_ix (psn_no, setl_id) SELECT psn_no, setl_id FROM settlement;
INSERT INTO derived_index (name, upto)
    VALUES ('settlement_person', (SELECT COALESCE(MAX(rowid), 0) FROM settlement));

CREATE VIEW settlement_by_person AS
    SELECT psn_no, setl_id FROM settlement_person_ix
    UNION ALL
    SELECT psn_no, setl_id FROM settlement
    WHERE rowid > (SELECT upto FROM derived_index WHERE name = 'settlement_person');
