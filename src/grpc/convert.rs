//! Conversions between proto messages and domain/store values.

use crate::domain::DomainResult;
use crate::domain::kinds::{
    CareType, DeductibleBasis, FilingType, InsuranceType, LevelScope, PersonCategory, ProvinceScope,
};
use crate::domain::money::{Amount, Ratio, UnitPrice};
use crate::domain::policy::{Assistance, Band, CriticalIllness, Policy, PolicyRule, Reduction};
use crate::domain::time::{fmt_date, fmt_opt_date};
use crate::proto as pb;
use crate::service::policies::Version;
use crate::store::access::AuditRow;
use crate::store::catalogue::CatalogueRow;
use crate::store::filings::FilingRow;
use crate::store::journal::{EntryRow, JournalTxRow};
use crate::store::persons::PersonRecord;
use crate::store::registry::{InstitutionRow, RegionRow};

/// Proto enum values are i32; stored codes are i64 and always come from a valid enum.
fn code32(c: i64) -> i32 {
    i32::try_from(c).unwrap_or(0)
}

pub fn region(r: RegionRow) -> pb::Region {
    pb::Region {
        code: r.code,
        name: r.name,
        province_code: r.province_code,
        bureau_name: r.bureau_name,
    }
}

pub fn institution(r: InstitutionRow) -> pb::Institution {
    pb::Institution {
        code: r.code,
        name: r.name,
        region: r.region,
        kind: code32(r.kind),
        level: u32::try_from(r.level).unwrap_or(0),
        cross_region_enabled: r.cross_region_enabled,
        status: code32(r.status),
        valid_from: fmt_date(r.valid_from),
        valid_until: fmt_opt_date(r.valid_until),
    }
}

pub fn person(r: PersonRecord) -> pb::Person {
    let p = r.person;
    pb::Person {
        psn_no: p.psn_no,
        national_id: p.national_id,
        name: p.name,
        home_region: p.home_region,
        birth_date: fmt_date(p.birth_date),
        status: code32(p.status),
        insurances: r
            .insurances
            .into_iter()
            .map(|i| pb::PersonInsurance {
                insurance_type: code32(i.insurance_type),
                category: code32(i.category),
                status: code32(i.status),
            })
            .collect(),
        card_no: p.card_no.unwrap_or_default(),
        card_status: code32(p.card_status),
        has_evoucher: p.evoucher_token.is_some(),
        assistance_recipient: p.assistance_recipient,
        account_balance: r
            .balance_fen
            .map(|f| Amount::from_fen(f).to_string())
            .unwrap_or_default(),
    }
}

pub fn catalogue_item(r: CatalogueRow) -> pb::CatalogueItem {
    pb::CatalogueItem {
        region: r.region,
        code: r.code,
        name: r.name,
        kind: code32(r.kind),
        class: code32(r.class),
        b_self_pay_ratio: r
            .b_ratio_bp
            .and_then(|bp| Ratio::from_bp(bp).ok())
            .map(|x| x.to_string())
            .unwrap_or_default(),
        price_cap: r
            .cap_micros
            .and_then(|m| UnitPrice::from_micros(m).ok())
            .map(|x| x.to_string())
            .unwrap_or_default(),
        effective_from: fmt_date(r.effective_from),
        version: u64::try_from(r.version).unwrap_or(0),
    }
}

pub fn filing(r: FilingRow) -> pb::Filing {
    pb::Filing {
        filing_id: r.filing_id,
        psn_no: r.psn_no,
        home_region: r.home_region,
        filing_type: code32(r.filing_type),
        destination: r.destination,
        valid_from: fmt_date(r.valid_from),
        valid_until: fmt_opt_date(r.valid_until),
        referring_institution: r.referring_institution.unwrap_or_default(),
        status: code32(r.status),
        revoked_on: fmt_opt_date(r.revoked_on),
        revoke_reason: r.revoke_reason.unwrap_or_default(),
    }
}

