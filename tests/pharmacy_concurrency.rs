//! PharmacyService under concurrency: many swipes on one personal account at once, with and
//! without account_only, and swipes interleaved with refunds, 冲正 and deposits across persons.
//! The account never goes below zero, pays in full until it runs out, then partially, then
//! nothing; every yuan is accounted for; the books verify. Both engines, fresh databases.

#[macro_use]
mod common;

use common::*;
use kit::*;
use medsettle::proto;
use proto::SettlementKind;
use std::collections::BTreeMap;
use tonic::Code;

both_engines!(
    swipes_drain_one_account,
    account_only_swipes_on_one_account,
    swipes_refunds_and_deposits_interleaved,
    concurrent_refunds_of_one_purchase,
    reversal_races_the_swipe,
    twins_in_flight,
    failures_isolated_in_a_burst,
    swipes_need_no_pool_connection,
    card_and_evoucher_of_one_person_at_once,
);

/// The swipe writer books on a connection of its own, outside the server's pool: with every
/// pool connection held (here by the test, as by long hospital calls or reports), a swipe is
/// still booked at once. Parameters: the server's pool is 8 connections (`TestServer`); one
/// swipe of 1 × A001 7.00 on an account of 100.00 pays 7.00 from the account. Both engines (on
/// PostgreSQL the writer's batches used to take a pool connection and waited here until the
/// pool's acquire timeout).
async fn swipes_need_no_pool_connection(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, 1, "100.00").await;
    // A first swipe: the caller's token is cached and the writer has opened its connection.
    let first = settle(
        &w.ph,
        swipe_req(&rid(), &p, vec![pl("1", "A001", "1", "7.00")], true, false),
    )
    .await
    .must();
    assert_eq!(first.settlement.expect("settlement").acct_pay, "7.00");

    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(ts.db.read().await.expect("a pool connection"));
    }
    let req = swipe_req(&rid(), &p, vec![pl("1", "A001", "1", "7.00")], true, false);
    let second = tokio::time::timeout(std::time::Duration::from_secs(10), settle(&w.ph, req))
        .await
        .expect("the swipe was booked while the pool was held")
        .must();
    let s = second.settlement.expect("settlement");
    assert_eq!(
        (s.acct_pay.as_str(), s.balance_after.as_str()),
        ("7.00", "86.00")
    );
    drop(held);
    assert_eq!(pacct(&w, &p.psn_no).await, "86.00");
    verify_ok(&ts).await;
}

/// One person swiping by card and by e-voucher at once. On PostgreSQL the two credentials are
/// chosen to go to different swipe writers (`writer_of`), whose batches then lock the same
/// person, accumulators and account: they wait for each other (same lock order, no deadlock)
/// and the account is drained exactly as in `swipes_drain_one_account` — 40 swipes of 1 × A001
/// 7.00 on 100.00: 7.00 fourteen times, then 2.00 once, then 0.00; balance 0.00.
async fn card_and_evoucher_of_one_person_at_once(b: Backend) {
    use medsettle::domain::ids::{CardNo, EVoucherToken};
    use medsettle::service::settlement::swipe_batch::writer_of;
    use medsettle::service::settlement::visits::Credential;
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let card_no = "CW00000001";
    let card = Credential::CardNo(CardNo::parse("card", card_no).expect("card"));
    let token = (0..64)
        .map(|k| format!("EV-WUHAI-{k:04}"))
        .find(|t| {
            let ev = Credential::EVoucher(EVoucherToken::parse("ev", t).expect("token"));
            writer_of(&ev, 2) != writer_of(&card, 2)
        })
        .expect("a token another writer takes");
    let p = w
        .wuhai
        .reg()
        .enrol_person(proto::EnrolPersonRequest {
            card_no: card_no.into(),
            evoucher_token: token.clone(),
            ..employee(&national_id("150302", "19700101", 1), WUHAI, "100.00")
        })
        .await
        .must();
    let by_card = Psn {
        psn_no: p.psn_no.clone(),
        card_no: card_no.into(),
    };

    let tasks: Vec<_> = (0..SWIPES)
        .map(|k| {
            let ph = w.pharmacy(k);
            let mut req = swipe_req(
                &rid(),
                &by_card,
                vec![pl("1", "A001", "1", "7.00")],
                true,
                false,
            );
            if k % 2 == 1 {
                req.credential = Some(proto::CardCredential {
                    credential: Some(proto::card_credential::Credential::EvoucherToken(
                        token.clone(),
                    )),
                });
            }
            tokio::spawn(async move { settle(&ph, req).await })
        })
        .collect();
    let mut paid = Vec::new();
    for t in tasks {
        let s = t
            .await
            .expect("task")
            .must()
            .settlement
            .expect("settlement");
        assert_eq!(s.psn_no, p.psn_no);
        paid.push(fen(&s.acct_pay));
    }
    paid.sort_unstable_by(|a, b| b.cmp(a));
    let mut expected = vec![700; 14];
    expected.push(200);
    expected.extend(std::iter::repeat_n(0, SWIPES - 15));
    assert_eq!(paid, expected);
    assert_eq!(pacct(&w, &p.psn_no).await, "0.00");
    assert_eq!(by_person(&ts, &by_card).await.len(), SWIPES);
    verify_ok(&ts).await;
}

/// Concurrent swipes on one account.
const SWIPES: usize = 40;

