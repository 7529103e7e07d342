//! SettlementService under concurrency: two hospitals settling the same person at the same
//! moment (personal account, annual cap and annual deductible never over-used), races on one
//! visit (double settle, twin request ids, double reversal, 冲正 against its own Settle, upload and
//! cancellation against the settlement), and a randomized
//! multi-client run across persons (the books verify; every personal account equals opening +
//! deposits − account payments + account refunds; the accumulators equal the sums of the
//! settlements). Every test builds its own world over gRPC and runs on SQLite and on PostgreSQL,
//! each on a fresh database.

#[macro_use]
mod common;

use common::kit::*;
use common::*;
use medsettle::proto;
use proto::{
    CareType, DeductibleBasis, FilingType, InsuranceType, LevelScope, PersonCategory, ProvinceScope,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

both_engines!(
    two_hospitals_same_person,
    same_visit_races,
    randomized_multi_client
);

/// An employee (active) rule row, any level, any province.
fn rule(
    care: CareType,
    basis: DeductibleBasis,
    deductible: &str,
    repeat: &str,
    ratio: &str,
    cap: &str,
) -> proto::PolicyRule {
    proto::PolicyRule {
        insurance_type: InsuranceType::Employee as i32,
        category: PersonCategory::Active as i32,
        care_type: care as i32,
        level: LevelScope::Any as i32,
        province_scope: ProvinceScope::Any as i32,
        deductible_basis: basis as i32,
        deductible: deductible.into(),
        repeat_admission_deductible: repeat.into(),
        ratio: ratio.into(),
        annual_cap: cap.into(),
        critical_illness: None,
        assistance: None,
    }
}

/// Shizuishan's hospital and catalogue; the person filed (long-term, full ratio) for Inner
/// Mongolia and Shizuishan.
async fn second_province(w: &World) {
    register(w, HOSP_NX, SHIZUISHAN, 3).await;
    catalogue(&w.nx, SHIZUISHAN, ordos_items()).await;
}

async fn file_both(w: &World, p: &Psn) {
    file(w, &p.psn_no, FilingType::LongTermResident, "15", "", "").await;
    file(
        w,
        &p.psn_no,
        FilingType::LongTermResident,
        SHIZUISHAN,
        "",
        "",
    )
    .await;
}

async fn two_hospitals_same_person(b: Backend) {
    const ROUNDS: usize = 10;
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    second_province(&w).await;
    // Outpatient pooling: annual deductible 100.00, ratio 0.80, annual cap 1000.00.
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        proto::PolicyBody {
            rules: vec![rule(
                CareType::Outpatient,
                DeductibleBasis::Annual,
                "100.00",
                "",
                "0.80",
                "1000.00",
            )],
            filing_reductions: vec![],
            unfiled_allowed: false,
            unfiled_reduction: None,
            account_pays_class_c: false,
            pharmacy_national: false,
        },
    )
    .await;
    let p = wuhai_employee(&w, 70, "300.00").await;
    file_both(&w, &p).await;
    let nx = hosp(&ts, HOSP_NX).await;

    // Every visit: A001 1 × 200.00, all in scope.
    let mut pairs = Vec::new();
    for _ in 0..ROUNDS {
        let mut ids = Vec::new();
        for h in [&w.h, &nx] {
            let v = open(
                h,
                &p.national_id,
                InsuranceType::Employee,
                CareType::Outpatient,
                "",
            )
            .await;
            upload(h, &v.mdtrt_id, vec![line("1", "A001", "1", "200.00")]).await;
            ids.push(v.mdtrt_id);
        }
        pairs.push((ids[0].clone(), ids[1].clone()));
    }
    let mut all = Vec::new();
    for (a, c) in &pairs {
        let (x, y) = tokio::join!(settle(&w.h, a, true), settle(&nx, c, true));
        all.push(x);
        all.push(y);
    }

    // 20 × 200.00 = 4000.00 in scope. The annual deductible is applied once: Σ = 100.00. The
    // pooled fund would be (4000.00 − 100.00) × 0.80 = 3120.00 but the cap holds: Σ = 1000.00.
    // Personal part 4000.00 − 1000.00 = 3000.00, of which the account pays all it has: 300.00.
    assert_eq!(sum(&all, |s| &s.medfee_sumamt), 400_000);
    assert_eq!(yuan(sum(&all, |s| &s.act_pay_dedc)), "100.00");
    assert_eq!(yuan(sum(&all, |s| &s.hifp_pay)), "1000.00");
    assert_eq!(yuan(sum(&all, |s| &s.psn_part_amt)), "3000.00");
    assert_eq!(yuan(sum(&all, |s| &s.acct_pay)), "300.00");
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    // Each settlement agrees with the accumulator snapshot it saw, and the snapshots chain: no
    // two settlements saw the same state while there was still something to take.
    for s in &all {
        let x = s.explanation.clone().unwrap();
        let before = x.before.unwrap();
        let ded_left = 10_000 - fen(&before.annual_deductible);
        let dedc = fen(&s.act_pay_dedc);
        assert_eq!(dedc, 20_000.min(ded_left.max(0)), "{s:?}");
        let cap_left = (100_000 - fen(&before.pooled_fund)).max(0);
        // (200.00 − deductible) × 0.80, exact in fen here.
        let pooled = (20_000 - dedc) * 8 / 10;
        assert_eq!(fen(&s.hifp_pay), pooled.min(cap_left), "{s:?}");
        let bal_before = fen(&s.balance_after) + fen(&s.acct_pay);
        assert_eq!(
            fen(&s.acct_pay),
            fen(&s.psn_part_amt).min(bal_before),
            "{s:?}"
        );
    }
    let mut fund_snapshots: Vec<i64> = all
        .iter()
        .map(|s| {
            fen(&s
                .explanation
                .as_ref()
                .unwrap()
                .before
                .as_ref()
                .unwrap()
                .pooled_fund)
        })
        .filter(|f| *f < 100_000)
        .collect();
    let n = fund_snapshots.len();
    fund_snapshots.sort_unstable();
    fund_snapshots.dedup();
    assert_eq!(
        fund_snapshots.len(),
        n,
        "two settlements saw the same pooled-fund total"
    );
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Outpatient,
        "",
    )
    .await;
    assert_eq!(
        (
            e.deductible_outstanding.as_str(),
            e.annual_cap_remaining.as_str(),
            e.account_balance.as_str()
        ),
        ("0.00", "0.00", "0.00")
    );
    assert_eq!(by_person(&ts, &p.psn_no).await.len(), 2 * ROUNDS);
    verify_ok(&ts).await;

    // The same race with reversals: both hospitals reverse everything at once; the account,
    // cap and deductible come back exactly.
    let mut reversals = Vec::new();
    for pair in all.chunks(2) {
        let (x, y) = tokio::join!(reverse(&w.h, &pair[0]), reverse(&nx, &pair[1]));
        reversals.push(x);
        reversals.push(y);
    }
    assert_eq!(yuan(sum(&reversals, |s| &s.acct_pay)), "-300.00");
    assert_eq!(pacct(&w, &p.psn_no).await, "300.00");
    let e = eligibility(
        &w.h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Outpatient,
        "",
    )
    .await;
    assert_eq!(
        (
            e.deductible_outstanding.as_str(),
            e.annual_cap_remaining.as_str(),
            e.account_balance.as_str()
        ),
        ("100.00", "1000.00", "300.00")
    );
    verify_ok(&ts).await;
}