pub fn journal_tx(t: JournalTxRow, entries: Vec<EntryRow>) -> pb::JournalTransaction {
    pb::JournalTransaction {
        journal_id: t.journal_id,
        kind: t.kind,
        reference: t.reference,
        business_date: fmt_date(t.business_date),
        booked_at: t.booked_at.to_rfc3339(),
        entries: entries
            .into_iter()
            .map(|e| pb::JournalEntry {
                account: e.account,
                amount: Amount::from_fen(e.amount_fen).to_string(),
            })
            .collect(),
        memo: t.memo,
    }
}

pub fn audit(a: AuditRow) -> pb::AuditRecord {
    pb::AuditRecord {
        audit_id: a.audit_id,
        principal: a.principal,
        rpc: a.rpc,
        request_id: a.request_id,
        outcome: a.outcome,
        detail: a.detail,
        at: a.at.to_rfc3339(),
    }
}

// ------------------------------------------------------------------ policies

pub fn policy_version(v: Version) -> pb::PolicyVersion {
    pb::PolicyVersion {
        region: v.region,
        version: u64::try_from(v.version).unwrap_or(0),
        effective_from: fmt_date(v.effective_from),
        body: v.policy.map(policy_body),
    }
}

fn opt_amount(a: Option<Amount>) -> String {
    a.map(|x| x.to_string()).unwrap_or_default()
}

fn reduction_pb(r: Reduction) -> pb::Reduction {
    let kind = match r {
        Reduction::MinusPoints(p) => pb::reduction::Kind::MinusPoints(p.to_string()),
        Reduction::Factor(f) => pb::reduction::Kind::Factor(f.to_string()),
    };
    pb::Reduction { kind: Some(kind) }
}

fn policy_body(p: Policy) -> pb::PolicyBody {
    pb::PolicyBody {
        rules: p.rules.into_iter().map(rule_pb).collect(),
        filing_reductions: p
            .filing_reductions
            .into_iter()
            .map(|(t, r)| pb::FilingReduction {
                filing_type: code32(t.code()),
                reduction: Some(reduction_pb(r)),
            })
            .collect(),
        unfiled_allowed: p.unfiled_allowed,
        unfiled_reduction: p.unfiled_reduction.map(reduction_pb),
        account_pays_class_c: p.account_pays_class_c,
        pharmacy_national: p.pharmacy_national,
    }
}

fn rule_pb(r: PolicyRule) -> pb::PolicyRule {
    pb::PolicyRule {
        insurance_type: code32(r.insurance_type.code()),
        category: code32(r.category.code()),
        care_type: code32(r.care_type.code()),
        level: code32(r.level.code()),
        province_scope: code32(r.province_scope.code()),
        deductible_basis: code32(r.deductible_basis.code()),
        deductible: r.deductible.to_string(),
        repeat_admission_deductible: r.repeat_admission_deductible.to_string(),
        ratio: r.ratio.to_string(),
        annual_cap: opt_amount(r.annual_cap),
        critical_illness: r.critical_illness.map(|c| pb::CriticalIllnessLayer {
            threshold: c.threshold.to_string(),
            bands: c
                .bands
                .into_iter()
                .map(|b| pb::CriticalIllnessBand {
                    from: b.from.to_string(),
                    to: opt_amount(b.to),
                    ratio: b.ratio.to_string(),
                })
                .collect(),
            annual_cap: opt_amount(c.annual_cap),
        }),
        assistance: r.assistance.map(|a| pb::AssistanceLayer {
            ratio: a.ratio.to_string(),
            annual_cap: a.annual_cap.to_string(),
        }),
    }
}

/// Parses a non-negative amount; "" = None.
fn parse_opt_amount(field: &str, s: &str) -> DomainResult<Option<Amount>> {
    if s.is_empty() {
        Ok(None)
    } else {
        Amount::parse_non_negative(field, s).map(Some)
    }
}

fn parse_reduction(field: &str, r: &pb::Reduction) -> DomainResult<Reduction> {
    match &r.kind {
        Some(pb::reduction::Kind::MinusPoints(p)) => {
            Ratio::parse(&format!("{field}.minus_points"), p).map(Reduction::MinusPoints)
        }
        Some(pb::reduction::Kind::Factor(f)) => {
            Ratio::parse(&format!("{field}.factor"), f).map(Reduction::Factor)
        }
        None => Err(crate::domain::DomainError::invalid(
            field,
            "give minus_points or factor",
        )),
    }
}