/// 40 concurrent swipes of 1 × A001 7.00 (class A, no pharmacy rule: the pooled fund pays
/// nothing, the personal part is 7.00) on one account of 100.00, each with use_account:
///   the account pays 7.00 fourteen times (98.00), then 100.00 − 98.00 = 2.00 once (cash 5.00),
///   then 0.00 (cash 7.00) for the remaining 25; balance 0.00 = 100.00 − Σ acct_pay.
async fn swipes_drain_one_account(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, 1, "100.00").await;

    let tasks: Vec<_> = (0..SWIPES)
        .map(|k| {
            let ph = w.pharmacy(k);
            let req = swipe_req(&rid(), &p, vec![pl("1", "A001", "1", "7.00")], true, false);
            tokio::spawn(async move { settle(&ph, req).await })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        let purchase = t.await.expect("task").must();
        let s = purchase.settlement.expect("settlement");
        assert_identities(&s);
        assert_eq!(s.kind, SettlementKind::Settlement as i32);
        assert_eq!(fen(&s.medfee_sumamt), 700);
        assert_eq!(fen(&s.psn_part_amt), 700);
        assert_eq!(fen(&s.fund_pay_sumamt), 0);
        got.push(s);
    }
    assert_eq!(got.len(), SWIPES);

    let total_acct: i64 = got.iter().map(|s| fen(&s.acct_pay)).sum();
    assert!(total_acct <= 10_000, "Σ acct_pay {total_acct} > opening");
    assert_eq!(total_acct, 10_000, "the account is drained exactly");
    let final_balance = pacct(&w, &p.psn_no).await;
    assert_eq!(fen(&final_balance), 10_000 - total_acct);
    assert_eq!(final_balance, "0.00");

    // In the order the account was debited (balance_after descending; ties: larger payment
    // first), it paid 7.00 × 14, then 2.00, then 0.00 × 25.
    let mut order: Vec<(i64, i64, i64)> = got
        .iter()
        .map(|s| {
            (
                fen(&s.balance_after),
                fen(&s.acct_pay),
                fen(&s.psn_cash_pay),
            )
        })
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut expected = Vec::new();
    for k in 1..=14 {
        expected.push((10_000 - 700 * k, 700, 0));
    }
    expected.push((0, 200, 500));
    expected.extend(std::iter::repeat_n((0, 0, 700), SWIPES - 15));
    assert_eq!(order, expected);

    // Each booked once; the ledger agrees.
    assert_eq!(by_person(&ts, &p).await.len(), SWIPES);
    assert_eq!(
        balance(&w.op, &format!("pacct:{}", p.psn_no)).await.balance,
        "0.00"
    );
    verify_ok(&ts).await;
}

/// The same with account_only: exactly floor(100.00 / 7.00) = 14 swipes go through, each paid
/// 7.00 from the account (cash 0.00); the other 26 are FAILED_PRECONDITION insufficient_balance
/// and write nothing; the balance ends at 100.00 − 14 × 7.00 = 2.00.
async fn account_only_swipes_on_one_account(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, 1, "100.00").await;

    let tasks: Vec<_> = (0..SWIPES)
        .map(|k| {
            let ph = w.pharmacy(k);
            let req = swipe_req(&rid(), &p, vec![pl("1", "A001", "1", "7.00")], true, true);
            tokio::spawn(async move { settle(&ph, req).await })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => {
                let s = r.into_inner().settlement.expect("settlement");
                assert_identities(&s);
                assert_eq!(
                    (s.acct_pay.as_str(), s.psn_cash_pay.as_str()),
                    ("7.00", "0.00")
                );
                assert_eq!(s.acct_pay, s.psn_part_amt);
                ok.push(s);
            }
            Err(s) => {
                assert_rule(&s, "insufficient_balance");
                refused += 1;
            }
        }
    }
    assert_eq!(ok.len(), 14, "floor(100.00 / 7.00)");
    assert_eq!(refused, SWIPES - 14);
    // Balances after: 93.00, 86.00, …, 2.00, each once.
    let mut after: Vec<i64> = ok.iter().map(|s| fen(&s.balance_after)).collect();
    after.sort_unstable_by(|a, b| b.cmp(a));
    let expected: Vec<i64> = (1..=14).map(|k| 10_000 - 700 * k).collect();
    assert_eq!(after, expected);
    assert_eq!(pacct(&w, &p.psn_no).await, "2.00");
    assert_eq!(by_person(&ts, &p).await.len(), 14, "refusals wrote nothing");
    verify_ok(&ts).await;
}

/// What one task did to one person's account.
#[derive(Debug)]
enum Done {
    /// A purchase (acct_pay ≥ 0) or a refund (acct_pay ≤ 0), with its balance_after.
    Setl(Box<proto::Settlement>),
    /// A deposit of this many fen.
    Deposit(i64),
}

