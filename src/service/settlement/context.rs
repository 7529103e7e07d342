//! Everything a settlement needs to know before adjudicating: the person and insurance held,
//! the institution, the filing that applies, the home policy rule and the effective ratio.
//! Every refusal is FAILED_PRECONDITION naming its rule.

use crate::domain::filing::Destination;
use crate::domain::ids::RegionCode;
use crate::domain::kinds::{
    CardStatus, CareType, FilingType, InstitutionKind, InstitutionStatus, InsuranceType,
    LevelScope, PersonCategory, PersonStatus, ProvinceScope,
};
use crate::domain::money::Ratio;
use crate::domain::policy::{Policy, PolicyRule, Reduction, RuleQuery};
use crate::service::error::{AppError, AppResult};
use crate::service::policies;
use crate::store::Conn;
use crate::store::filings::{self, FilingRow};
use crate::store::persons::{self, InsuranceRow, PersonRow};
use crate::store::registry::InstitutionRow;
use chrono::NaiveDate;
use std::sync::Arc;

/// The resolved facts of one settlement.
#[derive(Debug, Clone)]
pub struct Context {
    pub person: PersonRow,
    pub insurance_type: InsuranceType,
    pub category: PersonCategory,
    pub care_type: CareType,
    pub institution: InstitutionRow,
    pub home: RegionCode,
    pub treatment: RegionCode,
    pub service_date: NaiveDate,
    pub policy_version: i64,
    pub policy: Arc<Policy>,
    pub rule: PolicyRule,
    pub level: LevelScope,
    pub province: ProvinceScope,
    /// The filing used; None = unfiled (allowed by the home policy).
    pub filing: Option<FilingRow>,
    pub base_ratio: Ratio,
    pub effective_ratio: Ratio,
    /// How the ratio was reduced, for the explanation.
    pub reduction: String,
}

fn refuse(rule: &'static str, detail: impl Into<String>) -> AppError {
    AppError::precondition(rule, detail)
}

/// Checks the institution may settle cross-region on `date` for `care_type`.
pub fn check_institution(
    i: &InstitutionRow,
    care_type: CareType,
    date: NaiveDate,
) -> AppResult<()> {
    if i.status != InstitutionStatus::Active.code() {
        return Err(refuse(
            "institution_suspended",
            format!("{} is suspended", i.code),
        ));
    }
    if !i.cross_region_enabled {
        return Err(refuse(
            "institution_not_cross_region",
            format!("{} is not open for cross-region direct settlement", i.code),
        ));
    }
    if date < i.valid_from || i.valid_until.is_some_and(|u| date > u) {
        return Err(refuse(
            "institution_not_designated",
            format!("{} is not designated on {date}", i.code),
        ));
    }
    let pharmacy = i.kind == InstitutionKind::Pharmacy.code();
    if pharmacy != (care_type == CareType::Pharmacy) {
        return Err(refuse(
            "care_type_not_offered",
            format!("{} cannot settle {care_type:?} care", i.code),
        ));
    }
    Ok(())
}

/// Refuses a lost or frozen card.
pub fn check_card(p: &PersonRow) -> AppResult<()> {
    if p.card_status == CardStatus::Lost.code() {
        return Err(refuse(
            "card_lost",
            "the social-security card is reported lost",
        ));
    }
    if p.card_status == CardStatus::Frozen.code() {
        return Err(refuse("card_frozen", "the social-security card is frozen"));
    }
    Ok(())
}

/// Checks the person may settle under `insurance_type`; returns their category.
pub fn check_person(
    p: &PersonRow,
    held: &[InsuranceRow],
    t: InsuranceType,
) -> AppResult<PersonCategory> {
    if p.status != PersonStatus::Active.code() {
        return Err(refuse(
            "person_not_active",
            "the person's insurance is suspended or terminated",
        ));
    }
    check_card(p)?;
    let ins = held
        .iter()
        .find(|i| i.insurance_type == t.code())
        .ok_or_else(|| {
            refuse(
                "insurance_not_held",
                format!("the person holds no {t:?} ({}) insurance", t.code()),
            )
        })?;
    if ins.status != PersonStatus::Active.code() {
        return Err(refuse(
            "insurance_not_active",
            format!("{t:?} insurance is suspended or terminated"),
        ));
    }
    PersonCategory::from_code(ins.category).ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "stored category {} is unknown",
            ins.category
        ))
    })
}

