//! A home region's benefit policy: the rules adjudication applies (DESIGN §3). Versions are
//! immutable once stored; this module holds the model and its validation.

use super::kinds::{
    CareType, DeductibleBasis, FilingType, InsuranceType, LevelScope, PersonCategory, ProvinceScope,
};
use super::money::{Amount, Ratio};
use super::{DomainError, DomainResult};
use serde::{Deserialize, Serialize};

/// How a filing type (or unfiled treatment) reduces the pooled-fund ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reduction {
    /// Subtract percentage points (as a fraction: 0.10 = 10 points), floored at 0.
    MinusPoints(Ratio),
    /// Multiply by a factor.
    Factor(Ratio),
}

impl Reduction {
    /// The reduced ratio (never below 0, never above the original).
    pub fn apply(self, ratio: Ratio) -> Ratio {
        let r = ratio.as_decimal();
        let reduced = match self {
            Reduction::MinusPoints(p) => (r - p.as_decimal()).max(rust_decimal::Decimal::ZERO),
            Reduction::Factor(f) => r * f.as_decimal(),
        };
        // ≤ 8 decimals from a product of two 4-decimal ratios; keep 4 (truncate toward zero,
        // so a reduction never raises the ratio).
        let reduced = reduced.trunc_with_scale(4);
        Ratio::from_bp(reduced.mantissa_bp()).unwrap_or(ratio)
    }
}

/// Basis points of a 4-decimal fraction in [0, 1].
trait MantissaBp {
    fn mantissa_bp(&self) -> i64;
}

impl MantissaBp for rust_decimal::Decimal {
    fn mantissa_bp(&self) -> i64 {
        let scaled = (*self * rust_decimal::Decimal::from(10_000)).trunc();
        i64::try_from(scaled).unwrap_or(0)
    }
}

/// One critical-illness band: on burden in [from, to) the layer pays `ratio`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Band {
    pub from: Amount,
    /// None = no upper bound.
    pub to: Option<Amount>,
    pub ratio: Ratio,
}

/// Critical-illness layer (大病保险).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriticalIllness {
    /// Annual in-scope personal burden above which the bands apply.
    pub threshold: Amount,
    pub bands: Vec<Band>,
    /// None = no annual cap.
    pub annual_cap: Option<Amount>,
}

/// Medical-assistance layer (医疗救助), for assistance recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assistance {
    pub ratio: Ratio,
    pub annual_cap: Amount,
}

/// The benefit for one insurance type × category × care type × level × province scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub insurance_type: InsuranceType,
    pub category: PersonCategory,
    pub care_type: CareType,
    pub level: LevelScope,
    pub province_scope: ProvinceScope,
    pub deductible_basis: DeductibleBasis,
    pub deductible: Amount,
    /// Per-admission basis: the deductible of a repeat admission in the same year.
    pub repeat_admission_deductible: Amount,
    /// Pooled-fund ratio above the deductible.
    pub ratio: Ratio,
    /// None = no annual cap.
    pub annual_cap: Option<Amount>,
    pub critical_illness: Option<CriticalIllness>,
    pub assistance: Option<Assistance>,
}

impl PolicyRule {
    /// The rule's matching key (two rules may not share one).
    pub fn key(
        &self,
    ) -> (
        InsuranceType,
        PersonCategory,
        CareType,
        LevelScope,
        ProvinceScope,
    ) {
        (
            self.insurance_type,
            self.category,
            self.care_type,
            self.level,
            self.province_scope,
        )
    }
}

/// A home region's whole policy from one date on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub rules: Vec<PolicyRule>,
    pub filing_reductions: Vec<(FilingType, Reduction)>,
    /// Whether unfiled temporary treatment may settle directly.
    pub unfiled_allowed: bool,
    /// Reduction for unfiled treatment (when allowed).
    pub unfiled_reduction: Option<Reduction>,
    /// Whether the personal account may pay class C items.
    pub account_pays_class_c: bool,
    /// Pharmacy purchases: nationwide (true) or only inside the home province (false).
    pub pharmacy_national: bool,
}

/// What a settlement looks a rule up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleQuery {
    pub insurance_type: InsuranceType,
    pub category: PersonCategory,
    pub care_type: CareType,
    /// The institution's level scope (Level1..3 or Pharmacy).
    pub level: LevelScope,
    /// InProvince or OutOfProvince.
    pub province: ProvinceScope,
}

