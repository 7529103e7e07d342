//! Money and decimal quantities: the ONE module converting wire strings and
//! stored integers into exact decimal values. No floating point anywhere.
//!
//! Storage units: [`Amount`] ↔ fen (i64, 0.01 yuan), [`UnitPrice`] ↔ micro-yuan
//! (i64, 0.000001 yuan), [`Quantity`] ↔ 1/10000 units (i64), [`Ratio`] ↔ basis
//! points (i64, 1/10000).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{DomainError, DomainResult};

/// Decimal places of an [`Amount`] (fen).
const AMOUNT_DP: u32 = 2;
/// Decimal places of a [`UnitPrice`] (micro-yuan).
const PRICE_DP: u32 = 6;
/// Decimal places of a [`Quantity`].
const QTY_DP: u32 = 4;
/// Decimal places of a [`Ratio`] (basis points).
const RATIO_DP: u32 = 4;
/// Basis points representing a ratio of exactly 1.
const BP_ONE: i64 = 10_000;

/// Rounds `d` (yuan) to 2 decimals, half-up: a midpoint (…5) rounds away from zero.
///
/// This is THE single rounding function of the system. Negative values round
/// symmetrically (`round_half_up(-x) == -round_half_up(x)`), so the reversal
/// of a rounded amount is exactly the negation of that rounded amount.
pub fn round_half_up(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(AMOUNT_DP, RoundingStrategy::MidpointAwayFromZero)
}

/// True when `s` is non-empty and consists only of ASCII digits.
fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a strict decimal string into (negative, integer digits, fraction digits).
fn split_strict<'a>(field: &str, s: &'a str) -> DomainResult<(bool, &'a str, &'a str)> {
    if s.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) if all_digits(f) => (i, f),
        Some(_) => return Err(bad_format(field)),
        None => (body, ""),
    };
    if !all_digits(int) {
        return Err(bad_format(field));
    }
    Ok((neg, int, frac))
}

/// The error for a string that is not a plain decimal number.
fn bad_format(field: &str) -> DomainError {
    DomainError::invalid(
        field,
        "must be a plain decimal number: optional '-', digits, optional '.' and digits",
    )
}

/// Strictly parses `s` into an integer count of 10^-`dp` units.
///
/// Accepts `-?[0-9]{1,max_int}(\.[0-9]{1,dp})?`; nothing else.
fn parse_scaled(field: &str, s: &str, max_int: usize, dp: u32) -> DomainResult<i64> {
    let (neg, int, frac) = split_strict(field, s)?;
    if int.len() > max_int {
        let reason = format!("must have at most {max_int} integer digits");
        return Err(DomainError::invalid(field, reason));
    }
    if frac.len() > dp as usize {
        let reason = format!("must have at most {dp} decimal places");
        return Err(DomainError::invalid(field, reason));
    }
    let padding = std::iter::repeat_n(b'0', dp as usize - frac.len());
    let value = (int.bytes().chain(frac.bytes()).chain(padding))
        .try_fold(0i64, |acc, b| {
            acc.checked_mul(10)?.checked_add(i64::from(b - b'0'))
        })
        .ok_or_else(|| DomainError::invalid(field, "out of range"))?;
    Ok(if neg { -value } else { value })
}

/// Extracts the i64 mantissa of `d` at exactly `dp` decimals, saturating (never hit for valid values).
fn mantissa_at(d: Decimal, dp: u32) -> i64 {
    let mut d = d;
    d.rescale(dp);
    let m = d.mantissa();
    i64::try_from(m).unwrap_or(if m < 0 { -i64::MAX } else { i64::MAX })
}

/// Writes `units` × 10^-`dp` as a plain decimal with trailing fraction zeros trimmed down to
/// `min_dp` decimals (`min_dp` ≤ `dp` ≤ 18): "-12.30" for (-1230, 2, 2), "0.5" for (5000, 4, 0).
/// Integer arithmetic on a stack buffer, one write: every amount of every answer is formatted
/// here, most of them on the swipe writer's thread. Zero is never signed.
fn write_scaled(f: &mut fmt::Formatter<'_>, units: i64, dp: u32, min_dp: u32) -> fmt::Result {
    f.write_str(scaled_text(units, dp, min_dp, &mut [0; SCALED_TEXT]))
}