/// Three persons (100.00, 50.00, 20.00), each at once: 10 plain swipes of 7.00; 4 swipes of
/// 2 × 3.50 followed by a refund of 1 unit (even) or of everything (odd); 2 swipes of 7.00
/// undone by 冲正 of their request id; 4 deposits of 10.00 by the home bureau. All 60 tasks run
/// concurrently, across two pharmacies. At the end, per person:
///   balance = opening + Σ deposits − Σ acct_pay of purchases + Σ |acct_pay| of refunds ≥ 0,
/// every balance_after seen is ≥ 0, and the books verify.
async fn swipes_refunds_and_deposits_interleaved(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let openings = [10_000i64, 5_000, 2_000];
    let mut persons = Vec::new();
    for (i, o) in openings.iter().enumerate() {
        persons.push(person(&w, i as u32 + 1, &yuan(*o)).await);
    }

    let mut tasks = Vec::new();
    for round in 0..10 {
        for (i, p) in persons.iter().enumerate() {
            let ph = if (round + i) % 2 == 0 {
                w.ph.clone()
            } else {
                w.ph2.clone()
            };
            // A plain swipe.
            let req = swipe_req(&rid(), p, vec![pl("1", "A001", "1", "7.00")], true, false);
            let ph1 = ph.clone();
            tasks.push((
                i,
                tokio::spawn(async move {
                    let s = settle(&ph1, req).await.must();
                    vec![Done::Setl(Box::new(s.settlement.unwrap()))]
                }),
            ));
            if round < 4 {
                // A swipe of 2 × 3.50, then a refund of one unit or of everything.
                let req = swipe_req(&rid(), p, vec![pl("1", "A001", "2", "3.50")], true, false);
                let ph2 = ph.clone();
                let whole = round % 2 == 1;
                tasks.push((
                    i,
                    tokio::spawn(async move {
                        let bought = settle(&ph2, req).await.must();
                        let bs = bought.settlement.unwrap();
                        let lines = if whole {
                            vec![]
                        } else {
                            vec![proto::RefundLine {
                                line_no: "1".into(),
                                quantity: "1".into(),
                            }]
                        };
                        let r = refund(
                            &ph2,
                            proto::RefundPurchaseRequest {
                                request_id: rid(),
                                setl_id: bs.setl_id.clone(),
                                lines,
                                reason: String::new(),
                            },
                        )
                        .await
                        .must();
                        let rs = r.settlement.unwrap();
                        assert_eq!(rs.reverses, bs.setl_id);
                        assert_eq!(rs.kind, SettlementKind::Reversal as i32);
                        if whole {
                            assert_eq!(fen(&rs.acct_pay), -fen(&bs.acct_pay));
                        }
                        vec![Done::Setl(Box::new(bs)), Done::Setl(Box::new(rs))]
                    }),
                ));
                // A deposit by the home bureau.
                let bureau = w.wuhai.clone();
                let psn_no = p.psn_no.clone();
                tasks.push((
                    i,
                    tokio::spawn(async move {
                        let d = deposit_to(&bureau, deposit(&psn_no, "10.00")).await.must();
                        assert!(fen(&d.balance) >= 1_000, "{d:?}");
                        vec![Done::Deposit(1_000)]
                    }),
                ));
            }
            if round < 2 {
                // A swipe undone by 冲正 of its request id.
                let id = rid();
                let req = swipe_req(&id, p, vec![pl("1", "A001", "1", "7.00")], true, false);
                let ph3 = ph.clone();
                tasks.push((
                    i,
                    tokio::spawn(async move {
                        let bought = settle(&ph3, req).await.must();
                        let bs = bought.settlement.unwrap();
                        let rev = reverse(
                            &ph3,
                            proto::ReverseByRequestIdRequest {
                                request_id: rid(),
                                original_request_id: id,
                            },
                        )
                        .await
                        .must();
                        assert!(rev.found);
                        let rs = rev.reversal.unwrap();
                        assert_eq!(rs.reverses, bs.setl_id);
                        assert_eq!(fen(&rs.acct_pay), -fen(&bs.acct_pay));
                        assert_eq!(fen(&rs.psn_cash_pay), -fen(&bs.psn_cash_pay));
                        vec![Done::Setl(Box::new(bs)), Done::Setl(Box::new(rs))]
                    }),
                ));
            }
        }
    }
    assert_eq!(tasks.len(), 3 * (10 + 4 * 2 + 2));

    let mut done: BTreeMap<usize, Vec<Done>> = BTreeMap::new();
    for (i, t) in tasks {
        done.entry(i).or_default().extend(t.await.expect("task"));
    }

    for (i, p) in persons.iter().enumerate() {
        let mine = &done[&i];
        let mut deposits = 0i64;
        let mut paid = 0i64;
        let mut refunded = 0i64;
        let mut seen = Vec::new();
        for d in mine {
            match d {
                Done::Deposit(f) => deposits += f,
                Done::Setl(s) => {
                    assert_identities(s);
                    assert_eq!(s.psn_no, p.psn_no);
                    let acct = fen(&s.acct_pay);
                    if s.kind == SettlementKind::Settlement as i32 {
                        assert!(acct >= 0, "{s:?}");
                        paid += acct;
                    } else {
                        assert!(acct <= 0, "{s:?}");
                        refunded += -acct;
                    }
                    assert!(fen(&s.balance_after) >= 0, "{s:?}");
                    seen.push(s.setl_id.clone());
                }
            }
        }
        assert_eq!(deposits, 4 * 1_000);
        let expected = openings[i] + deposits - paid + refunded;
        assert!(expected >= 0);
        let final_balance = pacct(&w, &p.psn_no).await;
        assert_eq!(
            fen(&final_balance),
            expected,
            "person {i}: opening {} + deposits {deposits} − paid {paid} + refunded {refunded}",
            openings[i]
        );
        // The server's own list of the person's settlements is exactly what the tasks saw, and
        // its account figures add up to the same movement.
        let listed = by_person(&ts, p).await;
        let mut listed_ids: Vec<String> = listed.iter().map(|s| s.setl_id.clone()).collect();
        listed_ids.sort();
        seen.sort();
        assert_eq!(listed_ids, seen, "person {i}");
        let net: i64 = listed.iter().map(|s| fen(&s.acct_pay)).sum();
        assert_eq!(net, paid - refunded);
    }
    verify_ok(&ts).await;
}

