//! LedgerService end to end: balances derived from the journal, the journal itself, Verify, the
//! audit log; concurrency of personal-account deposits; health and graceful shutdown. Every test
//! runs on SQLite and on PostgreSQL, each on a fresh database.

#[macro_use]
mod common;

use common::*;
use medsettle::proto;
use std::collections::BTreeSet;
use tonic::Code;

both_engines!(
    balances_and_journal,
    ledger_permissions,
    audit_log,
    concurrent_deposits_one_account,
    concurrent_deposits_many_accounts,
    health_and_graceful_shutdown,
    tails_merged_without_swipes,
);

const WUHAI: &str = "150300";
const ORDOS: &str = "150600";
const ENROL: &str = "/medsettle.v1.RegistryService/EnrolPerson";
const DEPOSIT: &str = "/medsettle.v1.RegistryService/DepositPersonalAccount";

async fn setup(b: Backend) -> (TestServer, Caller, Caller) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, WUHAI).await;
    create_region(&op, ORDOS).await;
    let wuhai = ts.bureau(WUHAI).await;
    (ts, op, wuhai)
}

async fn enrol(c: &Caller, req: proto::EnrolPersonRequest) -> proto::Person {
    c.reg().enrol_person(req).await.must()
}

fn journal(account: &str, page_size: u32, token: &str) -> proto::ListJournalRequest {
    proto::ListJournalRequest {
        account: account.into(),
        page_size,
        page_token: token.into(),
    }
}

fn audit(principal: &str, page_size: u32, token: &str) -> proto::ListAuditRequest {
    proto::ListAuditRequest {
        principal: principal.into(),
        page_size,
        page_token: token.into(),
    }
}

async fn all_audit(c: &Caller, principal: &str, page_size: u32) -> Vec<proto::AuditRecord> {
    all_pages("ListAudit", |token| async move {
        let page = c
            .led()
            .list_audit(audit(principal, page_size, &token))
            .await
            .must();
        (page.records, page.next_page_token)
    })
    .await
}

async fn balances_and_journal(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let ordos = ts.bureau(ORDOS).await;
    let a = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 1), WUHAI, "1000.00"),
    )
    .await;
    let b_ = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 2), WUHAI, "200.00"),
    )
    .await;
    enrol(
        &wuhai,
        resident(&national_id("150302", "19850412", 3), WUHAI),
    )
    .await;
    let o = enrol(
        &ordos,
        employee(&national_id("150602", "19700101", 4), ORDOS, "88.88"),
    )
    .await;
    let da = wuhai
        .reg()
        .deposit_personal_account(deposit(&a.psn_no, "250.50"))
        .await
        .must();
    wuhai
        .reg()
        .deposit_personal_account(deposit(&b_.psn_no, "49.50"))
        .await
        .must();

    // pacct:A = 1000.00 + 250.50 = 1250.50, two entries; equal to the person's account_balance.
    let pa = balance(&op, &format!("pacct:{}", a.psn_no)).await;
    assert_eq!(pa.account, format!("pacct:{}", a.psn_no));
    assert_eq!((pa.balance.as_str(), pa.entries), ("1250.50", 2));
    assert_eq!(
        get_person(&wuhai, &a.psn_no).await.account_balance,
        pa.balance
    );
    // pacct:B = 200.00 + 49.50 = 249.50.
    assert_eq!(
        balance(&op, &format!("pacct:{}", b_.psn_no)).await.balance,
        "249.50"
    );
    // bank:150300 = −(1000.00 + 200.00 + 250.50 + 49.50) = −1500.00 over 4 entries (the
    // resident moved no money).
    let bank = balance(&wuhai, "bank:150300").await;
    assert_eq!((bank.balance.as_str(), bank.entries), ("-1500.00", 4));
    // Ordos's bank carries only its own person's opening balance: −88.88.
    assert_eq!(balance(&ordos, "bank:150600").await.balance, "-88.88");
    assert_eq!(
        balance(&ordos, &format!("pacct:{}", o.psn_no))
            .await
            .balance,
        "88.88"
    );

    // The journal of pacct:A: the opening balance then the deposit, oldest first, each balanced.
    let j = wuhai
        .led()
        .list_journal(journal(&format!("pacct:{}", a.psn_no), 0, ""))
        .await
        .must();
    assert!(j.next_page_token.is_empty());
    let kinds: Vec<_> = j.transactions.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, vec!["opening_balance", "pacct_deposit"]);
    for t in &j.transactions {
        assert_eq!(t.reference, a.psn_no);
        assert_eq!(t.business_date, ymd(today()));
        chrono::DateTime::parse_from_rfc3339(&t.booked_at)
            .unwrap_or_else(|e| panic!("booked_at {:?}: {e}", t.booked_at));
        assert!(t.entries.len() >= 2);
        assert_eq!(
            t.entries.iter().map(|e| fen(&e.amount)).sum::<i64>(),
            0,
            "{t:?} sums to 0"
        );
    }
    let legs = |t: &proto::JournalTransaction| {
        let mut v: Vec<_> = t
            .entries
            .iter()
            .map(|e| (e.account.clone(), e.amount.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        legs(&j.transactions[0]),
        vec![
            ("bank:150300".to_owned(), "-1000.00".to_owned()),
            (format!("pacct:{}", a.psn_no), "1000.00".to_owned())
        ]
    );
    assert_eq!(
        legs(&j.transactions[1]),
        vec![
            ("bank:150300".to_owned(), "-250.50".to_owned()),
            (format!("pacct:{}", a.psn_no), "250.50".to_owned())
        ]
    );
    assert_eq!(j.transactions[1].journal_id, da.journal_id);
    assert_eq!(j.transactions[1].memo, "2026-11 contribution");

    // The whole journal (operators): 3 opening balances + 2 deposits = 5 transactions, paged
    // 2 + 2 + 1, no duplicates, every one balanced.
    let mut ids = Vec::new();
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = op.led().list_journal(journal("", 2, &token)).await.must();
        pages.push(page.transactions.len());
        for t in &page.transactions {
            assert_eq!(
                t.entries.iter().map(|e| fen(&e.amount)).sum::<i64>(),
                0,
                "{t:?} sums to 0"
            );
        }
        ids.extend(page.transactions.into_iter().map(|t| t.journal_id));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10);
        token = page.next_page_token;
    }
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 5);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");

    // An account nobody touched has a zero balance.
    let empty = balance(&op, "fund:150300").await;
    assert_eq!((empty.balance.as_str(), empty.entries), ("0.00", 0));
    op.led()
        .get_balance(proto::GetBalanceRequest {
            account: String::new(),
        })
        .await
        .invalid("account");
    verify_ok(&ts).await;
}

