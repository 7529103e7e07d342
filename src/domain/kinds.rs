//! Closed sets of the domain (insurance types, categories, care types, statuses, …), each with
//! its stable numeric code (the proto enum value, also stored in the database).

use super::{DomainError, DomainResult};
use serde::{Deserialize, Serialize};

/// Declares a code-backed enum with `code()`, `from_code()` and a strict `parse(field, code)`
/// that rejects 0 (UNSPECIFIED) and unknown values.
macro_rules! coded_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable numeric code (proto enum value, database value).
            pub fn code(self) -> i64 {
                match self { $($name::$variant => $code),+ }
            }

            /// The value with this code, if any.
            pub fn from_code(code: i64) -> Option<$name> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }

            /// Parses a request enum value, rejecting UNSPECIFIED (0) and unknown values.
            pub fn parse(field: &str, code: i32) -> DomainResult<$name> {
                $name::from_code(i64::from(code)).ok_or_else(|| {
                    DomainError::invalid(field, if code == 0 {
                        "must be specified".to_string()
                    } else {
                        format!("unknown value {code}")
                    })
                })
            }
        }
    };
}

coded_enum!(
    /// Insurance type (NHSA insutype).
    InsuranceType { Employee = 310, Resident = 390, Maternity = 510 }
);
coded_enum!(
    /// Person category under an insurance type.
    PersonCategory { Active = 1, Retired = 2, Resident = 3 }
);
coded_enum!(
    /// Care type (grouped NHSA med_type).
    CareType { Outpatient = 1, Inpatient = 2, Pharmacy = 3, Maternity = 4 }
);
coded_enum!(
    /// Status of a person or of one of their insurance types.
    PersonStatus { Active = 1, Suspended = 2, Terminated = 3 }
);
coded_enum!(
    /// Social-security card status.
    CardStatus { Active = 1, Lost = 2, Frozen = 3 }
);
coded_enum!(
    /// Institution kind.
    InstitutionKind { Hospital = 1, Pharmacy = 2 }
);
coded_enum!(
    /// Institution status.
    InstitutionStatus { Active = 1, Suspended = 2 }
);
coded_enum!(
    /// Catalogue item class (甲/乙/丙).
    CatalogueClass { A = 1, B = 2, C = 3 }
);
coded_enum!(
    /// Catalogue item kind.
    CatalogueKind { Drug = 1, Service = 2, Material = 3 }
);
coded_enum!(
    /// Deductible basis.
    DeductibleBasis { PerAdmission = 1, Annual = 2 }
);
coded_enum!(
    /// Hospital level a policy rule applies to.
    LevelScope { Any = 1, Level1 = 2, Level2 = 3, Level3 = 4, Pharmacy = 5 }
);
coded_enum!(
    /// Inside or outside the home province.
    ProvinceScope { Any = 1, InProvince = 2, OutOfProvince = 3 }
);
coded_enum!(
    /// Filing type (异地就医备案类型).
    FilingType {
        RelocatedRetiree = 1,
        LongTermResident = 2,
        PostedWorker = 3,
        Referral = 4,
        Emergency = 5,
        OtherTemporary = 6,
    }
);
coded_enum!(
    /// Filing status.
    FilingStatus { Active = 1, Revoked = 2 }
);

impl InsuranceType {
    /// Only the employee scheme has personal accounts.
    pub fn has_personal_account(self) -> bool {
        self == InsuranceType::Employee
    }

    /// Whether `category` is allowed under this insurance type.
    pub fn allows(self, category: PersonCategory) -> bool {
        match self {
            InsuranceType::Employee | InsuranceType::Maternity => {
                matches!(category, PersonCategory::Active | PersonCategory::Retired)
            }
            InsuranceType::Resident => category == PersonCategory::Resident,
        }
    }
}

impl FilingType {
    /// Referral and other temporary stays may get a reduced ratio; long-term and emergency
    /// filings keep the full ratio (DESIGN §3 step 6).
    pub fn is_reducible(self) -> bool {
        matches!(self, FilingType::Referral | FilingType::OtherTemporary)
    }

    /// Long-term filings (relocation, long-term residence, posted work) may be open-ended.
    pub fn is_long_term(self) -> bool {
        matches!(
            self,
            FilingType::RelocatedRetiree | FilingType::LongTermResident | FilingType::PostedWorker
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unspecified_is_rejected() {
        for t in InsuranceType::ALL {
            assert_eq!(InsuranceType::from_code(t.code()), Some(*t));
        }
        assert_eq!(
            InsuranceType::parse("insutype", 310),
            Ok(InsuranceType::Employee)
        );
        assert!(matches!(
            InsuranceType::parse("insutype", 0),
            Err(DomainError::Invalid { .. })
        ));
        assert!(InsuranceType::parse("insutype", 311).is_err());
        assert!(FilingType::parse("t", 5).is_ok_and(|f| !f.is_long_term()));
    }

    #[test]
    fn categories_match_schemes() {
        assert!(InsuranceType::Employee.allows(PersonCategory::Retired));
        assert!(!InsuranceType::Employee.allows(PersonCategory::Resident));
        assert!(InsuranceType::Resident.allows(PersonCategory::Resident));
        assert!(!InsuranceType::Resident.allows(PersonCategory::Active));
    }
}
