//! Validated identifiers. Sensitive ones (national ID, card number, e-voucher
//! token, person name) print MASKED in both `Debug` and `Display`; use
//! `as_str()` for the raw value.

use std::fmt;

use chrono::NaiveDate;

use super::error::{DomainError, DomainResult};

/// Two-digit province-level codes (GB/T 2260), including 71 (Taiwan), 81/82 (HK/Macao).
const PROVINCE_CODES: [&str; 34] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82",
];

/// ISO 7064 MOD 11-2 weights for the 17 body digits of a national ID.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check characters indexed by (weighted sum mod 11).
const ID_CHECK_CHARS: &[u8; 11] = b"10X98765432";

/// True when `s` is non-empty and consists only of ASCII digits.
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// True when `s` is one of the two-digit province codes.
fn is_province_code(s: &str) -> bool {
    PROVINCE_CODES.contains(&s)
}

/// Masks an ASCII secret as first 2 + "****" + last 2 characters.
fn mask_edges(s: &str) -> String {
    let head = s.get(..2).unwrap_or("");
    let tail = s.get(s.len().saturating_sub(2)..).unwrap_or("");
    format!("{head}****{tail}")
}

/// Checks an ASCII string's length is within `min..=max`, else an `Invalid` error.
fn check_len(field: &str, s: &str, min: usize, max: usize) -> DomainResult<()> {
    if (min..=max).contains(&s.len()) {
        return Ok(());
    }
    let reason = if min == max {
        format!("must be exactly {min} characters")
    } else {
        format!("must be {min} to {max} characters")
    };
    Err(DomainError::invalid(field, reason))
}

/// Implements `as_str` and a plain (unmasked) `Display` for a `String` newtype.
macro_rules! plain_id {
    ($ty:ident) => {
        impl $ty {
            /// The validated raw value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// Implements `as_str`, and MASKED `Debug`/`Display` via `self.masked()`.
macro_rules! secret_id {
    ($ty:ident) => {
        impl $ty {
            /// The validated raw value (sensitive: never log it).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($ty))
                    .field(&self.masked())
                    .finish()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.masked())
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Region / province codes
// ---------------------------------------------------------------------------

/// A 6-digit GB/T 2260 pooling-region code at province or prefecture level (ends in "00").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode(String);

impl RegionCode {
    /// Parses a 6-digit region code with a known province prefix, ending in "00".
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        if s.len() != 6 || !all_digits(s) {
            return Err(DomainError::invalid(field, "must be exactly 6 digits"));
        }
        if !is_province_code(&s[..2]) {
            return Err(DomainError::invalid(field, "unknown province prefix"));
        }
        if !s.ends_with("00") {
            let reason = "must be a province or prefecture level code (ending in 00)";
            return Err(DomainError::invalid(field, reason));
        }
        Ok(Self(s.to_owned()))
    }

    /// The two-digit province prefix, e.g. "15" for "150300".
    pub fn province(&self) -> &str {
        &self.0[..2]
    }

    /// The province prefix as a typed [`ProvinceCode`].
    pub fn province_code(&self) -> ProvinceCode {
        ProvinceCode(self.province().to_owned())
    }

    /// True for a province-level code (ends in "0000").
    pub fn is_province_level(&self) -> bool {
        self.0.ends_with("0000")
    }

    /// True when both regions belong to the same province.
    pub fn same_province(&self, other: &RegionCode) -> bool {
        self.province() == other.province()
    }
}

plain_id!(RegionCode);

/// A two-digit GB/T 2260 province code, e.g. "15".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProvinceCode(String);

impl ProvinceCode {
    /// Parses a known two-digit province code.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        if !is_province_code(s) {
            return Err(DomainError::invalid(field, "unknown province code"));
        }
        Ok(Self(s.to_owned()))
    }
}

plain_id!(ProvinceCode);

// ---------------------------------------------------------------------------
// National ID (GB 11643-1999)
// ---------------------------------------------------------------------------

/// Computes the GB 11643 check character for 17 body digits; `None` if not 17 ASCII digits.
pub fn national_id_check_digit(body17: &str) -> Option<char> {
    if body17.len() != 17 || !all_digits(body17) {
        return None;
    }
    let sum: u32 = body17
        .bytes()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    ID_CHECK_CHARS
        .get((sum % 11) as usize)
        .map(|&c| char::from(c))
}

/// Parses the YYYYMMDD birth date (year 1900..=2100) at body positions 6..14.
fn id_birth_date(body17: &str) -> Option<NaiveDate> {
    let year: i32 = body17.get(6..10)?.parse().ok()?;
    let month: u32 = body17.get(10..12)?.parse().ok()?;
    let day: u32 = body17.get(12..14)?.parse().ok()?;
    if !(1900..=2100).contains(&year) {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

/// An 18-character resident identity number (GB 11643-1999); `Debug`/`Display` are MASKED.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NationalId(String);

impl NationalId {
    /// Parses and validates length, digits, birth date and check digit; 'x' normalizes to 'X'.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        if !s.is_ascii() {
            return Err(DomainError::invalid(field, "must be ASCII"));
        }
        check_len(field, s, 18, 18)?;
        let (body, check) = s.split_at(17);
        if !all_digits(body) {
            return Err(DomainError::invalid(
                field,
                "first 17 characters must be digits",
            ));
        }
        let check = check.to_ascii_uppercase();
        if check != "X" && !all_digits(&check) {
            return Err(DomainError::invalid(
                field,
                "last character must be a digit or X",
            ));
        }
        if id_birth_date(body).is_none() {
            return Err(DomainError::invalid(field, "invalid birth date"));
        }
        let expected = national_id_check_digit(body).map(String::from);
        if expected.as_deref() != Some(check.as_str()) {
            return Err(DomainError::invalid(field, "check digit mismatch"));
        }
        Ok(Self(format!("{body}{check}")))
    }

    /// The birth date encoded at characters 7..14 (1-based).
    pub fn birth_date(&self) -> NaiveDate {
        // Validated at parse time; the fallback is unreachable.
        id_birth_date(&self.0[..17]).unwrap_or(NaiveDate::MIN)
    }

    /// Masked form: first 6 + "********" + last 4, e.g. "150302********123X".
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.0[..6], &self.0[14..])
    }
}

