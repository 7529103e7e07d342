//! Reading settlements: by id, by the caller's request id, and lists by visit, person or
//! institution day.

use super::visits;
use crate::service::auth::Principal;
use crate::service::error::{AppError, AppResult};
use crate::service::persons::{self, Lookup};
use crate::service::{Page, page_after};
use crate::store::settlement::{self, SettlementFilter, SettlementRow};
use crate::store::{self, Conn, registry};

/// Who may read a settlement: operators; the settling institution; the bureaus of its home and
/// treatment regions.
fn may_read(who: &Principal, s: &SettlementRow) -> bool {
    match who {
        Principal::Operator { .. } => true,
        Principal::Institution { code } => *code == s.institution,
        Principal::Bureau { region } => *region == s.home_region || *region == s.treatment_region,
    }
}

pub async fn get(conn: &mut Conn, who: &Principal, setl_id: &str) -> AppResult<SettlementRow> {
    let s = settlement::get_settlement(conn, setl_id, false)
        .await?
        .ok_or_else(|| AppError::not_found(format!("settlement {setl_id} does not exist")))?;
    if !may_read(who, &s) {
        return Err(AppError::denied(format!(
            "{} may not read settlement {setl_id}",
            who.key()
        )));
    }
    Ok(s)
}

/// The settlement the calling institution made under `request_id` (the answer to a timed-out
/// Settle call).
pub async fn by_request(
    conn: &mut Conn,
    who: &Principal,
    request_id: &str,
) -> AppResult<SettlementRow> {
    let Principal::Institution { .. } = who else {
        return Err(AppError::denied(
            "only institutions look settlements up by their request id",
        ));
    };
    settlement::settlement_by_request(conn, &who.key(), request_id)
        .await?
        .ok_or_else(|| {
            AppError::not_found(format!(
                "no settlement was made under request id {request_id:?}"
            ))
        })
}

pub async fn list(
    conn: &mut Conn,
    who: &Principal,
    filter: SettlementFilter,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<SettlementRow>> {
    match &filter {
        SettlementFilter::Visit(m) => {
            if !who.is_operator() {
                visits::own_visit(conn, who, m, false).await?;
            }
        }
        SettlementFilter::Person(p) => {
            persons::find(conn, who, &Lookup::PsnNo(p.clone()), false).await?;
        }
        SettlementFilter::InstitutionDay(code, _) => match who {
            Principal::Institution { code: own } if own == code => {}
            Principal::Institution { .. } => {
                return Err(AppError::denied(format!(
                    "{} may list only its own settlements",
                    who.key()
                )));
            }
            _ => {
                let inst = registry::get_institution(conn, code, false)
                    .await?
                    .ok_or_else(|| {
                        AppError::not_found(format!("institution {code} is not registered"))
                    })?;
                who.require_region(&inst.region)?;
            }
        },
    }
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = settlement::list_settlements(conn, &filter, &after, size + 1).await?;
    let (items, next_page_token) = store::page(rows, size, |s| s.setl_id.clone());
    Ok(Page {
        items,
        next_page_token,
    })
}
