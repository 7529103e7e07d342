//! Filing rules: destinations, default validity, overlap.

use super::ids::{ProvinceCode, RegionCode};
use super::kinds::FilingType;
use super::{DomainError, DomainResult};
use chrono::{Days, Months, NaiveDate};

/// Where a filing allows treatment: one region, or a whole province.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Region(RegionCode),
    Province(ProvinceCode),
}

impl Destination {
    /// Parses a 6-digit region or a 2-digit province.
    pub fn parse(field: &str, s: &str) -> DomainResult<Destination> {
        match s.len() {
            6 => RegionCode::parse(field, s).map(Destination::Region),
            2 => ProvinceCode::parse(field, s).map(Destination::Province),
            _ => Err(DomainError::invalid(
                field,
                "expected a 6-digit region or a 2-digit province",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Destination::Region(r) => r.as_str(),
            Destination::Province(p) => p.as_str(),
        }
    }

    fn province(&self) -> &str {
        match self {
            Destination::Region(r) => r.province(),
            Destination::Province(p) => p.as_str(),
        }
    }

    /// Whether treatment in `region` is covered by this destination.
    pub fn covers(&self, region: &RegionCode) -> bool {
        match self {
            Destination::Region(r) => r == region,
            Destination::Province(p) => region.province() == p.as_str(),
        }
    }

    /// Whether two destinations share any region (equal, or one is the other's province).
    pub fn overlaps(&self, other: &Destination) -> bool {
        match (self, other) {
            (Destination::Region(a), Destination::Region(b)) => a == b,
            _ => self.province() == other.province(),
        }
    }
}

/// Last day of a filing when the caller gives none: open-ended for long-term types, six months
/// (less a day) for temporary ones.
pub fn default_valid_until(t: FilingType, from: NaiveDate) -> Option<NaiveDate> {
    if t.is_long_term() {
        None
    } else {
        from.checked_add_months(Months::new(6))
            .and_then(|d| d.checked_sub_days(Days::new(1)))
    }
}

/// Whether [a_from, a_until] and [b_from, b_until] share a day (None = open-ended).
pub fn periods_intersect(
    a_from: NaiveDate,
    a_until: Option<NaiveDate>,
    b_from: NaiveDate,
    b_until: Option<NaiveDate>,
) -> bool {
    a_until.is_none_or(|au| b_from <= au) && b_until.is_none_or(|bu| a_from <= bu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn destinations() {
        let ordos = Destination::parse("destination", "150600").unwrap();
        let inner_mongolia = Destination::parse("destination", "15").unwrap();
        let shizuishan = Destination::parse("destination", "640200").unwrap();
        assert!(ordos.overlaps(&inner_mongolia) && inner_mongolia.overlaps(&ordos));
        assert!(!ordos.overlaps(&shizuishan));
        assert!(inner_mongolia.covers(&RegionCode::parse("r", "150300").unwrap()));
        assert!(Destination::parse("destination", "1506").is_err());
        assert!(Destination::parse("destination", "99").is_err());
    }

    #[test]
    fn temporary_filings_default_to_six_months() {
        assert_eq!(
            default_valid_until(FilingType::Referral, d("2026-11-27")),
            Some(d("2027-05-26"))
        );
        // 31 August + 6 months clamps to 28 February; less a day is 27 February.
        assert_eq!(
            default_valid_until(FilingType::Emergency, d("2026-08-31")),
            Some(d("2027-02-27"))
        );
        assert_eq!(
            default_valid_until(FilingType::RelocatedRetiree, d("2026-11-27")),
            None
        );
    }

    #[test]
    fn intersections() {
        assert!(periods_intersect(
            d("2026-01-01"),
            Some(d("2026-06-30")),
            d("2026-06-30"),
            None
        ));
        assert!(!periods_intersect(
            d("2026-01-01"),
            Some(d("2026-06-29")),
            d("2026-06-30"),
            None
        ));
        assert!(periods_intersect(
            d("2026-01-01"),
            None,
            d("2020-01-01"),
            Some(d("2026-01-01"))
        ));
    }
}
