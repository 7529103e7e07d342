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
pub(super) fn code32(c: i64) -> i32 {
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

/// A person as `who` may see them: in full for their home bureau, masked (national ID, name,
/// card number) for everyone else, operators included.
fn insurance(i: &crate::store::persons::InsuranceRow) -> pb::PersonInsurance {
    pb::PersonInsurance {
        insurance_type: code32(i.insurance_type),
        category: code32(i.category),
        status: code32(i.status),
    }
}

pub fn person(who: &crate::service::auth::Principal, r: PersonRecord) -> pb::Person {
    use crate::domain::ids::{CardNo, NationalId, PersonName};
    let mut p = r.person;
    let own_bureau = matches!(who, crate::service::auth::Principal::Bureau { region } if *region == p.home_region);
    if !own_bureau {
        p.national_id = NationalId::parse("national_id", &p.national_id)
            .map(|n| n.masked())
            .unwrap_or_default();
        p.name = PersonName::parse("name", &p.name)
            .map(|n| n.masked())
            .unwrap_or_default();
        p.card_no = p.card_no.map(|c| {
            CardNo::parse("card_no", &c)
                .map(|c| c.masked())
                .unwrap_or_default()
        });
    }
    pb::Person {
        psn_no: p.psn_no,
        national_id: p.national_id,
        name: p.name,
        home_region: p.home_region,
        birth_date: fmt_date(p.birth_date),
        status: code32(p.status),
        insurances: r.insurances.iter().map(insurance).collect(),
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

// ------------------------------------------------------------------ settlement

use crate::service::settlement::eligibility::Eligibility as EligibilityOut;
use crate::service::settlement::{Explanation, KIND_SETTLEMENT};
use crate::store::settlement::{FeeLineRow, SettlementRow, VisitRow};

pub fn visit(v: VisitRow) -> pb::Visit {
    pb::Visit {
        mdtrt_id: v.mdtrt_id,
        visit_no: v.visit_no,
        institution: v.institution,
        psn_no: v.psn_no,
        insurance_type: code32(v.insurance_type),
        care_type: code32(v.care_type),
        diagnoses: v
            .diagnoses
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
        begin_date: fmt_date(v.begin_date),
        end_date: fmt_opt_date(v.end_date),
        status: code32(v.status),
        filing_id: v.filing_id.unwrap_or_default(),
        setl_id: v.setl_id.unwrap_or_default(),
    }
}

pub fn fee_line(l: FeeLineRow) -> pb::FeeLineResult {
    let a = Amount::from_fen;
    pb::FeeLineResult {
        line_no: l.line_no,
        code: l.code,
        amount: a(l.amount_fen).to_string(),
        class: code32(l.class),
        price_cap: l
            .cap_micros
            .and_then(|m| UnitPrice::from_micros(m).ok())
            .map(|p| p.to_string())
            .unwrap_or_default(),
        b_self_pay_ratio: l
            .b_ratio_bp
            .and_then(|b| Ratio::from_bp(b).ok())
            .map(|r| r.to_string())
            .unwrap_or_default(),
        fulamt_ownpay_amt: a(l.fulamt_fen).to_string(),
        overlmt_selfpay: a(l.overlmt_fen).to_string(),
        preselfpay_amt: a(l.preself_fen).to_string(),
        inscp_scp_amt: a(l.inscp_fen).to_string(),
        catalogue_version: u64::try_from(l.catalogue_version).unwrap_or(0),
        setl_id: l.setl_id.unwrap_or_default(),
    }
}

fn applied_filing(f: &crate::store::filings::FilingRow) -> pb::AppliedFiling {
    pb::AppliedFiling {
        filing_id: f.filing_id.clone(),
        filing_type: code32(f.filing_type),
        destination: f.destination.clone(),
        valid_from: fmt_date(f.valid_from),
        valid_until: fmt_opt_date(f.valid_until),
    }
}

fn accumulators_pb(year: i64, a: &crate::domain::adjudication::Accumulators) -> pb::Accumulators {
    pb::Accumulators {
        year: u32::try_from(year).unwrap_or(0),
        annual_deductible: a.annual_deductible.to_string(),
        pooled_fund: a.fund.to_string(),
        in_scope_burden: a.burden.to_string(),
        critical_illness: a.critical_illness.to_string(),
        assistance: a.assistance.to_string(),
        admissions: u32::try_from(a.admissions).unwrap_or(0),
    }
}

pub(super) fn explanation(e: Explanation) -> pb::Explanation {
    pb::Explanation {
        policy_region: e.policy_region,
        policy_version: u64::try_from(e.policy_version).unwrap_or(0),
        catalogue_versions: e
            .catalogue_versions
            .into_iter()
            .map(|v| u64::try_from(v).unwrap_or(0))
            .collect(),
        filing: e.filing.map(|f| pb::AppliedFiling {
            filing_id: f.filing_id,
            filing_type: code32(f.filing_type),
            destination: f.destination,
            valid_from: f.valid_from,
            valid_until: f.valid_until,
        }),
        base_ratio: e.base_ratio,
        effective_ratio: e.effective_ratio,
        reduction: e.reduction,
        deductible_basis: code32(e.deductible_basis.code()),
        deductible_outstanding: e.deductible_outstanding.to_string(),
        annual_cap_remaining: opt_amount(e.annual_cap_remaining),
        before: Some(accumulators_pb(e.year, &e.before)),
        repeat_admission: e.repeat_admission,
        level: code32(e.level.code()),
        province: code32(e.province.code()),
    }
}

/// NHSA fund_pay_type codes of the fund layers for an insurance type.
fn fund_codes(insurance_type: i64) -> (&'static str, &'static str) {
    match insurance_type {
        390 => ("390100", "390200"),
        510 => ("510100", "330100"),
        _ => ("310100", "330100"),
    }
}

pub fn settlement(s: SettlementRow) -> pb::Settlement {
    let explanation = serde_json::from_str::<Explanation>(&s.explanation).ok();
    settlement_explained(s, explanation)
}

/// A settlement's payments by fund (code, name, fen), those not zero.
pub(super) fn fund_payments(
    s: &SettlementRow,
) -> impl Iterator<Item = (&'static str, &'static str, i64)> {
    let (pooled, large) = fund_codes(s.insurance_type);
    [
        (pooled, "统筹基金 pooled fund", s.hifp_fen),
        (large, "大病保险 critical illness", s.hifmi_fen),
        ("610100", "医疗救助 medical assistance", s.maf_fen),
        ("310200", "个人账户 personal account", s.acct_fen),
    ]
    .into_iter()
    .filter(|(_, _, fen)| *fen != 0)
}

/// [`settlement`] with its explanation at hand, not read back from the row's JSON. (A swipe's
/// answer is encoded from the booked purchase directly: `super::encoded`, held to this mapping by
/// its tests.)
pub fn settlement_explained(s: SettlementRow, explained: Option<Explanation>) -> pb::Settlement {
    let a = Amount::from_fen;
    let funds = fund_payments(&s)
        .map(|(code, name, fen)| pb::FundPayment {
            fund_pay_type: code.into(),
            name: name.into(),
            amount: a(fen).to_string(),
        })
        .collect();
    let explanation = explained.map(explanation);
    pb::Settlement {
        kind: if s.kind == KIND_SETTLEMENT {
            pb::SettlementKind::Settlement as i32
        } else {
            pb::SettlementKind::Reversal as i32
        },
        setl_id: s.setl_id,
        reverses: s.reverses.unwrap_or_default(),
        reversed_by: s.reversed_by.unwrap_or_default(),
        mdtrt_id: s.mdtrt_id.unwrap_or_default(),
        psn_no: s.psn_no,
        home_region: s.home_region,
        treatment_region: s.treatment_region,
        institution: s.institution,
        insurance_type: code32(s.insurance_type),
        care_type: code32(s.care_type),
        settled_at: s.settled_at.to_rfc3339(),
        business_date: fmt_date(s.business_date),
        clearing_period: s.clearing_period,
        medfee_sumamt: a(s.medfee_fen).to_string(),
        fulamt_ownpay_amt: a(s.fulamt_fen).to_string(),
        overlmt_selfpay: a(s.overlmt_fen).to_string(),
        preselfpay_amt: a(s.preself_fen).to_string(),
        inscp_scp_amt: a(s.inscp_fen).to_string(),
        act_pay_dedc: a(s.dedc_fen).to_string(),
        hifp_pay: a(s.hifp_fen).to_string(),
        hifmi_pay: a(s.hifmi_fen).to_string(),
        maf_pay: a(s.maf_fen).to_string(),
        fund_pay_sumamt: a(s.fund_fen).to_string(),
        psn_part_amt: a(s.psn_part_fen).to_string(),
        acct_pay: a(s.acct_fen).to_string(),
        psn_cash_pay: a(s.cash_fen).to_string(),
        balance_after: s
            .balance_after_fen
            .map(|b| a(b).to_string())
            .unwrap_or_default(),
        funds,
        explanation,
        journal_id: s.journal_id,
        request_id: s.request_id,
        line_count: u32::try_from(s.line_count).unwrap_or(0),
    }
}

pub fn eligibility(e: EligibilityOut) -> pb::Eligibility {
    use crate::domain::ids::{NationalId, PersonName};
    let masked_id = NationalId::parse("national_id", &e.person.national_id)
        .map(|n| n.masked())
        .unwrap_or_default();
    let masked_name = PersonName::parse("name", &e.person.name)
        .map(|n| n.masked())
        .unwrap_or_default();
    let (allowed, refusal_rule, refusal_detail, effective_ratio, ded, cap, version) =
        match &e.outcome {
            Ok(a) => (
                true,
                String::new(),
                String::new(),
                a.ctx.effective_ratio.to_string(),
                a.deductible_outstanding.to_string(),
                opt_amount(a.annual_cap_remaining),
                u64::try_from(a.ctx.policy_version).unwrap_or(0),
            ),
            Err((rule, detail)) => (
                false,
                (*rule).to_owned(),
                detail.clone(),
                String::new(),
                String::new(),
                String::new(),
                0,
            ),
        };
    pb::Eligibility {
        psn_no: e.person.psn_no.clone(),
        national_id_masked: masked_id,
        name_masked: masked_name,
        home_region: e.person.home_region.clone(),
        insurances: e.insurances.iter().map(insurance).collect(),
        allowed,
        refusal_rule,
        refusal_detail,
        filing: e.filing.as_ref().map(applied_filing),
        effective_ratio,
        deductible_outstanding: ded,
        annual_cap_remaining: cap,
        account_balance: e
            .balance_fen
            .map(|b| Amount::from_fen(b).to_string())
            .unwrap_or_default(),
        policy_version: version,
    }
}

// ------------------------------------------------------------------ pharmacy

use crate::store::pharmacy::PurchaseLineRow;

/// A line's quantity (×10^4) as the wire writes it; "0" where it is no quantity.
pub(super) fn quantity_text(scaled: i64) -> String {
    use crate::domain::money::Quantity;
    // Zero (nothing refunded) is not a quantity one may give: written without building the
    // error `from_scaled` answers for it.
    match scaled {
        0 => "0".to_owned(),
        _ => Quantity::from_scaled(scaled)
            .map(|q| q.to_string())
            .unwrap_or_else(|_| "0".into()),
    }
}

/// A unit price (micro-yuan) as the wire writes it; "" where it is no price.
pub(super) fn unit_price_text(micros: i64) -> String {
    UnitPrice::from_micros(micros)
        .map(|p| p.to_string())
        .unwrap_or_default()
}

pub fn purchase_line(l: PurchaseLineRow) -> pb::PurchaseLineResult {
    let (q, a) = (quantity_text, Amount::from_fen);
    pb::PurchaseLineResult {
        line_no: l.line_no,
        code: l.code,
        quantity: q(l.qty_scaled),
        unit_price: unit_price_text(l.price_micros),
        amount: a(l.amount_fen).to_string(),
        class: code32(l.class),
        fulamt_ownpay_amt: a(l.fulamt_fen).to_string(),
        overlmt_selfpay: a(l.overlmt_fen).to_string(),
        preselfpay_amt: a(l.preself_fen).to_string(),
        inscp_scp_amt: a(l.inscp_fen).to_string(),
        refunded_quantity: q(l.refunded_qty_scaled),
    }
}

pub fn purchase(s: SettlementRow, lines: Vec<PurchaseLineRow>) -> pb::Purchase {
    let explanation = serde_json::from_str::<Explanation>(&s.explanation).ok();
    purchase_explained(s, lines, explanation)
}

/// [`purchase`] with its explanation at hand (see [`settlement_explained`]).
pub fn purchase_explained(
    s: SettlementRow,
    lines: Vec<PurchaseLineRow>,
    explained: Option<Explanation>,
) -> pb::Purchase {
    pb::Purchase {
        settlement: Some(settlement_explained(s, explained)),
        lines: lines.into_iter().map(purchase_line).collect(),
    }
}

pub fn card_holder(r: PersonRecord, refusal: Option<(&'static str, String)>) -> pb::CardHolder {
    use crate::domain::ids::{NationalId, PersonName};
    let p = &r.person;
    pb::CardHolder {
        psn_no: p.psn_no.clone(),
        national_id_masked: NationalId::parse("national_id", &p.national_id)
            .map(|n| n.masked())
            .unwrap_or_default(),
        name_masked: PersonName::parse("name", &p.name)
            .map(|n| n.masked())
            .unwrap_or_default(),
        home_region: p.home_region.clone(),
        insurances: r.insurances.iter().map(insurance).collect(),
        account_balance: r
            .balance_fen
            .map(|b| Amount::from_fen(b).to_string())
            .unwrap_or_default(),
        allowed: refusal.is_none(),
        refusal_rule: refusal.map(|(rule, _)| rule.to_owned()).unwrap_or_default(),
    }
}
