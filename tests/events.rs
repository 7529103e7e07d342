//! EventService end to end on both engines: a bureau follows the settlements and clearing events
//! that concern it, in commit order, and resumes from a cursor with nothing missed and nothing
//! twice — also while settlements commit concurrently.
//!
//! World: the kit's (Wuhai patients filed to Ordos, H15060000001 in Ordos); Wuhai's policy:
//! employees, inpatient, 0.80, no deductible, no cap. A stay of A001 × q at 100.00 settles
//! medfee q × 100.00, fund q × 80.00, no account: the home bureau owes q × 80.00.

#[macro_use]
mod common;

use common::clearing_kit::*;
use common::kit::*;
use common::*;
use medsettle::proto;
use medsettle::proto::event_service_client::EventServiceClient;
use medsettle::service::auth::Grant;
use proto::{CareType, EventKind, FilingType, InsuranceType};
use std::time::Duration;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

both_engines!(
    follow_and_resume,
    scope_filter_and_refusals,
    concurrent_settlements_arrive_once_in_order,
);

type Ev = EventServiceClient<InterceptedService<Channel, Auth>>;

async fn events_as(ts: &TestServer, grant: Grant) -> Ev {
    let token = ts.token(grant).await;
    EventServiceClient::with_interceptor(
        ts.channel.clone(),
        Auth(format!("Bearer {token}").parse().expect("ASCII")),
    )
}

struct W {
    ts: TestServer,
    w: World,
    patients: Vec<Psn>,
}

async fn setup(b: Backend, patients: u32) -> W {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, inpatient_policy("0.80")).await;
    let mut ps = Vec::new();
    for i in 1..=patients {
        let p = wuhai_employee(&w, i, "0.00").await;
        file(&w, &p.psn_no, FilingType::LongTermResident, ORDOS, "", "").await;
        ps.push(p);
    }
    W {
        ts,
        w,
        patients: ps,
    }
}

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
    settle(h, &v.mdtrt_id, false).await
}

/// Follows from `cursor` and returns the first `n` events (panics after 20 s without them).
async fn take(ev: &Ev, cursor: &str, kinds: &[EventKind], n: usize) -> Vec<proto::Event> {
    let mut stream = ev
        .clone()
        .follow_events(proto::FollowEventsRequest {
            cursor: cursor.into(),
            kinds: kinds.iter().map(|k| *k as i32).collect(),
        })
        .await
        .must();
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived: {out:#?}", out.len()))
            .expect("stream");
        out.push(next.expect("the stream ended"));
    }
    out
}

/// Nothing more arrives within a short while (the stream stays open).
async fn quiet(ev: &Ev, cursor: &str) {
    let mut stream = ev
        .clone()
        .follow_events(proto::FollowEventsRequest {
            cursor: cursor.into(),
            kinds: vec![],
        })
        .await
        .must();
    let got = tokio::time::timeout(Duration::from_millis(800), stream.message()).await;
    assert!(got.is_err(), "expected no event, got {got:?}");
}

/// (kind, reference, amount) of events.
fn krs(es: &[proto::Event]) -> Vec<(i32, String, String)> {
    es.iter()
        .map(|e| (e.kind, e.reference.clone(), e.amount.clone()))
        .collect()
}

