//! A swipe's answer encoded straight from the purchase it booked. Built as a `pb::Purchase` and
//! encoded by prost, the answer cost ≈ 41 k instructions a swipe on the server's workers (≈ 7 %
//! of a swipe's server total): ≈ 45 strings allocated, formatted, copied into the message,
//! encoded, then freed. Here each field goes into one buffer once, the amounts formatted on the
//! stack: ≈ 24 k, and the workers' total fell by ≈ 21 k a swipe (BENCHMARKS.md, session 33). The
//! bytes are exactly prost's encoding of
//! [`convert::purchase_explained`] (its fields in tag order, proto3 defaults left out): a
//! property test holds the two together.

use super::convert::{self, code32, fund_payments, quantity_text, unit_price_text};
use crate::domain::money::Amount;
use crate::domain::time::fmt_date;
use crate::proto as pb;
use crate::service::settlement::Explanation;
use crate::service::settlement::KIND_SETTLEMENT;
use crate::service::settlement::swipe_batch::BookedPurchase;
use crate::store::pharmacy::PurchaseLineRow;
use crate::store::settlement::SettlementRow;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint};

/// A `pb::Purchase`, encoded. As a prost message it encodes as those bytes; decoding one (never
/// done by the server, which only answers with it) appends each field decoded as a purchase's,
/// re-encoded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EncodedPurchase(pub Vec<u8>);

impl EncodedPurchase {
    /// The purchase a swipe booked, as [`convert::purchase_explained`] makes it, encoded.
    pub fn booked(b: BookedPurchase) -> EncodedPurchase {
        let mut settlement = Vec::with_capacity(1024);
        encode_settlement(&b.settlement, b.explanation, &mut settlement);
        let mut out = Vec::with_capacity(settlement.len() + 160 * b.lines.len() + 8);
        put_message(1, &settlement, &mut out);
        let mut line = Vec::with_capacity(160);
        for l in &b.lines {
            line.clear();
            encode_line(l, &mut line);
            put_message(2, &line, &mut out);
        }
        EncodedPurchase(out)
    }
}