/// What one client did.
#[derive(Default)]
struct Log {
    /// Settlements and reversals as answered.
    settlements: Vec<proto::Settlement>,
    /// (psn_no, amount in fen) of each deposit.
    deposits: Vec<(String, i64)>,
}

const CODES: [&str; 6] = ["A001", "B001", "C001", "D001", "E001", "ZZZ"];

fn random_lines(rng: &mut StdRng) -> Vec<proto::FeeLine> {
    let n = rng.random_range(1..=5);
    (0..n)
        .map(|i| {
            let code = CODES[rng.random_range(0..CODES.len())];
            // Quantities 0.5 .. 5 in halves; prices 0.01 .. 300.00 with up to 3 decimals.
            let halves: u32 = rng.random_range(1..=10);
            let qty = format!("{}.{}", halves / 2, if halves % 2 == 1 { 5 } else { 0 });
            let mills: u32 = rng.random_range(10..=300_000);
            let price = format!("{}.{:03}", mills / 1000, mills % 1000);
            line(&format!("{}", i + 1), code, &qty, &price)
        })
        .collect()
}

/// One client: `ops` random operations as hospital `h` on `persons`.
async fn client(seed: u64, ops: usize, h: Setl, wuhai: Caller, persons: Vec<Psn>) -> Log {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Log::default();
    let mut open_settlements: Vec<proto::Settlement> = Vec::new();
    for _ in 0..ops {
        let roll = rng.random_range(0..100);
        if roll < 10 {
            // A contribution into a random person's account.
            let p = &persons[rng.random_range(0..persons.len())];
            let cents: i64 = rng.random_range(1..=50_000);
            wuhai
                .reg()
                .deposit_personal_account(deposit(&p.psn_no, &yuan(cents)))
                .await
                .must();
            log.deposits.push((p.psn_no.clone(), cents));
        } else if roll < 30 && !open_settlements.is_empty() {
            // Reverse one of this client's settlements.
            let s = open_settlements.swap_remove(rng.random_range(0..open_settlements.len()));
            let r = reverse(&h, &s).await;
            log.settlements.push(r);
        } else {
            // A visit: open, upload, pre-settle, settle (sometimes with the account).
            let p = &persons[rng.random_range(0..persons.len())];
            let care = if rng.random_bool(0.5) {
                CareType::Outpatient
            } else {
                CareType::Inpatient
            };
            let v = open(&h, &p.national_id, InsuranceType::Employee, care, "").await;
            let lines = random_lines(&mut rng);
            let up = upload(&h, &v.mdtrt_id, lines).await;
            let pre = pre_settle(&h, &v.mdtrt_id, true).await;
            assert_eq!(pre.medfee_sumamt, up.unsettled_total);
            let s = settle(&h, &v.mdtrt_id, rng.random_bool(0.7)).await;
            assert_eq!(s.medfee_sumamt, up.unsettled_total);
            // The account never pays class C / unlisted items, nor more than the personal part.
            assert!(fen(&s.acct_pay) <= (fen(&s.psn_part_amt) - fen(&s.fulamt_ownpay_amt)).max(0));
            assert!(fen(&s.balance_after) >= 0);
            open_settlements.push(s.clone());
            log.settlements.push(s);
        }
    }
    log
}

