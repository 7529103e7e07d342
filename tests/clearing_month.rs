//! A full clearing month over gRPC, figures computed by hand (issue 5's acceptance scenario):
//! settlements in four regions, a disputed line rejected and then reversed, a reversal after the
//! close, prepayment draw-down, netting, recorded transfers, the next month's adjustments —
//! and `LedgerService/Verify` after every step. Runs on SQLite and on PostgreSQL.
//!
//! Regions: Wuhai 150300 (W), Ordos 150600 (O), Shizuishan 640200 (N), Beijing 110000 (B).
//! Hospitals: H15060000001 in Ordos, H64020000001 in Shizuishan, H15030000001 in Wuhai; each
//! region's catalogue is the kit's (A001 class A, no cap). Every home policy: employees,
//! inpatient, any level, ratio 0.80, no deductible, no cap. Patients are filed (long-term
//! residence) where they are treated; no personal account is used, so each settlement's
//! due = fund = 0.80 × medfee.
//!
//! Month P (the current month):
//!   a  W patient at Ordos       A001 10 × 100.00 = 1000.00 → fund  800.00   W→O
//!   b  W patient at Shizuishan  A001  5 × 100.00 =  500.00 → fund  400.00   W→N
//!   c  O patient at Wuhai       A001 20 × 100.00 = 2000.00 → fund 1600.00   O→W
//!   d  B patient at Ordos       A001 30 × 100.00 = 3000.00 → fund 2400.00   B→O
//!   e  N patient at Wuhai       A001 25 × 100.00 = 2500.00 → fund 2000.00   N→W
//!   f  W patient at Ordos       A001  3 × 100.00 =  300.00 → fund  240.00   W→O (disputed)
//! Prepayments before the close: B 1000.00, N 2000.00.
//!
//! Close P → five statements (clearing type 21). W disputes f; O rejects the dispute; every
//! statement is confirmed. Positions of P (receivable − payable):
//!   W: (1600.00 + 2000.00) − (800.00 + 400.00) = +2400.00
//!   O: (800.00 + 2400.00) − 1600.00             = +1600.00
//!   N: 400.00 − 2000.00                          = −1600.00
//!   B: 0.00 − 2400.00                            = −2400.00        (sum 0.00)
//! Payers by amount: B 2400.00, N 1600.00; receivers: W 2400.00, O 1600.00. Instructions:
//!   TR{P}-001 B→W 2400.00: prepayment 1000.00 (all B holds), bank 1400.00
//!   TR{P}-002 N→O 1600.00: prepayment 1600.00 (N holds 2000.00), bank 0.00
//! Warning lines (50 % of the average net payable of the netted periods so far, here one):
//!   B 1200.00 (after 0.00 → top up), N 800.00 (after 400.00 → top up), W and O 0.00.
//! B records its 1400.00 transfer → P is SETTLED.
//!
//! Month P+1 (after P's close): the Wuhai hospital reverses c (−1600.00), the Ordos hospital
//! reverses f as the rejection requires (−240.00), and settles
//!   g  W patient at Ordos       A001  2 × 100.00 =  200.00 → fund  160.00   W→O
//! Statements of P+1: W→O: g 160.00 plus f's reversal, which follows f's rejected dispute (kept
//! out: f was never paid, so its reversal must not be credited); O→W: −1600.00.
//! Positions: W: −1600.00 − 160.00 = −1760.00; O: 160.00 − (−1600.00) = +1760.00.
//!   TR{P+1}-001 W→O 1760.00, all by bank. W's warning line: 50 % × (0.00 + 1760.00) / 2 = 440.00.
//! At the end every due, advance and net account is 0.00; prepay:110000 0.00, prepay:640200
//! 400.00.

#[macro_use]
mod common;

use common::clearing_kit::*;
use common::kit::*;
use common::*;
use medsettle::proto;
use proto::{
    CareType, DisputeState, ExportKind, FilingType, InsuranceType, PeriodStatus, StatementStatus,
};

both_engines!(full_month);

const WUHAI_H: &str = REFERRER;