/// Bytes [`scaled_text`] needs: a u64 has at most 20 digits; sign, point and fraction around them.
const SCALED_TEXT: usize = 1 + 20 + 1 + MAX_DP;
/// Decimals [`scaled_text`] writes at most.
const MAX_DP: usize = 18;

/// The text [`write_scaled`] writes, built in `out`.
fn scaled_text(units: i64, dp: u32, min_dp: u32, out: &mut [u8; SCALED_TEXT]) -> &str {
    // Only ASCII digits, sign and point are written.
    std::str::from_utf8(scaled_ascii(units, dp, min_dp, out)).unwrap_or_default()
}

/// [`scaled_text`]'s bytes, not checked as UTF-8 (a third of the work for a short amount).
fn scaled_ascii(units: i64, dp: u32, min_dp: u32, out: &mut [u8; SCALED_TEXT]) -> &[u8] {
    let dp = (dp as usize).min(MAX_DP);
    let min_dp = (min_dp as usize).min(dp);
    let mut m = units.unsigned_abs();
    let mut frac = [b'0'; MAX_DP];
    for d in frac[..dp].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    let mut shown = dp;
    while shown > min_dp && frac[shown - 1] == b'0' {
        shown -= 1;
    }
    let mut start = 1 + 20;
    loop {
        start -= 1;
        out[start] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if units < 0 {
        start -= 1;
        out[start] = b'-';
    }
    let mut end = 1 + 20;
    if shown > 0 {
        out[end] = b'.';
        out[end + 1..end + 1 + shown].copy_from_slice(&frac[..shown]);
        end += 1 + shown;
    }
    &out[start..end]
}

/// Implements serde (de)serialization as a decimal STRING via `Display` and `parse`.
macro_rules! string_serde {
    ($ty:ty, $field:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                <$ty>::parse($field, &s).map_err(serde::de::Error::custom)
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Amount
// ---------------------------------------------------------------------------

/// A money amount in yuan with exactly 2 decimals (i.e. an integer number of fen).
///
/// Invariant: the value in fen lies in `-i64::MAX..=i64::MAX` (symmetric, so
/// negation is always exact). Amounts parsed from the wire have at most 15
/// integer digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(Decimal);

impl Amount {
    /// Zero yuan ("0.00").
    pub const ZERO: Amount = Amount(Decimal::from_parts(0, 0, 0, false, AMOUNT_DP));
    /// Largest representable amount: `i64::MAX` fen.
    pub const MAX: Amount = Amount(Decimal::from_parts(
        u32::MAX,
        i32::MAX as u32,
        0,
        false,
        AMOUNT_DP,
    ));
    /// Smallest representable amount: `-i64::MAX` fen.
    pub const MIN: Amount = Amount(Decimal::from_parts(
        u32::MAX,
        i32::MAX as u32,
        0,
        true,
        AMOUNT_DP,
    ));
    /// Maximum integer (yuan) digits accepted on the wire.
    pub const MAX_INT_DIGITS: usize = 15;

    /// Zero yuan ("0.00").
    pub const fn zero() -> Amount {
        Amount::ZERO
    }

    /// Strictly parses a wire yuan string (`-?digits(.d{1,2})?`, ≤15 integer digits).
    pub fn parse(field: &str, s: &str) -> DomainResult<Amount> {
        parse_scaled(field, s, Self::MAX_INT_DIGITS, AMOUNT_DP).map(Amount::from_fen)
    }

    /// Like [`Amount::parse`] but rejects negative yuan values ("-0" is accepted as 0).
    pub fn parse_non_negative(field: &str, s: &str) -> DomainResult<Amount> {
        let a = Amount::parse(field, s)?;
        if a.is_negative() {
            return Err(DomainError::invalid(field, "must not be negative"));
        }
        Ok(a)
    }

    /// `f` given the bytes of the text `Amount::from_fen(fen)` displays ("-12.30"; ASCII), built
    /// on the stack: for encoders that copy it into their own buffer (no `String` made).
    pub fn with_ascii<R>(fen: i64, f: impl FnOnce(&[u8]) -> R) -> R {
        let fen = fen.max(-i64::MAX);
        f(scaled_ascii(
            fen,
            AMOUNT_DP,
            AMOUNT_DP,
            &mut [0; SCALED_TEXT],
        ))
    }

    /// Builds an amount from integer fen (0.01 yuan); `i64::MIN` saturates to `-i64::MAX`.
    pub fn from_fen(fen: i64) -> Amount {
        Amount(Decimal::new(fen.max(-i64::MAX), AMOUNT_DP))
    }

    /// The exact value in integer fen (0.01 yuan).
    pub fn to_fen(&self) -> i64 {
        mantissa_at(self.0, AMOUNT_DP)
    }

    /// Rounds a yuan decimal with [`round_half_up`]; saturates at [`Amount::MIN`]/[`Amount::MAX`].
    pub fn from_decimal_rounded(d: Decimal) -> Amount {
        Amount::checked_from_decimal_rounded(d).unwrap_or(if d.is_sign_negative() {
            Amount::MIN
        } else {
            Amount::MAX
        })
    }

    /// Rounds a yuan decimal with [`round_half_up`]; `None` if it exceeds the i64 fen range.
    pub fn checked_from_decimal_rounded(d: Decimal) -> Option<Amount> {
        let fen = round_half_up(d)
            .checked_mul(Decimal::ONE_HUNDRED)?
            .to_i64()?;
        (fen != i64::MIN).then(|| Amount::from_fen(fen))
    }

    /// The value in yuan as an exact decimal (scale 2).
    pub fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// True when the amount is strictly below zero yuan.
    pub fn is_negative(&self) -> bool {
        self.0 < Decimal::ZERO
    }

    /// True when the amount is exactly zero yuan.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// Absolute value in yuan (always exact thanks to the symmetric range).
    pub fn abs(&self) -> Amount {
        Amount::from_fen(self.to_fen().abs())
    }

    /// Exact sum in yuan; `None` when outside the i64 fen range.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        let fen = self.to_fen().checked_add(other.to_fen())?;
        (fen != i64::MIN).then(|| Amount::from_fen(fen))
    }

    /// Exact difference in yuan; `None` when outside the i64 fen range.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        let fen = self.to_fen().checked_sub(other.to_fen())?;
        (fen != i64::MIN).then(|| Amount::from_fen(fen))
    }

    /// Sum in yuan, saturating at [`Amount::MIN`]/[`Amount::MAX`].
    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount::from_fen(self.to_fen().saturating_add(other.to_fen()))
    }

    /// Difference in yuan, saturating at [`Amount::MIN`]/[`Amount::MAX`].
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount::from_fen(self.to_fen().saturating_sub(other.to_fen()))
    }

    /// `self × ratio` in yuan, computed exactly then rounded once with [`round_half_up`].
    pub fn apply_ratio(self, ratio: Ratio) -> Amount {
        // |fen × bp| ≤ 9.3e22 < 7.9e28, so the exact product always fits a Decimal.
        let product = i128::from(self.to_fen()) * i128::from(ratio.to_bp());
        Decimal::try_from_i128_with_scale(product, AMOUNT_DP + RATIO_DP)
            .map_or(Amount::ZERO, Amount::from_decimal_rounded)
    }
}

