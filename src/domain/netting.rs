//! Netting of a clearing period (pure): confirmed statement figures → one net position per
//! bureau (summing to exactly 0) → transfer instructions that settle every position with at most
//! (bureaus − 1) instructions, each drawing first on the payer's prepayment. Deterministic: the
//! same figures and prepayments always give the same plan. All amounts in fen.

use std::collections::BTreeMap;

/// What one statement says: `home` owes `treatment` `due_fen` (may be negative when reversals
/// outweigh settlements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligation {
    pub home: String,
    pub treatment: String,
    pub due_fen: i64,
}

/// A bureau's position in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub region: String,
    /// Σ what it owes as home bureau (net per counterparty pair, before netting).
    pub payable_fen: i64,
    /// Σ what it is owed as treatment bureau.
    pub receivable_fen: i64,
    /// receivable − payable: > 0 receives, < 0 pays.
    pub net_fen: i64,
    /// Prepayment available before this period's draw-down.
    pub prepay_before_fen: i64,
    /// Drawn from the prepayment for this period (only a net payer draws).
    pub prepay_drawn_fen: i64,
}

/// One instruction: `payer` pays `receiver` `amount_fen`, of which `prepay_fen` comes from the
/// payer's prepayment (booked at netting) and `bank_fen` by bank transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub payer: String,
    pub receiver: String,
    pub amount_fen: i64,
    pub prepay_fen: i64,
    pub bank_fen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In region order; only bureaus that are party to an obligation.
    pub positions: Vec<Position>,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NettingError {
    #[error("amounts overflow")]
    Overflow,
    #[error("negative prepayment balance for {0}")]
    NegativePrepayment(String),
}

/// Nets the obligations; `prepay` holds the prepayment balance of each home bureau (absent = 0).
pub fn net(
    obligations: &[Obligation],
    prepay: &BTreeMap<String, i64>,
) -> Result<Plan, NettingError> {
    // payable / receivable per region.
    let mut gross: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for o in obligations {
        let h = gross.entry(o.home.as_str()).or_default();
        h.0 = h.0.checked_add(o.due_fen).ok_or(NettingError::Overflow)?;
        let t = gross.entry(o.treatment.as_str()).or_default();
        t.1 = t.1.checked_add(o.due_fen).ok_or(NettingError::Overflow)?;
    }
    let mut positions = Vec::with_capacity(gross.len());
    for (region, (payable, receivable)) in &gross {
        let net = receivable
            .checked_sub(*payable)
            .ok_or(NettingError::Overflow)?;
        let before = prepay.get(*region).copied().unwrap_or(0);
        if before < 0 {
            return Err(NettingError::NegativePrepayment((*region).to_owned()));
        }
        let drawn = if net < 0 { before.min(-net) } else { 0 };
        positions.push(Position {
            region: (*region).to_owned(),
            payable_fen: *payable,
            receivable_fen: *receivable,
            net_fen: net,
            prepay_before_fen: before,
            prepay_drawn_fen: drawn,
        });
    }
    // Largest first, then region code: deterministic, and the greedy match closes at least one
    // party per instruction, the last one closing two, so instructions ≤ parties − 1.
    let order = |v: &mut Vec<(i64, &Position)>| {
        v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.region.cmp(&b.1.region)))
    };
    let mut payers: Vec<(i64, &Position)> = positions
        .iter()
        .filter(|p| p.net_fen < 0)
        .map(|p| (-p.net_fen, p))
        .collect();
    let mut receivers: Vec<(i64, &Position)> = positions
        .iter()
        .filter(|p| p.net_fen > 0)
        .map(|p| (p.net_fen, p))
        .collect();
    order(&mut payers);
    order(&mut receivers);
    let mut instructions = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut draw_left: Vec<i64> = payers.iter().map(|p| p.1.prepay_drawn_fen).collect();
    while i < payers.len() && j < receivers.len() {
        let x = payers[i].0.min(receivers[j].0);
        let from_prepay = draw_left[i].min(x);
        draw_left[i] -= from_prepay;
        instructions.push(Instruction {
            payer: payers[i].1.region.clone(),
            receiver: receivers[j].1.region.clone(),
            amount_fen: x,
            prepay_fen: from_prepay,
            bank_fen: x - from_prepay,
        });
        payers[i].0 -= x;
        receivers[j].0 -= x;
        if payers[i].0 == 0 {
            i += 1;
        }
        if receivers[j].0 == 0 {
            j += 1;
        }
    }
    Ok(Plan {
        positions,
        instructions,
    })
}