/// Enrols an employee of `home` (no account money) and files long-term residence in `dest`.
async fn patient(bureau: &Caller, home: &str, area: &str, seq: u32, dest: &str) -> Psn {
    let p = enrol(
        bureau,
        employee(&national_id(area, "19750101", seq), home, "0.00"),
    )
    .await;
    bureau
        .fil()
        .file_filing(proto::FileFilingRequest {
            request_id: rid(),
            psn_no: p.psn_no.clone(),
            filing_type: FilingType::LongTermResident as i32,
            destination: dest.into(),
            valid_from: String::new(),
            valid_until: String::new(),
            referring_institution: String::new(),
        })
        .await
        .must();
    p
}

/// An inpatient stay today: A001 × `qty` at 100.00, settled without the personal account.
async fn stay(h: &Setl, p: &Psn, qty: &str) -> proto::Settlement {
    let v = open(
        h,
        &p.national_id,
        InsuranceType::Employee,
        CareType::Inpatient,
        "",
    )
    .await;
    upload(h, &v.mdtrt_id, vec![line("1", "A001", qty, "100.00")]).await;
    let s = settle(h, &v.mdtrt_id, false).await;
    assert_identities(&s);
    s
}

async fn balance(op: &Caller, account: &str) -> String {
    op.led()
        .get_balance(proto::GetBalanceRequest {
            account: account.into(),
        })
        .await
        .must()
        .balance
}

/// (statement_id, status, line_count, due, disputed_count, disputed_due).
fn figures(ss: &[proto::Statement]) -> Vec<(String, i32, u64, String, u64, String)> {
    ss.iter()
        .map(|s| {
            (
                s.statement_id.clone(),
                s.status,
                s.line_count,
                s.due.clone(),
                s.disputed_count,
                s.disputed_due.clone(),
            )
        })
        .collect()
}

fn st(p: &str, home: &str, treat: &str) -> String {
    format!("ST{p}-{home}-{treat}-21")
}

fn s5(a: &str, b: &str, c: &str, d: &str, e: &str) -> (String, String, String, String, String) {
    (a.into(), b.into(), c.into(), d.into(), e.into())
}