impl Message for EncodedPurchase {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut field = pb::Purchase::default();
        field.merge_field(tag, wire_type, buf, ctx)?;
        field.encode_raw(&mut self.0);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A length-delimited field: key, length, bytes.
fn put_message(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A string field; left out when empty (proto3).
fn put_str(tag: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        put_message(tag, s.as_bytes(), out);
    }
}

/// An amount in fen as its decimal string (never empty).
fn put_amount(tag: u32, fen: i64, out: &mut Vec<u8>) {
    Amount::with_ascii(fen, |t| put_message(tag, t, out));
}

/// An int32 (enum) field; left out when 0 (prost's own encoding otherwise: a negative value takes
/// ten bytes).
fn put_i32(tag: u32, v: i32, out: &mut Vec<u8>) {
    if v != 0 {
        prost::encoding::int32::encode(tag, &v, out);
    }
}

/// A uint32 field; left out when 0.
fn put_u32(tag: u32, v: u32, out: &mut Vec<u8>) {
    if v != 0 {
        prost::encoding::uint32::encode(tag, &v, out);
    }
}

fn encode_settlement(s: &SettlementRow, e: Explanation, out: &mut Vec<u8>) {
    let kind = if s.kind == KIND_SETTLEMENT {
        pb::SettlementKind::Settlement
    } else {
        pb::SettlementKind::Reversal
    };
    put_str(1, &s.setl_id, out);
    put_i32(2, kind as i32, out);
    put_str(3, s.reverses.as_deref().unwrap_or_default(), out);
    put_str(4, s.reversed_by.as_deref().unwrap_or_default(), out);
    put_str(5, s.mdtrt_id.as_deref().unwrap_or_default(), out);
    put_str(6, &s.psn_no, out);
    put_str(7, &s.home_region, out);
    put_str(8, &s.treatment_region, out);
    put_str(9, &s.institution, out);
    put_i32(10, code32(s.insurance_type), out);
    put_i32(11, code32(s.care_type), out);
    put_str(12, &s.settled_at.to_rfc3339(), out);
    put_str(13, &fmt_date(s.business_date), out);
    put_str(14, &s.clearing_period, out);
    for (tag, fen) in [
        (15, s.medfee_fen),
        (16, s.fulamt_fen),
        (17, s.overlmt_fen),
        (18, s.preself_fen),
        (19, s.inscp_fen),
        (20, s.dedc_fen),
        (21, s.hifp_fen),
        (22, s.hifmi_fen),
        (23, s.maf_fen),
        (24, s.fund_fen),
        (25, s.psn_part_fen),
        (26, s.acct_fen),
        (27, s.cash_fen),
    ] {
        put_amount(tag, fen, out);
    }
    if let Some(b) = s.balance_after_fen {
        put_amount(28, b, out);
    }
    let mut fund = Vec::with_capacity(64);
    for (code, name, fen) in fund_payments(s) {
        fund.clear();
        put_str(1, code, &mut fund);
        put_str(2, name, &mut fund);
        put_amount(3, fen, &mut fund);
        put_message(29, &fund, out);
    }
    prost::encoding::message::encode(30, &convert::explanation(e), out);
    put_str(31, &s.journal_id, out);
    put_str(32, &s.request_id, out);
    put_u32(33, u32::try_from(s.line_count).unwrap_or(0), out);
}

fn encode_line(l: &PurchaseLineRow, out: &mut Vec<u8>) {
    put_str(1, &l.line_no, out);
    put_str(2, &l.code, out);
    put_str(3, &quantity_text(l.qty_scaled), out);
    put_str(4, &unit_price_text(l.price_micros), out);
    put_amount(5, l.amount_fen, out);
    put_i32(6, code32(l.class), out);
    put_amount(7, l.fulamt_fen, out);
    put_amount(8, l.overlmt_fen, out);
    put_amount(9, l.preself_fen, out);
    put_amount(10, l.inscp_fen, out);
    put_str(11, &quantity_text(l.refunded_qty_scaled), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An explanation as a pharmacy swipe stores it (copied from a benchmark's database), with a
    /// filing added so that every nested message is present.
    const EXPLANATION: &str = r#"{"policy_region":"150300","policy_version":1,
        "catalogue_versions":[1,3],"filing":{"filing_id":"F1","filing_type":2,
        "destination":"150600","valid_from":"2026-01-01","valid_until":"2026-12-31"},
        "base_ratio":"0.5","effective_ratio":"0.4","reduction":"pharmacy: no filing needed",
        "deductible_basis":"Annual","deductible_outstanding":"100.00",
        "annual_cap_remaining":"150000.00","year":2026,"before":{"annual_deductible":"0.00",
        "fund":"12.34","burden":"0.00","critical_illness":"0.00","assistance":"0.00",
        "admissions":0},"repeat_admission":false,"level":"Pharmacy","province":"InProvince",
        "terms":{"rule":{"insurance_type":"Employee","category":"Active","care_type":"Pharmacy",
        "level":"Any","province_scope":"Any","deductible_basis":"Annual","deductible":"100.00",
        "repeat_admission_deductible":"100.00","ratio":"0.5","annual_cap":"150000.00",
        "critical_illness":null,"assistance":null},"ratio":"0.5","admission":false,
        "assistance_recipient":false,"account_balance":"1000000.00","use_account":true,
        "account_pays_class_c":false}}"#;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[A-Z0-9]{1,30}", "[^\u{0}]{0,12}"]
    }