impl Policy {
    /// Checks the cross-field rules; errors name the field path under `body`.
    pub fn validate(&self) -> DomainResult<()> {
        if self.rules.is_empty() {
            return Err(DomainError::invalid(
                "body.rules",
                "at least one rule is required",
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let field = format!("body.rules[{i}]");
            if self.rules[..i].iter().any(|r| r.key() == rule.key()) {
                return Err(DomainError::invalid(
                    field,
                    "duplicate rule for the same key",
                ));
            }
            if !rule.insurance_type.allows(rule.category) {
                return Err(DomainError::invalid(
                    format!("{field}.category"),
                    "category does not exist under this insurance type",
                ));
            }
            validate_rule_amounts(&field, rule)?;
        }
        for (i, (t, _)) in self.filing_reductions.iter().enumerate() {
            let field = format!("body.filing_reductions[{i}].filing_type");
            if self.filing_reductions[..i].iter().any(|(u, _)| u == t) {
                return Err(DomainError::invalid(field, "filing type listed twice"));
            }
            if !t.is_reducible() {
                return Err(DomainError::invalid(
                    field,
                    "long-term and emergency filings keep the full ratio; only referral and other \
                     temporary filings may be reduced",
                ));
            }
        }
        Ok(())
    }

    /// The most specific rule matching `q`: an exact level beats ANY, an exact province scope
    /// beats ANY.
    pub fn rule_for(&self, q: &RuleQuery) -> Option<&PolicyRule> {
        self.rules
            .iter()
            .filter(|r| {
                r.insurance_type == q.insurance_type
                    && r.category == q.category
                    && r.care_type == q.care_type
                    && (r.level == LevelScope::Any || r.level == q.level)
                    && (r.province_scope == ProvinceScope::Any || r.province_scope == q.province)
            })
            .max_by_key(|r| {
                u8::from(r.level != LevelScope::Any) * 2
                    + u8::from(r.province_scope != ProvinceScope::Any)
            })
    }

    /// The reduction configured for a filing type (None = full ratio).
    pub fn reduction_for(&self, t: FilingType) -> Option<Reduction> {
        self.filing_reductions
            .iter()
            .find(|(u, _)| *u == t)
            .map(|(_, r)| *r)
    }
}

fn validate_rule_amounts(field: &str, rule: &PolicyRule) -> DomainResult<()> {
    let non_neg = |name: &str, a: Amount| {
        if a.is_negative() {
            Err(DomainError::invalid(
                format!("{field}.{name}"),
                "must not be negative",
            ))
        } else {
            Ok(())
        }
    };
    non_neg("deductible", rule.deductible)?;
    non_neg(
        "repeat_admission_deductible",
        rule.repeat_admission_deductible,
    )?;
    if let Some(cap) = rule.annual_cap {
        non_neg("annual_cap", cap)?;
    }
    if let Some(ci) = &rule.critical_illness {
        non_neg("critical_illness.threshold", ci.threshold)?;
        if let Some(cap) = ci.annual_cap {
            non_neg("critical_illness.annual_cap", cap)?;
        }
        validate_bands(&format!("{field}.critical_illness"), ci)?;
    }
    if let Some(a) = &rule.assistance {
        non_neg("assistance.annual_cap", a.annual_cap)?;
    }
    Ok(())
}

fn validate_bands(field: &str, ci: &CriticalIllness) -> DomainResult<()> {
    if ci.bands.is_empty() {
        return Err(DomainError::invalid(
            format!("{field}.bands"),
            "at least one band is required",
        ));
    }
    let mut floor = ci.threshold;
    for (i, b) in ci.bands.iter().enumerate() {
        let f = format!("{field}.bands[{i}]");
        if b.from < floor {
            return Err(DomainError::invalid(
                format!("{f}.from"),
                format!("must be ≥ {floor} (the threshold or the previous band's end)"),
            ));
        }
        match b.to {
            Some(to) if to <= b.from => {
                return Err(DomainError::invalid(
                    format!("{f}.to"),
                    "must be greater than from",
                ));
            }
            Some(to) => floor = to,
            None if i + 1 < ci.bands.len() => {
                return Err(DomainError::invalid(
                    format!("{f}.to"),
                    "only the last band may be open-ended",
                ));
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(s: &str) -> Ratio {
        Ratio::parse("r", s).unwrap()
    }

    fn amount(s: &str) -> Amount {
        Amount::parse("a", s).unwrap()
    }

    fn rule(level: LevelScope, province: ProvinceScope, r: &str) -> PolicyRule {
        PolicyRule {
            insurance_type: InsuranceType::Employee,
            category: PersonCategory::Active,
            care_type: CareType::Inpatient,
            level,
            province_scope: province,
            deductible_basis: DeductibleBasis::PerAdmission,
            deductible: amount("800.00"),
            repeat_admission_deductible: amount("400.00"),
            ratio: ratio(r),
            annual_cap: Some(amount("150000.00")),
            critical_illness: None,
            assistance: None,
        }
    }

    fn policy(rules: Vec<PolicyRule>) -> Policy {
        Policy {
            rules,
            filing_reductions: vec![(FilingType::Referral, Reduction::MinusPoints(ratio("0.10")))],
            unfiled_allowed: false,
            unfiled_reduction: None,
            account_pays_class_c: false,
            pharmacy_national: false,
        }
    }

    #[test]
    fn most_specific_rule_wins() {
        let p = policy(vec![
            rule(LevelScope::Any, ProvinceScope::Any, "0.80"),
            rule(LevelScope::Level3, ProvinceScope::Any, "0.85"),
            rule(LevelScope::Level3, ProvinceScope::OutOfProvince, "0.75"),
        ]);
        p.validate().unwrap();
        let mut q = RuleQuery {
            insurance_type: InsuranceType::Employee,
            category: PersonCategory::Active,
            care_type: CareType::Inpatient,
            level: LevelScope::Level3,
            province: ProvinceScope::OutOfProvince,
        };
        assert_eq!(p.rule_for(&q).unwrap().ratio, ratio("0.75"));
        q.province = ProvinceScope::InProvince;
        assert_eq!(p.rule_for(&q).unwrap().ratio, ratio("0.85"));
        q.level = LevelScope::Level2;
        assert_eq!(p.rule_for(&q).unwrap().ratio, ratio("0.80"));
        q.care_type = CareType::Outpatient;
        assert!(p.rule_for(&q).is_none());
    }

    #[test]
    fn reductions_by_points_and_factor() {
        // 0.85 − 10 points = 0.75; 0.85 × 0.8 = 0.68; 0.05 − 0.10 floors at 0.
        assert_eq!(
            Reduction::MinusPoints(ratio("0.10")).apply(ratio("0.85")),
            ratio("0.75")
        );
        assert_eq!(
            Reduction::Factor(ratio("0.8")).apply(ratio("0.85")),
            ratio("0.68")
        );
        assert_eq!(
            Reduction::MinusPoints(ratio("0.10")).apply(ratio("0.05")),
            ratio("0")
        );
        // 0.925 × 0.9 = 0.8325 exactly; 0.8333 × 0.9 = 0.74997 truncates to 0.7499.
        assert_eq!(
            Reduction::Factor(ratio("0.9")).apply(ratio("0.925")),
            ratio("0.8325")
        );
        assert_eq!(
            Reduction::Factor(ratio("0.9")).apply(ratio("0.8333")),
            ratio("0.7499")
        );
    }

    #[test]
    fn validation_names_the_field() {
        let dup = policy(vec![
            rule(LevelScope::Any, ProvinceScope::Any, "0.80"),
            rule(LevelScope::Any, ProvinceScope::Any, "0.70"),
        ]);
        assert_eq!(
            dup.validate(),
            Err(DomainError::invalid(
                "body.rules[1]",
                "duplicate rule for the same key"
            ))
        );
        let mut r = rule(LevelScope::Any, ProvinceScope::Any, "0.80");
        r.critical_illness = Some(CriticalIllness {
            threshold: amount("20000.00"),
            bands: vec![
                Band {
                    from: amount("20000.00"),
                    to: Some(amount("50000.00")),
                    ratio: ratio("0.6"),
                },
                Band {
                    from: amount("40000.00"),
                    to: None,
                    ratio: ratio("0.7"),
                },
            ],
            annual_cap: None,
        });
        let err = policy(vec![r]).validate().unwrap_err();
        assert!(
            matches!(err, DomainError::Invalid { ref field, .. }
            if field == "body.rules[0].critical_illness.bands[1].from"),
            "{err:?}"
        );
    }

    #[test]
    fn json_carries_amounts_as_strings() {
        let p = policy(vec![rule(LevelScope::Any, ProvinceScope::Any, "0.80")]);
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.contains("\"800.00\"") && json.contains("\"0.8\""),
            "{json}"
        );
        let back: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}