async fn follow_and_resume(b: Backend) {
    let W { ts, w, patients } = setup(b, 2).await;
    let wuhai = events_as(&ts, bureau_grant(WUHAI)).await;
    // s1: 10 × 100.00 → fund 800.00; s2: 3 × 100.00 → 240.00; r1 reverses s1 (−800.00).
    let s1 = stay(&w.h, &patients[0], "10").await;
    let s2 = stay(&w.h, &patients[1], "3").await;
    let r1 = reverse(&w.h, &s1).await;
    let c = clients(&ts).await;
    deposit_prepay(&c.wuhai, WUHAI, "500.00", "WH-PRE-1").await;

    let all = take(&wuhai, "", &[], 4).await;
    let booked = EventKind::SettlementBooked as i32;
    let reversed = EventKind::SettlementReversed as i32;
    let deposited = EventKind::PrepaymentDeposited as i32;
    assert_eq!(
        krs(&all[..3]),
        vec![
            (booked, s1.setl_id.clone(), "800.00".into()),
            (booked, s2.setl_id.clone(), "240.00".into()),
            (reversed, r1.setl_id.clone(), "-800.00".into()),
        ]
    );
    assert_eq!((all[3].kind, all[3].amount.as_str()), (deposited, "500.00"));
    let e1 = &all[0];
    assert_eq!(
        (
            e1.home_region.as_str(),
            e1.treatment_region.as_str(),
            e1.institution.as_str(),
            e1.medfee_sumamt.as_str(),
            e1.fund_pay_sumamt.as_str(),
            e1.acct_pay.as_str(),
            e1.period.as_str()
        ),
        (
            WUHAI,
            ORDOS,
            HOSP,
            "1000.00",
            "800.00",
            "0.00",
            s1.clearing_period.as_str()
        )
    );
    assert_eq!(all[2].reverses, s1.setl_id);
    // Cursors strictly increase in the order delivered and are distinct.
    let cursors: Vec<&str> = all.iter().map(|e| e.cursor.as_str()).collect();
    let mut uniq = cursors.clone();
    uniq.dedup();
    assert_eq!(uniq.len(), 4);

    // Resume after the first event: the other three, the same, nothing twice.
    let rest = take(&wuhai, &all[0].cursor, &[], 3).await;
    assert_eq!(krs(&rest), krs(&all[1..]));
    // Resume after the last: nothing until something new commits.
    quiet(&wuhai, &all[3].cursor).await;
    let s3 = stay(&w.h, &patients[1], "1").await;
    let next = take(&wuhai, &all[3].cursor, &[], 1).await;
    assert_eq!(
        krs(&next),
        vec![(booked, s3.setl_id.clone(), "80.00".into())]
    );

    // A follower that is connected while events commit receives them live.
    let live = {
        let wuhai = wuhai.clone();
        let from = next[0].cursor.clone();
        tokio::spawn(async move { take(&wuhai, &from, &[], 2).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s4 = stay(&w.h, &patients[0], "2").await;
    let r4 = reverse(&w.h, &s4).await;
    let got = live.await.expect("follower task");
    assert_eq!(
        krs(&got),
        vec![
            (booked, s4.setl_id.clone(), "160.00".into()),
            (reversed, r4.setl_id.clone(), "-160.00".into()),
        ]
    );

    // Clearing events: the close of the month (every bureau), the confirmation.
    let p = s1.clearing_period.clone();
    advance_past(&ts, &p);
    close(&c.op, &p, 0).await;
    let st = format!("ST{p}-{WUHAI}-{ORDOS}-21");
    c.wuhai
        .clone()
        .confirm_statement(confirm_req(&st))
        .await
        .must();
    let clearing = take(&wuhai, &got[1].cursor, &[], 2).await;
    assert_eq!(
        krs(&clearing),
        vec![
            (EventKind::PeriodClosed as i32, p.clone(), "0.00".into()),
            // s2 240.00 + s3 80.00 (s1, s4 reversed): 320.00
            (
                EventKind::StatementConfirmed as i32,
                st.clone(),
                "320.00".into()
            ),
        ]
    );
    verify_ok(&ts).await;
}

async fn scope_filter_and_refusals(b: Backend) {
    let W { ts, w, patients } = setup(b, 1).await;
    let s1 = stay(&w.h, &patients[0], "5").await;
    let r1 = reverse(&w.h, &s1).await;
    let c = clients(&ts).await;
    create_region(&w.op, BEIJING).await;
    deposit_prepay(&c.beijing, BEIJING, "100.00", "BJ-1").await;

    // Ordos is the treatment bureau: it sees both settlements, not Beijing's deposit.
    let ordos = events_as(&ts, bureau_grant(ORDOS)).await;
    let seen = take(&ordos, "", &[], 2).await;
    assert_eq!(
        seen.iter().map(|e| e.reference.clone()).collect::<Vec<_>>(),
        vec![s1.setl_id.clone(), r1.setl_id.clone()]
    );
    quiet(&ordos, &seen[1].cursor).await;
    // Shizuishan is party to nothing; Beijing sees only its deposit.
    let nx = events_as(&ts, bureau_grant(SHIZUISHAN)).await;
    quiet(&nx, "").await;
    let bj = events_as(&ts, bureau_grant(BEIJING)).await;
    let mine = take(&bj, "", &[], 1).await;
    assert_eq!(mine[0].kind, EventKind::PrepaymentDeposited as i32);
    assert_eq!(mine[0].home_region, BEIJING);
    // Operators see everything; a kind filter keeps only what was asked for.
    let op = events_as(&ts, Grant::Operator).await;
    assert_eq!(take(&op, "", &[], 3).await.len(), 3);
    let only = take(&op, "", &[EventKind::SettlementReversed], 1).await;
    assert_eq!(only[0].reference, r1.setl_id);

    // Refusals.
    let inst = events_as(&ts, inst_grant(HOSP)).await;
    let err = inst
        .clone()
        .follow_events(proto::FollowEventsRequest::default())
        .await
        .expect_err("institutions may not follow");
    assert_eq!(err.code(), Code::PermissionDenied);
    for bad in ["x", "1", "-1:", "1:a/b", "99999999999999999999:"] {
        let err = op
            .clone()
            .follow_events(proto::FollowEventsRequest {
                cursor: bad.into(),
                kinds: vec![],
            })
            .await
            .expect_err("bad cursor");
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert!(err.message().contains("cursor"), "{}", err.message());
    }
    let mut anon = EventServiceClient::new(ts.channel.clone());
    let err = anon
        .follow_events(proto::FollowEventsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
}

/// 24 settlements from 4 concurrent clients while a follower reads: every one arrives exactly
/// once, and reading again from any delivered cursor gives exactly the events after it.
async fn concurrent_settlements_arrive_once_in_order(b: Backend) {
    let W { ts, w, patients } = setup(b, 4).await;
    let wuhai = events_as(&ts, bureau_grant(WUHAI)).await;
    let follower = {
        let wuhai = wuhai.clone();
        tokio::spawn(async move { take(&wuhai, "", &[], 24).await })
    };
    let mut tasks = Vec::new();
    for p in patients.clone() {
        let h = w.h.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..6 {
                ids.push(stay(&h, &p, "1").await.setl_id);
            }
            ids
        }));
    }
    let mut booked = Vec::new();
    for t in tasks {
        booked.extend(t.await.expect("settling task"));
    }
    let got = follower.await.expect("follower");
    let mut ids: Vec<String> = got.iter().map(|e| e.reference.clone()).collect();
    ids.sort();
    booked.sort();
    assert_eq!(ids, booked, "every settlement exactly once");
    // The order is stable: reading again from the start gives the same sequence, and from
    // the k-th cursor exactly the events after it.
    let again = take(&wuhai, "", &[], 24).await;
    assert_eq!(krs(&again), krs(&got));
    for k in [0usize, 7, 22] {
        let rest = take(&wuhai, &got[k].cursor, &[], 23 - k).await;
        assert_eq!(krs(&rest), krs(&got[k + 1..]));
    }
    quiet(&wuhai, &got[23].cursor).await;
    verify_ok(&ts).await;
}