secret_id!(NationalId);

// ---------------------------------------------------------------------------
// Institution code
// ---------------------------------------------------------------------------

/// A medical institution code: 'H' (hospital) or 'P' (pharmacy) + 11 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstitutionCode(String);

impl InstitutionCode {
    /// Parses 'H' or 'P' followed by exactly 11 ASCII digits.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        let ok = s.len() == 12 && (s.starts_with('H') || s.starts_with('P')) && all_digits(&s[1..]);
        if !ok {
            let reason = "must be 'H' or 'P' followed by 11 digits";
            return Err(DomainError::invalid(field, reason));
        }
        Ok(Self(s.to_owned()))
    }

    /// The kind letter: 'H' (hospital) or 'P' (pharmacy).
    pub fn kind_letter(&self) -> char {
        if self.0.starts_with('P') { 'P' } else { 'H' }
    }

    /// The 6 region digits following the kind letter.
    pub fn region_digits(&self) -> &str {
        &self.0[1..7]
    }
}

plain_id!(InstitutionCode);

// ---------------------------------------------------------------------------
// Request id, card number, e-voucher token
// ---------------------------------------------------------------------------

/// A client idempotency/request id: 1..=64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    /// Parses 1..=64 ASCII graphic characters (no spaces or controls).
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        check_len(field, s, 1, 64)?;
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::invalid(
                field,
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

plain_id!(RequestId);

/// A social-security card number: 6..=32 ASCII alphanumerics; `Debug`/`Display` MASKED.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardNo(String);

impl CardNo {
    /// Parses 6..=32 ASCII alphanumeric characters.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        check_len(field, s, 6, 32)?;
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(DomainError::invalid(
                field,
                "must be ASCII letters and digits",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// Masked form: first 2 + "****" + last 2.
    pub fn masked(&self) -> String {
        mask_edges(&self.0)
    }
}

secret_id!(CardNo);

/// A medical-insurance e-voucher token: 8..=128 printable ASCII; `Debug`/`Display` MASKED.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EVoucherToken(String);

impl EVoucherToken {
    /// Parses 8..=128 ASCII graphic characters.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        check_len(field, s, 8, 128)?;
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DomainError::invalid(
                field,
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// Masked form: first 2 + "****" + last 2.
    pub fn masked(&self) -> String {
        mask_edges(&self.0)
    }
}

secret_id!(EVoucherToken);

// ---------------------------------------------------------------------------
// Person name
// ---------------------------------------------------------------------------

/// A person's name: 1..=64 Unicode chars, trimmed, no controls; `Debug`/`Display` MASKED.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersonName(String);

impl PersonName {
    /// Trims surrounding whitespace, then requires 1..=64 chars and no control chars.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        let t = s.trim();
        let n = t.chars().count();
        if !(1..=64).contains(&n) {
            return Err(DomainError::invalid(field, "must be 1 to 64 characters"));
        }
        if t.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(t.to_owned()))
    }

    /// Masked form: first char + one '*' per remaining char, e.g. "张**".
    pub fn masked(&self) -> String {
        let mut chars = self.0.chars();
        let first = chars.next().map(String::from).unwrap_or_default();
        first + &"*".repeat(chars.count())
    }
}

secret_id!(PersonName);

// ---------------------------------------------------------------------------
// ICD-10
// ---------------------------------------------------------------------------

/// An ICD-10 diagnosis code, e.g. "J18.9", "E11", "S72.001" (stored uppercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Icd10Code(String);

impl Icd10Code {
    /// Parses letter + 2 digits + optional '.' and 1..=4 alphanumerics; uppercases.
    pub fn parse(field: &str, s: &str) -> DomainResult<Self> {
        let up = s.to_ascii_uppercase();
        if !is_icd10(&up) {
            let reason =
                "must look like J18.9: letter, 2 digits, optional '.' and 1-4 alphanumerics";
            return Err(DomainError::invalid(field, reason));
        }
        Ok(Self(up))
    }
}

/// True when `s` (already uppercased) matches `[A-Z][0-9]{2}(\.[A-Z0-9]{1,4})?`.
fn is_icd10(s: &str) -> bool {
    let b = s.as_bytes();
    let head_ok =
        b.len() >= 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_digit() && b[2].is_ascii_digit();
    if !head_ok {
        return false;
    }
    match &b[3..] {
        [] => true,
        [b'.', rest @ ..] => {
            (1..=4).contains(&rest.len()) && rest.iter().all(u8::is_ascii_alphanumeric)
        }
        _ => false,
    }
}

plain_id!(Icd10Code);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn region_code() {
        let r = RegionCode::parse("region", "150300").unwrap();
        assert_eq!(r.as_str(), "150300");
        assert_eq!(r.province(), "15");
        assert_eq!(r.province_code(), ProvinceCode::parse("p", "15").unwrap());
        assert!(!r.is_province_level());
        let p = RegionCode::parse("region", "150000").unwrap();
        assert!(p.is_province_level());
        assert!(r.same_province(&p));
        assert!(!r.same_province(&RegionCode::parse("r", "640200").unwrap()));
        assert!(RegionCode::parse("r", "810000").is_ok());
        for bad in [
            "", "15030", "1503000", "150301", "990000", "160000", "15030a", "１50300",
        ] {
            assert!(RegionCode::parse("r", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn province_code() {
        assert_eq!(ProvinceCode::parse("p", "64").unwrap().as_str(), "64");
        for bad in ["", "6", "640", "00", "99", "1x"] {
            assert!(ProvinceCode::parse("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn national_id_check_digit_by_hand() {
        // body  1  5  0  3  0  2  1  9  8  0  0  1  0  1  0  0  1
        // wt    7  9 10  5  8  4  2  1  6  3  7  9 10  5  8  4  2
        // prod  7 45  0 15  0  8  2  9 48  0  0  9  0  5  0  0  2  → sum 150
        // 150 mod 11 = 7 → "10X98765432"[7] = '5'
        assert_eq!(national_id_check_digit("15030219800101001"), Some('5'));
        // Same body ending in 4: last product 4×2 = 8 → sum 156, 156 mod 11 = 2 → 'X'
        assert_eq!(national_id_check_digit("15030219800101004"), Some('X'));
        assert_eq!(national_id_check_digit("1503021980010100"), None);
        assert_eq!(national_id_check_digit("1503021980010100a"), None);
    }

    #[test]
    fn national_id_parse() {
        let id = NationalId::parse("national_id", "150302198001010015").unwrap();
        assert_eq!(id.as_str(), "150302198001010015");
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1980, 1, 1).unwrap()
        );
        assert_eq!(id.masked(), "150302********0015");
        assert_eq!(id.to_string(), "150302********0015");
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("198001010015"), "{dbg}");
        assert!(dbg.contains("150302********0015"), "{dbg}");

        let x = NationalId::parse("national_id", "15030219800101004x").unwrap();
        assert_eq!(x.as_str(), "15030219800101004X");
        assert_eq!(x.masked(), "150302********004X");
    }

    #[test]
    fn national_id_rejects() {
        let bad = [
            "150302198001010016",  // wrong check digit
            "15030219800101001X",  // wrong check digit (X)
            "15030219800230001X",  // Feb 30
            "1503021980010100",    // too short
            "1503021980010100155", // too long
            "",
            "15030218990101001X",  // year 1899
            "15030219801301001X",  // month 13
            "1503021980010100Y5",  // non-digit body
            "15030219800101001５", // non-ASCII
        ];
        for s in bad {
            assert!(NationalId::parse("id", s).is_err(), "{s}");
        }
        // Make the bad-date case fail on the date, not only the check digit.
        let body = "15030219800230001";
        let check = national_id_check_digit(body).unwrap();
        let err = NationalId::parse("id", &format!("{body}{check}")).unwrap_err();
        assert_eq!(err, DomainError::invalid("id", "invalid birth date"));
    }

    #[test]
    fn institution_code() {
        let h = InstitutionCode::parse("inst", "H15030200001").unwrap();
        assert_eq!(h.kind_letter(), 'H');
        assert_eq!(h.region_digits(), "150302");
        let p = InstitutionCode::parse("inst", "P64020000123").unwrap();
        assert_eq!(p.kind_letter(), 'P');
        for bad in [
            "h15030200001",
            "X15030200001",
            "H1503020000",
            "H150302000012",
            "H1503020000a",
        ] {
            assert!(InstitutionCode::parse("inst", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_id() {
        assert!(RequestId::parse("r", "req-0001_ABC:x").is_ok());
        assert!(RequestId::parse("r", &"a".repeat(64)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(65),
            "a b".into(),
            "a\n".into(),
            "请求".into(),
        ] {
            assert!(RequestId::parse("r", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn card_and_token_masked() {
        let c = CardNo::parse("card_no", "AB12345678CD").unwrap();
        assert_eq!(c.as_str(), "AB12345678CD");
        assert_eq!(c.to_string(), "AB****CD");
        assert_eq!(format!("{c:?}"), "CardNo(\"AB****CD\")");
        assert!(CardNo::parse("c", "AB123").is_err());
        assert!(CardNo::parse("c", "AB-12345").is_err());
        assert!(CardNo::parse("c", &"1".repeat(33)).is_err());

        let t = EVoucherToken::parse("token", "tok_9f8e7d6c5b").unwrap();
        assert_eq!(t.to_string(), "to****5b");
        assert!(!format!("{t:?}").contains("9f8e7d"));
        assert!(EVoucherToken::parse("t", "short").is_err());
        assert!(EVoucherToken::parse("t", "with space").is_err());
        assert!(EVoucherToken::parse("t", &"x".repeat(129)).is_err());
    }

    #[test]
    fn person_name() {
        let n = PersonName::parse("name", "  张三丰 ").unwrap();
        assert_eq!(n.as_str(), "张三丰");
        assert_eq!(n.to_string(), "张**");
        assert_eq!(format!("{n:?}"), "PersonName(\"张**\")");
        assert_eq!(PersonName::parse("name", "李").unwrap().masked(), "李");
        assert!(PersonName::parse("name", &"张".repeat(64)).is_ok());
        for bad in [
            String::new(),
            "   ".into(),
            "张".repeat(65),
            "张\u{0}三".into(),
            "a\tb".into(),
        ] {
            assert!(PersonName::parse("name", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn icd10() {
        for (input, want) in [
            ("J18.9", "J18.9"),
            ("i21.0", "I21.0"),
            ("E11", "E11"),
            ("S72.001", "S72.001"),
            ("s72.00xa", "S72.00XA"),
        ] {
            assert_eq!(Icd10Code::parse("dx", input).unwrap().as_str(), want);
        }
        for bad in [
            "",
            "J1",
            "J18.",
            "J18.12345",
            "18.9",
            "JJ8.9",
            "J18-9",
            "J18 .9",
            "Ｊ18.9",
        ] {
            assert!(Icd10Code::parse("dx", bad).is_err(), "{bad}");
        }
    }

    /// Strategy: a valid 17-digit body (region digits, real birth date, 3-digit sequence).
    fn valid_body() -> impl Strategy<Value = String> {
        let start = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2100, 12, 31).unwrap();
        let span = (end - start).num_days();
        ("[1-8][0-9]{5}", 0..=span, 0u32..1000).prop_map(move |(region, offset, seq)| {
            let date = start + chrono::Duration::days(offset);
            format!("{region}{}{seq:03}", date.format("%Y%m%d"))
        })
    }

    proptest! {
        #[test]
        fn prop_national_id_check(body in valid_body()) {
            let check = national_id_check_digit(&body).unwrap();
            let id = NationalId::parse("id", &format!("{body}{check}")).unwrap();
            prop_assert_eq!(&id.as_str()[..17], body.as_str());
            for other in "0123456789X".chars().filter(|&c| c != check) {
                let wrong = format!("{body}{other}");
                prop_assert!(NationalId::parse("id", &wrong).is_err(), "accepted {}", wrong);
            }
        }

        #[test]
        fn prop_ids_never_panic(s in "\\PC{0,40}") {
            let _ = RegionCode::parse("f", &s);
            let _ = ProvinceCode::parse("f", &s);
            let _ = NationalId::parse("f", &s);
            let _ = InstitutionCode::parse("f", &s);
            let _ = RequestId::parse("f", &s);
            let _ = CardNo::parse("f", &s).map(|c| c.masked());
            let _ = EVoucherToken::parse("f", &s).map(|t| t.masked());
            let _ = PersonName::parse("f", &s).map(|n| n.masked());
            let _ = Icd10Code::parse("f", &s);
        }
    }
}
