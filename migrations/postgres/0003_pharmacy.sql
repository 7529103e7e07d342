-- Pharmacy purchases (PostgreSQL): the lines of each purchase settlement with their split, and
-- what has been refunded of them. A refund settlement's lines carry negative quantities.

CREATE TABLE purchase_line (
    setl_id             TEXT NOT NULL REFERENCES settlement (setl_id),
    line_no             TEXT NOT NULL,
    code                TEXT NOT NULL,
    name                TEXT NOT NULL,
    qty_scaled          BIGINT NOT NULL,
    price_micros        BIGINT NOT NULL,
    class               BIGINT NOT NULL,
    cap_micros          BIGINT,
    b_ratio_bp          BIGINT,
    catalogue_version   BIGINT NOT NULL,
    amount_fen          BIGINT NOT NULL,
    fulamt_fen          BIGINT NOT NULL,
    overlmt_fen         BIGINT NOT NULL,
    preself_fen         BIGINT NOT NULL,
    inscp_fen           BIGINT NOT NULL,
    refunded_qty_scaled BIGINT NOT NULL,
    PRIMARY KEY (setl_id, line_no)
);