/// Parses a policy body; errors name the field path under `body`.
pub fn parse_policy(body: Option<&pb::PolicyBody>) -> DomainResult<Policy> {
    let body = body.ok_or_else(|| crate::domain::DomainError::invalid("body", "is required"))?;
    let rules = body
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| parse_rule(&format!("body.rules[{i}]"), r))
        .collect::<DomainResult<Vec<_>>>()?;
    let filing_reductions = body
        .filing_reductions
        .iter()
        .enumerate()
        .map(|(i, fr)| {
            let f = format!("body.filing_reductions[{i}]");
            let t = FilingType::parse(&format!("{f}.filing_type"), fr.filing_type)?;
            let r = fr.reduction.as_ref().ok_or_else(|| {
                crate::domain::DomainError::invalid(format!("{f}.reduction"), "is required")
            })?;
            Ok((t, parse_reduction(&format!("{f}.reduction"), r)?))
        })
        .collect::<DomainResult<Vec<_>>>()?;
    let unfiled_reduction = body
        .unfiled_reduction
        .as_ref()
        .map(|r| parse_reduction("body.unfiled_reduction", r))
        .transpose()?;
    Ok(Policy {
        rules,
        filing_reductions,
        unfiled_allowed: body.unfiled_allowed,
        unfiled_reduction,
        account_pays_class_c: body.account_pays_class_c,
        pharmacy_national: body.pharmacy_national,
    })
}

fn parse_rule(f: &str, r: &pb::PolicyRule) -> DomainResult<PolicyRule> {
    let field = |name: &str| format!("{f}.{name}");
    let basis = DeductibleBasis::parse(&field("deductible_basis"), r.deductible_basis)?;
    let repeat = if r.repeat_admission_deductible.is_empty() {
        None
    } else {
        Some(Amount::parse_non_negative(
            &field("repeat_admission_deductible"),
            &r.repeat_admission_deductible,
        )?)
    };
    let deductible = Amount::parse_non_negative(&field("deductible"), &r.deductible)?;
    Ok(PolicyRule {
        insurance_type: InsuranceType::parse(&field("insurance_type"), r.insurance_type)?,
        category: PersonCategory::parse(&field("category"), r.category)?,
        care_type: CareType::parse(&field("care_type"), r.care_type)?,
        level: LevelScope::parse(&field("level"), r.level)?,
        province_scope: ProvinceScope::parse(&field("province_scope"), r.province_scope)?,
        deductible_basis: basis,
        deductible,
        // Without a repeat amount a repeat admission pays the full deductible again.
        repeat_admission_deductible: repeat.unwrap_or(deductible),
        ratio: Ratio::parse(&field("ratio"), &r.ratio)?,
        annual_cap: parse_opt_amount(&field("annual_cap"), &r.annual_cap)?,
        critical_illness: r
            .critical_illness
            .as_ref()
            .map(|c| parse_critical(&field("critical_illness"), c))
            .transpose()?,
        assistance: r
            .assistance
            .as_ref()
            .map(|a| {
                Ok::<_, crate::domain::DomainError>(Assistance {
                    ratio: Ratio::parse(&field("assistance.ratio"), &a.ratio)?,
                    annual_cap: Amount::parse_non_negative(
                        &field("assistance.annual_cap"),
                        &a.annual_cap,
                    )?,
                })
            })
            .transpose()?,
    })
}

fn parse_critical(f: &str, c: &pb::CriticalIllnessLayer) -> DomainResult<CriticalIllness> {
    let bands = c
        .bands
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let bf = format!("{f}.bands[{i}]");
            Ok(Band {
                from: Amount::parse_non_negative(&format!("{bf}.from"), &b.from)?,
                to: parse_opt_amount(&format!("{bf}.to"), &b.to)?,
                ratio: Ratio::parse(&format!("{bf}.ratio"), &b.ratio)?,
            })
        })
        .collect::<DomainResult<Vec<_>>>()?;
    Ok(CriticalIllness {
        threshold: Amount::parse_non_negative(&format!("{f}.threshold"), &c.threshold)?,
        bands,
        annual_cap: parse_opt_amount(&format!("{f}.annual_cap"), &c.annual_cap)?,
    })
}