/// Refunds of one purchase racing each other. A purchase of 2 × A001 3.50 + 3 × A001 7.00
/// (lines "1" and "2", 28.00, all from an account of 100.00: balance 72.00):
/// - 8 concurrent refunds of 1 × line 2: exactly 3 succeed (−7.00 each, account +7.00 each);
///   the other 5 ask for more than is left: INVALID_ARGUMENT lines[0].quantity;
/// - then 6 concurrent refunds of everything left: exactly one succeeds (−7.00), the other 5 are
///   FAILED_PRECONDITION already_refunded;
/// - purchase + refunds = 0.00 in every field; balance back at 100.00.
async fn concurrent_refunds_of_one_purchase(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, 1, "100.00").await;
    let bought =
        w.ph.clone()
            .settle_purchase(swipe_req(
                &rid(),
                &p,
                vec![pl("1", "A001", "2", "3.50"), pl("2", "A001", "3", "7.00")],
                true,
                false,
            ))
            .await
            .must()
            .settlement
            .unwrap();
    assert_eq!(
        (
            bought.medfee_sumamt.as_str(),
            bought.acct_pay.as_str(),
            bought.balance_after.as_str()
        ),
        ("28.00", "28.00", "72.00")
    );
    let refund = |lines: Vec<proto::RefundLine>| {
        let ph = w.ph.clone();
        let req = proto::RefundPurchaseRequest {
            request_id: rid(),
            setl_id: bought.setl_id.clone(),
            lines,
            reason: String::new(),
        };
        tokio::spawn(async move { refund(&ph, req).await })
    };
    let one_of_line_2 = || {
        vec![proto::RefundLine {
            line_no: "2".into(),
            quantity: "1".into(),
        }]
    };

    let tasks: Vec<_> = (0..8).map(|_| refund(one_of_line_2())).collect();
    let mut refunds = Vec::new();
    let mut too_many = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => {
                let s = r.into_inner().settlement.unwrap();
                assert_identities(&s);
                assert_eq!(
                    (s.medfee_sumamt.as_str(), s.acct_pay.as_str()),
                    ("-7.00", "-7.00")
                );
                refunds.push(s);
            }
            Err(s) => {
                assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
                assert_eq!(violated_fields(&s), ["lines[0].quantity"]);
                too_many += 1;
            }
        }
    }
    assert_eq!((refunds.len(), too_many), (3, 5));
    let mut after: Vec<i64> = refunds.iter().map(|s| fen(&s.balance_after)).collect();
    after.sort_unstable();
    assert_eq!(after, [7_900, 8_600, 9_300], "72.00 + 7.00, + 7.00, + 7.00");

    let tasks: Vec<_> = (0..6).map(|_| refund(vec![])).collect();
    let mut rest = Vec::new();
    let mut already = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => rest.push(r.into_inner().settlement.unwrap()),
            Err(s) => {
                assert_rule(&s, "already_refunded");
                already += 1;
            }
        }
    }
    assert_eq!((rest.len(), already), (1, 5));
    assert_eq!(
        (
            rest[0].medfee_sumamt.as_str(),
            rest[0].acct_pay.as_str(),
            rest[0].balance_after.as_str()
        ),
        ("-7.00", "-7.00", "100.00")
    );
    let all: Vec<_> = std::iter::once(bought).chain(refunds).chain(rest).collect();
    for f in [
        |s: &proto::Settlement| fen(&s.medfee_sumamt),
        |s: &proto::Settlement| fen(&s.inscp_scp_amt),
        |s: &proto::Settlement| fen(&s.psn_part_amt),
        |s: &proto::Settlement| fen(&s.acct_pay),
        |s: &proto::Settlement| fen(&s.psn_cash_pay),
    ] {
        assert_eq!(all.iter().map(f).sum::<i64>(), 0);
    }
    assert_eq!(pacct(&w, &p.psn_no).await, "100.00");
    assert_eq!(by_person(&ts, &p).await.len(), 5, "1 purchase + 4 refunds");
    verify_ok(&ts).await;
}

