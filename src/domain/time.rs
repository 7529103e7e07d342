//! Business dates: China Standard Time (UTC+8), whatever the server's time zone.

use super::{DomainError, DomainResult};
use chrono::{DateTime, FixedOffset, NaiveDate, Utc};

/// UTC+8 (checked at compile time).
pub const CST: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

/// The business date (UTC+8) of an instant: 23:30 UTC on 31 October is 1 November.
pub fn business_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&CST).date_naive()
}

/// Parses a strict `YYYY-MM-DD` date.
pub fn parse_date(field: &str, s: &str) -> DomainResult<NaiveDate> {
    let ok_shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !ok_shape {
        return Err(DomainError::invalid(field, "expected a date YYYY-MM-DD"));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| DomainError::invalid(field, format!("{s:?} is not a calendar date")))
}

/// Parses an optional date: "" gives `default`.
pub fn parse_date_or(field: &str, s: &str, default: NaiveDate) -> DomainResult<NaiveDate> {
    if s.is_empty() {
        Ok(default)
    } else {
        parse_date(field, s)
    }
}

/// Parses an optional date: "" gives None.
pub fn parse_opt_date(field: &str, s: &str) -> DomainResult<Option<NaiveDate>> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_date(field, s).map(Some)
    }
}

/// Formats a date as `YYYY-MM-DD`.
pub fn fmt_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Formats an optional date ("" for None).
pub fn fmt_opt_date(d: Option<NaiveDate>) -> String {
    d.map(fmt_date).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn business_date_is_utc_plus_8() {
        let late = Utc.with_ymd_and_hms(2026, 10, 31, 23, 30, 0).unwrap();
        assert_eq!(
            business_date(late),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
        );
        let early = Utc.with_ymd_and_hms(2026, 10, 31, 15, 59, 59).unwrap();
        assert_eq!(
            business_date(early),
            NaiveDate::from_ymd_opt(2026, 10, 31).unwrap()
        );
    }

    #[test]
    fn strict_dates() {
        assert!(parse_date("d", "2026-02-28").is_ok());
        for bad in [
            "2026-02-30",
            "2026-2-28",
            "20260228",
            "2026-02-28T00",
            " 2026-02-28",
            "",
        ] {
            assert!(parse_date("d", bad).is_err(), "{bad}");
        }
    }
}
