//! FilingService end to end: out-of-region filings (异地就医备案) — types, default validity,
//! destinations, overlap, revocation, permissions and idempotency. Every test runs on SQLite and
//! on PostgreSQL, each on a fresh database.

#[macro_use]
mod common;

use chrono::Days;
use common::*;
use medsettle::proto;
use proto::{FilingStatus, FilingType, PersonStatus};
use tonic::Code;

both_engines!(
    filing_types_and_default_validity,
    filing_validation,
    filing_overlap_and_revocation,
    filing_permissions_list_and_idempotency,
    filing_concurrency,
);

const WUHAI: &str = "150300";
const ORDOS: &str = "150600";
const YINCHUAN: &str = "640100";
const REFERRER: &str = "H15030200001";

/// A date next year ("Y-MM-DD", Y = this year + 1): always in the future, so that non-emergency
/// filings may start on it whenever the suite runs.
fn ny(month_day: &str) -> String {
    format!("{}-{month_day}", next_year())
}

/// A date the year after next (Y + 1).
fn ny1(month_day: &str) -> String {
    format!("{}-{month_day}", next_year() + 1)
}

fn next_year() -> i32 {
    use chrono::Datelike;
    today().year() + 1
}

/// Regions Wuhai (home), Ordos and Yinchuan; a referring hospital in Wuhai. Returns (server,
/// operator, Wuhai bureau).
async fn setup(b: Backend) -> (TestServer, Caller, Caller) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    for r in [WUHAI, ORDOS, YINCHUAN] {
        create_region(&op, r).await;
    }
    op.reg()
        .register_institution(hospital(REFERRER, WUHAI, 3))
        .await
        .must();
    let wuhai = ts.bureau(WUHAI).await;
    (ts, op, wuhai)
}

/// Enrols a Wuhai employee (sequence `seq`) and returns the psn_no.
async fn person(wuhai: &Caller, seq: u32) -> String {
    wuhai
        .reg()
        .enrol_person(employee(&national_id("150302", "19600315", seq), WUHAI, ""))
        .await
        .must()
        .psn_no
}

fn file(
    psn_no: &str,
    t: FilingType,
    destination: &str,
    from: &str,
    until: &str,
) -> proto::FileFilingRequest {
    proto::FileFilingRequest {
        request_id: rid(),
        psn_no: psn_no.into(),
        filing_type: t as i32,
        destination: destination.into(),
        valid_from: from.into(),
        valid_until: until.into(),
        referring_institution: if t == FilingType::Referral {
            REFERRER.into()
        } else {
            String::new()
        },
    }
}

fn revoke(filing_id: &str, reason: &str) -> proto::RevokeFilingRequest {
    proto::RevokeFilingRequest {
        request_id: rid(),
        filing_id: filing_id.into(),
        reason: reason.into(),
    }
}

fn list(psn_no: &str, include_revoked: bool) -> proto::ListFilingsRequest {
    proto::ListFilingsRequest {
        psn_no: psn_no.into(),
        include_revoked,
    }
}