/// 冲正 racing the swipe it undoes: 12 swipes of 7.00 (account 100.00), each sent at the same
/// time as a 冲正 of its request id. Either the swipe lands first and the 冲正 refunds it
/// (found = true, the refund negates it), or the 冲正 closes the id first (found = false) and
/// the swipe is ALREADY_EXISTS. Both ways nothing is kept: the balance ends at 100.00.
async fn reversal_races_the_swipe(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, 1, "100.00").await;
    let mut pairs = Vec::new();
    for k in 0..12 {
        let id = rid();
        let ph = w.pharmacy(k);
        let req = swipe_req(&id, &p, vec![pl("1", "A001", "1", "7.00")], true, false);
        let ph1 = ph.clone();
        let swipe = tokio::spawn(async move { settle(&ph1, req).await });
        let ph2 = ph.clone();
        let undo = tokio::spawn(async move {
            reverse(
                &ph2,
                proto::ReverseByRequestIdRequest {
                    request_id: rid(),
                    original_request_id: id,
                },
            )
            .await
        });
        pairs.push((swipe, undo));
    }
    let (mut undone, mut closed) = (0, 0);
    for (swipe, undo) in pairs {
        let swipe = swipe.await.expect("task");
        let undo = undo.await.expect("task").must();
        match (swipe, undo.found) {
            (Ok(bought), true) => {
                let bs = bought.into_inner().settlement.unwrap();
                let rs = undo.reversal.unwrap();
                assert_eq!(rs.reverses, bs.setl_id);
                assert_eq!(fen(&rs.medfee_sumamt), -fen(&bs.medfee_sumamt));
                assert_eq!(fen(&rs.acct_pay), -fen(&bs.acct_pay));
                undone += 1;
            }
            (Err(s), false) => {
                assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
                assert!(undo.reversal.is_none());
                closed += 1;
            }
            (swipe, found) => panic!("swipe {swipe:?} with 冲正 found = {found}"),
        }
    }
    assert_eq!(undone + closed, 12);
    println!(
        "{undone} swipes landed first and were refunded; {closed} were closed first; \
         {} ABORTED answers retried",
        aborted_retries()
    );
    assert_eq!(pacct(&w, &p.psn_no).await, "100.00");
    assert_eq!(by_person(&ts, &p).await.len(), 2 * undone);
    verify_ok(&ts).await;
}

/// Twins of requests not yet booked, sent at once: 10 request ids, each sent 4 times with the same
/// payload (1 × A001 7.00 from an account of 100.00), all 40 concurrently. Each id is booked
/// once (10 purchases, balance 100.00 − 10 × 7.00 = 30.00) and its 4 answers are identical.
/// Then 6 ids each sent with two different payloads at once (1 × 7.00 and 2 × 7.00): exactly
/// one payload per id is booked (its twin answers ALREADY_EXISTS).
async fn twins_in_flight(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let p = person(&w, 1, "100.00").await;
    let ids: Vec<String> = (0..10).map(|_| rid()).collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        for (k, id) in ids.iter().enumerate() {
            let req = swipe_req(id, &p, vec![pl("1", "A001", "1", "7.00")], true, false);
            let ph = w.ph.clone();
            tasks.push((k, tokio::spawn(async move { settle(&ph, req).await })));
        }
    }
    let mut answers: BTreeMap<usize, Vec<proto::Purchase>> = BTreeMap::new();
    for (k, t) in tasks {
        answers
            .entry(k)
            .or_default()
            .push(t.await.expect("task").must());
    }
    for (k, a) in &answers {
        assert_eq!(a.len(), 4);
        assert!(
            a.iter().all(|x| *x == a[0]),
            "id {k}: twins answered differently"
        );
        let s = a[0].settlement.as_ref().unwrap();
        assert_eq!(s.request_id, ids[*k]);
        assert_eq!(
            (s.acct_pay.as_str(), s.psn_cash_pay.as_str()),
            ("7.00", "0.00")
        );
    }
    let mut setl_ids: Vec<&str> = answers
        .values()
        .map(|a| a[0].settlement.as_ref().unwrap().setl_id.as_str())
        .collect();
    setl_ids.sort_unstable();
    setl_ids.dedup();
    assert_eq!(setl_ids.len(), 10, "one purchase per request id");
    assert_eq!(pacct(&w, &p.psn_no).await, "30.00");
    assert_eq!(by_person(&ts, &p).await.len(), 10);

    // Same id, different payloads, at once.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let id = rid();
        for qty in ["1", "2"] {
            let req = swipe_req(&id, &p, vec![pl("1", "A001", qty, "7.00")], false, false);
            let ph = w.ph.clone();
            tasks.push((
                id.clone(),
                tokio::spawn(async move { settle(&ph, req).await }),
            ));
        }
    }
    let mut per_id: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (id, t) in tasks {
        let e = per_id.entry(id).or_default();
        match t.await.expect("task") {
            Ok(_) => e.0 += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
                e.1 += 1;
            }
        }
    }
    assert_eq!(per_id.len(), 6);
    assert!(per_id.values().all(|v| *v == (1, 1)), "{per_id:?}");
    assert_eq!(by_person(&ts, &p).await.len(), 16);
    // use_account = false: the balance did not move.
    assert_eq!(pacct(&w, &p.psn_no).await, "30.00");
    verify_ok(&ts).await;
}