async fn ledger_permissions(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let ordos = ts.bureau(ORDOS).await;
    op.reg()
        .register_institution(hospital("H15030200001", WUHAI, 3))
        .await
        .must();
    let inst = ts.institution("H15030200001").await;
    let a = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 1), WUHAI, "10.00"),
    )
    .await;
    let o = enrol(
        &ordos,
        employee(&national_id("150602", "19850412", 2), ORDOS, "20.00"),
    )
    .await;
    let pa = format!("pacct:{}", a.psn_no);
    let po = format!("pacct:{}", o.psn_no);
    let get = |acct: &str| proto::GetBalanceRequest {
        account: acct.into(),
    };

    // A bureau reads its own region's accounts and its insured's personal accounts.
    for acct in ["bank:150300", "fund:150300", pa.as_str()] {
        wuhai.led().get_balance(get(acct)).await.must();
        wuhai.led().list_journal(journal(acct, 0, "")).await.must();
    }
    // Not another region's.
    for acct in ["bank:150600", "fund:150600", po.as_str()] {
        wuhai
            .led()
            .get_balance(get(acct))
            .await
            .code_is(Code::PermissionDenied);
        wuhai
            .led()
            .list_journal(journal(acct, 0, ""))
            .await
            .code_is(Code::PermissionDenied);
    }
    ordos
        .led()
        .get_balance(get(&pa))
        .await
        .code_is(Code::PermissionDenied);
    // The whole journal and Verify are for operators.
    wuhai
        .led()
        .list_journal(journal("", 0, ""))
        .await
        .code_is(Code::PermissionDenied);
    wuhai
        .led()
        .verify(proto::VerifyRequest {})
        .await
        .code_is(Code::PermissionDenied);
    inst.led()
        .verify(proto::VerifyRequest {})
        .await
        .code_is(Code::PermissionDenied);
    // An institution reads only its own account.
    let own = inst
        .led()
        .get_balance(get("inst:H15030200001"))
        .await
        .must();
    assert_eq!((own.balance.as_str(), own.entries), ("0.00", 0));
    inst.led()
        .get_balance(get("bank:150300"))
        .await
        .code_is(Code::PermissionDenied);
    inst.led()
        .get_balance(get(&pa))
        .await
        .code_is(Code::PermissionDenied);
    inst.led()
        .list_journal(journal("", 0, ""))
        .await
        .code_is(Code::PermissionDenied);
    verify_ok(&ts).await;
}