fn level_of(i: &InstitutionRow) -> LevelScope {
    match i.level {
        1 => LevelScope::Level1,
        2 => LevelScope::Level2,
        3 => LevelScope::Level3,
        _ => LevelScope::Pharmacy,
    }
}

/// Priority when several filings cover the treatment: long-term first, then emergency, referral,
/// other temporary.
fn filing_rank(t: Option<FilingType>) -> u8 {
    match t {
        Some(t) if t.is_long_term() => 0,
        Some(FilingType::Emergency) => 1,
        Some(FilingType::Referral) => 2,
        _ => 3,
    }
}

/// The active filing covering treatment in `treatment` on `date`, if any.
pub async fn applicable_filing(
    conn: &mut Conn,
    psn_no: &str,
    treatment: &RegionCode,
    date: NaiveDate,
) -> AppResult<Option<FilingRow>> {
    let mut best: Option<FilingRow> = None;
    for f in filings::for_person(conn, psn_no, false).await? {
        let covers =
            Destination::parse("destination", &f.destination).is_ok_and(|d| d.covers(treatment));
        let valid = f.valid_from <= date && f.valid_until.is_none_or(|u| date <= u);
        if covers && valid {
            let rank = filing_rank(FilingType::from_code(f.filing_type));
            if best
                .as_ref()
                .is_none_or(|b| rank < filing_rank(FilingType::from_code(b.filing_type)))
            {
                best = Some(f);
            }
        }
    }
    Ok(best)
}

fn reduce(ratio: Ratio, r: Option<Reduction>, what: &str) -> (Ratio, String) {
    match r {
        None => (ratio, format!("{what}: none")),
        Some(Reduction::MinusPoints(p)) => (
            Reduction::MinusPoints(p).apply(ratio),
            format!("{what}: minus_points {p}"),
        ),
        Some(Reduction::Factor(f)) => (
            Reduction::Factor(f).apply(ratio),
            format!("{what}: factor {f}"),
        ),
    }
}

/// Resolves the context for settling `person` at `institution` on `service_date`.
pub async fn resolve(
    conn: &mut Conn,
    person: PersonRow,
    institution: InstitutionRow,
    insurance_type: InsuranceType,
    care_type: CareType,
    service_date: NaiveDate,
) -> AppResult<Context> {
    check_institution(&institution, care_type, service_date)?;
    let held = persons::insurances(conn, &person.psn_no).await?;
    let category = check_person(&person, &held, insurance_type)?;
    let home = RegionCode::parse("home_region", &person.home_region)?;
    let treatment = RegionCode::parse("region", &institution.region)?;
    if home == treatment {
        return Err(refuse(
            "not_cross_region",
            "the person is insured in this region: settle locally, not cross-region",
        ));
    }
    let (policy_version, policy) = policies::in_force(conn, &home, service_date).await?;
    let level = level_of(&institution);
    let province = if home.same_province(&treatment) {
        ProvinceScope::InProvince
    } else {
        ProvinceScope::OutOfProvince
    };
    let query = RuleQuery {
        insurance_type,
        category,
        care_type,
        level,
        province,
    };
    let rule = policy.rule_for(&query).cloned().ok_or_else(|| {
        refuse(
            "policy_missing",
            format!(
                "home region {home} policy v{policy_version} has no rule for {insurance_type:?}/{category:?}/\
                 {care_type:?} at {level:?} {province:?}"
            ),
        )
    })?;
    let filing = applicable_filing(conn, &person.psn_no, &treatment, service_date).await?;
    let (effective_ratio, reduction) = match &filing {
        Some(f) => {
            let t = FilingType::from_code(f.filing_type).ok_or_else(|| {
                AppError::Internal(anyhow::anyhow!(
                    "stored filing type {} unknown",
                    f.filing_type
                ))
            })?;
            let r = if t.is_reducible() {
                policy.reduction_for(t)
            } else {
                None
            };
            reduce(rule.ratio, r, &format!("filing {t:?}"))
        }
        None if policy.unfiled_allowed => reduce(rule.ratio, policy.unfiled_reduction, "unfiled"),
        None => {
            return Err(refuse(
                "filing_required",
                format!(
                    "no valid filing covers treatment in {treatment} on {service_date}, and the home policy requires one"
                ),
            ));
        }
    };
    Ok(Context {
        person,
        insurance_type,
        category,
        care_type,
        institution,
        home,
        treatment,
        service_date,
        policy_version,
        base_ratio: rule.ratio,
        policy,
        rule,
        level,
        province,
        filing,
        effective_ratio,
        reduction,
    })
}