/// One burst of 35 concurrent swipes where most fail, each for its own reason, next to 10 good
/// ones: every failure is answered with its own status and writes nothing; the good ones are
/// booked (100.00 − 10 × 7.00 = 30.00).
async fn failures_isolated_in_a_burst(b: Backend) {
    let ts = TestServer::start(b).await;
    let w = world(&ts).await;
    let good = person(&w, 1, "100.00").await;
    let lost = person(&w, 2, "100.00").await;
    let short = person(&w, 3, "5.00").await;
    w.wuhai
        .reg()
        .set_card_status(proto::SetCardStatusRequest {
            request_id: rid(),
            psn_no: lost.psn_no.clone(),
            card_status: proto::CardStatus::Lost as i32,
            new_card_no: String::new(),
        })
        .await
        .must();
    let nobody = Psn {
        psn_no: String::new(),
        card_no: "NOSUCHCARD0001".into(),
    };
    let a7 = || vec![pl("1", "A001", "1", "7.00")];
    // (label, request, expected code, expected rule or field)
    let mut cases: Vec<(&str, proto::SettlePurchaseRequest, Code, &str)> = Vec::new();
    for _ in 0..10 {
        cases.push((
            "good",
            swipe_req(&rid(), &good, a7(), true, false),
            Code::Ok,
            "",
        ));
    }
    for _ in 0..5 {
        cases.push((
            "lost",
            swipe_req(&rid(), &lost, a7(), true, false),
            Code::FailedPrecondition,
            "card_lost",
        ));
        cases.push((
            "unknown",
            swipe_req(&rid(), &nobody, a7(), true, false),
            Code::NotFound,
            "",
        ));
        cases.push((
            "negative quantity",
            swipe_req(
                &rid(),
                &good,
                vec![pl("1", "A001", "-1", "7.00")],
                true,
                false,
            ),
            Code::InvalidArgument,
            "lines[0].quantity",
        ));
        cases.push((
            "short, account only",
            swipe_req(&rid(), &short, a7(), true, true),
            Code::FailedPrecondition,
            "insufficient_balance",
        ));
        cases.push((
            "expected total",
            proto::SettlePurchaseRequest {
                expected_total: "7.01".into(),
                ..swipe_req(&rid(), &good, a7(), true, false)
            },
            Code::FailedPrecondition,
            "total_mismatch",
        ));
    }
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|(label, req, code, what)| {
            let ph = w.ph.clone();
            (
                label,
                code,
                what,
                tokio::spawn(async move { settle(&ph, req).await }),
            )
        })
        .collect();
    let mut booked = Vec::new();
    for (label, code, what, t) in tasks {
        match (t.await.expect("task"), code) {
            (Ok(r), Code::Ok) => booked.push(r.into_inner().settlement.unwrap()),
            (Ok(r), _) => panic!("{label}: expected {code:?}, got OK {r:?}"),
            (Err(s), Code::FailedPrecondition) => assert_rule(&s, what),
            (Err(s), Code::InvalidArgument) => {
                assert_eq!(s.code(), code, "{label}: {s:?}");
                assert_eq!(violated_fields(&s), [what], "{label}");
            }
            (Err(s), _) => assert_eq!(s.code(), code, "{label}: {s:?}"),
        }
    }
    assert_eq!(booked.len(), 10);
    assert!(booked.iter().all(|s| s.acct_pay == "7.00"));
    assert_eq!(pacct(&w, &good.psn_no).await, "30.00");
    assert_eq!(by_person(&ts, &good).await.len(), 10);
    for p in [&lost, &short] {
        assert!(
            by_person(&ts, p).await.is_empty(),
            "a refused swipe was booked"
        );
    }
    assert_eq!(pacct(&w, &lost.psn_no).await, "100.00");
    assert_eq!(pacct(&w, &short.psn_no).await, "5.00");
    verify_ok(&ts).await;
}

// ------------------------------------------------------------------------------ kit

mod kit {
    #![allow(dead_code)]

    use super::common::*;
    use medsettle::domain::ids::{InstitutionCode, RegionCode};
    use medsettle::proto;
    use medsettle::proto::pharmacy_service_client::PharmacyServiceClient;
    use medsettle::proto::settlement_service_client::SettlementServiceClient;
    use medsettle::service::auth::Grant;
    use proto::{
        CareType, CatalogueClass, CatalogueKind, DeductibleBasis, InsuranceType, LevelScope,
        PersonCategory, ProvinceScope,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::Interceptor;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;
    use tonic::{Code, Request, Response, Status};
    use tonic_types::StatusExt;

    pub const WUHAI: &str = "150300";
    pub const ORDOS: &str = "150600";
    pub const PH: &str = "P15060000001";
    pub const PH2: &str = "P15060000002";
    pub const JAN1: &str = "2026-01-01";

    /// Adds `authorization: Bearer <token>` to every request.
    #[derive(Clone)]
    pub struct Token(MetadataValue<Ascii>);

    impl Interceptor for Token {
        fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
            req.metadata_mut().insert("authorization", self.0.clone());
            Ok(req)
        }
    }

    pub type Pharm = PharmacyServiceClient<InterceptedService<Channel, Token>>;
    pub type Setl = SettlementServiceClient<InterceptedService<Channel, Token>>;

    async fn bearer(ts: &TestServer, grant: Grant) -> Token {
        let token = ts.token(grant).await;
        Token(format!("Bearer {token}").parse().expect("ASCII token"))
    }

    pub async fn pharm(ts: &TestServer, code: &str) -> Pharm {
        let c = InstitutionCode::parse("code", code).expect("institution code");
        PharmacyServiceClient::with_interceptor(
            ts.channel.clone(),
            bearer(ts, Grant::Institution(c)).await,
        )
    }

    pub struct World {
        pub op: Caller,
        pub wuhai: Caller,
        pub ph: Pharm,
        pub ph2: Pharm,
    }

    impl World {
        /// The two pharmacies in turn: the `k`-th call's.
        pub fn pharmacy(&self, k: usize) -> Pharm {
            if k.is_multiple_of(2) {
                self.ph.clone()
            } else {
                self.ph2.clone()
            }
        }
    }