async fn audit_log(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let ordos = ts.bureau(ORDOS).await;

    // OK, then a replay of it, then a failure (bad check digit), then a denied call.
    let id = national_id("150302", "19850412", 1);
    let ok_req = employee(&id, WUHAI, "100.00");
    let p = enrol(&wuhai, ok_req.clone()).await;
    enrol(&wuhai, ok_req.clone()).await;
    let bad_req = employee(
        &with_wrong_check_digit(&national_id("150302", "19850412", 2)),
        WUHAI,
        "",
    );
    wuhai
        .reg()
        .enrol_person(bad_req.clone())
        .await
        .invalid("national_id");
    let dep = deposit(&p.psn_no, "5.00");
    wuhai
        .reg()
        .deposit_personal_account(dep.clone())
        .await
        .must();
    let denied = deposit(&p.psn_no, "5.00");
    ordos
        .reg()
        .deposit_personal_account(denied.clone())
        .await
        .code_is(Code::PermissionDenied);
    enrol(
        &ordos,
        employee(&national_id("150602", "19850412", 3), ORDOS, ""),
    )
    .await;

    let records = all_audit(&op, "", 0).await;
    let find = |rid: &str| {
        records
            .iter()
            .filter(|r| r.request_id == rid)
            .collect::<Vec<_>>()
    };

    // The successful enrolment and its replay: both recorded, both OK, as the Wuhai bureau.
    let enrolled = find(&ok_req.request_id);
    assert!(
        enrolled.len() >= 2,
        "the call and its replay are audited: {enrolled:?}"
    );
    for r in &enrolled {
        assert_eq!(
            (r.rpc.as_str(), r.outcome.as_str(), r.principal.as_str()),
            (ENROL, "OK", "bureau:150300")
        );
        assert!(!r.audit_id.is_empty());
        chrono::DateTime::parse_from_rfc3339(&r.at)
            .unwrap_or_else(|e| panic!("at {:?}: {e}", r.at));
    }
    // The failure, with its code and a message that carries no personal data.
    let failed = find(&bad_req.request_id);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0].rpc.as_str(), failed[0].outcome.as_str()),
        (ENROL, "INVALID_ARGUMENT")
    );
    assert!(!failed[0].detail.is_empty());
    for r in &records {
        assert!(
            !r.detail.contains(&bad_req.national_id) && !r.detail.contains(&id),
            "national ID in audit detail: {r:?}"
        );
        assert!(!r.detail.contains("张三"), "name in audit detail: {r:?}");
    }
    let deposited = find(&dep.request_id);
    assert_eq!(deposited.len(), 1);
    assert_eq!(
        (deposited[0].rpc.as_str(), deposited[0].outcome.as_str()),
        (DEPOSIT, "OK")
    );
    let refused = find(&denied.request_id);
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].outcome.as_str(), refused[0].principal.as_str()),
        ("PERMISSION_DENIED", "bureau:150600")
    );
    // The operator's own region creations.
    assert!(
        records
            .iter()
            .any(|r| r.rpc == "/medsettle.v1.RegistryService/CreateRegion"
                && r.principal.starts_with("operator:"))
    );

    // Newest first, no duplicates, stable under paging.
    let times: Vec<_> = records
        .iter()
        .map(|r| chrono::DateTime::parse_from_rfc3339(&r.at).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let paged = all_audit(&op, "", 2).await;
    assert_eq!(
        paged.iter().map(|r| &r.audit_id).collect::<Vec<_>>(),
        records.iter().map(|r| &r.audit_id).collect::<Vec<_>>()
    );
    assert_eq!(
        records
            .iter()
            .map(|r| &r.audit_id)
            .collect::<BTreeSet<_>>()
            .len(),
        records.len()
    );

    // A bureau sees only its own records; operators may filter by principal.
    let own = all_audit(&wuhai, "", 0).await;
    assert!(!own.is_empty());
    assert!(
        own.iter().all(|r| r.principal == "bureau:150300"),
        "{own:?}"
    );
    assert_eq!(
        own.len(),
        records
            .iter()
            .filter(|r| r.principal == "bureau:150300")
            .count()
    );
    assert_eq!(all_audit(&wuhai, "bureau:150300", 0).await.len(), own.len());
    wuhai
        .led()
        .list_audit(audit("bureau:150600", 0, ""))
        .await
        .code_is(Code::PermissionDenied);
    wuhai.led().list_audit(audit("", 0, "")).await.must();
    let filtered = all_audit(&op, "bureau:150600", 0).await;
    assert_eq!(filtered.len(), 2, "{filtered:?}");
    assert!(filtered.iter().all(|r| r.principal == "bureau:150600"));
}