impl Default for Amount {
    /// Zero yuan ("0.00").
    fn default() -> Self {
        Amount::ZERO
    }
}

impl fmt::Display for Amount {
    /// Yuan with exactly 2 decimals, e.g. "0.00", "-12.30", "23442.46".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scaled(f, self.to_fen(), AMOUNT_DP, AMOUNT_DP)
    }
}

impl Add for Amount {
    type Output = Amount;
    /// Saturating yuan addition (use [`Amount::checked_add`] to detect overflow).
    fn add(self, rhs: Amount) -> Amount {
        self.saturating_add(rhs)
    }
}

impl Sub for Amount {
    type Output = Amount;
    /// Saturating yuan subtraction (use [`Amount::checked_sub`] to detect overflow).
    fn sub(self, rhs: Amount) -> Amount {
        self.saturating_sub(rhs)
    }
}

impl Neg for Amount {
    type Output = Amount;
    /// Exact negation in yuan.
    fn neg(self) -> Amount {
        Amount::from_fen(-self.to_fen())
    }
}

impl AddAssign for Amount {
    /// Saturating in-place yuan addition.
    fn add_assign(&mut self, rhs: Amount) {
        *self = *self + rhs;
    }
}

impl SubAssign for Amount {
    /// Saturating in-place yuan subtraction.
    fn sub_assign(&mut self, rhs: Amount) {
        *self = *self - rhs;
    }
}

