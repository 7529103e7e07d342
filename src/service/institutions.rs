//! Designated institutions: hospitals and pharmacies.

use super::auth::Principal;
use super::error::{AppError, AppResult, unique_as};
use super::persons::{BatchItem, FirstUse, RegionsSeen};
use super::{Page, page_after, regions};
use crate::domain::ids::{InstitutionCode, RegionCode};
use crate::domain::kinds::{InstitutionKind, InstitutionStatus};
use crate::store::registry::{self, InstitutionRow};
use crate::store::{self, Conn, StoreError};
use chrono::NaiveDate;

#[derive(Debug, Clone)]
pub struct Register {
    pub code: InstitutionCode,
    pub name: String,
    pub region: RegionCode,
    pub kind: InstitutionKind,
    /// 1..=3 for hospitals, 0 for pharmacies.
    pub level: u32,
    pub cross_region_enabled: bool,
    pub valid_from: NaiveDate,
    pub valid_until: Option<NaiveDate>,
}

/// Most institutions per batch registration (RegisterInstitutions).
pub const MAX_BATCH: usize = 5_000;

/// Register an institution: the bureau of its region, or an operator.
pub async fn register(
    conn: &mut Conn,
    who: &Principal,
    cmd: Register,
) -> AppResult<InstitutionRow> {
    who.require_region(cmd.region.as_str())?;
    check(&cmd)?;
    regions::get(conn, cmd.region.as_str()).await?;
    let row = row(cmd);
    registry::insert_institution(conn, &row)
        .await
        .map_err(|e| unique_as(e, "institution", already(&row.code)))?;
    Ok(row)
}

/// The rules of a registration that need no database: the code's letter and province, the
/// level, the validity dates.
pub fn check(cmd: &Register) -> AppResult<()> {
    let expected = match cmd.kind {
        InstitutionKind::Hospital => 'H',
        InstitutionKind::Pharmacy => 'P',
    };
    if cmd.code.kind_letter() != expected {
        return Err(AppError::invalid(
            "code",
            format!("a {:?} code starts with '{expected}'", cmd.kind),
        ));
    }
    if !cmd.code.region_digits().starts_with(cmd.region.province()) {
        return Err(AppError::invalid(
            "code",
            format!(
                "digits 1-2 of the code must be the region's province {}",
                cmd.region.province()
            ),
        ));
    }
    match (cmd.kind, cmd.level) {
        (InstitutionKind::Hospital, 1..=3) | (InstitutionKind::Pharmacy, 0) => {}
        (InstitutionKind::Hospital, _) => {
            return Err(AppError::invalid("level", "hospital level is 1, 2 or 3"));
        }
        (InstitutionKind::Pharmacy, _) => {
            return Err(AppError::invalid("level", "pharmacies have no level: 0"));
        }
    }
    check_validity(cmd.valid_from, cmd.valid_until)
}

fn row(cmd: Register) -> InstitutionRow {
    InstitutionRow {
        code: cmd.code.as_str().to_owned(),
        name: cmd.name,
        region: cmd.region.as_str().to_owned(),
        kind: cmd.kind.code(),
        level: i64::from(cmd.level),
        cross_region_enabled: cmd.cross_region_enabled,
        status: InstitutionStatus::Active.code(),
        valid_from: cmd.valid_from,
        valid_until: cmd.valid_until,
    }
}

fn already(code: &str) -> String {
    format!("institution {code} is already registered")
}

