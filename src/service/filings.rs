//! Out-of-region filings: file, get, list, revoke. The person's home bureau or an operator.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::persons::{self, Lookup};
use crate::domain::filing::{Destination, default_valid_until, periods_intersect};
use crate::domain::ids::InstitutionCode;
use crate::domain::kinds::{FilingStatus, FilingType, PersonStatus};
use crate::domain::time::business_date;
use crate::store::Conn;
use crate::store::filings::{self, FilingRow};
use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone)]
pub struct File {
    pub psn_no: String,
    pub filing_type: FilingType,
    pub destination: Destination,
    /// None = today.
    pub valid_from: Option<NaiveDate>,
    /// None = the type's default.
    pub valid_until: Option<NaiveDate>,
    pub referring_institution: Option<InstitutionCode>,
}

pub async fn file(
    conn: &mut Conn,
    who: &Principal,
    cmd: File,
    now: DateTime<Utc>,
) -> AppResult<FilingRow> {
    let today = business_date(now);
    // Lock the person: concurrent filings for one person cannot both pass the overlap check.
    let person = persons::find(conn, who, &Lookup::PsnNo(cmd.psn_no.clone()), true).await?;
    if person.status != PersonStatus::Active.code() {
        return Err(AppError::precondition(
            "person_not_active",
            "only active persons can file",
        ));
    }
    let home = crate::domain::ids::RegionCode::parse("home_region", &person.home_region)?;
    if let Destination::Region(r) = &cmd.destination
        && *r == home
    {
        return Err(AppError::invalid(
            "destination",
            "the destination is the person's home region",
        ));
    }
    let from = cmd.valid_from.unwrap_or(today);
    if from < today && cmd.filing_type != FilingType::Emergency {
        return Err(AppError::invalid(
            "valid_from",
            "only emergency filings may start before today",
        ));
    }
    let until = cmd
        .valid_until
        .or_else(|| default_valid_until(cmd.filing_type, from));
    if until.is_some_and(|u| u < from) {
        return Err(AppError::invalid(
            "valid_until",
            "must not be before valid_from",
        ));
    }
    match (cmd.filing_type, &cmd.referring_institution) {
        (FilingType::Referral, None) => {
            return Err(AppError::invalid(
                "referring_institution",
                "required for a referral",
            ));
        }
        (t, Some(_)) if t != FilingType::Referral => {
            return Err(AppError::invalid(
                "referring_institution",
                "only referrals name one",
            ));
        }
        _ => {}
    }
    for existing in filings::for_person(conn, &cmd.psn_no, false).await? {
        let dest = Destination::parse("destination", &existing.destination)?;
        if dest.overlaps(&cmd.destination)
            && periods_intersect(existing.valid_from, existing.valid_until, from, until)
        {
            return Err(AppError::precondition(
                "filing_overlap",
                format!(
                    "active filing {} to {} already covers part of this period",
                    existing.filing_id, existing.destination
                ),
            ));
        }
    }
    let row = FilingRow {
        filing_id: crate::store::new_id("F", now),
        psn_no: cmd.psn_no,
        home_region: person.home_region,
        filing_type: cmd.filing_type.code(),
        destination: cmd.destination.as_str().to_owned(),
        valid_from: from,
        valid_until: until,
        referring_institution: cmd.referring_institution.map(|c| c.as_str().to_owned()),
        status: FilingStatus::Active.code(),
        revoked_on: None,
        revoke_reason: None,
    };
    filings::insert(conn, &row, now).await?;
    Ok(row)
}

/// A filing, for its person's home bureau or an operator.
pub async fn get(
    conn: &mut Conn,
    who: &Principal,
    filing_id: &str,
    lock: bool,
) -> AppResult<FilingRow> {
    let row = filings::get(conn, filing_id, lock)
        .await?
        .ok_or_else(|| AppError::not_found(format!("filing {filing_id} does not exist")))?;
    who.require_region(&row.home_region)?;
    Ok(row)
}

pub async fn list(
    conn: &mut Conn,
    who: &Principal,
    psn_no: &str,
    include_revoked: bool,
) -> AppResult<Vec<FilingRow>> {
    persons::find(conn, who, &Lookup::PsnNo(psn_no.to_owned()), false).await?;
    Ok(filings::for_person(conn, psn_no, include_revoked).await?)
}

pub async fn revoke(
    conn: &mut Conn,
    who: &Principal,
    filing_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> AppResult<FilingRow> {
    let row = get(conn, who, filing_id, true).await?;
    if row.status == FilingStatus::Revoked.code() {
        return Err(AppError::precondition(
            "filing_already_revoked",
            format!("filing {filing_id} is already revoked"),
        ));
    }
    filings::revoke(conn, filing_id, business_date(now), reason).await?;
    get(conn, who, filing_id, false).await
}