    /// Regions 150300 / 150600; two Ordos pharmacies; the Ordos catalogue (A001 class A);
    /// Wuhai's policy without a pharmacy rule (the pooled fund pays nothing at pharmacies).
    pub async fn world(ts: &TestServer) -> World {
        let op = ts.operator().await;
        for r in [WUHAI, ORDOS] {
            create_region(&op, r).await;
        }
        for code in [PH, PH2] {
            op.reg()
                .register_institution(pharmacy(code, ORDOS))
                .await
                .must();
        }
        ts.bureau(ORDOS)
            .await
            .reg()
            .upsert_catalogue(proto::UpsertCatalogueRequest {
                request_id: rid(),
                region: ORDOS.into(),
                items: vec![proto::CatalogueItem {
                    region: String::new(),
                    code: "A001".into(),
                    name: "item A001".into(),
                    kind: CatalogueKind::Drug as i32,
                    class: CatalogueClass::A as i32,
                    b_self_pay_ratio: String::new(),
                    price_cap: String::new(),
                    effective_from: JAN1.into(),
                    version: 0,
                }],
            })
            .await
            .must();
        let wuhai = ts.bureau(WUHAI).await;
        wuhai
            .reg()
            .put_policy(proto::PutPolicyRequest {
                request_id: rid(),
                region: WUHAI.into(),
                effective_from: JAN1.into(),
                body: Some(proto::PolicyBody {
                    rules: vec![proto::PolicyRule {
                        insurance_type: InsuranceType::Employee as i32,
                        category: PersonCategory::Active as i32,
                        care_type: CareType::Inpatient as i32,
                        level: LevelScope::Any as i32,
                        province_scope: ProvinceScope::Any as i32,
                        deductible_basis: DeductibleBasis::PerAdmission as i32,
                        deductible: "800.00".into(),
                        repeat_admission_deductible: "400.00".into(),
                        ratio: "0.85".into(),
                        annual_cap: "150000.00".into(),
                        critical_illness: None,
                        assistance: None,
                    }],
                    filing_reductions: vec![],
                    unfiled_allowed: false,
                    unfiled_reduction: None,
                    account_pays_class_c: false,
                    pharmacy_national: false,
                }),
            })
            .await
            .must();
        World {
            op,
            wuhai,
            ph: pharm(ts, PH).await,
            ph2: pharm(ts, PH2).await,
        }
    }

    #[derive(Debug, Clone)]
    pub struct Psn {
        pub psn_no: String,
        pub card_no: String,
    }

    /// An active Wuhai employee with a card and `opening` in the personal account.
    pub async fn person(w: &World, seq: u32, opening: &str) -> Psn {
        let card_no = format!("CW{seq:08}");
        let p = w
            .wuhai
            .reg()
            .enrol_person(proto::EnrolPersonRequest {
                card_no: card_no.clone(),
                ..employee(&national_id("150302", "19700101", seq), WUHAI, opening)
            })
            .await
            .must();
        assert_eq!(p.account_balance, opening);
        Psn {
            psn_no: p.psn_no,
            card_no,
        }
    }

    pub fn pl(no: &str, code: &str, qty: &str, price: &str) -> proto::PurchaseLine {
        proto::PurchaseLine {
            line_no: no.into(),
            code: code.into(),
            name: String::new(),
            quantity: qty.into(),
            unit_price: price.into(),
        }
    }

    pub fn swipe_req(
        request_id: &str,
        p: &Psn,
        lines: Vec<proto::PurchaseLine>,
        use_account: bool,
        account_only: bool,
    ) -> proto::SettlePurchaseRequest {
        proto::SettlePurchaseRequest {
            request_id: request_id.into(),
            credential: Some(proto::CardCredential {
                credential: Some(proto::card_credential::Credential::CardNo(
                    p.card_no.clone(),
                )),
            }),
            insurance_type: InsuranceType::Employee as i32,
            lines,
            use_account,
            account_only,
            expected_total: String::new(),
        }
    }

    // -------------------------------------------------------------- calls under contention

    static ABORTED: AtomicUsize = AtomicUsize::new(0);

    /// How many ABORTED answers this test process has retried.
    pub fn aborted_retries() -> usize {
        ABORTED.load(Ordering::Relaxed)
    }