/// The prepayment warning line: `share_bp` basis points of the average of `recent_payables`
/// (fen, one per recent period; non-negative), rounded half-up to the fen.
pub fn warning_line(recent_payables: &[i64], share_bp: i64) -> i64 {
    let n = i128::try_from(recent_payables.len()).unwrap_or(1);
    if n == 0 {
        return 0;
    }
    let sum: i128 = recent_payables
        .iter()
        .map(|v| i128::from((*v).max(0)))
        .sum();
    let num = sum * i128::from(share_bp.max(0));
    let den = n * 10_000;
    i64::try_from((num + den / 2) / den).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ob(h: &str, t: &str, due: i64) -> Obligation {
        Obligation {
            home: h.into(),
            treatment: t.into(),
            due_fen: due,
        }
    }

    /// Hand-computed: A owes B 100.00 and C 50.00; B owes A 30.00; C owes B 20.00.
    /// A: receivable 30.00 − payable 150.00 = −120.00; B: 120.00 − 30.00 = +90.00;
    /// C: 50.00 − 20.00 = +30.00. A holds 40.00 prepayment.
    /// Greedy: A (120.00) → B (90.00): 90.00 of which 40.00 prepaid; A (30.00) → C: 30.00 bank.
    #[test]
    fn hand_computed_three_bureaus() {
        let obs = [
            ob("A", "B", 10_000),
            ob("A", "C", 5_000),
            ob("B", "A", 3_000),
            ob("C", "B", 2_000),
        ];
        let prepay = BTreeMap::from([("A".to_string(), 4_000), ("B".to_string(), 7_000)]);
        let plan = net(&obs, &prepay).unwrap();
        let nets: Vec<(&str, i64, i64)> = plan
            .positions
            .iter()
            .map(|p| (p.region.as_str(), p.net_fen, p.prepay_drawn_fen))
            .collect();
        assert_eq!(
            nets,
            vec![("A", -12_000, 4_000), ("B", 9_000, 0), ("C", 3_000, 0)]
        );
        assert_eq!(
            plan.instructions,
            vec![
                Instruction {
                    payer: "A".into(),
                    receiver: "B".into(),
                    amount_fen: 9_000,
                    prepay_fen: 4_000,
                    bank_fen: 5_000
                },
                Instruction {
                    payer: "A".into(),
                    receiver: "C".into(),
                    amount_fen: 3_000,
                    prepay_fen: 0,
                    bank_fen: 3_000
                },
            ]
        );
    }

    #[test]
    fn warning_line_rounds_half_up() {
        // 50% of the average of 100.01 and 0.00 = 25.0025 → 25.00; of 100.03 → 25.0075 → 25.01.
        assert_eq!(warning_line(&[10_001, 0], 5_000), 2_500);
        assert_eq!(warning_line(&[10_003, 0], 5_000), 2_501);
        assert_eq!(warning_line(&[], 5_000), 0);
    }

    fn arb_obligations() -> impl Strategy<Value = Vec<Obligation>> {
        let region = prop::sample::select(vec!["110000", "150300", "150600", "152900", "640200"]);
        prop::collection::vec((region.clone(), region, -1_000_000i64..100_000_000), 0..30).prop_map(
            |v| {
                v.into_iter()
                    .filter(|(h, t, _)| h != t)
                    .map(|(h, t, d)| ob(h, t, d))
                    .collect()
            },
        )
    }

    proptest! {
        #[test]
        fn positions_sum_to_zero_and_instructions_settle_them(
            obs in arb_obligations(),
            pre in prop::collection::vec(0i64..50_000_000, 5),
        ) {
            let regions = ["110000", "150300", "150600", "152900", "640200"];
            let prepay: BTreeMap<String, i64> =
                regions.iter().zip(&pre).map(|(r, p)| ((*r).to_string(), *p)).collect();
            let plan = net(&obs, &prepay).unwrap();
            prop_assert_eq!(plan.positions.iter().map(|p| p.net_fen).sum::<i64>(), 0);
            let nonzero = plan.positions.iter().filter(|p| p.net_fen != 0).count();
            prop_assert!(plan.instructions.len() <= nonzero.saturating_sub(1));
            // Applying the instructions brings every position to zero.
            let mut left: BTreeMap<&str, i64> =
                plan.positions.iter().map(|p| (p.region.as_str(), p.net_fen)).collect();
            let mut drawn: BTreeMap<&str, i64> = BTreeMap::new();
            for ins in &plan.instructions {
                prop_assert!(ins.amount_fen > 0);
                prop_assert_eq!(ins.prepay_fen + ins.bank_fen, ins.amount_fen);
                prop_assert!(ins.prepay_fen >= 0 && ins.bank_fen >= 0);
                *left.get_mut(ins.payer.as_str()).unwrap() += ins.amount_fen;
                *left.get_mut(ins.receiver.as_str()).unwrap() -= ins.amount_fen;
                *drawn.entry(ins.payer.as_str()).or_default() += ins.prepay_fen;
            }
            prop_assert!(left.values().all(|v| *v == 0));
            for p in &plan.positions {
                // Prepayment first: a payer draws min(what it owes, what it holds), exactly.
                let expect = if p.net_fen < 0 { p.prepay_before_fen.min(-p.net_fen) } else { 0 };
                prop_assert_eq!(p.prepay_drawn_fen, expect);
                prop_assert_eq!(drawn.get(p.region.as_str()).copied().unwrap_or(0), expect);
            }
            // Deterministic: the same input, in any order, gives the same plan.
            let mut rev = obs.clone();
            rev.reverse();
            prop_assert_eq!(net(&rev, &prepay).unwrap(), plan);
        }
    }
}
