//! Eligibility (NHSA 2001 + checks): who the patient is and whether they may settle here.

use super::accumulators;
use super::context::{self, Context};
use super::settle::outstanding;
use super::visits::{self, Credential};
use crate::domain::kinds::{CareType, InsuranceType};
use crate::domain::money::Amount;
use crate::service::auth::Principal;
use crate::service::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::filings::FilingRow;
use crate::store::persons::{self, InsuranceRow, PersonRow};
use crate::store::settlement;
use chrono::{Datelike, NaiveDate};

/// The answer: the person, and either the context that applies or the rule that refuses.
#[derive(Debug, Clone)]
pub struct Eligibility {
    pub person: PersonRow,
    pub insurances: Vec<InsuranceRow>,
    pub balance_fen: Option<i64>,
    pub outcome: Result<Allowed, (&'static str, String)>,
    /// The filing covering the treatment, even when settlement is refused for another reason.
    pub filing: Option<FilingRow>,
}

#[derive(Debug, Clone)]
pub struct Allowed {
    pub ctx: Context,
    pub deductible_outstanding: Amount,
    pub annual_cap_remaining: Option<Amount>,
}

pub async fn check(
    conn: &mut Conn,
    who: &Principal,
    credential: &Credential,
    insurance_type: InsuranceType,
    care_type: CareType,
    date: NaiveDate,
) -> AppResult<Eligibility> {
    let institution = visits::calling_institution(conn, who).await?;
    let person = visits::person_by_credential(conn, credential, false).await?;
    let insurances = persons::insurances(conn, &person.psn_no).await?;
    let balance_fen = persons::account_balance(conn, &person.psn_no, false).await?;
    let treatment = crate::domain::ids::RegionCode::parse("region", &institution.region)?;
    let filing = context::applicable_filing(conn, &person.psn_no, &treatment, date).await?;
    let outcome = match context::resolve(
        conn,
        person.clone(),
        institution,
        insurance_type,
        care_type,
        date,
    )
    .await
    {
        Ok(ctx) => {
            let year = i64::from(date.year());
            let acc = settlement::read_accumulator(
                conn,
                &person.psn_no,
                insurance_type.code(),
                year,
                false,
            )
            .await?
            .unwrap_or_default();
            let (deductible_outstanding, annual_cap_remaining) =
                outstanding(&ctx, &accumulators(&acc), care_type == CareType::Inpatient);
            Ok(Allowed {
                ctx,
                deductible_outstanding,
                annual_cap_remaining,
            })
        }
        Err(AppError::Precondition { rule, detail }) => Err((rule, detail)),
        Err(e) => return Err(e),
    };
    Ok(Eligibility {
        person,
        insurances,
        balance_fen,
        outcome,
        filing,
    })
}
