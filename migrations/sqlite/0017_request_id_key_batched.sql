-- The request ids' key maintained in batches, like the other indexes of 0009–0011. The primary
-- key (principal, request_id) of `idempotency` has one insertion point per caller: every swipe
-- batch dirtied a leaf of it for each pharmacy in the batch (at 5,000 swipes/s ≈ 14 % of the
-- pages a commit logs in the WAL, at 10,000/s ≈ 21 %), and with thousands of pharmacies it would
-- be a leaf a swipe. The rows now go into a plain rowid table (appended at one end), and the
-- swipe writer copies their keys into the clustered `idempotency_ix` every few hundred rows
-- (store::derived::merge: sorted, each leaf written once a merge); the view `idempotency_by_key`
-- reads the index table plus the rows committed since (the tail, by rowid: idempotency rows are
-- never deleted), so a lookup through it is exact at every moment.
--
-- Uniqueness, which the primary key enforced, is kept by the writers: SQLite has one writer at
-- a time (every write transaction begins IMMEDIATE), and each looks a request id up through the
-- view — the swipe writer through its own map of the tail — before it inserts one, inside the
-- transaction that inserts it. `medsettle verify` reports a key stored twice (the index table
-- then lacks the second row).
--
-- SQLite cannot drop a primary key, so the table is rebuilt with its rowids.
CREATE TABLE idempotency_rebuilt (
    principal    TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    rpc          TEXT NOT NULL,
    payload_hash BLOB NOT NULL,
    response     BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    setl_id      TEXT
);
INSERT INTO idempotency_rebuilt (rowid, principal, request_id, rpc, payload_hash, response,
    created_at, setl_id)
SELECT rowid, principal, request_id, rpc, payload_hash, response, created_at, setl_id
FROM idempotency ORDER BY rowid;
DROP TABLE idempotency;
ALTER TABLE idempotency_rebuilt RENAME TO idempotency;

CREATE TABLE idempotency_ix (
    principal  TEXT NOT NULL,
    request_id TEXT NOT NULL,
    -- The rowid of the row in `idempotency`.
    row        INTEGER NOT NULL,
    PRIMARY KEY (principal, request_id)
) WITHOUT ROWID;
INSERT INTO idempotency_ix (principal, request_id, row)
    SELECT principal, request_id, rowid FROM idempotency ORDER BY principal, request_id;
INSERT INTO derived_index (name, upto)
    VALUES ('idempotency', (SELECT COALESCE(MAX(rowid), 0) FROM idempotency));

-- The key's columns come from the index table in the first arm, so that a lookup by key seeks
-- it (SQLite pushes the WHERE into each arm).
CREATE VIEW idempotency_by_key AS
    SELECT x.principal, x.request_id, i.rpc, i.payload_hash, i.response, i.created_at,
        i.setl_id, x.row
    FROM idempotency_ix x CROSS JOIN idempotency i ON i.rowid = x.row
    UNION ALL
    SELECT principal, request_id, rpc, payload_hash, response, created_at, setl_id, rowid
    FROM idempotency
    WHERE rowid > (SELECT upto FROM derived_index WHERE name = 'idempotency');