async fn filing_types_and_default_validity(b: Backend) {
    let (_ts, _op, wuhai) = setup(b).await;
    let today_s = ymd(today());

    // Long-term, from today by default, open-ended, to a region of another province.
    let p1 = person(&wuhai, 1).await;
    let f = wuhai
        .fil()
        .file_filing(file(&p1, FilingType::RelocatedRetiree, YINCHUAN, "", ""))
        .await
        .must();
    assert!(!f.filing_id.is_empty());
    assert_eq!(f.psn_no, p1);
    assert_eq!(f.home_region, WUHAI);
    assert_eq!(f.filing_type, FilingType::RelocatedRetiree as i32);
    assert_eq!(f.destination, YINCHUAN);
    assert_eq!(f.valid_from, today_s);
    assert_eq!(
        f.valid_until, "",
        "long-term filings are open-ended by default"
    );
    assert_eq!(f.status, FilingStatus::Active as i32);
    assert_eq!(
        (
            f.revoked_on.as_str(),
            f.revoke_reason.as_str(),
            f.referring_institution.as_str()
        ),
        ("", "", "")
    );
    let got = wuhai
        .fil()
        .get_filing(proto::GetFilingRequest {
            filing_id: f.filing_id.clone(),
        })
        .await
        .must();
    assert_eq!(got, f);

    // Long-term with an explicit end, to a whole province (2 digits).
    let p2 = person(&wuhai, 2).await;
    let f = wuhai
        .fil()
        .file_filing(file(
            &p2,
            FilingType::PostedWorker,
            "64",
            &ny("01-01"),
            &ny1("12-31"),
        ))
        .await
        .must();
    assert_eq!(
        (
            f.destination.as_str(),
            f.valid_from.as_str(),
            f.valid_until.as_str()
        ),
        ("64", ny("01-01").as_str(), ny1("12-31").as_str())
    );
    let p2b = person(&wuhai, 22).await;
    let f = wuhai
        .fil()
        .file_filing(file(
            &p2b,
            FilingType::LongTermResident,
            "64",
            &ny("01-01"),
            "",
        ))
        .await
        .must();
    assert_eq!(f.valid_until, "");

    // Temporary, no end given: valid_from + 6 months − 1 day.
    // Y-03-15 + 6 months = Y-09-15, − 1 day = Y-09-14.
    let p3 = person(&wuhai, 3).await;
    let f = wuhai
        .fil()
        .file_filing(file(
            &p3,
            FilingType::OtherTemporary,
            ORDOS,
            &ny("03-15"),
            "",
        ))
        .await
        .must();
    assert_eq!(
        (f.valid_from.as_str(), f.valid_until.as_str()),
        (ny("03-15").as_str(), ny("09-14").as_str())
    );
    // Referral (names the referring institution), in the same province.
    // Y-03-31 + 6 months = Y-09-30 (September has 30 days: clamped), − 1 day = Y-09-29.
    let p4 = person(&wuhai, 4).await;
    let f = wuhai
        .fil()
        .file_filing(file(&p4, FilingType::Referral, ORDOS, &ny("03-31"), ""))
        .await
        .must();
    assert_eq!(f.referring_institution, REFERRER);
    assert_eq!(
        (f.valid_from.as_str(), f.valid_until.as_str()),
        (ny("03-31").as_str(), ny("09-29").as_str())
    );
    // Temporary with an explicit end.
    let p5 = person(&wuhai, 5).await;
    let f = wuhai
        .fil()
        .file_filing(file(
            &p5,
            FilingType::OtherTemporary,
            YINCHUAN,
            &ny("01-10"),
            &ny("01-20"),
        ))
        .await
        .must();
    assert_eq!(f.valid_until, ny("01-20"));

    // Emergency may start in the past (filed after admission): yesterday;
    // yesterday + 6 months − 1 day by default.
    let yesterday = today().checked_sub_days(Days::new(1)).unwrap();
    let expected_until = yesterday
        .checked_add_months(chrono::Months::new(6))
        .unwrap()
        .checked_sub_days(Days::new(1))
        .unwrap();
    let p6 = person(&wuhai, 6).await;
    let f = wuhai
        .fil()
        .file_filing(file(&p6, FilingType::Emergency, ORDOS, &ymd(yesterday), ""))
        .await
        .must();
    assert_eq!(
        (f.valid_from, f.valid_until),
        (ymd(yesterday), ymd(expected_until))
    );
}

