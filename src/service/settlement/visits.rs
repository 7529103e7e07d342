//! Visits: open (outpatient registration / inpatient admission), update diagnoses, discharge,
//! cancel, get. An institution acts only on its own visits.

use super::context;
use crate::domain::ids::{CardNo, EVoucherToken, Icd10Code, NationalId};
use crate::domain::kinds::{CareType, InsuranceType};
use crate::service::auth::Principal;
use crate::service::error::{AppError, AppResult, unique_as};
use crate::store::Conn;
use crate::store::persons::{self, PersonKey, PersonRow};
use crate::store::registry::{self, InstitutionRow};
use crate::store::settlement::{self, VisitRow};
use chrono::{DateTime, NaiveDate, Utc};

/// Visit statuses as stored (proto VisitStatus).
pub const OPEN: i64 = 1;
pub const DISCHARGED: i64 = 2;
pub const SETTLED: i64 = 3;
pub const CANCELLED: i64 = 4;

/// How the patient identifies themselves.
#[derive(Debug, Clone)]
pub enum Credential {
    NationalId(NationalId),
    CardNo(CardNo),
    EVoucher(EVoucherToken),
}

impl Credential {
    /// The raw value (sensitive: never log it).
    pub fn as_str(&self) -> &str {
        match self {
            Credential::NationalId(n) => n.as_str(),
            Credential::CardNo(n) => n.as_str(),
            Credential::EVoucher(e) => e.as_str(),
        }
    }
}

/// The calling institution's own record (it must be registered).
pub async fn calling_institution(conn: &mut Conn, who: &Principal) -> AppResult<InstitutionRow> {
    let Principal::Institution { code } = who else {
        return Err(AppError::denied(format!(
            "{} is not an institution: only institutions settle",
            who.key()
        )));
    };
    registry::get_institution(conn, code, false)
        .await?
        .ok_or_else(|| {
            AppError::precondition(
                "institution_not_registered",
                format!("{code} is not registered"),
            )
        })
}

/// The person a credential names (`lock` takes the person's row lock: settlements of one person
/// are serialized on it).
pub async fn person_by_credential(
    conn: &mut Conn,
    c: &Credential,
    lock: bool,
) -> AppResult<PersonRow> {
    let key = match c {
        Credential::NationalId(_) => PersonKey::NationalId,
        Credential::CardNo(_) => PersonKey::CardNo,
        Credential::EVoucher(_) => PersonKey::EVoucher,
    };
    persons::find_person(conn, key, c.as_str(), lock)
        .await?
        .ok_or_else(|| AppError::not_found("no insured person matches the credential"))
}

