//! Prometheus metrics end to end: a real server and its metrics endpoint (started here against
//! the test server's application), gRPC calls with known outcomes (OK, INVALID_ARGUMENT,
//! UNAUTHENTICATED, an unknown RPC, a replay), a hospital settlement and its reversal, a
//! pharmacy swipe and its refund; then the exposition over plain HTTP/1.1, checked to the exact
//! counter values and to the fen of the settlements' figures. On SQLite and on PostgreSQL.
//!
//! Only one test in this binary: each `TestServer` has its own registry anyway (it lives in
//! the `App`), so nothing is shared between tests.

#[macro_use]
mod common;

use common::kit::*;
use common::*;
use medsettle::proto;
use medsettle::proto::pharmacy_service_client::PharmacyServiceClient;
use proto::{
    CareType, DeductibleBasis, FilingType, InsuranceType, LevelScope, PersonCategory, ProvinceScope,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

both_engines!(metrics_end_to_end);

/// Wuhai: employees' inpatient stays, deductible 800.00, ratio 0.85 (0.75 with a referral);
/// no pharmacy rule (at a pharmacy the fund pays nothing, the account what it can).
fn policy() -> proto::PolicyBody {
    proto::PolicyBody {
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
        filing_reductions: vec![proto::FilingReduction {
            filing_type: FilingType::Referral as i32,
            reduction: minus_points("0.10"),
        }],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: false,
    }
}

/// An HTTP/1.1 request over a plain TCP stream: (status, content type, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting to the metrics endpoint");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("sending");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("reading the answer");
    let raw = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// Every sample of a scrape: `name{labels}` → value.
async fn scrape(addr: SocketAddr) -> BTreeMap<String, String> {
    let (status, content_type, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let mut samples = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        assert!(
            value == "+Inf" || value.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
            "{line}"
        );
        let old = samples.insert(series.to_owned(), value.to_owned());
        assert!(old.is_none(), "{series} appears twice");
    }
    samples
}

fn int(samples: &BTreeMap<String, String>, series: &str) -> u64 {
    samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// What changed in the `medsettle_grpc_requests_total` samples from `before` to `after`.
fn request_deltas(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> BTreeMap<String, u64> {
    after
        .keys()
        .filter(|k| k.starts_with("medsettle_grpc_requests_total{"))
        .map(|k| {
            let was = before.get(k).map_or(0, |_| int(before, k));
            (k.clone(), int(after, k) - was)
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

fn requests(rpc: &str, code: &str) -> String {
    format!("medsettle_grpc_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}}")
}

fn fen_u(s: &str) -> u64 {
    fen(s).unsigned_abs()
}

async fn metrics_end_to_end(b: Backend) {
    let ts = TestServer::start(b).await;

    // The metrics endpoint over this server's application.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the metrics port");
    let maddr = listener.local_addr().expect("local_addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(medsettle::metrics::serve(
        listener,
        ts.app.metrics.clone(),
        ts.db.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // Nothing booked yet: the settlement series are there, at zero; the pool gauges too.
    let empty = scrape(maddr).await;
    assert_eq!(
        int(
            &empty,
            r#"medsettle_settlements_total{kind="settlement",care_type="inpatient"}"#
        ),
        0
    );
    assert_eq!(int(&empty, "medsettle_swipe_batch_size_count"), 0);
    assert_eq!(int(&empty, "medsettle_db_pool_max"), 8);

    // ---- the world (its calls are before the baseline).
    let w = world(&ts).await;
    put_policy(&w.wuhai, WUHAI, JAN1, policy()).await;
    let p = wuhai_employee(&w, 1, "1000.00").await;
    file(&w, &p.psn_no, FilingType::Referral, ORDOS, "", "").await;
    let v = admit(&w.h, &p).await;
    upload(
        &w.h,
        &v.mdtrt_id,
        vec![
            line("1", "A001", "10", "1000.00"),
            line("2", "B001", "3", "120.00"),
            line("3", "C001", "1", "500.00"),
            line("4", "ZZZ", "2", "0.335"),
        ],
    )
    .await;
    w.op.reg()
        .register_institution(pharmacy("P15060000001", ORDOS))
        .await
        .must();
    let buyer = enrol(
        &w.wuhai,
        proto::EnrolPersonRequest {
            card_no: "K15030000002".into(),
            ..employee(&national_id("150302", "19800101", 2), WUHAI, "300.00")
        },
    )
    .await;
    let token = ts
        .token(medsettle::service::auth::Grant::Institution(
            medsettle::domain::ids::InstitutionCode::parse("code", "P15060000001").expect("code"),
        ))
        .await;
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("ASCII token");
    let mut ph = PharmacyServiceClient::with_interceptor(
        ts.channel.clone(),
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        },
    );
    let before = scrape(maddr).await;
    assert_eq!(
        int(
            &before,
            r#"medsettle_settlements_total{kind="settlement",care_type="inpatient"}"#
        ),
        0,
        "nothing is settled yet"
    );

    // ---- the measured calls.
    // OK (status in the trailers) and UNAUTHENTICATED (status in the headers: trailers-only).
    w.op.reg()
        .get_region(proto::GetRegionRequest { code: WUHAI.into() })
        .await
        .must();
    ts.anonymous()
        .reg()
        .get_region(proto::GetRegionRequest { code: WUHAI.into() })
        .await
        .code_is(Code::Unauthenticated);
    // INVALID_ARGUMENT, after authentication, from inside a mutation.
    w.op.reg()
        .create_region(proto::CreateRegionRequest {
            request_id: rid(),
            code: "12".into(),
            name: String::new(),
            bureau_name: String::new(),
        })
        .await
        .invalid("code");
    // A path the server does not offer: counted under rpc="unknown".
    let mut raw = tonic::client::Grpc::new(ts.channel.clone());
    raw.ready().await.expect("channel ready");
    let unknown = raw
        .unary(
            tonic::Request::new(proto::GetRegionRequest { code: WUHAI.into() }),
            http::uri::PathAndQuery::from_static("/medsettle.v1.NoSuchService/Nothing"),
            tonic_prost::ProstCodec::<proto::GetRegionRequest, proto::Region>::default(),
        )
        .await;
    assert_eq!(
        unknown.expect_err("no such RPC").code(),
        Code::Unimplemented
    );

    // A settlement, its replay (same request id: the first answer, nothing booked again) and
    // its reversal.
    let settle_rid = rid();
    let s =
        w.h.clone()
            .settle(settle_req(&settle_rid, &v.mdtrt_id, true))
            .await
            .must();
    assert_eq!(
        (
            s.medfee_sumamt.as_str(),
            s.fund_pay_sumamt.as_str(),
            s.acct_pay.as_str(),
            s.psn_cash_pay.as_str()
        ),
        ("10860.67", "7102.50", "1000.00", "2758.17")
    );
    let again =
        w.h.clone()
            .settle(settle_req(&settle_rid, &v.mdtrt_id, true))
            .await
            .must();
    assert_eq!(
        again.setl_id, s.setl_id,
        "a replay answers the first settlement"
    );
    let r = reverse(&w.h, &s).await;

    // A swipe (group-committed) and its full refund.
    let purchase = ph
        .settle_purchase(proto::SettlePurchaseRequest {
            request_id: rid(),
            credential: Some(proto::CardCredential {
                credential: Some(proto::card_credential::Credential::CardNo(
                    "K15030000002".into(),
                )),
            }),
            insurance_type: InsuranceType::Employee as i32,
            lines: vec![proto::PurchaseLine {
                line_no: "1".into(),
                code: "A001".into(),
                name: "A001 at the counter".into(),
                quantity: "3".into(),
                unit_price: "12.34".into(),
            }],
            use_account: true,
            account_only: false,
            expected_total: String::new(),
        })
        .await
        .must()
        .settlement
        .expect("the purchase's settlement");
    assert_eq!(purchase.psn_no, buyer.psn_no);
    assert_eq!(purchase.medfee_sumamt, "37.02");
    let refund = ph
        .refund_purchase(proto::RefundPurchaseRequest {
            request_id: rid(),
            setl_id: purchase.setl_id.clone(),
            lines: vec![],
            reason: "returned at the counter".into(),
        })
        .await
        .must()
        .settlement
        .expect("the refund's settlement");
    assert_eq!(refund.medfee_sumamt, "-37.02");

    // ---- the exposition.
    let after = scrape(maddr).await;

    // Requests: exactly the calls above, by RPC and status, nothing else.
    let expected: BTreeMap<String, u64> = [
        (requests("/medsettle.v1.RegistryService/GetRegion", "OK"), 1),
        (
            requests("/medsettle.v1.RegistryService/GetRegion", "UNAUTHENTICATED"),
            1,
        ),
        (
            requests(
                "/medsettle.v1.RegistryService/CreateRegion",
                "INVALID_ARGUMENT",
            ),
            1,
        ),
        (requests("unknown", "UNIMPLEMENTED"), 1),
        (requests("/medsettle.v1.SettlementService/Settle", "OK"), 2),
        (
            requests("/medsettle.v1.SettlementService/ReverseSettlement", "OK"),
            1,
        ),
        (
            requests("/medsettle.v1.PharmacyService/SettlePurchase", "OK"),
            1,
        ),
        (
            requests("/medsettle.v1.PharmacyService/RefundPurchase", "OK"),
            1,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(request_deltas(&before, &after), expected);

    // Latency: one observation per request, in cumulative buckets ending at +Inf = count.
    for (rpc, n) in [
        ("/medsettle.v1.RegistryService/GetRegion", 2),
        ("/medsettle.v1.SettlementService/Settle", 2),
        ("/medsettle.v1.PharmacyService/RefundPurchase", 1),
        ("unknown", 1),
    ] {
        let h = |suffix: &str, extra: &str| {
            format!("medsettle_grpc_request_duration_seconds_{suffix}{{rpc=\"{rpc}\"{extra}}}")
        };
        let count_before = before
            .get(&h("count", ""))
            .map_or(0, |_| int(&before, &h("count", "")));
        assert_eq!(int(&after, &h("count", "")) - count_before, n, "{rpc}");
        assert_eq!(
            int(&after, &h("bucket", ",le=\"+Inf\"")),
            int(&after, &h("count", "")),
            "{rpc}"
        );
        let mut last = 0;
        for le in ["0.0005", "0.001", "0.01", "0.1", "1", "10", "60"] {
            let c = int(&after, &h("bucket", &format!(",le=\"{le}\"")));
            assert!(c >= last, "{rpc}: buckets must be cumulative");
            last = c;
        }
        let sum = &after[&h("sum", "")];
        assert!(
            sum.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
            "{rpc}: sum {sum}"
        );
    }

    // Settlements: the committed ones only (the replay booked nothing), by kind and care type.
    let count = |kind: &str, care: &str| {
        int(
            &after,
            &format!("medsettle_settlements_total{{kind=\"{kind}\",care_type=\"{care}\"}}"),
        )
    };
    assert_eq!(count("settlement", "inpatient"), 1);
    assert_eq!(count("reversal", "inpatient"), 1);
    assert_eq!(count("settlement", "pharmacy"), 1);
    assert_eq!(count("reversal", "pharmacy"), 1);
    assert_eq!(count("settlement", "outpatient"), 0);
    assert_eq!(count("settlement", "maternity"), 0);

    // Amounts in fen, equal to the settlements' own figures (reversals as magnitudes).
    let amount = |kind: &str, care: &str, part: &str| {
        int(
            &after,
            &format!(
                "medsettle_settlement_amount_fen_total{{kind=\"{kind}\",care_type=\"{care}\",part=\"{part}\"}}"
            ),
        )
    };
    for (kind, care, row) in [
        ("settlement", "inpatient", &s),
        ("reversal", "inpatient", &r),
        ("settlement", "pharmacy", &purchase),
        ("reversal", "pharmacy", &refund),
    ] {
        assert_eq!(amount(kind, care, "medfee"), fen_u(&row.medfee_sumamt));
        assert_eq!(amount(kind, care, "fund"), fen_u(&row.fund_pay_sumamt));
        assert_eq!(amount(kind, care, "account"), fen_u(&row.acct_pay));
        assert_eq!(amount(kind, care, "cash"), fen_u(&row.psn_cash_pay));
    }
    assert_eq!(amount("settlement", "inpatient", "medfee"), 1_086_067);
    assert_eq!(amount("settlement", "inpatient", "fund"), 710_250);
    assert_eq!(amount("settlement", "inpatient", "account"), 100_000);
    assert_eq!(amount("settlement", "inpatient", "cash"), 275_817);
    assert_eq!(amount("reversal", "inpatient", "cash"), 275_817);
    assert_eq!(amount("settlement", "pharmacy", "medfee"), 3_702);
    // No pharmacy rule: the fund pays nothing, the account (300.00) all 37.02.
    assert_eq!(amount("settlement", "pharmacy", "fund"), 0);
    assert_eq!(amount("settlement", "pharmacy", "account"), 3_702);
    assert_eq!(amount("settlement", "outpatient", "medfee"), 0);

    // The swipe went through one committed group-commit batch of one.
    assert_eq!(int(&after, "medsettle_swipe_batch_size_count"), 1);
    assert_eq!(int(&after, "medsettle_swipe_batch_size_sum"), 1);
    assert_eq!(
        int(&after, r#"medsettle_swipe_batch_size_bucket{le="1"}"#),
        1
    );
    assert_eq!(
        int(&after, r#"medsettle_swipe_batch_size_bucket{le="+Inf"}"#),
        1
    );

    // The pool, sampled at scrape time.
    let idle = int(&after, r#"medsettle_db_pool_connections{state="idle"}"#);
    let in_use = int(&after, r#"medsettle_db_pool_connections{state="in_use"}"#);
    let max = int(&after, "medsettle_db_pool_max");
    assert_eq!(max, 8, "the test server's pool size");
    assert!(idle + in_use >= 1, "the pool has served the calls above");
    assert!(
        idle + in_use <= max,
        "idle {idle} + in use {in_use} ≤ {max}"
    );

    // Only /metrics, only GET (and HEAD).
    assert_eq!(http(maddr, "GET", "/").await.0, 404);
    assert_eq!(http(maddr, "POST", "/metrics").await.0, 405);
    let (status, _, body) = http(maddr, "HEAD", "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));

    // The endpoint stops when told, and so does the server.
    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), metrics_server)
        .await
        .expect("the metrics server stops")
        .expect("the metrics task")
        .expect("the metrics server");
    ts.stop().await.expect("the server stops");
}
