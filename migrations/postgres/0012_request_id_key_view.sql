-- The view SQLite serves from a batch-maintained index table plus a tail (see the SQLite
-- migration 0017). PostgreSQL keeps its primary key on (principal, request_id), which logs small
-- records rather than whole pages, so the view is the table itself: the same lookups run on both
-- engines.
CREATE VIEW idempotency_by_key AS
    SELECT principal, request_id, rpc, payload_hash, response, created_at, setl_id
    FROM idempotency;