    /// Fen amounts: zero, small, either sign, and the extremes (`i64::MIN` saturates).
    fn fen() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(0i64),
            -100_000i64..100_000,
            any::<i64>(),
            Just(i64::MIN)
        ]
    }

    prop_compose! {
        fn settlement_row()(
            ids in proptest::collection::vec(text(), 9),
            opt in proptest::collection::vec(proptest::option::of(text()), 3),
            kind in 1i64..=2,
            insurance_type in prop_oneof![Just(310i64), Just(390), Just(510), -3i64..3, any::<i64>()],
            care_type in prop_oneof![Just(41i64), -3i64..3, any::<i64>()],
            secs in 0i64..4_102_444_800,
            fens in proptest::collection::vec(fen(), 13),
            balance_after_fen in proptest::option::of(fen()),
            line_count in prop_oneof![Just(0i64), 1i64..100, any::<i64>()],
        ) -> SettlementRow {
            let at = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
            SettlementRow {
                setl_id: ids[0].clone(),
                kind,
                reverses: opt[0].clone(),
                reversed_by: opt[1].clone(),
                mdtrt_id: opt[2].clone(),
                psn_no: ids[1].clone(),
                home_region: ids[2].clone(),
                treatment_region: ids[3].clone(),
                institution: ids[4].clone(),
                insurance_type,
                care_type,
                settled_at: at,
                business_date: at.date_naive(),
                clearing_period: ids[5].clone(),
                service_year: 2026,
                medfee_fen: fens[0],
                fulamt_fen: fens[1],
                overlmt_fen: fens[2],
                preself_fen: fens[3],
                inscp_fen: fens[4],
                dedc_fen: fens[5],
                hifp_fen: fens[6],
                hifmi_fen: fens[7],
                maf_fen: fens[8],
                fund_fen: fens[9],
                psn_part_fen: fens[10],
                acct_fen: fens[11],
                cash_fen: fens[12],
                balance_after_fen,
                d_annual_ded_fen: 0,
                d_burden_fen: 0,
                d_admissions: 0,
                line_count,
                explanation: String::new(),
                journal_id: ids[6].clone(),
                request_id: ids[7].clone(),
            }
        }
    }

    prop_compose! {
        fn line_row()(
            ids in proptest::collection::vec(text(), 4),
            qty_scaled in prop_oneof![Just(0i64), -50_000i64..50_000, any::<i64>()],
            refunded_qty_scaled in prop_oneof![Just(0i64), 1i64..50_000, any::<i64>()],
            price_micros in prop_oneof![Just(0i64), -10i64..100_000_000, any::<i64>()],
            class in prop_oneof![-3i64..4, any::<i64>()],
            fens in proptest::collection::vec(fen(), 5),
        ) -> PurchaseLineRow {
            PurchaseLineRow {
                setl_id: ids[0].clone(),
                line_no: ids[1].clone(),
                code: ids[2].clone(),
                name: ids[3].clone(),
                qty_scaled,
                price_micros,
                class,
                cap_micros: None,
                b_ratio_bp: None,
                catalogue_version: 1,
                amount_fen: fens[0],
                fulamt_fen: fens[1],
                overlmt_fen: fens[2],
                preself_fen: fens[3],
                inscp_fen: fens[4],
                refunded_qty_scaled,
            }
        }
    }

    proptest! {
        /// The bytes are prost's encoding of the message `convert` builds, whatever the values:
        /// empty and non-empty texts, amounts of either sign and at the extremes, enum codes
        /// zero, negative or unknown, no lines or several.
        #[test]
        fn a_booked_purchase_encodes_as_its_message(
            settlement in settlement_row(),
            lines in proptest::collection::vec(line_row(), 0..4),
            no_filing in any::<bool>(),
        ) {
            let mut explanation: Explanation = serde_json::from_str(EXPLANATION)?;
            if no_filing {
                explanation.filing = None;
            }
            let built = convert::purchase_explained(
                settlement.clone(),
                lines.clone(),
                Some(explanation.clone()),
            );
            let encoded = EncodedPurchase::booked(BookedPurchase {
                settlement,
                lines,
                explanation,
            });
            prop_assert_eq!(&encoded.0, &built.encode_to_vec());
            // Read back as a message: the same bytes.
            let read = EncodedPurchase::decode(encoded.0.as_slice())?;
            prop_assert_eq!(read, encoded);
        }
    }

    /// A hand-computed answer: one line, every amount given (parameters in the test).
    #[test]
    fn a_small_purchase_encodes_field_by_field() -> anyhow::Result<()> {
        let line = PurchaseLineRow {
            setl_id: "S1".into(),
            line_no: "1".into(),
            code: "X".into(),
            name: String::new(),
            qty_scaled: 20_000,
            price_micros: 1_500_000,
            class: 1,
            cap_micros: None,
            b_ratio_bp: None,
            catalogue_version: 1,
            amount_fen: 300,
            fulamt_fen: 0,
            overlmt_fen: 0,
            preself_fen: 0,
            inscp_fen: -300,
            refunded_qty_scaled: 0,
        };
        let mut out = Vec::new();
        encode_line(&line, &mut out);
        // line_no "1", code "X", quantity "2", unit_price "1.50", amount "3.00", class 1, four
        // amounts, refunded_quantity "0".
        let mut want: Vec<u8> = vec![0x0a, 1, b'1', 0x12, 1, b'X', 0x1a, 1, b'2', 0x22, 4];
        want.extend_from_slice(b"1.50");
        want.extend_from_slice(&[0x2a, 4]);
        want.extend_from_slice(b"3.00");
        want.extend_from_slice(&[0x30, 1]);
        for tag in [7u8, 8, 9] {
            want.extend_from_slice(&[tag << 3 | 2, 4]);
            want.extend_from_slice(b"0.00");
        }
        want.extend_from_slice(&[10 << 3 | 2, 5]);
        want.extend_from_slice(b"-3.00");
        want.extend_from_slice(&[11 << 3 | 2, 1, b'0']);
        assert_eq!(out, want);
        Ok(())
    }
}
