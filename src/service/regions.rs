//! Regions and their bureaus.

use super::auth::Principal;
use super::error::{AppError, AppResult, unique_as};
use super::{Page, page_after};
use crate::domain::ids::{ProvinceCode, RegionCode};
use crate::domain::regions;
use crate::store::registry::{self, RegionRow};
use crate::store::{self, Conn};
use chrono::{DateTime, Utc};

/// Create a region: operators only.
#[derive(Debug, Clone)]
pub struct CreateRegion {
    pub code: RegionCode,
    /// None = the GB/T 2260 name.
    pub name: Option<String>,
    /// None = "<name>医疗保障局".
    pub bureau_name: Option<String>,
}

pub async fn create(
    conn: &mut Conn,
    who: &Principal,
    cmd: CreateRegion,
    now: DateTime<Utc>,
) -> AppResult<RegionRow> {
    who.require_operator()?;
    let code = cmd.code.as_str();
    let name = match cmd.name {
        Some(n) => n,
        None => regions::lookup(code)
            .map(|k| k.name.to_owned())
            .ok_or_else(|| {
                AppError::invalid(
                    "name",
                    format!("{code} is not a known GB/T 2260 region: give its name"),
                )
            })?,
    };
    let bureau_name = cmd
        .bureau_name
        .unwrap_or_else(|| format!("{name}医疗保障局"));
    let row = RegionRow {
        code: code.to_owned(),
        name,
        province_code: cmd.code.province().to_owned(),
        bureau_name,
    };
    registry::insert_region(conn, &row, now)
        .await
        .map_err(|e| unique_as(e, "region", format!("region {code} already exists")))?;
    Ok(row)
}

/// The region, or NOT_FOUND.
pub async fn get(conn: &mut Conn, code: &str) -> AppResult<RegionRow> {
    registry::get_region(conn, code)
        .await?
        .ok_or_else(|| AppError::not_found(format!("region {code} is not registered")))
}

pub async fn list(
    conn: &mut Conn,
    province: Option<ProvinceCode>,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<RegionRow>> {
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let rows = registry::list_regions(
        conn,
        province.as_ref().map(|p| p.as_str()),
        &after,
        size + 1,
    )
    .await?;
    let (items, next_page_token) = store::page(rows, size, |r| r.code.clone());
    Ok(Page {
        items,
        next_page_token,
    })
}