/// Registers 1..[`MAX_BATCH`] institutions in the caller's transaction, each checked as
/// [`register`] checks it (its region's bureau or an operator, the same rules, an existing
/// region). An item that fails is Rejected and left out; one whose code is already registered
/// is Exists, left unchanged; all the others are written together. A code given twice in the
/// batch rejects the later item. Answers one outcome per item, in order; an error of the call
/// itself (or of the database) writes nothing.
pub async fn register_batch(
    conn: &mut Conn,
    who: &Principal,
    items: Vec<AppResult<Register>>,
) -> AppResult<Vec<BatchItem>> {
    who.require_bureau_or_operator()?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(AppError::invalid(
            "institutions",
            format!("1..{MAX_BATCH} institutions per call"),
        ));
    }
    let mut out: Vec<Option<BatchItem>> = items.iter().map(|_| None).collect();
    let mut todo: Vec<(usize, Register)> = Vec::with_capacity(items.len());
    let mut seen = RegionsSeen::default();
    let mut first = FirstUse::default();
    for (i, item) in items.into_iter().enumerate() {
        let cmd = match item {
            Ok(cmd) => cmd,
            Err(e) => {
                out[i] = Some(BatchItem::rejected("", e));
                continue;
            }
        };
        if let Err(e) = who.require_region(cmd.region.as_str()) {
            out[i] = Some(BatchItem::rejected("region", e));
            continue;
        }
        if let Err(e) = check(&cmd) {
            out[i] = Some(BatchItem::rejected("", e));
            continue;
        }
        if let Err(e) = seen.check(conn, cmd.region.as_str()).await? {
            out[i] = Some(BatchItem::rejected("region", e));
            continue;
        }
        if let Some((column, j)) = first.claim(&[("code", Some(cmd.code.as_str()))], i) {
            let e = AppError::invalid(column, format!("the same as item {j} of this call"));
            out[i] = Some(BatchItem::rejected(column, e));
            continue;
        }
        todo.push((i, cmd));
    }
    let codes: Vec<String> = todo
        .iter()
        .map(|(_, c)| c.code.as_str().to_owned())
        .collect();
    let existing: std::collections::HashSet<String> = registry::institutions_by_codes(conn, &codes)
        .await?
        .into_iter()
        .map(|r| r.code)
        .collect();
    for (i, cmd) in todo {
        if existing.contains(cmd.code.as_str()) {
            out[i] = Some(BatchItem::Exists {
                field: "code".into(),
                reason: already(cmd.code.as_str()),
            });
            continue;
        }
        let row = row(cmd);
        // Checked above in this transaction: a unique violation now means a concurrent
        // registration; the whole batch runs again and sees it.
        registry::insert_institution(conn, &row)
            .await
            .map_err(|e| match e {
                StoreError::Unique { constraint } => AppError::Retry(format!(
                    "a concurrent registration took a code of this batch ({constraint})"
                )),
                other => other.into(),
            })?;
        out[i] = Some(BatchItem::Created(row.code));
    }
    out.into_iter()
        .map(|o| {
            o.ok_or_else(|| AppError::Internal(anyhow::anyhow!("a batch item left unanswered")))
        })
        .collect()
}

fn check_validity(from: NaiveDate, until: Option<NaiveDate>) -> AppResult<()> {
    match until {
        Some(u) if u < from => Err(AppError::invalid(
            "valid_until",
            "must not be before valid_from",
        )),
        _ => Ok(()),
    }
}

/// Fields to change; None = unchanged.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub name: Option<String>,
    pub status: Option<InstitutionStatus>,
    pub cross_region_enabled: Option<bool>,
    /// Some(None) = make open-ended.
    pub valid_until: Option<Option<NaiveDate>>,
}

pub async fn update(
    conn: &mut Conn,
    who: &Principal,
    code: &InstitutionCode,
    cmd: Update,
) -> AppResult<InstitutionRow> {
    let mut row = registry::get_institution(conn, code.as_str(), true)
        .await?
        .ok_or_else(|| not_found(code.as_str()))?;
    who.require_region(&row.region)?;
    if let Some(name) = cmd.name {
        row.name = name;
    }
    if let Some(s) = cmd.status {
        row.status = s.code();
    }
    if let Some(c) = cmd.cross_region_enabled {
        row.cross_region_enabled = c;
    }
    if let Some(u) = cmd.valid_until {
        row.valid_until = u;
    }
    check_validity(row.valid_from, row.valid_until)?;
    registry::update_institution(conn, &row).await?;
    Ok(row)
}

fn not_found(code: &str) -> AppError {
    AppError::not_found(format!("institution {code} is not registered"))
}

/// An institution: operators, its region's bureau, or the institution itself.
pub async fn get(conn: &mut Conn, who: &Principal, code: &str) -> AppResult<InstitutionRow> {
    let row = registry::get_institution(conn, code, false)
        .await?
        .ok_or_else(|| not_found(code))?;
    match who {
        Principal::Institution { code: own } if own == code => Ok(row),
        Principal::Institution { .. } => Err(AppError::denied(format!(
            "{} may read only itself",
            who.key()
        ))),
        _ => who.require_region(&row.region).map(|_| row),
    }
}

/// Institutions of a region ("" = all regions, operators only).
pub async fn list(
    conn: &mut Conn,
    who: &Principal,
    region: Option<RegionCode>,
    kind: Option<InstitutionKind>,
    page_size: u32,
    page_token: &str,
) -> AppResult<Page<InstitutionRow>> {
    let region = match (&region, who) {
        (Some(r), _) => {
            who.require_region(r.as_str())?;
            r.as_str().to_owned()
        }
        (None, Principal::Bureau { region }) => region.clone(),
        (None, _) => {
            who.require_operator()?;
            String::new()
        }
    };
    let after = page_after(page_token)?;
    let size = store::page_size(page_size);
    let kind = kind.map(InstitutionKind::code).unwrap_or(0);
    let rows = registry::list_institutions(conn, &region, kind, &after, size + 1).await?;
    let (items, next_page_token) = store::page(rows, size, |r| r.code.clone());
    Ok(Page {
        items,
        next_page_token,
    })
}
