//! Purchase lines of pharmacy settlements.

use super::cells::{Cell, Cells};
use super::query::Query;
use super::{Conn, StoreResult};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PurchaseLineRow {
    pub setl_id: String,
    pub line_no: String,
    pub code: String,
    pub name: String,
    /// Quantity ×10^4; negative on a refund's lines.
    pub qty_scaled: i64,
    pub price_micros: i64,
    /// proto CatalogueClass; 0 = not in the catalogue.
    pub class: i64,
    pub cap_micros: Option<i64>,
    pub b_ratio_bp: Option<i64>,
    pub catalogue_version: i64,
    pub amount_fen: i64,
    pub fulamt_fen: i64,
    pub overlmt_fen: i64,
    pub preself_fen: i64,
    pub inscp_fen: i64,
    /// Quantity ×10^4 refunded so far (purchase lines only).
    pub refunded_qty_scaled: i64,
}

crate::direct_row!(PurchaseLineRow {
    setl_id,
    line_no,
    code,
    name,
    qty_scaled,
    price_micros,
    class,
    cap_micros,
    b_ratio_bp,
    catalogue_version,
    amount_fen,
    fulamt_fen,
    overlmt_fen,
    preself_fen,
    inscp_fen,
    refunded_qty_scaled,
});

const COLS: &str = "setl_id, line_no, code, name, qty_scaled, price_micros, class, cap_micros, \
    b_ratio_bp, catalogue_version, amount_fen, fulamt_fen, overlmt_fen, preself_fen, inscp_fen, \
    refunded_qty_scaled";

/// Inserts lines, set-based.
pub async fn insert_lines(c: &mut Conn, rows: &[PurchaseLineRow]) -> StoreResult<()> {
    super::cells::insert(c, rows, "").await?;
    Ok(())
}

impl Cells for PurchaseLineRow {
    const TABLE: &'static str = "purchase_line";
    const COLUMNS: &'static str = COLS;
    const N: usize = 16;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.setl_id));
        out(Cell::Text(&self.line_no));
        out(Cell::Text(&self.code));
        out(Cell::Text(&self.name));
        out(Cell::Int(self.qty_scaled));
        out(Cell::Int(self.price_micros));
        out(Cell::Int(self.class));
        out(Cell::OptInt(self.cap_micros));
        out(Cell::OptInt(self.b_ratio_bp));
        for v in [
            self.catalogue_version,
            self.amount_fen,
            self.fulamt_fen,
            self.overlmt_fen,
            self.preself_fen,
            self.inscp_fen,
            self.refunded_qty_scaled,
        ] {
            out(Cell::Int(v));
        }
    }
}

/// The lines of a settlement in line_no order.
pub async fn lines(c: &mut Conn, setl_id: &str) -> StoreResult<Vec<PurchaseLineRow>> {
    let sql = format!("SELECT {COLS} FROM purchase_line WHERE setl_id = $1 ORDER BY line_no");
    Query::new(&sql).bind(setl_id).fetch_all(c).await
}

/// Adds to the refunded quantity of a purchase line.
pub async fn add_refunded(
    c: &mut Conn,
    setl_id: &str,
    line_no: &str,
    qty_scaled: i64,
) -> StoreResult<()> {
    let sql = "UPDATE purchase_line SET refunded_qty_scaled = refunded_qty_scaled + $3 \
               WHERE setl_id = $1 AND line_no = $2";
    Query::new(sql)
        .bind(setl_id)
        .bind(line_no)
        .bind(qty_scaled)
        .execute(c)
        .await?;
    Ok(())
}