impl Sum for Amount {
    /// Saturating sum of yuan amounts.
    fn sum<I: Iterator<Item = Amount>>(iter: I) -> Amount {
        iter.fold(Amount::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Amount> for Amount {
    /// Saturating sum of borrowed yuan amounts.
    fn sum<I: Iterator<Item = &'a Amount>>(iter: I) -> Amount {
        iter.copied().sum()
    }
}

string_serde!(Amount, "amount");

// ---------------------------------------------------------------------------
// UnitPrice
// ---------------------------------------------------------------------------

/// A non-negative unit price in yuan with up to 6 decimals (stored as micro-yuan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitPrice(Decimal);

impl UnitPrice {
    /// Maximum integer (yuan) digits accepted on the wire.
    pub const MAX_INT_DIGITS: usize = 12;

    /// Strictly parses a non-negative yuan price (≤6 decimals, ≤12 integer digits).
    pub fn parse(field: &str, s: &str) -> DomainResult<UnitPrice> {
        let micros = parse_scaled(field, s, Self::MAX_INT_DIGITS, PRICE_DP)?;
        Self::from_micros_in(field, micros)
    }

    /// Builds a price from micro-yuan (0.000001 yuan); rejects negative values.
    pub fn from_micros(micros: i64) -> DomainResult<UnitPrice> {
        Self::from_micros_in("unit_price", micros)
    }

    /// Builds a price from micro-yuan, reporting errors against `field`.
    fn from_micros_in(field: &str, micros: i64) -> DomainResult<UnitPrice> {
        if micros < 0 {
            return Err(DomainError::invalid(field, "must not be negative"));
        }
        Ok(UnitPrice(Decimal::new(micros, PRICE_DP)))
    }

    /// The exact value in integer micro-yuan (0.000001 yuan).
    pub fn to_micros(&self) -> i64 {
        mantissa_at(self.0, PRICE_DP)
    }

    /// The price in yuan as an exact decimal.
    pub fn as_decimal(&self) -> Decimal {
        self.0
    }
}

impl fmt::Display for UnitPrice {
    /// Yuan, trailing zeros trimmed but at least 2 decimals, e.g. "12.50", "0.123456".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scaled(f, self.to_micros(), PRICE_DP, 2)
    }
}

string_serde!(UnitPrice, "unit_price");

// ---------------------------------------------------------------------------
// Quantity
// ---------------------------------------------------------------------------

/// A non-zero item quantity with up to 4 decimals; negative for refund lines (stored ×10^4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(Decimal);

impl Quantity {
    /// Maximum integer digits accepted on the wire.
    pub const MAX_INT_DIGITS: usize = 8;

    /// Strictly parses a non-zero quantity (≤4 decimals, ≤8 integer digits, may be negative).
    pub fn parse(field: &str, s: &str) -> DomainResult<Quantity> {
        let scaled = parse_scaled(field, s, Self::MAX_INT_DIGITS, QTY_DP)?;
        Self::from_scaled_in(field, scaled)
    }

    /// Builds a quantity from units of 1/10000; rejects zero.
    pub fn from_scaled(scaled: i64) -> DomainResult<Quantity> {
        Self::from_scaled_in("quantity", scaled)
    }

    /// Builds a quantity from units of 1/10000, reporting errors against `field`.
    fn from_scaled_in(field: &str, scaled: i64) -> DomainResult<Quantity> {
        if scaled == 0 {
            return Err(DomainError::invalid(field, "must not be zero"));
        }
        Ok(Quantity(Decimal::new(scaled.max(-i64::MAX), QTY_DP)))
    }

    /// The exact value in integer units of 1/10000.
    pub fn to_scaled(&self) -> i64 {
        mantissa_at(self.0, QTY_DP)
    }

    /// True for refund (negative) quantities.
    pub fn is_negative(&self) -> bool {
        self.0 < Decimal::ZERO
    }

    /// The quantity as an exact decimal.
    pub fn as_decimal(&self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Quantity {
    /// Trailing zeros trimmed, e.g. "2", "-1", "0.5", "1.25".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scaled(f, self.to_scaled(), QTY_DP, 0)
    }
}

string_serde!(Quantity, "quantity");

// ---------------------------------------------------------------------------
// Ratio
// ---------------------------------------------------------------------------

/// A fraction in [0, 1] with at most 4 decimals (stored as basis points, 1/10000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ratio(Decimal);

impl Ratio {
    /// The ratio 0 (0 bp).
    pub const ZERO: Ratio = Ratio(Decimal::from_parts(0, 0, 0, false, RATIO_DP));
    /// The ratio 1 (10000 bp).
    pub const ONE: Ratio = Ratio(Decimal::from_parts(BP_ONE as u32, 0, 0, false, RATIO_DP));