    /// Calls until the answer is not ABORTED. ABORTED is the server's "transient conflict (or
    /// the original request is still in flight): retry with the same request_id", given after
    /// its own retries; the contract tells the caller to retry, with the same request id.
    async fn retrying<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<Response<T>, Status>
    where
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut n = 0;
        loop {
            match call().await {
                Err(s) if s.code() == Code::Aborted && n < 50 => {
                    n += 1;
                    ABORTED.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    pub async fn settle(
        ph: &Pharm,
        req: proto::SettlePurchaseRequest,
    ) -> Result<Response<proto::Purchase>, Status> {
        retrying(|| {
            let (mut c, r) = (ph.clone(), req.clone());
            async move { c.settle_purchase(r).await }
        })
        .await
    }

    pub async fn refund(
        ph: &Pharm,
        req: proto::RefundPurchaseRequest,
    ) -> Result<Response<proto::Purchase>, Status> {
        retrying(|| {
            let (mut c, r) = (ph.clone(), req.clone());
            async move { c.refund_purchase(r).await }
        })
        .await
    }

    pub async fn reverse(
        ph: &Pharm,
        req: proto::ReverseByRequestIdRequest,
    ) -> Result<Response<proto::ReverseByRequestIdResponse>, Status> {
        retrying(|| {
            let (mut c, r) = (ph.clone(), req.clone());
            async move { c.reverse_purchase_by_request_id(r).await }
        })
        .await
    }

    pub async fn deposit_to(
        bureau: &Caller,
        req: proto::DepositPersonalAccountRequest,
    ) -> Result<Response<proto::DepositPersonalAccountResponse>, Status> {
        retrying(|| {
            let (mut c, r) = (bureau.reg(), req.clone());
            async move { c.deposit_personal_account(r).await }
        })
        .await
    }

    /// The journal balance of `pacct:<psn_no>`, checked against the maintained balance.
    pub async fn pacct(w: &World, psn_no: &str) -> String {
        let journal = balance(&w.op, &format!("pacct:{psn_no}")).await.balance;
        let person = get_person(&w.op, psn_no).await.account_balance;
        assert_eq!(
            journal, person,
            "pacct:{psn_no} journal vs maintained balance"
        );
        journal
    }

    /// Every settlement and refund of a person, as the home bureau sees them.
    pub async fn by_person(ts: &TestServer, p: &Psn) -> Vec<proto::Settlement> {
        let token = bearer(
            ts,
            Grant::Bureau(RegionCode::parse("region", WUHAI).unwrap()),
        )
        .await;
        let c: Setl = SettlementServiceClient::with_interceptor(ts.channel.clone(), token);
        all_pages("ListSettlements", |page_token| {
            let mut c = c.clone();
            async move {
                let r = c
                    .list_settlements(proto::ListSettlementsRequest {
                        filter: Some(proto::list_settlements_request::Filter::PsnNo(
                            p.psn_no.clone(),
                        )),
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .must();
                (r.settlements, r.next_page_token)
            }
        })
        .await
    }

    pub fn yuan(fen: i64) -> String {
        let sign = if fen < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
    }

    /// DESIGN §3 identities, to the fen.
    #[track_caller]
    pub fn assert_identities(s: &proto::Settlement) {
        let f = |x: &str| fen(x);
        assert_eq!(
            f(&s.medfee_sumamt),
            f(&s.fulamt_ownpay_amt)
                + f(&s.overlmt_selfpay)
                + f(&s.preselfpay_amt)
                + f(&s.inscp_scp_amt),
            "{s:?}"
        );
        assert_eq!(
            f(&s.medfee_sumamt),
            f(&s.fund_pay_sumamt) + f(&s.psn_part_amt),
            "{s:?}"
        );
        assert_eq!(
            f(&s.psn_part_amt),
            f(&s.acct_pay) + f(&s.psn_cash_pay),
            "{s:?}"
        );
    }

    /// FAILED_PRECONDITION naming `rule` in the PreconditionFailure details and the message.
    #[track_caller]
    pub fn assert_rule(s: &Status, rule: &str) {
        assert_eq!(
            s.code(),
            Code::FailedPrecondition,
            "expected FAILED_PRECONDITION {rule}, got {:?}: {}",
            s.code(),
            s.message()
        );
        let pf = s
            .get_details_precondition_failure()
            .unwrap_or_else(|| panic!("no PreconditionFailure details on {s:?}"));
        let subjects: Vec<&str> = pf.violations.iter().map(|v| v.subject.as_str()).collect();
        assert_eq!(subjects, [rule], "{}", s.message());
        assert!(
            s.message().starts_with(&format!("{rule}: ")),
            "{}",
            s.message()
        );
    }
}

/// PostgreSQL only: the swipe writer's request-id lookup finds each key through the primary key
/// in any plan — also in the generic plan PostgreSQL caches for a statement first run on a new,
/// empty table and keeps while the table grows. (The lookup's earlier form, `IN (SELECT * FROM
/// UNNEST(…))`, got a hash join over a scan of the whole table there: over a benchmark of 16,000
/// swipes it grew from 0.4 to 3.9 ms a batch.)
#[tokio::test]
async fn request_id_lookup_uses_the_key_in_a_generic_plan() {
    if skip_postgres() {
        return;
    }
    let ts = TestServer::start(Backend::Postgres).await;
    let mut conn = ts.db.begin().await.expect("begin");
    let x = conn.pg().expect("a PostgreSQL connection");
    // Prepared, as the writer's statement is (an EXPLAIN of the bare statement would plan it
    // for the values given), then planned generically, as a cached statement may be.
    sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
        .execute(&mut *x)
        .await
        .expect("SET LOCAL plan_cache_mode");
    sqlx::query(&format!(
        "PREPARE find_many (text[], text[]) AS {}",
        medsettle::store::access::FIND_MANY_PG
    ))
    .execute(&mut *x)
    .await
    .expect("PREPARE the request-id lookup");
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN EXECUTE find_many ('{institution:P15030001}', '{r-1}')")
            .fetch_all(&mut *x)
            .await
            .expect("EXPLAIN of the request-id lookup");
    let plan = plan.join("\n");
    assert!(
        plan.contains("idempotency_pkey") && !plan.contains("Seq Scan on idempotency"),
        "the lookup's generic plan on an empty table:\n{plan}"
    );
    drop(conn);
    ts.stop().await.expect("stop");
}