/// Resolves the context of a pharmacy purchase on `date`. No filing is needed; the home policy's
/// pharmacy scope decides where its insured may swipe (inside the home province, or anywhere).
/// Without a pharmacy rule the pooled fund pays nothing (the account and cash pay).
pub async fn resolve_pharmacy(
    conn: &mut Conn,
    person: PersonRow,
    institution: InstitutionRow,
    insurance_type: InsuranceType,
    date: NaiveDate,
) -> AppResult<Context> {
    let held = persons::insurances(conn, &person.psn_no).await?;
    let home = pharmacy_precheck(&person, &held, &institution, insurance_type, date)?.1;
    let (policy_version, policy) = policies::in_force(conn, &home, date).await?;
    pharmacy_context(
        person,
        &held,
        institution,
        insurance_type,
        date,
        policy_version,
        policy,
    )
}

/// The checks of a pharmacy purchase that need no policy: institution, person, card, insurance,
/// cross-region. Returns (category, home, treatment region).
pub fn pharmacy_precheck(
    person: &PersonRow,
    held: &[InsuranceRow],
    institution: &InstitutionRow,
    insurance_type: InsuranceType,
    date: NaiveDate,
) -> AppResult<(PersonCategory, RegionCode, RegionCode)> {
    check_institution(institution, CareType::Pharmacy, date)?;
    let category = check_person(person, held, insurance_type)?;
    let home = RegionCode::parse("home_region", &person.home_region)?;
    let treatment = RegionCode::parse("region", &institution.region)?;
    if home == treatment {
        return Err(refuse(
            "not_cross_region",
            "the person is insured in this region: settle locally",
        ));
    }
    Ok((category, home, treatment))
}

/// The pure part of [`resolve_pharmacy`]: every check and the rule, from data already loaded.
pub fn pharmacy_context(
    person: PersonRow,
    held: &[InsuranceRow],
    institution: InstitutionRow,
    insurance_type: InsuranceType,
    date: NaiveDate,
    policy_version: i64,
    policy: Arc<Policy>,
) -> AppResult<Context> {
    let (category, home, treatment) =
        pharmacy_precheck(&person, held, &institution, insurance_type, date)?;
    let in_province = home.same_province(&treatment);
    if !in_province && !policy.pharmacy_national {
        return Err(refuse(
            "pharmacy_out_of_province",
            format!(
                "home region {home} lets its insured swipe only at pharmacies inside province {}",
                home.province()
            ),
        ));
    }
    let province = if in_province {
        ProvinceScope::InProvince
    } else {
        ProvinceScope::OutOfProvince
    };
    let query = RuleQuery {
        insurance_type,
        category,
        care_type: CareType::Pharmacy,
        level: LevelScope::Pharmacy,
        province,
    };
    let (rule, reduction) = match policy.rule_for(&query) {
        Some(r) => (r.clone(), "pharmacy: no filing needed".to_owned()),
        None => (
            no_fund_rule(&query),
            "pharmacy: no rule, the pooled fund pays nothing".to_owned(),
        ),
    };
    Ok(Context {
        person,
        insurance_type,
        category,
        care_type: CareType::Pharmacy,
        institution,
        home,
        treatment,
        service_date: date,
        policy_version,
        base_ratio: rule.ratio,
        effective_ratio: rule.ratio,
        policy,
        rule,
        level: LevelScope::Pharmacy,
        province,
        filing: None,
        reduction,
    })
}

/// A rule under which the pooled fund pays nothing.
fn no_fund_rule(q: &RuleQuery) -> PolicyRule {
    PolicyRule {
        insurance_type: q.insurance_type,
        category: q.category,
        care_type: q.care_type,
        level: q.level,
        province_scope: q.province,
        deductible_basis: crate::domain::kinds::DeductibleBasis::Annual,
        deductible: crate::domain::money::Amount::ZERO,
        repeat_admission_deductible: crate::domain::money::Amount::ZERO,
        ratio: Ratio::ZERO,
        annual_cap: None,
        critical_illness: None,
        assistance: None,
    }
}