async fn full_month(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let op = &w.op;
    create_region(op, BEIJING).await;
    register(&w, HOSP_NX, SHIZUISHAN, 3).await;
    let beijing = ts.bureau(BEIJING).await;
    catalogue(&w.nx, SHIZUISHAN, ordos_items()).await;
    catalogue(&w.wuhai, WUHAI, ordos_items()).await;
    for (bureau, region) in [
        (&w.wuhai, WUHAI),
        (&w.ordos, ORDOS),
        (&w.nx, SHIZUISHAN),
        (&beijing, BEIJING),
    ] {
        put_policy(bureau, region, JAN1, inpatient_policy("0.80")).await;
    }
    let pa = patient(&w.wuhai, WUHAI, "150302", 1, ORDOS).await;
    let pb = patient(&w.wuhai, WUHAI, "150302", 2, SHIZUISHAN).await;
    let pf = patient(&w.wuhai, WUHAI, "150302", 3, ORDOS).await;
    let pc = patient(&w.ordos, ORDOS, "150602", 4, WUHAI).await;
    let pd = patient(&beijing, BEIJING, "110101", 5, ORDOS).await;
    let pe = patient(&w.nx, SHIZUISHAN, "640202", 6, WUHAI).await;
    let h_ordos = &w.h;
    let h_nx = hosp(&ts, HOSP_NX).await;
    let h_wuhai = hosp(&ts, WUHAI_H).await;
    let c = clients(&ts).await;

    // Prepayments (bank:{r} → prepay:{r}).
    let bj = deposit_prepay(&c.beijing, BEIJING, "1000.00", "BJ-PRE-0001").await;
    assert_eq!((bj.balance.as_str(), bj.top_up), ("1000.00", false));
    let nx = deposit_prepay(&c.nx, SHIZUISHAN, "2000.00", "NX-PRE-0001").await;
    assert_eq!(nx.balance, "2000.00");
    verify_ok(&ts).await;

    // ---------------------------------------------------------------- month P
    let sa = stay(h_ordos, &pa, "10").await;
    let sb = stay(&h_nx, &pb, "5").await;
    let sc = stay(&h_wuhai, &pc, "20").await;
    let sd = stay(h_ordos, &pd, "30").await;
    let se = stay(&h_wuhai, &pe, "25").await;
    let sf = stay(h_ordos, &pf, "3").await;
    let fund = |s: &proto::Settlement| (s.medfee_sumamt.clone(), s.fund_pay_sumamt.clone());
    assert_eq!(fund(&sa), ("1000.00".into(), "800.00".into()));
    assert_eq!(fund(&sb), ("500.00".into(), "400.00".into()));
    assert_eq!(fund(&sc), ("2000.00".into(), "1600.00".into()));
    assert_eq!(fund(&sd), ("3000.00".into(), "2400.00".into()));
    assert_eq!(fund(&se), ("2500.00".into(), "2000.00".into()));
    assert_eq!(fund(&sf), ("300.00".into(), "240.00".into()));
    let p = sa.clearing_period.clone();
    for s in [&sb, &sc, &sd, &se, &sf] {
        assert_eq!(s.clearing_period, p, "the build straddled a month end");
    }
    verify_ok(&ts).await;

    advance_past(&ts, &p);
    let closed = close(&c.op, &p, 10).await;
    assert_eq!(
        (closed.status, closed.statements),
        (PeriodStatus::Closed as i32, 5)
    );
    let pending = StatementStatus::Pending as i32;
    let confirmed = StatementStatus::Confirmed as i32;
    let f5 = |id: String, status, n, due: &str, dn, dd: &str| {
        (id, status, n, due.to_string(), dn, dd.to_string())
    };
    assert_eq!(
        figures(&statements(&c.op, &p).await),
        vec![
            f5(st(&p, BEIJING, ORDOS), pending, 1, "2400.00", 0, "0.00"),
            f5(st(&p, WUHAI, ORDOS), pending, 2, "1040.00", 0, "0.00"),
            f5(st(&p, WUHAI, SHIZUISHAN), pending, 1, "400.00", 0, "0.00"),
            f5(st(&p, ORDOS, WUHAI), pending, 1, "1600.00", 0, "0.00"),
            f5(st(&p, SHIZUISHAN, WUHAI), pending, 1, "2000.00", 0, "0.00"),
        ]
    );
    verify_ok(&ts).await;

    // W disputes f, confirms its statements; O rejects the dispute; the others confirm.
    let wo = st(&p, WUHAI, ORDOS);
    let disputed = c
        .wuhai
        .clone()
        .dispute_lines(dispute_req(&wo, &[(&sf.setl_id, "patient never admitted")]))
        .await
        .must();
    assert_eq!(
        (disputed.due.as_str(), disputed.disputed_due.as_str()),
        ("800.00", "240.00")
    );
    let rejected = resolve(&c.ordos, &wo, &sf.setl_id, false, "to be reversed").await;
    assert_eq!(rejected.lines_resolved, 1);
    let line = rejected.line.expect("line");
    assert_eq!(
        (line.dispute_state, line.disputed),
        (DisputeState::Rejected as i32, true)
    );
    verify_ok(&ts).await;
    for (bureau, id) in [
        (&c.wuhai, wo.clone()),
        (&c.wuhai, st(&p, WUHAI, SHIZUISHAN)),
        (&c.ordos, st(&p, ORDOS, WUHAI)),
        (&c.beijing, st(&p, BEIJING, ORDOS)),
        (&c.nx, st(&p, SHIZUISHAN, WUHAI)),
    ] {
        bureau
            .clone()
            .confirm_statement(confirm_req(&id))
            .await
            .must();
    }
    assert_eq!(
        get_period(&c.op, &p).await.status,
        PeriodStatus::Confirmed as i32
    );
    assert_eq!(
        figures(&statements(&c.op, &p).await)[1],
        f5(wo.clone(), confirmed, 2, "800.00", 1, "240.00")
    );
    verify_ok(&ts).await;

    // Netting with prepayment draw-down.
    let n = net(&c.op, &p).await;
    assert_eq!(
        n.period.as_ref().map(|x| x.status),
        Some(PeriodStatus::Netted as i32)
    );
    assert_eq!(
        nets(&n),
        vec![
            (BEIJING.to_string(), "-2400.00".to_string()),
            (WUHAI.into(), "2400.00".into()),
            (ORDOS.into(), "1600.00".into()),
            (SHIZUISHAN.into(), "-1600.00".into()),
        ]
    );
    let pos = |r: &str| {
        n.positions
            .iter()
            .find(|x| x.region == r)
            .map(|x| {
                (
                    x.payable.clone(),
                    x.receivable.clone(),
                    x.prepay_drawn.clone(),
                    x.prepay_after.clone(),
                    x.warning_line.clone(),
                    x.top_up,
                )
            })
            .expect("position")
    };
    let p6 = |a: &str, b: &str, c: &str, d: &str, e: &str, f| {
        (a.into(), b.into(), c.into(), d.into(), e.into(), f)
    };
    assert_eq!(
        pos(BEIJING),
        p6("2400.00", "0.00", "1000.00", "0.00", "1200.00", true)
    );
    assert_eq!(
        pos(SHIZUISHAN),
        p6("2000.00", "400.00", "1600.00", "400.00", "800.00", true)
    );
    assert_eq!(
        pos(WUHAI),
        p6("1200.00", "3600.00", "0.00", "0.00", "0.00", false)
    );
    assert_eq!(
        pos(ORDOS),
        p6("1600.00", "3200.00", "0.00", "0.00", "0.00", false)
    );
    assert_eq!(
        instructions(&n),
        vec![
            s5(BEIJING, WUHAI, "2400.00", "1000.00", "1400.00"),
            s5(SHIZUISHAN, ORDOS, "1600.00", "1600.00", "0.00"),
        ]
    );
    let tr1 = format!("TR{p}-001");
    assert_eq!(n.instructions[0].instruction_id, tr1);
    assert!(!n.instructions[0].recorded);
    assert!(n.instructions[1].recorded, "nothing to transfer: recorded");
    assert_eq!(balance(op, "prepay:110000").await, "0.00");
    assert_eq!(balance(op, "prepay:640200").await, "400.00");
    assert_eq!(balance(op, "net:110000").await, "1400.00");
    assert_eq!(balance(op, "net:150300").await, "-1400.00");
    assert_eq!(balance(op, "net:150600").await, "0.00");
    assert_eq!(balance(op, "net:640200").await, "0.00");
    // f is still owed in due:150300->150600 until it is reversed; the rest is netted.
    assert_eq!(balance(op, "due:150300->150600").await, "240.00");
    assert_eq!(balance(op, "due:110000->150600").await, "0.00");
    let bj = prepayment(&c.beijing, BEIJING).await;
    assert_eq!(
        (bj.balance.as_str(), bj.warning_line.as_str(), bj.top_up),
        ("0.00", "1200.00", true)
    );
    verify_ok(&ts).await;

    // Month P+1 begins: adjustments after the close.
    let rc = reverse(&h_wuhai, &sc).await;
    let rf = reverse(h_ordos, &sf).await;
    let sg = stay(h_ordos, &pa, "2").await;
    assert_eq!(fund(&sg), ("200.00".into(), "160.00".into()));
    let p1 = next_period(&p);
    for s in [&rc, &rf, &sg] {
        assert_eq!(s.clearing_period, p1);
    }
    verify_ok(&ts).await;

    // B pays its bank part; P is settled.
    let rec = record_transfer(&c.beijing, &tr1, "1400.00", "BJ-20261220-77").await;
    let period = rec.period.expect("period");
    assert_eq!(period.status, PeriodStatus::Settled as i32);
    assert!(!period.settled_at.is_empty());
    assert!(rec.instruction.expect("instruction").recorded);
    for r in [BEIJING, WUHAI, ORDOS, SHIZUISHAN] {
        assert_eq!(balance(op, &format!("net:{r}")).await, "0.00", "net:{r}");
    }
    verify_ok(&ts).await;

    // ---------------------------------------------------------------- month P+1
    advance_past(&ts, &p1);
    let closed = close(&c.op, &p1, 0).await;
    assert_eq!(closed.statements, 2);
    let wo1 = st(&p1, WUHAI, ORDOS);
    let full = statement(&c.op, &wo1).await;
    let follower = full
        .lines
        .iter()
        .find(|l| l.setl_id == rf.setl_id)
        .expect("f's reversal is stated");
    assert_eq!(
        (
            follower.follows.as_str(),
            follower.dispute_state,
            follower.disputed,
            follower.due.as_str()
        ),
        (
            sf.setl_id.as_str(),
            DisputeState::Rejected as i32,
            true,
            "-240.00"
        )
    );
    assert_eq!(
        figures(&statements(&c.op, &p1).await),
        vec![
            f5(wo1.clone(), pending, 2, "160.00", 1, "-240.00"),
            f5(st(&p1, ORDOS, WUHAI), pending, 1, "-1600.00", 0, "0.00"),
        ]
    );
    c.wuhai
        .clone()
        .confirm_statement(confirm_req(&wo1))
        .await
        .must();
    c.ordos
        .clone()
        .confirm_statement(confirm_req(&st(&p1, ORDOS, WUHAI)))
        .await
        .must();
    verify_ok(&ts).await;
    let n1 = net(&c.op, &p1).await;
    assert_eq!(
        nets(&n1),
        vec![
            (WUHAI.to_string(), "-1760.00".to_string()),
            (ORDOS.into(), "1760.00".into()),
        ]
    );
    assert_eq!(
        instructions(&n1),
        vec![s5(WUHAI, ORDOS, "1760.00", "0.00", "1760.00")]
    );
    let wp = n1.positions.iter().find(|x| x.region == WUHAI).expect("W");
    assert_eq!((wp.warning_line.as_str(), wp.top_up), ("440.00", true));
    verify_ok(&ts).await;
    let rec = record_transfer(&c.wuhai, &format!("TR{p1}-001"), "1760.00", "WH-0107-1").await;
    assert_eq!(
        rec.period.map(|x| x.status),
        Some(PeriodStatus::Settled as i32)
    );

    // The books at the end: every clearing account is square.
    for a in [
        "due:150300->150600",
        "due:150300->640200",
        "due:150600->150300",
        "due:110000->150600",
        "due:640200->150300",
        "advance:150300",
        "advance:150600",
        "advance:640200",
        "net:150300",
        "net:150600",
        "net:640200",
        "net:110000",
        "prepay:110000",
    ] {
        assert_eq!(balance(op, a).await, "0.00", "{a}");
    }
    assert_eq!(balance(op, "prepay:640200").await, "400.00");
    verify_ok(&ts).await;

    // The exports say the same.
    assert_eq!(
        export(&c.op, &p, ExportKind::Transfers).await,
        format!(
            "instruction_id,period,seq,payer,receiver,amount,prepay,bank,recorded,bank_reference,value_date\n\
             TR{p}-001,{p},1,110000,150300,2400.00,1000.00,1400.00,true,BJ-20261220-77,2026-12-20\n\
             TR{p}-002,{p},2,640200,150600,1600.00,1600.00,0.00,true,,\n"
        )
    );
    assert_eq!(
        export(&c.nx, &p, ExportKind::Positions).await,
        format!(
            "period,region,payable,receivable,net,prepay_before,prepay_drawn,prepay_after,warning_line,top_up\n\
             {p},640200,2000.00,400.00,-1600.00,2000.00,1600.00,400.00,800.00,true\n"
        )
    );
    // `medsettle clearing export` prints the same CSV, or an aligned table.
    let token = ts.token(medsettle::service::auth::Grant::Operator).await;
    let cli = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medsettle"))
            .args(["clearing", "export", "--period", &p, "--kind", "transfers"])
            .args([
                "--format",
                format,
                "--server",
                &format!("http://{}", ts.addr),
            ])
            .env("MEDSETTLE_TOKEN", &token)
            .output()
            .expect("run medsettle");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    assert_eq!(cli("csv"), export(&c.op, &p, ExportKind::Transfers).await);
    let table = cli("table");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][0], "instruction_id", "{table}");
    assert!(rows[1][0].chars().all(|ch| ch == '-'), "{table}");
    let tr1_row = format!(
        "TR{p}-001 {p} 1 110000 150300 2400.00 1000.00 1400.00 true BJ-20261220-77 2026-12-20"
    );
    assert_eq!(rows[2], tr1_row.split(' ').collect::<Vec<_>>(), "{table}");
    // Columns line up: every row has its amount column ending at the same place.
    let ends: Vec<usize> = table
        .lines()
        .skip(2)
        .map(|l| l.find(".00").map_or(0, |i| i + 3))
        .collect();
    assert!(ends.iter().all(|e| *e == ends[0] && *e > 0), "{table}");
    let csv = export(&c.op, &p, ExportKind::Statements).await;
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(
        csv.lines().any(|l| l.starts_with(&format!(
            "{wo},{p},150300,150600,21,CONFIRMED,2,1000.00,800.00,0.00,1,240.00,800.00,"
        ))),
        "{csv}"
    );
}