    /// Strictly parses a ratio in [0, 1] with at most 4 decimals, e.g. "0.85", "1".
    pub fn parse(field: &str, s: &str) -> DomainResult<Ratio> {
        let bp = parse_scaled(field, s, 1, RATIO_DP)?;
        Self::from_bp_in(field, bp)
    }

    /// Builds a ratio from basis points (0..=10000); rejects anything outside.
    pub fn from_bp(bp: i64) -> DomainResult<Ratio> {
        Self::from_bp_in("ratio", bp)
    }

    /// Builds a ratio from basis points, reporting errors against `field`.
    fn from_bp_in(field: &str, bp: i64) -> DomainResult<Ratio> {
        if !(0..=BP_ONE).contains(&bp) {
            return Err(DomainError::invalid(field, "must be between 0 and 1"));
        }
        Ok(Ratio(Decimal::new(bp, RATIO_DP)))
    }

    /// The ratio in basis points (×10000), e.g. 0.85 → 8500.
    pub fn to_bp(&self) -> i64 {
        mantissa_at(self.0, RATIO_DP)
    }

    /// The ratio as an exact decimal fraction.
    pub fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// `1 − self` (e.g. the patient share for a fund ratio), exact.
    pub fn complement(&self) -> Ratio {
        Ratio(Decimal::new(BP_ONE - self.to_bp(), RATIO_DP))
    }
}

impl fmt::Display for Ratio {
    /// Trailing zeros trimmed, e.g. "0.85", "1", "0".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scaled(f, self.to_bp(), RATIO_DP, 0)
    }
}

string_serde!(Ratio, "ratio");

// ---------------------------------------------------------------------------
// Line amount
// ---------------------------------------------------------------------------

/// Line total in yuan = `round_half_up(qty × price)`; saturates at [`Amount::MIN`]/[`Amount::MAX`].
pub fn line_amount(qty: Quantity, price: UnitPrice) -> Amount {
    checked_line_amount(qty, price).unwrap_or(if qty.is_negative() {
        Amount::MIN
    } else {
        Amount::MAX
    })
}

/// Line total in yuan = `round_half_up(qty × price)`, computed exactly; `None` if out of range.
pub fn checked_line_amount(qty: Quantity, price: UnitPrice) -> Option<Amount> {
    let product = i128::from(qty.to_scaled()) * i128::from(price.to_micros());
    let exact = Decimal::try_from_i128_with_scale(product, QTY_DP + PRICE_DP).ok()?;
    Amount::checked_from_decimal_rounded(exact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn amt(s: &str) -> Amount {
        Amount::parse("amount", s).unwrap()
    }

    #[test]
    fn round_half_up_examples() {
        assert_eq!(round_half_up(dec("0.005")), dec("0.01"));
        assert_eq!(round_half_up(dec("0.004")), dec("0.00"));
        assert_eq!(round_half_up(dec("2.675")), dec("2.68"));
        assert_eq!(round_half_up(dec("-0.005")), dec("-0.01"));
        assert_eq!(round_half_up(dec("-2.675")), dec("-2.68"));
        assert_eq!(round_half_up(dec("1.2349999")), dec("1.23"));
        assert_eq!(round_half_up(dec("7")), dec("7"));
    }

    #[test]
    fn amount_parse_and_display() {
        assert_eq!(amt("0").to_string(), "0.00");
        assert_eq!(amt("-12.3").to_string(), "-12.30");
        assert_eq!(amt("23442.46").to_string(), "23442.46");
        assert_eq!(amt("-0").to_string(), "0.00");
        assert_eq!(amt("007.5").to_fen(), 750);
        assert_eq!(amt("999999999999999.99").to_fen(), 99_999_999_999_999_999);
        assert_eq!(Amount::default().to_string(), "0.00");
        assert_eq!(Amount::zero(), amt("0.00"));
    }

    #[test]
    fn amount_parse_rejects() {
        let bad = [
            "1e5",
            "NaN",
            "nan",
            "inf",
            "1.234",
            " 1",
            "1 ",
            "+1",
            "",
            ".5",
            "5.",
            "1,00",
            "-",
            "--1",
            "1.2.3",
            "-.5",
            "0x10",
            "１",
            "1_000",
            "1000000000000000",
        ];
        for s in bad {
            let err = Amount::parse("total", s).unwrap_err();
            assert!(
                matches!(&err, DomainError::Invalid { field, .. } if field == "total"),
                "{s:?} -> {err:?}"
            );
        }
    }

    #[test]
    fn amount_non_negative() {
        assert!(Amount::parse_non_negative("a", "-0.01").is_err());
        assert_eq!(Amount::parse_non_negative("a", "-0").unwrap(), Amount::ZERO);
        assert_eq!(
            Amount::parse_non_negative("a", "3.1").unwrap().to_fen(),
            310
        );
    }

    #[test]
    fn amount_arithmetic() {
        assert_eq!(amt("1.10") + amt("2.25"), amt("3.35"));
        assert_eq!(amt("1.10") - amt("2.25"), amt("-1.15"));
        assert_eq!(-amt("1.10"), amt("-1.1"));
        assert_eq!(Amount::MAX.checked_add(amt("0.01")), None);
        assert_eq!(Amount::MIN.checked_sub(amt("0.01")), None);
        assert_eq!(Amount::MAX + amt("0.01"), Amount::MAX);
        assert_eq!(Amount::from_fen(i64::MIN), Amount::MIN);
        assert_eq!(-Amount::MIN, Amount::MAX);
        let total: Amount = [amt("1"), amt("2.5"), amt("-0.25")].iter().sum();
        assert_eq!(total, amt("3.25"));
        assert!(amt("-0.01").is_negative());
        assert!(!amt("-0").is_negative());
        assert_eq!(amt("-5").abs(), amt("5"));
    }

    #[test]
    fn amount_from_decimal() {
        assert_eq!(Amount::from_decimal_rounded(dec("10.005")), amt("10.01"));
        assert_eq!(Amount::from_decimal_rounded(dec("-10.005")), amt("-10.01"));
        assert_eq!(Amount::from_decimal_rounded(Decimal::MAX), Amount::MAX);
        assert_eq!(Amount::from_decimal_rounded(Decimal::MIN), Amount::MIN);
        assert_eq!(Amount::checked_from_decimal_rounded(Decimal::MAX), None);
        assert_eq!(Amount::MAX.to_fen(), i64::MAX);
        assert_eq!(Amount::MIN.to_fen(), -i64::MAX);
    }

    #[test]
    fn amount_apply_ratio() {
        let r = Ratio::parse("r", "0.85").unwrap();
        // 1234.57 × 0.85 = 1049.3845 → 1049.38
        assert_eq!(amt("1234.57").apply_ratio(r), amt("1049.38"));
        // 0.03 × 0.5 = 0.015 → 0.02; symmetric for negatives
        let half = Ratio::parse("r", "0.5").unwrap();
        assert_eq!(amt("0.03").apply_ratio(half), amt("0.02"));
        assert_eq!(amt("-0.03").apply_ratio(half), amt("-0.02"));
        assert_eq!(Amount::MAX.apply_ratio(Ratio::ONE), Amount::MAX);
    }

    #[test]
    fn unit_price_examples() {
        let p = UnitPrice::parse("price", "12.5").unwrap();
        assert_eq!(p.to_string(), "12.50");
        assert_eq!(p.to_micros(), 12_500_000);
        assert_eq!(
            UnitPrice::parse("p", "0.123456").unwrap().to_string(),
            "0.123456"
        );
        assert_eq!(UnitPrice::parse("p", "3").unwrap().to_string(), "3.00");
        assert_eq!(UnitPrice::from_micros(1).unwrap().to_string(), "0.000001");
        assert!(UnitPrice::parse("p", "-1").is_err());
        assert!(UnitPrice::parse("p", "0.1234567").is_err());
        assert!(UnitPrice::parse("p", "1000000000000").is_err());
        assert!(UnitPrice::from_micros(-1).is_err());
    }

    #[test]
    fn quantity_examples() {
        let q = |s| Quantity::parse("qty", s).unwrap().to_string();
        assert_eq!(q("2"), "2");
        assert_eq!(q("-1"), "-1");
        assert_eq!(q("0.5000"), "0.5");
        assert_eq!(q("1.25"), "1.25");
        assert_eq!(Quantity::parse("qty", "1.25").unwrap().to_scaled(), 12_500);
        assert!(Quantity::parse("qty", "0").is_err());
        assert!(Quantity::parse("qty", "-0.0000").is_err());
        assert!(Quantity::parse("qty", "0.00001").is_err());
        assert!(Quantity::from_scaled(0).is_err());
    }

    #[test]
    fn ratio_examples() {
        let r = |s| Ratio::parse("ratio", s).unwrap();
        assert_eq!(r("0.85").to_bp(), 8500);
        assert_eq!(r("0.925").to_bp(), 9250);
        assert_eq!(r("0.85").to_string(), "0.85");
        assert_eq!(r("1.0").to_string(), "1");
        assert_eq!(r("0").to_string(), "0");
        assert_eq!(r("1"), Ratio::ONE);
        assert_eq!(r("0.0"), Ratio::ZERO);
        assert_eq!(r("0.85").complement(), r("0.15"));
        for bad in ["1.0001", "2", "-0.1", "0.12345", "10", ".5", "0.5e0"] {
            assert!(Ratio::parse("ratio", bad).is_err(), "{bad}");
        }
        assert!(Ratio::from_bp(10_001).is_err());
        assert!(Ratio::from_bp(-1).is_err());
        assert_eq!(Ratio::from_bp(8500).unwrap(), r("0.85"));
    }

    #[test]
    fn line_amount_examples() {
        let q = |s| Quantity::parse("q", s).unwrap();
        let p = |s| UnitPrice::parse("p", s).unwrap();
        // 3 × 12.345 = 37.035 → 37.04
        assert_eq!(line_amount(q("3"), p("12.345")), amt("37.04"));
        // 0.5 × 0.015 = 0.0075 → 0.01
        assert_eq!(line_amount(q("0.5"), p("0.015")), amt("0.01"));
        // -3 × 12.345 = -37.035 → -37.04 (refund mirrors charge)
        assert_eq!(line_amount(q("-3"), p("12.345")), amt("-37.04"));
        // 2 × 0.001 = 0.002 → 0.00
        assert_eq!(line_amount(q("2"), p("0.001")), amt("0"));
        let huge = line_amount(q("99999999.9999"), p("999999999999.999999"));
        assert_eq!(huge, Amount::MAX);
    }

    #[test]
    fn serde_as_strings() {
        let a = amt("-12.3");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"-12.30\"");
        assert_eq!(serde_json::from_str::<Amount>("\"-12.30\"").unwrap(), a);
        assert!(serde_json::from_str::<Amount>("-12.3").is_err());
        let r = Ratio::parse("r", "0.85").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"0.85\"");
        assert_eq!(serde_json::from_str::<Ratio>("\"0.85\"").unwrap(), r);
        assert!(serde_json::from_str::<Ratio>("0.85").is_err());
        assert!(serde_json::from_str::<Ratio>("\"1.5\"").is_err());
    }