async fn randomized_multi_client(b: Backend) {
    const CLIENTS: usize = 4;
    const OPS: usize = 15;
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    second_province(&w).await;
    register(&w, HOSP2, ORDOS, 2).await;
    // Outpatient: annual deductible 50.00, 0.70. Inpatient: 300.00 per admission (150.00
    // repeat), 0.85, with a critical-illness band above 500.00 of burden at 0.50 (cap 800.00) and
    // assistance. One pooled-fund cap of 3000.00 per year on both rows.
    let inpatient = proto::PolicyRule {
        critical_illness: Some(proto::CriticalIllnessLayer {
            threshold: "500.00".into(),
            bands: vec![proto::CriticalIllnessBand {
                from: "500.00".into(),
                to: String::new(),
                ratio: "0.50".into(),
            }],
            annual_cap: "800.00".into(),
        }),
        assistance: Some(proto::AssistanceLayer {
            ratio: "0.30".into(),
            annual_cap: "200.00".into(),
        }),
        ..rule(
            CareType::Inpatient,
            DeductibleBasis::PerAdmission,
            "300.00",
            "150.00",
            "0.85",
            "3000.00",
        )
    };
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        proto::PolicyBody {
            rules: vec![
                rule(
                    CareType::Outpatient,
                    DeductibleBasis::Annual,
                    "50.00",
                    "",
                    "0.70",
                    "3000.00",
                ),
                inpatient,
            ],
            filing_reductions: vec![],
            unfiled_allowed: false,
            unfiled_reduction: None,
            account_pays_class_c: false,
            pharmacy_national: false,
        },
    )
    .await;
    let openings = ["200.00", "500.00", "0.00"];
    let mut persons = Vec::new();
    for (i, opening) in openings.iter().enumerate() {
        let seq = 80 + u32::try_from(i).unwrap();
        let p = if i == 1 {
            enrol(
                &w.wuhai,
                proto::EnrolPersonRequest {
                    assistance_recipient: true,
                    ..employee(&national_id("150302", "19800101", seq), WUHAI, opening)
                },
            )
            .await
        } else {
            wuhai_employee(&w, seq, opening).await
        };
        file_both(&w, &p).await;
        persons.push(p);
    }
    let seed: u64 = std::env::var("MEDSETTLE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("randomized_multi_client seed {seed} (set MEDSETTLE_TEST_SEED to replay)");
    let hospitals = [HOSP, HOSP2, HOSP_NX, HOSP];
    let mut tasks = Vec::new();
    for (i, code) in hospitals.iter().enumerate().take(CLIENTS) {
        let h = hosp(&ts, code).await;
        let wuhai = w.wuhai.clone();
        let persons = persons.clone();
        let s = seed.wrapping_add(i as u64);
        tasks.push(tokio::spawn(client(s, OPS, h, wuhai, persons)));
    }
    let mut settlements = Vec::new();
    let mut deposits: BTreeMap<String, i64> = BTreeMap::new();
    for t in tasks {
        let log = t.await.expect("client task");
        settlements.extend(log.settlements);
        for (psn, cents) in log.deposits {
            *deposits.entry(psn).or_default() += cents;
        }
    }
    verify_ok(&ts).await;

    for (p, opening) in persons.iter().zip(openings) {
        let mine: Vec<proto::Settlement> = settlements
            .iter()
            .filter(|s| s.psn_no == p.psn_no)
            .cloned()
            .collect();
        // The server's list of the person is exactly what the clients were answered.
        let listed = by_person(&ts, &p.psn_no).await;
        let mut a: Vec<_> = mine.iter().map(|s| s.setl_id.clone()).collect();
        let mut c: Vec<_> = listed.iter().map(|s| s.setl_id.clone()).collect();
        a.sort();
        c.sort();
        assert_eq!(a, c, "settlements of {}", p.psn_no);
        for s in &listed {
            assert_identities(s);
        }
        // balance = opening + deposits − Σ acct_pay(settlements) + Σ |acct_pay|(reversals)
        let paid: i64 = mine
            .iter()
            .filter(|s| s.kind == proto::SettlementKind::Settlement as i32)
            .map(|s| fen(&s.acct_pay))
            .sum();
        let refunded: i64 = mine
            .iter()
            .filter(|s| s.kind == proto::SettlementKind::Reversal as i32)
            .map(|s| fen(&s.acct_pay).abs())
            .sum();
        let expected =
            fen(opening) + deposits.get(&p.psn_no).copied().unwrap_or(0) - paid + refunded;
        assert_eq!(
            pacct(&w, &p.psn_no).await,
            yuan(expected),
            "balance of {}",
            p.psn_no
        );
        // The accumulators equal the sums of the settlements: cap left = 3000.00 − Σ hifp;
        // annual deductible left = 50.00 − Σ outpatient deductible.
        let hifp = sum(&mine, |s| &s.hifp_pay);
        let out_ded: i64 = mine
            .iter()
            .filter(|s| s.care_type == CareType::Outpatient as i32)
            .map(|s| fen(&s.act_pay_dedc))
            .sum();
        let e = eligibility(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Outpatient,
            "",
        )
        .await;
        assert_eq!(
            e.annual_cap_remaining,
            yuan((300_000 - hifp).max(0)),
            "{}",
            p.psn_no
        );
        assert_eq!(
            e.deductible_outstanding,
            yuan(5_000 - out_ded),
            "{}",
            p.psn_no
        );
        assert!(hifp <= 300_000, "the cap holds for {}", p.psn_no);
        let hifmi = sum(&mine, |s| &s.hifmi_pay);
        assert!(
            hifmi <= 80_000,
            "the critical-illness cap holds for {}",
            p.psn_no
        );
        let maf = sum(&mine, |s| &s.maf_pay);
        assert!(maf <= 20_000, "the assistance cap holds for {}", p.psn_no);
        if p.psn_no != persons[1].psn_no {
            assert_eq!(maf, 0, "{} is no assistance recipient", p.psn_no);
        }
    }
}