async fn filing_validation(b: Backend) {
    let (_ts, op, wuhai) = setup(b).await;
    let p = person(&wuhai, 1).await;
    let yesterday = ymd(today().checked_sub_days(Days::new(1)).unwrap());

    // The destination is not the home region; it is a known region or province.
    wuhai
        .fil()
        .file_filing(file(&p, FilingType::OtherTemporary, WUHAI, "", ""))
        .await
        .invalid("destination");
    for bad in ["99", "1506", "150601", "990100", "", "1"] {
        wuhai
            .fil()
            .file_filing(file(&p, FilingType::OtherTemporary, bad, "", ""))
            .await
            .invalid("destination");
    }
    // Referrals name the referring institution; other types do not.
    let mut referral = file(&p, FilingType::Referral, ORDOS, "", "");
    referral.referring_institution = String::new();
    wuhai
        .fil()
        .file_filing(referral)
        .await
        .invalid("referring_institution");
    let mut named = file(&p, FilingType::OtherTemporary, ORDOS, "", "");
    named.referring_institution = REFERRER.into();
    wuhai
        .fil()
        .file_filing(named)
        .await
        .invalid("referring_institution");
    let mut malformed = file(&p, FilingType::Referral, ORDOS, "", "");
    malformed.referring_institution = "H123".into();
    wuhai
        .fil()
        .file_filing(malformed)
        .await
        .invalid("referring_institution");
    // Only emergencies may start in the past.
    for t in [
        FilingType::OtherTemporary,
        FilingType::Referral,
        FilingType::RelocatedRetiree,
    ] {
        wuhai
            .fil()
            .file_filing(file(&p, t, ORDOS, &yesterday, ""))
            .await
            .invalid("valid_from");
    }
    // Dates: malformed; end before start.
    wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::OtherTemporary,
            ORDOS,
            &ny("02-30"),
            "",
        ))
        .await
        .invalid("valid_from");
    wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::OtherTemporary,
            ORDOS,
            &ny("03-15"),
            &ny("03-14"),
        ))
        .await
        .invalid("valid_until");
    // Type UNSPECIFIED.
    wuhai
        .fil()
        .file_filing(file(&p, FilingType::Unspecified, ORDOS, "", ""))
        .await
        .invalid("filing_type");
    // Unknown person.
    wuhai
        .fil()
        .file_filing(file(
            "15030000000000000000000001",
            FilingType::OtherTemporary,
            ORDOS,
            "",
            "",
        ))
        .await
        .code_is(Code::NotFound);
    // A suspended person cannot file.
    let suspended = person(&wuhai, 2).await;
    wuhai
        .reg()
        .set_person_status(proto::SetPersonStatusRequest {
            request_id: rid(),
            psn_no: suspended.clone(),
            status: PersonStatus::Suspended as i32,
            insurance_type: 0,
            reason: "arrears".into(),
        })
        .await
        .must();
    wuhai
        .fil()
        .file_filing(file(&suspended, FilingType::OtherTemporary, ORDOS, "", ""))
        .await
        .code_is(Code::FailedPrecondition);

    // None of the failures left a filing.
    assert!(
        op.fil()
            .list_filings(list(&p, true))
            .await
            .must()
            .filings
            .is_empty()
    );
    assert!(
        op.fil()
            .list_filings(list(&suspended, true))
            .await
            .must()
            .filings
            .is_empty()
    );
    // Unknown filing.
    wuhai
        .fil()
        .get_filing(proto::GetFilingRequest {
            filing_id: "F000000000000000000000000000".into(),
        })
        .await
        .code_is(Code::NotFound);
}