/// A visit of the calling institution (others' visits are PERMISSION_DENIED).
pub async fn own_visit(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    lock: bool,
) -> AppResult<VisitRow> {
    let visit = settlement::get_visit(conn, mdtrt_id, lock)
        .await?
        .ok_or_else(|| AppError::not_found(format!("visit {mdtrt_id} does not exist")))?;
    match who {
        Principal::Institution { code } if *code == visit.institution => Ok(visit),
        _ => Err(AppError::denied(format!(
            "visit {mdtrt_id} belongs to another institution"
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct Open {
    pub credential: Credential,
    pub visit_no: String,
    pub insurance_type: InsuranceType,
    pub care_type: CareType,
    pub diagnoses: Vec<Icd10Code>,
    pub begin_date: NaiveDate,
}

fn join(diagnoses: &[Icd10Code]) -> String {
    diagnoses
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Opens a visit after the same checks a settlement makes (so an ineligible patient is refused
/// at the door, not at the cash desk).
pub async fn open(
    conn: &mut Conn,
    who: &Principal,
    cmd: Open,
    now: DateTime<Utc>,
) -> AppResult<VisitRow> {
    if cmd.care_type == CareType::Pharmacy {
        return Err(AppError::invalid(
            "care_type",
            "pharmacy purchases use PharmacyService",
        ));
    }
    let today = crate::domain::time::business_date(now);
    if cmd.begin_date > today {
        return Err(AppError::invalid(
            "begin_date",
            format!("must not be after today ({today}, UTC+8)"),
        ));
    }
    let institution = calling_institution(conn, who).await?;
    let person = person_by_credential(conn, &cmd.credential, false).await?;
    let ctx = context::resolve(
        conn,
        person,
        institution,
        cmd.insurance_type,
        cmd.care_type,
        cmd.begin_date,
    )
    .await?;
    let visit = VisitRow {
        mdtrt_id: crate::store::new_id("M", now),
        institution: ctx.institution.code.clone(),
        treatment_region: ctx.treatment.as_str().to_owned(),
        visit_no: cmd.visit_no,
        psn_no: ctx.person.psn_no.clone(),
        home_region: ctx.home.as_str().to_owned(),
        insurance_type: cmd.insurance_type.code(),
        care_type: cmd.care_type.code(),
        diagnoses: join(&cmd.diagnoses),
        begin_date: cmd.begin_date,
        end_date: None,
        status: OPEN,
        filing_id: ctx.filing.map(|f| f.filing_id),
        setl_id: None,
    };
    settlement::insert_visit(conn, &visit, now)
        .await
        .map_err(|e| {
            unique_as(
                e,
                "visit",
                format!(
                    "visit number {} is already used by this institution",
                    visit.visit_no
                ),
            )
        })?;
    Ok(visit)
}

fn check_open(v: &VisitRow) -> AppResult<()> {
    match v.status {
        CANCELLED => Err(AppError::precondition(
            "visit_cancelled",
            format!("visit {} is cancelled", v.mdtrt_id),
        )),
        SETTLED => Err(AppError::precondition(
            "visit_settled",
            format!("visit {} is settled", v.mdtrt_id),
        )),
        _ => Ok(()),
    }
}

pub async fn update(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    diagnoses: Vec<Icd10Code>,
) -> AppResult<VisitRow> {
    let mut v = own_visit(conn, who, mdtrt_id, true).await?;
    check_open(&v)?;
    v.diagnoses = join(&diagnoses);
    settlement::update_visit(conn, &v).await?;
    Ok(v)
}

pub async fn discharge(
    conn: &mut Conn,
    who: &Principal,
    mdtrt_id: &str,
    end_date: NaiveDate,
    diagnoses: Vec<Icd10Code>,
) -> AppResult<VisitRow> {
    let mut v = own_visit(conn, who, mdtrt_id, true).await?;
    if v.care_type != CareType::Inpatient.code() && v.care_type != CareType::Maternity.code() {
        return Err(AppError::precondition(
            "not_an_admission",
            "only inpatient and maternity stays are discharged",
        ));
    }
    if v.status == CANCELLED || v.end_date.is_some() {
        return Err(AppError::precondition(
            "visit_not_open",
            format!("visit {mdtrt_id} is cancelled or already discharged"),
        ));
    }
    if end_date < v.begin_date {
        return Err(AppError::invalid(
            "end_date",
            "must not be before the admission date",
        ));
    }
    v.end_date = Some(end_date);
    if v.status == OPEN {
        v.status = DISCHARGED;
    }
    if !diagnoses.is_empty() {
        v.diagnoses = join(&diagnoses);
    }
    settlement::update_visit(conn, &v).await?;
    Ok(v)
}

pub async fn cancel(conn: &mut Conn, who: &Principal, mdtrt_id: &str) -> AppResult<VisitRow> {
    let mut v = own_visit(conn, who, mdtrt_id, true).await?;
    check_open(&v)?;
    settlement::delete_lines(conn, mdtrt_id, None).await?;
    v.status = CANCELLED;
    settlement::update_visit(conn, &v).await?;
    Ok(v)
}

/// A visit: the institution itself, or an operator.
pub async fn get(conn: &mut Conn, who: &Principal, mdtrt_id: &str) -> AppResult<VisitRow> {
    if who.is_operator() {
        return settlement::get_visit(conn, mdtrt_id, false)
            .await?
            .ok_or_else(|| AppError::not_found(format!("visit {mdtrt_id} does not exist")));
    }
    own_visit(conn, who, mdtrt_id, false).await
}
