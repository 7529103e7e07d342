//! CSV exports of a clearing period: statements, lines, net positions, transfer instructions.
//! Produced a page at a time so a period of any size streams in bounded memory; a bureau gets
//! only what it may read (statements where it is a party, its own position, its instructions).

use super::auth::Principal;
use super::clearing::{self as svc, parse_period};
use super::error::{AppError, AppResult};
use crate::domain::money::Amount;
use crate::domain::time::fmt_date;
use crate::store::Conn;
use crate::store::clearing::{self, InstructionRow, NetPositionRow};

/// What to export (proto ExportKind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Statements,
    Lines,
    Positions,
    Transfers,
}

impl Kind {
    pub fn from_proto(v: i32) -> AppResult<Kind> {
        match v {
            1 => Ok(Kind::Statements),
            2 => Ok(Kind::Lines),
            3 => Ok(Kind::Positions),
            4 => Ok(Kind::Transfers),
            _ => Err(AppError::invalid(
                "kind",
                "STATEMENTS, LINES, POSITIONS or TRANSFERS",
            )),
        }
    }

    fn header(self) -> &'static str {
        match self {
            Kind::Statements => {
                "statement_id,period,home_region,treatment_region,clearing_type,status,line_count,\
                 medfee_sumamt,fund_pay_sumamt,acct_pay,disputed_count,disputed_due,due,confirmed_at,\
                 auto_confirmed,overdue\n"
            }
            Kind::Lines => {
                "statement_id,setl_id,reverses,medfee_sumamt,fund_pay_sumamt,acct_pay,due,dispute_state,\
                 dispute_reason,follows,carried_from,carried_into\n"
            }
            Kind::Positions => {
                "period,region,payable,receivable,net,prepay_before,prepay_drawn,prepay_after,\
                 warning_line,top_up\n"
            }
            Kind::Transfers => {
                "instruction_id,period,seq,payer,receiver,amount,prepay,bank,recorded,bank_reference,\
                 value_date\n"
            }
        }
    }
}

/// Rows per page (and per streamed chunk).
pub const PAGE: i64 = 2_000;

/// Where the next page starts; `None` = done.
pub type Cursor = Option<(String, String)>;

/// Checks the request and the caller; returns the caller's region filter ("" = everything).
pub fn authorize(who: &Principal, period: &str) -> AppResult<String> {
    who.require_bureau_or_operator()?;
    parse_period("period", period)?;
    Ok(match who {
        Principal::Bureau { region } => region.clone(),
        _ => String::new(),
    })
}

/// One CSV field: quoted when it holds a comma, quote or line break.
fn field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, f);
    }
    out.push('\n');
}

fn yuan(fen: i64) -> String {
    Amount::from_fen(fen).to_string()
}

fn dispute_state(s: i64) -> &'static str {
    match s {
        svc::DISPUTED => "DISPUTED",
        svc::ACCEPTED => "ACCEPTED",
        svc::REJECTED => "REJECTED",
        _ => "NONE",
    }
}

/// The next chunk of the export from `cursor` (the first call passes `Some(("", ""))` and gets
/// the header too); returns the CSV text and the cursor of the following chunk.
pub async fn page(
    conn: &mut Conn,
    period: &str,
    region: &str,
    kind: Kind,
    cursor: (String, String),
) -> AppResult<(String, Cursor)> {
    let mut out = String::new();
    let first = cursor.0.is_empty() && cursor.1.is_empty();
    if first {
        out.push_str(kind.header());
    }
    match kind {
        Kind::Statements => {
            let rows = clearing::list_statements(conn, period, region, &cursor.0, PAGE).await?;
            let next = (rows.len() as i64 == PAGE)
                .then(|| rows.last().map(|s| (s.statement_id.clone(), String::new())))
                .flatten();
            for s in &rows {
                let status = if s.status == svc::STATEMENT_CONFIRMED {
                    "CONFIRMED"
                } else {
                    "PENDING"
                };
                row(
                    &mut out,
                    &[
                        &s.statement_id,
                        &s.period,
                        &s.home_region,
                        &s.treatment_region,
                        &s.clearing_type.to_string(),
                        status,
                        &s.line_count.to_string(),
                        &yuan(s.medfee_fen),
                        &yuan(s.fund_fen),
                        &yuan(s.acct_fen),
                        &s.disputed_count.to_string(),
                        &yuan(s.disputed_due_fen),
                        &yuan(s.due_fen),
                        &s.confirmed_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        &s.auto_confirmed.to_string(),
                        &s.overdue.to_string(),
                    ],
                );
            }
            Ok((out, next))
        }
        Kind::Lines => {
            let rows = clearing::period_lines(
                conn,
                period,
                region,
                (cursor.0.as_str(), cursor.1.as_str()),
                PAGE,
            )
            .await?;
            let next = (rows.len() as i64 == PAGE)
                .then(|| rows.last().map(|(st, l)| (st.clone(), l.setl_id.clone())))
                .flatten();
            for (st, l) in &rows {
                row(
                    &mut out,
                    &[
                        st,
                        &l.setl_id,
                        l.reverses.as_deref().unwrap_or(""),
                        &yuan(l.medfee_fen),
                        &yuan(l.fund_fen),
                        &yuan(l.acct_fen),
                        &yuan(l.fund_fen + l.acct_fen),
                        dispute_state(l.dispute_state),
                        l.dispute_reason.as_deref().unwrap_or(""),
                        l.follows.as_deref().unwrap_or(""),
                        l.carried_from.as_deref().unwrap_or(""),
                        l.carried_into.as_deref().unwrap_or(""),
                    ],
                );
            }
            Ok((out, next))
        }
        Kind::Positions => {
            let mut rows = clearing::positions(conn, period).await?;
            if !region.is_empty() {
                rows.retain(|p| p.region == region);
            }
            for p in &rows {
                position_row(&mut out, p);
            }
            Ok((out, None))
        }
        Kind::Transfers => {
            let mut rows = clearing::instructions(conn, period).await?;
            if !region.is_empty() {
                rows.retain(|t| t.payer == region || t.receiver == region);
            }
            for t in &rows {
                transfer_row(&mut out, t);
            }
            Ok((out, None))
        }
    }
}

fn position_row(out: &mut String, p: &NetPositionRow) {
    row(
        out,
        &[
            &p.period,
            &p.region,
            &yuan(p.payable_fen),
            &yuan(p.receivable_fen),
            &yuan(p.net_fen),
            &yuan(p.prepay_before_fen),
            &yuan(p.prepay_drawn_fen),
            &yuan(p.prepay_after_fen()),
            &yuan(p.warning_line_fen),
            &p.top_up().to_string(),
        ],
    );
}

fn transfer_row(out: &mut String, t: &InstructionRow) {
    let recorded = t.recorded_at.is_some() || t.bank_fen == 0;
    let seq = t.seq.to_string();
    row(
        out,
        &[
            &t.instruction_id,
            &t.period,
            &seq,
            &t.payer,
            &t.receiver,
            &yuan(t.amount_fen),
            &yuan(t.prepay_fen),
            &yuan(t.bank_fen),
            &recorded.to_string(),
            t.bank_reference.as_deref().unwrap_or(""),
            &t.value_date.map(fmt_date).unwrap_or_default(),
        ],
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut out = String::new();
        super::row(&mut out, &["a", "b,c", "say \"no\"", "x\ny"]);
        assert_eq!(out, "a,\"b,c\",\"say \"\"no\"\"\",\"x\ny\"\n");
    }
}