async fn filing_overlap_and_revocation(b: Backend) {
    let (_ts, op, wuhai) = setup(b).await;
    let p = person(&wuhai, 1).await;

    // Ordos, Y-03-15 .. Y-09-14 (temporary default).
    let ordos = wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::OtherTemporary,
            ORDOS,
            &ny("03-15"),
            "",
        ))
        .await
        .must();
    // Same destination, overlapping period.
    wuhai
        .fil()
        .file_filing(file(&p, FilingType::Referral, ORDOS, &ny("09-14"), ""))
        .await
        .code_is(Code::FailedPrecondition);
    // The whole province 15 contains Ordos.
    wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::OtherTemporary,
            "15",
            &ny("05-01"),
            &ny("05-31"),
        ))
        .await
        .code_is(Code::FailedPrecondition);
    // An open-ended long-term filing from before overlaps too.
    wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::LongTermResident,
            ORDOS,
            &ny("01-01"),
            "",
        ))
        .await
        .code_is(Code::FailedPrecondition);
    // Same destination, the day after the end: no overlap.
    let later = wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::OtherTemporary,
            ORDOS,
            &ny("09-15"),
            &ny("10-31"),
        ))
        .await
        .must();
    // Another destination in the same period: no overlap.
    let ningxia = wuhai
        .fil()
        .file_filing(file(&p, FilingType::OtherTemporary, "64", &ny("03-15"), ""))
        .await
        .must();
    // A region inside a filed province overlaps.
    wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::OtherTemporary,
            YINCHUAN,
            &ny("04-01"),
            &ny("04-30"),
        ))
        .await
        .code_is(Code::FailedPrecondition);

    // Revoke the Ordos filing: then a new overlapping one is accepted.
    let revoked = wuhai
        .fil()
        .revoke_filing(revoke(&ordos.filing_id, "patient returned home"))
        .await
        .must();
    assert_eq!(revoked.status, FilingStatus::Revoked as i32);
    assert_eq!(revoked.revoked_on, ymd(today()));
    assert_eq!(revoked.revoke_reason, "patient returned home");
    assert_eq!(
        proto::Filing {
            status: ordos.status,
            revoked_on: String::new(),
            revoke_reason: String::new(),
            ..revoked.clone()
        },
        ordos,
        "revocation changes nothing else"
    );
    let replacement = wuhai
        .fil()
        .file_filing(file(
            &p,
            FilingType::Referral,
            ORDOS,
            &ny("04-01"),
            &ny("06-30"),
        ))
        .await
        .must();
    assert_eq!(replacement.status, FilingStatus::Active as i32);
    // Revoking twice.
    wuhai
        .fil()
        .revoke_filing(revoke(&ordos.filing_id, "again"))
        .await
        .code_is(Code::FailedPrecondition);
    // Unknown filing; over-long reason.
    wuhai
        .fil()
        .revoke_filing(revoke("F000000000000000000000000000", "x"))
        .await
        .code_is(Code::NotFound);
    wuhai
        .fil()
        .revoke_filing(revoke(&later.filing_id, &"x".repeat(257)))
        .await
        .invalid("reason");
    let still = op
        .fil()
        .get_filing(proto::GetFilingRequest {
            filing_id: later.filing_id.clone(),
        })
        .await
        .must();
    assert_eq!(still.status, FilingStatus::Active as i32);

    // Lists: revoked filings only on request.
    let active = wuhai.fil().list_filings(list(&p, false)).await.must();
    let mut ids: Vec<_> = active.filings.iter().map(|f| f.filing_id.clone()).collect();
    ids.sort();
    let mut expected = vec![
        later.filing_id.clone(),
        replacement.filing_id.clone(),
        ningxia.filing_id.clone(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    let all = wuhai.fil().list_filings(list(&p, true)).await.must();
    assert_eq!(all.filings.len(), 4);
    assert!(
        all.filings
            .iter()
            .any(|f| f.filing_id == ordos.filing_id && f.status == FilingStatus::Revoked as i32)
    );
    assert!(
        !active
            .filings
            .iter()
            .any(|f| f.filing_id == ordos.filing_id)
    );
}

async fn filing_permissions_list_and_idempotency(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let p = person(&wuhai, 1).await;
    let other_bureau = ts.bureau(ORDOS).await;
    let inst = ts.institution(REFERRER).await;

    // Another region's bureau (even the destination's) and institutions may not file, read,
    // list or revoke.
    other_bureau
        .fil()
        .file_filing(file(&p, FilingType::OtherTemporary, YINCHUAN, "", ""))
        .await
        .code_is(Code::PermissionDenied);
    inst.fil()
        .file_filing(file(&p, FilingType::OtherTemporary, YINCHUAN, "", ""))
        .await
        .code_is(Code::PermissionDenied);
    let req = file(&p, FilingType::OtherTemporary, ORDOS, &ny("03-15"), "");
    let f = wuhai.fil().file_filing(req.clone()).await.must();
    let get = proto::GetFilingRequest {
        filing_id: f.filing_id.clone(),
    };
    other_bureau
        .fil()
        .get_filing(get.clone())
        .await
        .code_is(Code::PermissionDenied);
    inst.fil()
        .get_filing(get.clone())
        .await
        .code_is(Code::PermissionDenied);
    other_bureau
        .fil()
        .list_filings(list(&p, true))
        .await
        .code_is(Code::PermissionDenied);
    other_bureau
        .fil()
        .revoke_filing(revoke(&f.filing_id, "no"))
        .await
        .code_is(Code::PermissionDenied);
    assert_eq!(
        op.fil().get_filing(get.clone()).await.must().status,
        FilingStatus::Active as i32
    );

    // Operators may file and revoke.
    let by_op = op
        .fil()
        .file_filing(file(
            &p,
            FilingType::OtherTemporary,
            YINCHUAN,
            &ny("03-15"),
            "",
        ))
        .await
        .must();
    op.fil()
        .revoke_filing(revoke(&by_op.filing_id, "entered in error"))
        .await
        .must();

    // Idempotent filing: the replay returns the same filing and files nothing new; the same id
    // with another payload is ALREADY_EXISTS.
    let again = wuhai.fil().file_filing(req.clone()).await.must();
    assert_eq!(again, f);
    let mut changed = req.clone();
    changed.valid_until = ny("04-30");
    wuhai
        .fil()
        .file_filing(changed)
        .await
        .code_is(Code::AlreadyExists);
    let mut no_id = req.clone();
    no_id.request_id = String::new();
    wuhai.fil().file_filing(no_id).await.invalid("request_id");
    // Idempotent revocation: the replay answers as the first time (not "already revoked").
    let rv = revoke(&f.filing_id, "cured");
    let first = wuhai.fil().revoke_filing(rv.clone()).await.must();
    assert_eq!(wuhai.fil().revoke_filing(rv).await.must(), first);

    let all = wuhai.fil().list_filings(list(&p, true)).await.must();
    assert_eq!(all.filings.len(), 2, "{:?}", all.filings);

    // Newest first: three filings made one after the other, each starting later.
    let p2 = person(&wuhai, 2).await;
    let mut made = Vec::new();
    for (dest, from, until) in [
        (ORDOS, &ny("01-01"), &ny("01-31")),
        (ORDOS, &ny("02-01"), &ny("02-28")),
        (YINCHUAN, &ny("03-01"), &ny("03-31")),
    ] {
        let f = wuhai
            .fil()
            .file_filing(file(&p2, FilingType::OtherTemporary, dest, from, until))
            .await
            .must();
        made.push(f.filing_id);
    }
    made.reverse();
    let listed = wuhai.fil().list_filings(list(&p2, false)).await.must();
    assert_eq!(
        listed
            .filings
            .iter()
            .map(|f| f.filing_id.clone())
            .collect::<Vec<_>>(),
        made
    );
    assert!(
        wuhai
            .fil()
            .list_filings(list(&p, false))
            .await
            .must()
            .filings
            .is_empty()
    );
    wuhai
        .fil()
        .list_filings(list("15030000000000000000000001", false))
        .await
        .code_is(Code::NotFound);
}

async fn filing_concurrency(b: Backend) {
    let (_ts, op, wuhai) = setup(b).await;

    // Ten overlapping filings for one person at once (distinct request ids): exactly one is
    // accepted, the others are refused by the overlap rule.
    let p = person(&wuhai, 1).await;
    let calls = (0..10).map(|i| {
        let c = wuhai.clone();
        let req = file(
            &p,
            FilingType::OtherTemporary,
            ORDOS,
            &format!("{}-03-{:02}", next_year(), i + 1),
            "",
        );
        tokio::spawn(async move { c.fil().file_filing(req).await })
    });
    let mut accepted = 0;
    for r in futures::future::join_all(calls).await {
        match r.expect("task") {
            Ok(_) => accepted += 1,
            Err(s) => assert_eq!(
                s.code(),
                Code::FailedPrecondition,
                "{:?}: {}",
                s.code(),
                s.message()
            ),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(
        op.fil()
            .list_filings(list(&p, true))
            .await
            .must()
            .filings
            .len(),
        1
    );

    // Ten identical FileFiling calls with one request id (a client retrying while its first call
    // runs): one filing, ten identical answers — not FAILED_PRECONDITION from the overlap with the
    // filing the first call just made.
    let p2 = person(&wuhai, 2).await;
    let req = file(&p2, FilingType::OtherTemporary, ORDOS, &ny("03-15"), "");
    let calls = (0..10).map(|_| {
        let c = wuhai.clone();
        let r = req.clone();
        tokio::spawn(async move { c.fil().file_filing(r).await })
    });
    let answers: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|j| j.expect("task").must())
        .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(
        op.fil()
            .list_filings(list(&p2, true))
            .await
            .must()
            .filings
            .len(),
        1
    );
}