/// Races on one visit: two Settle calls (different request ids) → one settlement; twin Settle
/// calls (same request id) → one settlement, the same answer twice; two reversals of one
/// settlement → one reversal; 冲正 racing its own Settle → never a live settlement left; an upload
/// racing the settlement → in it or refused; a cancellation racing the settlement → one wins.
async fn same_visit_races(b: Backend) {
    const ROUNDS: usize = 5;
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(
        &w.wuhai,
        WUHAI,
        JAN1,
        proto::PolicyBody {
            rules: vec![rule(
                CareType::Outpatient,
                DeductibleBasis::Annual,
                "0.00",
                "",
                "0.50",
                "",
            )],
            filing_reductions: vec![],
            unfiled_allowed: false,
            unfiled_reduction: None,
            account_pays_class_c: false,
            pharmacy_national: false,
        },
    )
    .await;
    let p = wuhai_employee(&w, 90, "10000.00").await;
    file(&w, &p.psn_no, FilingType::LongTermResident, ORDOS, "", "").await;
    // Each visit: A001 1 × 100.00: pooled 50.00; personal 50.00 paid from the account.
    let visit = || async {
        let v = open(
            &w.h,
            &p.national_id,
            InsuranceType::Employee,
            CareType::Outpatient,
            "",
        )
        .await;
        upload(&w.h, &v.mdtrt_id, vec![line("1", "A001", "1", "100.00")]).await;
        v.mdtrt_id
    };
    let mut expected_balance = 1_000_000i64;
    for _ in 0..ROUNDS {
        // Two settlements of one visit.
        let m1 = visit().await;
        let (x, y) = tokio::join!(try_settle(&w.h, &m1, true), try_settle(&w.h, &m1, true));
        let ok: Vec<_> = [x, y]
            .into_iter()
            .filter_map(|r| match r {
                Ok(s) => Some(s.into_inner()),
                Err(s) => {
                    assert_rule(&s, "visit_already_settled");
                    None
                }
            })
            .collect();
        assert_eq!(ok.len(), 1, "exactly one settlement of the visit");
        assert_settlement(&ok[0]);
        assert_eq!(
            (ok[0].hifp_pay.as_str(), ok[0].acct_pay.as_str()),
            ("50.00", "50.00")
        );
        expected_balance -= 5_000;
        assert_eq!(by_visit(&w.h, &m1).await.len(), 1);

        // Twins: the same request id at once.
        let m2 = visit().await;
        let twin = rid();
        let (x, y) = tokio::join!(settle_as(&w.h, &twin, &m2), settle_as(&w.h, &twin, &m2));
        let (x, y) = (x.must(), y.must());
        assert_eq!(x, y, "twins get the same answer");
        assert_settlement(&x);
        expected_balance -= 5_000;
        assert_eq!(by_visit(&w.h, &m2).await.len(), 1);

        // Two reversals of one settlement.
        let (x, y) = tokio::join!(
            try_reverse(&w.h, &ok[0].setl_id),
            try_reverse(&w.h, &ok[0].setl_id)
        );
        let revs: Vec<_> = [x, y]
            .into_iter()
            .filter_map(|r| match r {
                Ok(s) => Some(s.into_inner()),
                Err(s) => {
                    assert_rule(&s, "already_reversed");
                    None
                }
            })
            .collect();
        assert_eq!(revs.len(), 1, "exactly one reversal");
        assert_reverses(&revs[0], &ok[0]);
        expected_balance += 5_000;

        // 冲正 racing its own Settle.
        let m3 = visit().await;
        let orig = rid();
        let undo = proto::ReverseByRequestIdRequest {
            request_id: rid(),
            original_request_id: orig.clone(),
        };
        let (x, y) = tokio::join!(settle_as(&w.h, &orig, &m3), undo_as(&w.h, undo));
        let undo = y.must();
        match x {
            Ok(s) => {
                // The settlement landed first; the 冲正 found and reversed it.
                let s = s.into_inner();
                assert!(undo.found, "a landed settlement must be found by 冲正");
                assert_reverses(undo.reversal.as_ref().unwrap(), &s);
            }
            Err(s) => {
                // The 冲正 came first and closed the request id.
                assert_eq!(s.code(), tonic::Code::AlreadyExists, "{s:?}");
                assert!(!undo.found);
            }
        }
        let live: Vec<_> = by_visit(&w.h, &m3)
            .await
            .into_iter()
            .filter(|s| {
                s.kind == proto::SettlementKind::Settlement as i32 && s.reversed_by.is_empty()
            })
            .collect();
        assert!(live.is_empty(), "no live settlement after 冲正: {live:?}");

        // An upload racing the settlement: in the settlement, or refused.
        let m4 = visit().await;
        let (x, y) = tokio::join!(
            try_settle(&w.h, &m4, false),
            upload_as(&w.h, upload_req(&m4, vec![line("2", "A001", "1", "20.00")]))
        );
        let s = x.must();
        match y {
            Ok(_) => assert_eq!((s.line_count, s.medfee_sumamt.as_str()), (2, "120.00")),
            Err(e) => {
                assert_rule(&e, "visit_settled");
                assert_eq!((s.line_count, s.medfee_sumamt.as_str()), (1, "100.00"));
            }
        }

        // A cancellation racing the settlement.
        let m5 = visit().await;
        let (x, y) = tokio::join!(try_settle(&w.h, &m5, true), cancel_as(&w.h, &m5));
        match (x, y) {
            (Ok(s), Err(e)) => {
                assert_rule(&e, "visit_settled");
                assert_eq!(s.into_inner().acct_pay, "50.00");
                expected_balance -= 5_000;
            }
            (Err(e), Ok(v)) => {
                assert_rule(&e, "visit_cancelled");
                assert_eq!(v.into_inner().status, proto::VisitStatus::Cancelled as i32);
            }
            (x, y) => panic!("settle {x:?} and cancel {y:?}: exactly one must win"),
        }
        assert_eq!(pacct(&w, &p.psn_no).await, yuan(expected_balance));
    }
    for s in by_person(&ts, &p.psn_no).await {
        assert_identities(&s);
    }
    verify_ok(&ts).await;
}

type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

async fn settle_as(h: &Setl, request_id: &str, mdtrt_id: &str) -> Answer<proto::Settlement> {
    h.clone()
        .settle(settle_req(request_id, mdtrt_id, true))
        .await
}

async fn undo_as(
    h: &Setl,
    req: proto::ReverseByRequestIdRequest,
) -> Answer<proto::ReverseByRequestIdResponse> {
    h.clone().reverse_by_request_id(req).await
}

async fn upload_as(
    h: &Setl,
    req: proto::UploadFeeLinesRequest,
) -> Answer<proto::UploadFeeLinesResponse> {
    h.clone().upload_fee_lines(req).await
}

async fn cancel_as(h: &Setl, mdtrt_id: &str) -> Answer<proto::Visit> {
    h.clone()
        .cancel_visit(proto::CancelVisitRequest {
            request_id: rid(),
            mdtrt_id: mdtrt_id.into(),
        })
        .await
}