async fn concurrent_deposits_one_account(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let p = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 1), WUHAI, "1000.00"),
    )
    .await;

    // 32 concurrent deposits of 1.01, each with its own request id.
    let calls = (0..32).map(|_| {
        let c = wuhai.clone();
        let req = deposit(&p.psn_no, "1.01");
        tokio::spawn(async move { c.reg().deposit_personal_account(req).await })
    });
    let answers: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|j| j.expect("task").must())
        .collect();

    // 1000.00 + 32 × 1.01 = 1000.00 + 32.32 = 1032.32.
    assert_eq!(
        get_person(&wuhai, &p.psn_no).await.account_balance,
        "1032.32"
    );
    let acct = balance(&op, &format!("pacct:{}", p.psn_no)).await;
    assert_eq!((acct.balance.as_str(), acct.entries), ("1032.32", 33));
    assert_eq!(balance(&op, "bank:150300").await.balance, "-1032.32");
    // Each deposit saw the one before it: the balances returned are exactly 1001.01, 1002.02, …,
    // 1032.32 (1000.00 + k × 1.01, k = 1..32), in some order; every journal id is distinct.
    let mut seen: Vec<i64> = answers.iter().map(|a| fen(&a.balance)).collect();
    seen.sort();
    assert_eq!(
        seen,
        (1..=32).map(|k| 100_000 + 101 * k).collect::<Vec<_>>()
    );
    assert_eq!(
        answers
            .iter()
            .map(|a| &a.journal_id)
            .collect::<BTreeSet<_>>()
            .len(),
        32
    );
    verify_ok(&ts).await;
}

async fn concurrent_deposits_many_accounts(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let ordos = ts.bureau(ORDOS).await;
    // Three Wuhai persons and one Ordos person, 8 concurrent deposits each, all at once.
    let mut persons = Vec::new();
    for seq in 1..=3 {
        persons.push((
            wuhai.clone(),
            enrol(
                &wuhai,
                employee(&national_id("150302", "19850412", seq), WUHAI, "10.00"),
            )
            .await,
        ));
    }
    persons.push((
        ordos.clone(),
        enrol(
            &ordos,
            employee(&national_id("150602", "19850412", 4), ORDOS, "10.00"),
        )
        .await,
    ));
    let mut calls = Vec::new();
    for round in 0..8 {
        for (c, p) in &persons {
            let c = c.clone();
            // Amounts 0.01 .. 0.08 per round: each person gets 0.01 + … + 0.08 = 0.36.
            let req = deposit(&p.psn_no, &format!("0.0{}", round + 1));
            calls.push(tokio::spawn(async move {
                c.reg().deposit_personal_account(req).await
            }));
        }
    }
    for j in futures::future::join_all(calls).await {
        j.expect("task").must();
    }
    // Each: 10.00 + 0.36 = 10.36. bank:150300 = −3 × 10.36 = −31.08; bank:150600 = −10.36.
    for (c, p) in &persons {
        assert_eq!(get_person(c, &p.psn_no).await.account_balance, "10.36");
    }
    assert_eq!(balance(&op, "bank:150300").await.balance, "-31.08");
    assert_eq!(balance(&op, "bank:150600").await.balance, "-10.36");
    verify_ok(&ts).await;
}

async fn health_and_graceful_shutdown(b: Backend) {
    let (ts, _op, _wuhai) = setup(b).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ts.channel.clone());
    for service in [
        "",
        "medsettle.v1.RegistryService",
        "medsettle.v1.FilingService",
        "medsettle.v1.LedgerService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check of {service:?}: {s}"))
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    verify_ok(&ts).await;
    // The shutdown future resolves: run returns Ok.
    ts.stop()
        .await
        .expect("server::run returns Ok after shutdown");
}

/// SQLite's batch-maintained indexes are merged by the swipe writer whenever a second passes
/// without swipes; it starts with the server, so a server that takes no swipes still merges what
/// its other calls append (request ids, audit records, journal transactions) — else every claim
/// of a request id and every read through the views would scan an ever longer tail.
/// (PostgreSQL has nothing to merge.)
async fn tails_merged_without_swipes(b: Backend) {
    let (ts, _op, wuhai) = setup(b).await;
    enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 1), WUHAI, "10.00"),
    )
    .await;
    let pending = || {
        let db = ts.db.clone();
        async move {
            let mut c = db.read().await.expect("read");
            medsettle::store::derived::pending(&mut c)
                .await
                .expect("pending")
        }
    };
    let mut tenths = 0;
    while pending().await {
        assert!(tenths < 100, "the tails are not merged after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        tenths += 1;
    }
}
