//! A treatment region's catalogue.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::{Page, page_after, regions};
use crate::domain::ids::RegionCode;
use crate::store::catalogue::{self, CatalogueRow};
use crate::store::{self, Conn, registry};
use chrono::NaiveDate;

/// Items per upsert call at most.
pub const MAX_ITEMS: usize = 20_000;

/// Insert or replace items; returns (new version, items written). The region's bureau or an
/// operator. `items` are complete rows except `region` and `version`, which are set here.
pub async fn upsert(
    conn: &mut Conn,
    who: &Principal,
    region: &RegionCode,
    mut items: Vec<CatalogueRow>,
) -> AppResult<(i64, usize)> {
    who.require_region(region.as_str())?;
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(AppError::invalid(
            "items",
            format!("1..{MAX_ITEMS} items per call"),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if !seen.insert((item.code.as_str(), item.effective_from)) {
            return Err(AppError::invalid(
                format!("items[{i}]"),
                format!(
                    "({}, {}) appears twice in this call",
                    item.code, item.effective_from
                ),
            ));
        }
    }
    regions::get(conn, region.as_str()).await?;
    let version = catalogue::next_version(conn, region.as_str()).await?;
    for item in &mut items {
        item.region = region.as_str().to_owned();
        item.version = version;
    }
    catalogue::upsert_items(conn, &items).await?;
    Ok((version, items.len()))
}

/// Who may read a region's catalogue: operators, any bureau, institutions of that region.
async fn check_read(conn: &mut Conn, who: &Principal, region: &str) -> AppResult<()> {
    if let Principal::Institution { code } = who {
        let own = registry::get_institution(conn, code, false).await?;
        if own.is_none_or(|i| i.region != region) {
            return Err(AppError::denied(format!(
                "{} may read only the catalogue of its own region",
                who.key()
            )));
        }
    }
    Ok(())
}

pub async fn get(
    conn: &mut Conn,
    who: &Principal,
    region: &RegionCode,
    code: &str,
    on: NaiveDate,
) -> AppResult<CatalogueRow> {
    check_read(conn, who, region.as_str()).await?;
    catalogue::item_on(conn, region.as_str(), code, on)
        .await?
        .ok_or_else(|| {
            AppError::not_found(format!(
                "{code} is not in the catalogue of {region} on {on}"
            ))
        })
}

pub async fn search(
    conn: &mut Conn,
    who: &Principal,
    region: &RegionCode,
    query: &str,
    on: NaiveDate,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<CatalogueRow>> {
    check_read(conn, who, region.as_str()).await?;
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = catalogue::search(conn, region.as_str(), query, on, &after, size + 1).await?;
    let (items, next_page_token) = store::page(rows, size, |r| r.code.clone());
    Ok(Page {
        items,
        next_page_token,
    })
}