    /// What `Display` wrote before it formatted integers itself: rust_decimal's own text,
    /// trailing zeros trimmed (`normalize`) to at least `min_dp` decimals, zero unsigned.
    fn decimal_text(units: i64, dp: u32, min_dp: u32) -> String {
        let mut d = Decimal::new(units, dp).normalize();
        if d.scale() < min_dp {
            d.rescale(min_dp);
        }
        d.to_string()
    }

    #[test]
    fn formats_by_hand_computed_examples() -> DomainResult<()> {
        // (units, as shown): fen for amounts, micro-yuan for prices, 1/10000 for the others.
        for (fen, shown) in [(0, "0.00"), (1, "0.01"), (-1, "-0.01"), (10, "0.10")] {
            assert_eq!(Amount::from_fen(fen).to_string(), shown);
        }
        assert_eq!(Amount::from_fen(2_344_246).to_string(), "23442.46");
        assert_eq!(
            Amount::from_fen(-i64::MAX).to_string(),
            "-92233720368547758.07"
        );
        assert_eq!((-Amount::ZERO).to_string(), "0.00");
        for (micros, shown) in [(0, "0.00"), (12_500_000, "12.50"), (123_456, "0.123456")] {
            assert_eq!(UnitPrice::from_micros(micros)?.to_string(), shown);
        }
        for (scaled, shown) in [
            (20_000, "2"),
            (-10_000, "-1"),
            (5_000, "0.5"),
            (-1, "-0.0001"),
        ] {
            assert_eq!(Quantity::from_scaled(scaled)?.to_string(), shown);
        }
        for (bp, shown) in [(0, "0"), (8_500, "0.85"), (10_000, "1"), (1, "0.0001")] {
            assert_eq!(Ratio::from_bp(bp)?.to_string(), shown);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn prop_formats_as_rust_decimal(units in (i64::MIN + 1)..=i64::MAX) {
            prop_assert_eq!(Amount::from_fen(units).to_string(), decimal_text(units, 2, 2));
            if units > 0 {
                let price = UnitPrice::from_micros(units).expect("a positive price").to_string();
                prop_assert_eq!(price, decimal_text(units, 6, 2));
            }
            if units != 0 {
                let qty = Quantity::from_scaled(units).expect("a non-zero quantity").to_string();
                prop_assert_eq!(qty, decimal_text(units, 4, 0));
            }
            let bp = units.rem_euclid(10_001);
            let ratio = Ratio::from_bp(bp).expect("0..=10000 basis points").to_string();
            prop_assert_eq!(ratio, decimal_text(bp, 4, 0));
        }

        /// The bytes built on the stack are `Display`'s (i64::MIN saturating as `from_fen` does).
        #[test]
        fn prop_amount_ascii_as_displayed(fen in prop_oneof![Just(i64::MIN), any::<i64>()]) {
            let shown = Amount::from_fen(fen).to_string();
            prop_assert_eq!(Amount::with_ascii(fen, <[u8]>::to_vec), shown.into_bytes());
        }

        #[test]
        fn prop_amount_roundtrip(fen in -99_999_999_999_999_999i64..=99_999_999_999_999_999) {
            let a = Amount::from_fen(fen);
            prop_assert_eq!(Amount::parse("a", &a.to_string()).unwrap(), a);
        }

        #[test]
        fn prop_fen_roundtrip(fen in (i64::MIN + 1)..=i64::MAX) {
            prop_assert_eq!(Amount::from_fen(fen).to_fen(), fen);
        }

        #[test]
        fn prop_round_symmetric(m in any::<i64>(), scale in 0u32..=12) {
            let x = Decimal::new(m, scale);
            prop_assert_eq!(round_half_up(-x), -round_half_up(x));
        }

        #[test]
        fn prop_round_within_half_fen(m in any::<i64>(), scale in 0u32..=12) {
            let x = Decimal::new(m, scale);
            let diff = (round_half_up(x) - x).abs();
            prop_assert!(diff <= dec("0.005"));
        }

        #[test]
        fn prop_price_roundtrip(micros in 0i64..=999_999_999_999_999_999) {
            let p = UnitPrice::from_micros(micros).unwrap();
            prop_assert_eq!(UnitPrice::parse("p", &p.to_string()).unwrap(), p);
            prop_assert_eq!(p.to_micros(), micros);
        }

        #[test]
        fn prop_quantity_roundtrip(scaled in -999_999_999_999i64..=999_999_999_999) {
            prop_assume!(scaled != 0);
            let q = Quantity::from_scaled(scaled).unwrap();
            prop_assert_eq!(Quantity::parse("q", &q.to_string()).unwrap(), q);
            prop_assert_eq!(q.to_scaled(), scaled);
        }

        #[test]
        fn prop_ratio_roundtrip(bp in 0i64..=10_000) {
            let r = Ratio::from_bp(bp).unwrap();
            prop_assert_eq!(Ratio::parse("r", &r.to_string()).unwrap(), r);
            prop_assert_eq!(r.to_bp(), bp);
        }

        #[test]
        fn prop_parse_never_panics(s in "\\PC{0,24}") {
            let _ = Amount::parse("a", &s);
            let _ = UnitPrice::parse("p", &s);
            let _ = Quantity::parse("q", &s);
            let _ = Ratio::parse("r", &s);
        }

        #[test]
        fn prop_parse_matches_decimal(s in "-?[0-9]{1,15}(\\.[0-9]{1,2})?") {
            let a = Amount::parse("a", &s).unwrap();
            let mut d = Decimal::from_str(&s).unwrap();
            d.rescale(2);
            prop_assert_eq!(a.as_decimal(), d);
        }

        #[test]
        fn prop_refund_line_mirrors(scaled in 1i64..=999_999_999_999, micros in 0i64..=999_999_999_999) {
            let q = Quantity::from_scaled(scaled).unwrap();
            let nq = Quantity::from_scaled(-scaled).unwrap();
            let p = UnitPrice::from_micros(micros).unwrap();
            prop_assert_eq!(line_amount(nq, p), -line_amount(q, p));
        }
    }
}
