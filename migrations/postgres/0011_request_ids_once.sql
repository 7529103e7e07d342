-- A settlement's request id indexed once (as sqlite/0013): the idempotency row of the call that
-- booked a settlement names it, and the lookups by request id go through that row's key; the
-- settlement's own unique index on (institution, request_id) held the same request ids again.
-- Uniqueness stays where it was enforced first: the idempotency key.
ALTER TABLE idempotency ADD COLUMN setl_id TEXT;
UPDATE idempotency AS i SET setl_id = s.setl_id
    FROM settlement AS s
    WHERE i.principal = 'institution:' || s.institution
      AND i.request_id = s.request_id;
ALTER TABLE settlement DROP CONSTRAINT uq_settlement_request;
