//! RegistryService end to end: regions, institutions, persons, personal-account deposits,
//! catalogue, policies, idempotency and authentication. Every test runs on SQLite and on
//! PostgreSQL, each on a fresh database.

#[macro_use]
mod common;

use common::*;
use medsettle::proto;
use medsettle::proto::get_person_request::Key;
use proto::{
    CardStatus, InstitutionKind, InstitutionStatus, InsuranceType, PersonCategory, PersonStatus,
};
use std::collections::BTreeSet;
use tonic::Code;

both_engines!(
    regions_create_get_list,
    regions_validation_and_permissions,
    institutions_register_validation_and_permissions,
    institutions_update_get_list,
    persons_enrol_response,
    persons_enrol_validation,
    persons_get_by_every_key,
    persons_masked_for_other_than_home_bureau,
    persons_list_paged,
    persons_status_and_card,
    deposits,
    idempotency_enrol_and_region,
    idempotency_deposit,
    idempotency_concurrent_same_request_id,
    nothing_written_on_error,
    catalogue_bulk_upsert_and_versions,
    catalogue_validation_and_permissions,
    catalogue_effective_dates_and_search,
    policies_round_trip_and_versions,
    policies_validation,
    policies_concurrent_puts,
    auth_unauthenticated,
);

const WUHAI: &str = "150300";
const ORDOS: &str = "150600";

/// A server with the regions Wuhai (150300) and Ordos (150600); returns (server, operator,
/// Wuhai bureau).
async fn setup(b: Backend) -> (TestServer, Caller, Caller) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, WUHAI).await;
    create_region(&op, ORDOS).await;
    let wuhai = ts.bureau(WUHAI).await;
    (ts, op, wuhai)
}

fn region_req(code: &str) -> proto::CreateRegionRequest {
    proto::CreateRegionRequest {
        request_id: rid(),
        code: code.into(),
        name: String::new(),
        bureau_name: String::new(),
    }
}

fn list_regions(province: &str, page_size: u32, token: &str) -> proto::ListRegionsRequest {
    proto::ListRegionsRequest {
        province_code: province.into(),
        page_size,
        page_token: token.into(),
    }
}

async fn enrol(c: &Caller, req: proto::EnrolPersonRequest) -> proto::Person {
    c.reg().enrol_person(req).await.must()
}

async fn all_persons(c: &Caller, home: &str) -> Vec<proto::Person> {
    all_pages("ListPersons", |token| async move {
        let page = c
            .reg()
            .list_persons(proto::ListPersonsRequest {
                home_region: home.into(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .must();
        (page.persons, page.next_page_token)
    })
    .await
}

// ------------------------------------------------------------------------------------ regions

async fn regions_create_get_list(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;

    // The name defaults to the GB/T 2260 name, the bureau name to "<name>医疗保障局".
    let wuhai = create_region(&op, WUHAI).await;
    assert_eq!(wuhai.code, "150300");
    assert_eq!(wuhai.name, "乌海市");
    assert_eq!(wuhai.province_code, "15");
    assert_eq!(wuhai.bureau_name, "乌海市医疗保障局");

    // An explicit name is kept and drives the default bureau name.
    let yinchuan = op
        .reg()
        .create_region(proto::CreateRegionRequest {
            request_id: rid(),
            code: "640100".into(),
            name: "银川".into(),
            bureau_name: String::new(),
        })
        .await
        .must();
    assert_eq!(
        (yinchuan.name.as_str(), yinchuan.province_code.as_str()),
        ("银川", "64")
    );
    assert_eq!(yinchuan.bureau_name, "银川医疗保障局");

    // Duplicate (a new request id, so not an idempotent replay).
    op.reg()
        .create_region(region_req(WUHAI))
        .await
        .code_is(Code::AlreadyExists);

    let got = op
        .reg()
        .get_region(proto::GetRegionRequest { code: WUHAI.into() })
        .await
        .must();
    assert_eq!(got, wuhai);
    op.reg()
        .get_region(proto::GetRegionRequest {
            code: "150700".into(),
        })
        .await
        .code_is(Code::NotFound);

    // Five regions, pages of two: 2 + 2 + 1, tokens chain, no duplicates, ordered by code.
    for code in ["150100", "150200", ORDOS] {
        create_region(&op, code).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = op
            .reg()
            .list_regions(list_regions("", 2, &token))
            .await
            .must();
        pages.push(page.regions.len());
        seen.extend(page.regions.into_iter().map(|r| r.code));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end");
        token = page.next_page_token;
    }
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(seen, vec!["150100", "150200", "150300", "150600", "640100"]);

    // Province filter.
    let ningxia = op
        .reg()
        .list_regions(list_regions("64", 0, ""))
        .await
        .must();
    assert_eq!(
        ningxia
            .regions
            .iter()
            .map(|r| r.code.as_str())
            .collect::<Vec<_>>(),
        vec!["640100"]
    );
    assert!(ningxia.next_page_token.is_empty());
    let inner_mongolia = op
        .reg()
        .list_regions(list_regions("15", 0, ""))
        .await
        .must();
    assert_eq!(inner_mongolia.regions.len(), 4);

    // Bureaus and institutions may read the region list.
    let bureau = ts.bureau(WUHAI).await;
    assert_eq!(
        bureau
            .reg()
            .list_regions(list_regions("", 0, ""))
            .await
            .must()
            .regions
            .len(),
        5
    );
    let inst = ts.institution("H15030200001").await;
    inst.reg()
        .get_region(proto::GetRegionRequest { code: ORDOS.into() })
        .await
        .must();
}

async fn regions_validation_and_permissions(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    // 99 is no province; 15030 has 5 digits; 150301 is a county, not ending in 00.
    for bad in ["990100", "15030", "150301", "1503OO", ""] {
        op.reg()
            .create_region(region_req(bad))
            .await
            .invalid("code");
    }
    // Operators only.
    let bureau = ts.bureau(WUHAI).await;
    bureau
        .reg()
        .create_region(region_req(ORDOS))
        .await
        .code_is(Code::PermissionDenied);
    let inst = ts.institution("H15030200001").await;
    inst.reg()
        .create_region(region_req(ORDOS))
        .await
        .code_is(Code::PermissionDenied);
    // Nothing was created by the failures.
    let all = op.reg().list_regions(list_regions("", 0, "")).await.must();
    assert!(all.regions.is_empty(), "{:?}", all.regions);
    // Bad province filter.
    op.reg()
        .list_regions(list_regions("99", 0, ""))
        .await
        .invalid("province_code");
}

// ------------------------------------------------------------------------------------ institutions

async fn institutions_register_validation_and_permissions(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;

    let h = wuhai
        .reg()
        .register_institution(hospital("H15030200001", WUHAI, 3))
        .await
        .must();
    assert_eq!(h.code, "H15030200001");
    assert_eq!(h.name, "测试医院 H15030200001");
    assert_eq!(h.region, WUHAI);
    assert_eq!(h.kind, InstitutionKind::Hospital as i32);
    assert_eq!(h.level, 3);
    assert!(h.cross_region_enabled);
    assert_eq!(h.status, InstitutionStatus::Active as i32);
    assert_eq!(
        (h.valid_from.as_str(), h.valid_until.as_str()),
        ("2026-01-01", "")
    );

    // Operators may register too; pharmacies have level 0.
    let p = op
        .reg()
        .register_institution(pharmacy("P15030200001", WUHAI))
        .await
        .must();
    assert_eq!((p.kind, p.level), (InstitutionKind::Pharmacy as i32, 0));

    // The letter must match the kind.
    wuhai
        .reg()
        .register_institution(hospital("P15030200002", WUHAI, 2))
        .await
        .invalid("code");
    wuhai
        .reg()
        .register_institution(pharmacy("H15030200003", WUHAI))
        .await
        .invalid("code");
    // Digits 1-2 must be the region's province (64 is Ningxia, 150300 is in 15).
    wuhai
        .reg()
        .register_institution(hospital("H64010000001", WUHAI, 2))
        .await
        .invalid("code");
    // Shape: a letter and 11 digits.
    wuhai
        .reg()
        .register_institution(hospital("X15030200001", WUHAI, 2))
        .await
        .invalid("code");
    wuhai
        .reg()
        .register_institution(hospital("H1503020001", WUHAI, 2))
        .await
        .invalid("code");
    // Levels: hospitals 1..3, pharmacies 0.
    wuhai
        .reg()
        .register_institution(hospital("H15030200004", WUHAI, 0))
        .await
        .invalid("level");
    wuhai
        .reg()
        .register_institution(hospital("H15030200004", WUHAI, 4))
        .await
        .invalid("level");
    let mut p_level = pharmacy("P15030200004", WUHAI);
    p_level.level = 1;
    wuhai
        .reg()
        .register_institution(p_level)
        .await
        .invalid("level");
    // Kind UNSPECIFIED is rejected.
    let mut unspecified = hospital("H15030200005", WUHAI, 2);
    unspecified.kind = InstitutionKind::Unspecified as i32;
    wuhai
        .reg()
        .register_institution(unspecified)
        .await
        .invalid("kind");
    // valid_until before valid_from.
    let mut backwards = hospital("H15030200006", WUHAI, 2);
    backwards.valid_until = "2025-12-31".into();
    wuhai
        .reg()
        .register_institution(backwards)
        .await
        .invalid("valid_until");

    // Unknown (valid but not created) region.
    op.reg()
        .register_institution(hospital("H15070000001", "150700", 2))
        .await
        .code_is(Code::NotFound);
    // Duplicate.
    wuhai
        .reg()
        .register_institution(hospital("H15030200001", WUHAI, 2))
        .await
        .code_is(Code::AlreadyExists);

    // Another region's bureau may not register here.
    let ordos = ts.bureau(ORDOS).await;
    ordos
        .reg()
        .register_institution(hospital("H15030200007", WUHAI, 2))
        .await
        .code_is(Code::PermissionDenied);

    // An institution may not register institutions, enrol persons or create regions.
    let inst = ts.institution("H15030200001").await;
    inst.reg()
        .register_institution(hospital("H15030200008", WUHAI, 2))
        .await
        .code_is(Code::PermissionDenied);
    inst.reg()
        .enrol_person(employee(
            &national_id("150302", "19850412", 1),
            WUHAI,
            "100.00",
        ))
        .await
        .code_is(Code::PermissionDenied);
    inst.reg()
        .create_region(region_req("640100"))
        .await
        .code_is(Code::PermissionDenied);

    // Only the two good registrations exist.
    let listed = op
        .reg()
        .list_institutions(proto::ListInstitutionsRequest {
            region: String::new(),
            kind: 0,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .must();
    let codes: Vec<_> = listed
        .institutions
        .iter()
        .map(|i| i.code.as_str())
        .collect();
    assert_eq!(codes, vec!["H15030200001", "P15030200001"]);
}

fn list_inst(
    region: &str,
    kind: InstitutionKind,
    page_size: u32,
    token: &str,
) -> proto::ListInstitutionsRequest {
    proto::ListInstitutionsRequest {
        region: region.into(),
        kind: kind as i32,
        page_size,
        page_token: token.into(),
    }
}

fn update(code: &str) -> proto::UpdateInstitutionRequest {
    proto::UpdateInstitutionRequest {
        request_id: rid(),
        code: code.into(),
        name: None,
        status: None,
        cross_region_enabled: None,
        valid_until: None,
    }
}

async fn institutions_update_get_list(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let ordos = ts.bureau(ORDOS).await;
    let h1 = wuhai
        .reg()
        .register_institution(hospital("H15030200001", WUHAI, 3))
        .await
        .must();
    wuhai
        .reg()
        .register_institution(hospital("H15030200002", WUHAI, 1))
        .await
        .must();
    wuhai
        .reg()
        .register_institution(pharmacy("P15030200001", WUHAI))
        .await
        .must();
    ordos
        .reg()
        .register_institution(hospital("H15060200001", ORDOS, 2))
        .await
        .must();

    // Suspend; nothing else changes.
    let mut req = update("H15030200001");
    req.status = Some(InstitutionStatus::Suspended as i32);
    let suspended = wuhai.reg().update_institution(req).await.must();
    assert_eq!(
        suspended,
        proto::Institution {
            status: InstitutionStatus::Suspended as i32,
            ..h1.clone()
        }
    );

    // Close for cross-region settlement and rename (an operator may too).
    let mut req = update("H15030200001");
    req.cross_region_enabled = Some(false);
    req.name = Some("乌海市人民医院".into());
    let changed = op.reg().update_institution(req).await.must();
    assert!(!changed.cross_region_enabled);
    assert_eq!(changed.name, "乌海市人民医院");
    assert_eq!(
        changed.status,
        InstitutionStatus::Suspended as i32,
        "status kept"
    );
    assert_eq!(changed.level, 3);

    // Reactivate.
    let mut req = update("H15030200001");
    req.status = Some(InstitutionStatus::Active as i32);
    assert_eq!(
        wuhai.reg().update_institution(req).await.must().status,
        InstitutionStatus::Active as i32
    );

    // Another region's bureau may not update; unknown code is NOT_FOUND.
    let mut req = update("H15030200001");
    req.cross_region_enabled = Some(true);
    ordos
        .reg()
        .update_institution(req)
        .await
        .code_is(Code::PermissionDenied);
    let mut req = update("H15030299999");
    req.cross_region_enabled = Some(true);
    wuhai
        .reg()
        .update_institution(req)
        .await
        .code_is(Code::NotFound);

    // Reads: the institution itself, its bureau, an operator; not another institution or another
    // region's bureau.
    let get = |code: &str| proto::GetInstitutionRequest { code: code.into() };
    let me = ts.institution("H15030200001").await;
    let got = me.reg().get_institution(get("H15030200001")).await.must();
    assert_eq!(
        (got.name.as_str(), got.cross_region_enabled),
        ("乌海市人民医院", false)
    );
    assert_eq!(
        wuhai
            .reg()
            .get_institution(get("H15030200001"))
            .await
            .must(),
        got
    );
    assert_eq!(
        op.reg().get_institution(get("H15030200001")).await.must(),
        got
    );
    let other = ts.institution("P15030200001").await;
    other
        .reg()
        .get_institution(get("H15030200001"))
        .await
        .code_is(Code::PermissionDenied);
    ordos
        .reg()
        .get_institution(get("H15030200001"))
        .await
        .code_is(Code::PermissionDenied);
    op.reg()
        .get_institution(get("H15030299999"))
        .await
        .code_is(Code::NotFound);

    // Lists by region and kind.
    let codes = |r: proto::ListInstitutionsResponse| {
        r.institutions
            .into_iter()
            .map(|i| i.code)
            .collect::<Vec<_>>()
    };
    let all_wuhai = wuhai
        .reg()
        .list_institutions(list_inst(WUHAI, InstitutionKind::Unspecified, 0, ""))
        .await
        .must();
    assert_eq!(
        codes(all_wuhai),
        vec!["H15030200001", "H15030200002", "P15030200001"]
    );
    let pharmacies = wuhai
        .reg()
        .list_institutions(list_inst(WUHAI, InstitutionKind::Pharmacy, 0, ""))
        .await
        .must();
    assert_eq!(codes(pharmacies), vec!["P15030200001"]);
    let hospitals = op
        .reg()
        .list_institutions(list_inst(WUHAI, InstitutionKind::Hospital, 0, ""))
        .await
        .must();
    assert_eq!(codes(hospitals), vec!["H15030200001", "H15030200002"]);
    let everywhere = op
        .reg()
        .list_institutions(list_inst("", InstitutionKind::Unspecified, 0, ""))
        .await
        .must();
    assert_eq!(
        codes(everywhere),
        vec![
            "H15030200001",
            "H15030200002",
            "H15060200001",
            "P15030200001"
        ]
    );
    // Paged: 2 + 1.
    let p1 = wuhai
        .reg()
        .list_institutions(list_inst(WUHAI, InstitutionKind::Unspecified, 2, ""))
        .await
        .must();
    assert_eq!(p1.institutions.len(), 2);
    assert!(!p1.next_page_token.is_empty());
    let p2 = wuhai
        .reg()
        .list_institutions(list_inst(
            WUHAI,
            InstitutionKind::Unspecified,
            2,
            &p1.next_page_token,
        ))
        .await
        .must();
    assert_eq!(codes(p2.clone()), vec!["P15030200001"]);
    assert!(p2.next_page_token.is_empty());
    // A bureau lists only its own region.
    ordos
        .reg()
        .list_institutions(list_inst(WUHAI, InstitutionKind::Unspecified, 0, ""))
        .await
        .code_is(Code::PermissionDenied);
}

// ------------------------------------------------------------------------------------ persons

async fn persons_enrol_response(b: Backend) {
    let (_ts, op, wuhai) = setup(b).await;
    let id = national_id("150302", "19850412", 1);
    let mut req = employee(&id, WUHAI, "1000.00");
    req.card_no = "CARD150300001".into();
    req.evoucher_token = "EV-0001-abcdef".into();
    let p = enrol(&wuhai, req).await;
    assert!(
        p.psn_no.starts_with("150300"),
        "psn_no {:?} starts with the home region",
        p.psn_no
    );
    assert!(p.psn_no.len() > 6);
    assert_eq!(
        p.national_id, id,
        "the home bureau sees the full national ID"
    );
    assert_eq!(p.name, "张三");
    assert_eq!(p.home_region, WUHAI);
    assert_eq!(p.birth_date, "1985-04-12");
    assert_eq!(p.status, PersonStatus::Active as i32);
    assert_eq!(
        p.insurances,
        vec![proto::PersonInsurance {
            insurance_type: InsuranceType::Employee as i32,
            category: PersonCategory::Active as i32,
            status: PersonStatus::Active as i32,
        }]
    );
    assert_eq!(p.card_no, "CARD150300001");
    assert_eq!(p.card_status, CardStatus::Active as i32);
    assert!(p.has_evoucher);
    assert!(!p.assistance_recipient);
    assert_eq!(p.account_balance, "1000.00");

    // An employee without opening balance has an account at 0.00.
    let p0 = enrol(
        &wuhai,
        employee(&national_id("150302", "19900101", 2), WUHAI, ""),
    )
    .await;
    assert_eq!(p0.account_balance, "0.00");
    assert_eq!(p0.card_no, "");
    assert!(!p0.has_evoucher);

    // A resident has no personal account.
    let r = enrol(
        &wuhai,
        resident(&national_id("150303", "20010228", 3), WUHAI),
    )
    .await;
    assert_eq!(r.account_balance, "");
    assert_eq!(r.birth_date, "2001-02-28");
    assert_eq!(
        r.insurances[0].insurance_type,
        InsuranceType::Resident as i32
    );

    // Retired employee with maternity insurance, enrolled by an operator; 'x' check digit accepted
    // in upper case.
    let mut req = employee(&national_id("150304", "19580706", 4), WUHAI, "0.5");
    req.insurances = vec![
        ins(InsuranceType::Employee, PersonCategory::Retired),
        ins(InsuranceType::Maternity, PersonCategory::Retired),
    ];
    req.assistance_recipient = true;
    let retired = enrol(&op, req).await;
    assert_eq!(retired.account_balance, "0.50");
    assert!(retired.assistance_recipient);
    let mut types: Vec<_> = retired
        .insurances
        .iter()
        .map(|i| (i.insurance_type, i.category))
        .collect();
    types.sort();
    assert_eq!(
        types,
        vec![
            (
                InsuranceType::Employee as i32,
                PersonCategory::Retired as i32
            ),
            (
                InsuranceType::Maternity as i32,
                PersonCategory::Retired as i32
            ),
        ]
    );
}

async fn persons_enrol_validation(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let good = national_id("150302", "19850412", 1);

    // National ID: wrong check digit, impossible birth date (with a correct check digit), length.
    wuhai
        .reg()
        .enrol_person(employee(&with_wrong_check_digit(&good), WUHAI, ""))
        .await
        .invalid("national_id");
    let feb30 = national_id("150302", "19900230", 1);
    wuhai
        .reg()
        .enrol_person(employee(&feb30, WUHAI, ""))
        .await
        .invalid("national_id");
    wuhai
        .reg()
        .enrol_person(employee(&good[..17], WUHAI, ""))
        .await
        .invalid("national_id");

    // Insurances: a resident cannot be ACTIVE; at least one; each type once; no UNSPECIFIED.
    let mut req = resident(&good, WUHAI);
    req.insurances = vec![ins(InsuranceType::Resident, PersonCategory::Active)];
    wuhai
        .reg()
        .enrol_person(req)
        .await
        .invalid("insurances[0].category");
    let mut req = employee(&good, WUHAI, "");
    req.insurances.clear();
    wuhai.reg().enrol_person(req).await.invalid("insurances");
    let mut req = employee(&good, WUHAI, "");
    req.insurances
        .push(ins(InsuranceType::Employee, PersonCategory::Retired));
    wuhai
        .reg()
        .enrol_person(req)
        .await
        .invalid("insurances[1].insurance_type");
    let mut req = employee(&good, WUHAI, "");
    req.insurances = vec![ins(InsuranceType::Unspecified, PersonCategory::Active)];
    wuhai
        .reg()
        .enrol_person(req)
        .await
        .invalid("insurances[0].insurance_type");

    // Opening balance: strict decimal, ≥ 0, ≤ 2 decimals; employees only.
    for bad in ["12.345", "1e3", "-5", "abc", "+5", " 5", "NaN"] {
        wuhai
            .reg()
            .enrol_person(employee(&good, WUHAI, bad))
            .await
            .invalid("opening_balance");
    }
    let mut req = resident(&good, WUHAI);
    req.opening_balance = "10.00".into();
    wuhai
        .reg()
        .enrol_person(req)
        .await
        .invalid("opening_balance");

    // Name, card number (6..32 letters/digits), e-voucher token (8..128 printable ASCII).
    let mut req = employee(&good, WUHAI, "");
    req.name = String::new();
    wuhai.reg().enrol_person(req).await.invalid("name");
    let mut req = employee(&good, WUHAI, "");
    req.card_no = "C1".into();
    wuhai.reg().enrol_person(req).await.invalid("card_no");
    let mut req = employee(&good, WUHAI, "");
    req.card_no = "CARD-0001".into();
    wuhai.reg().enrol_person(req).await.invalid("card_no");
    let mut req = employee(&good, WUHAI, "");
    req.evoucher_token = "short".into();
    wuhai
        .reg()
        .enrol_person(req)
        .await
        .invalid("evoucher_token");

    // Home region: another region's bureau may not enrol here; unknown region.
    let ordos = ts.bureau(ORDOS).await;
    ordos
        .reg()
        .enrol_person(employee(&good, WUHAI, ""))
        .await
        .code_is(Code::PermissionDenied);
    op.reg()
        .enrol_person(employee(&good, "150700", ""))
        .await
        .code_is(Code::NotFound);
    op.reg()
        .enrol_person(employee(&good, "150301", ""))
        .await
        .invalid("home_region");

    // Nothing was enrolled by any failure.
    assert!(all_persons(&op, WUHAI).await.is_empty());

    // Uniqueness of the national ID and of the card number.
    let mut first = employee(&good, WUHAI, "100.00");
    first.card_no = "CARD0001".into();
    first.evoucher_token = "EVOUCHER-0001".into();
    enrol(&wuhai, first).await;
    wuhai
        .reg()
        .enrol_person(employee(&good, WUHAI, ""))
        .await
        .code_is(Code::AlreadyExists);
    let mut dup_card = employee(&national_id("150302", "19850412", 2), WUHAI, "");
    dup_card.card_no = "CARD0001".into();
    wuhai
        .reg()
        .enrol_person(dup_card)
        .await
        .code_is(Code::AlreadyExists);
    let mut dup_voucher = employee(&national_id("150302", "19850412", 3), WUHAI, "");
    dup_voucher.evoucher_token = "EVOUCHER-0001".into();
    wuhai
        .reg()
        .enrol_person(dup_voucher)
        .await
        .code_is(Code::AlreadyExists);
    // The same national ID cannot be enrolled in another region either.
    ordos
        .reg()
        .enrol_person(employee(&good, ORDOS, ""))
        .await
        .code_is(Code::AlreadyExists);

    assert_eq!(all_persons(&op, WUHAI).await.len(), 1);
    assert!(all_persons(&op, ORDOS).await.is_empty());
    verify_ok(&ts).await;
}

async fn persons_get_by_every_key(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let id = national_id("150302", "19850412", 1);
    let mut req = employee(&id, WUHAI, "1000.00");
    req.card_no = "CARD150300001".into();
    req.evoucher_token = "EV-0001-abcdef".into();
    let p = enrol(&wuhai, req).await;

    let get = |key: Key| proto::GetPersonRequest { key: Some(key) };
    let ordos = ts.bureau(ORDOS).await;
    for key in [
        Key::PsnNo(p.psn_no.clone()),
        Key::NationalId(id.clone()),
        Key::CardNo("CARD150300001".into()),
        Key::EvoucherToken("EV-0001-abcdef".into()),
    ] {
        let got = wuhai.reg().get_person(get(key.clone())).await.must();
        assert_eq!(got, p, "GetPerson by {key:?}");
        // Another region's bureau may not read the person, whatever the key.
        ordos
            .reg()
            .get_person(get(key.clone()))
            .await
            .code_is(Code::PermissionDenied);
        // An operator may.
        assert_eq!(op.reg().get_person(get(key)).await.must().psn_no, p.psn_no);
    }

    // A national ID whose check character is 'X', enrolled and looked up in lower case.
    let x_id = (10..1000)
        .map(|seq| national_id("150302", "19921111", seq))
        .find(|n| n.ends_with('X'))
        .unwrap();
    let x = enrol(&wuhai, employee(&x_id.to_lowercase(), WUHAI, "")).await;
    assert_eq!(x.national_id, x_id, "stored with an upper-case X");
    assert_eq!(
        wuhai
            .reg()
            .get_person(get(Key::NationalId(x_id.to_lowercase())))
            .await
            .must()
            .psn_no,
        x.psn_no
    );
    assert_eq!(
        wuhai
            .reg()
            .get_person(get(Key::NationalId(x_id.clone())))
            .await
            .must()
            .psn_no,
        x.psn_no
    );
    wuhai
        .reg()
        .enrol_person(employee(&x_id, WUHAI, ""))
        .await
        .code_is(Code::AlreadyExists);

    // Unknown persons.
    wuhai
        .reg()
        .get_person(get(Key::PsnNo("15030000000000000000000001".into())))
        .await
        .code_is(Code::NotFound);
    wuhai
        .reg()
        .get_person(get(Key::NationalId(national_id("150302", "19850412", 9))))
        .await
        .code_is(Code::NotFound);
    wuhai
        .reg()
        .get_person(get(Key::CardNo("CARD999999".into())))
        .await
        .code_is(Code::NotFound);
    wuhai
        .reg()
        .get_person(get(Key::EvoucherToken("EV-9999-zzzzzz".into())))
        .await
        .code_is(Code::NotFound);
    // A malformed national ID is bad input.
    wuhai
        .reg()
        .get_person(get(Key::NationalId(with_wrong_check_digit(&id))))
        .await
        .invalid("national_id");
    // No key at all.
    wuhai
        .reg()
        .get_person(proto::GetPersonRequest { key: None })
        .await
        .code_is(Code::InvalidArgument);
}

async fn persons_masked_for_other_than_home_bureau(b: Backend) {
    // registry.proto: national ID, name and card number are "masked except for the person's own
    // bureau"; the masked national ID looks like "150302********123X".
    let (_ts, op, wuhai) = setup(b).await;
    let id = national_id("150302", "19850412", 123);
    let mut req = employee(&id, WUHAI, "");
    req.card_no = "CARD150300001".into();
    let p = enrol(&wuhai, req).await;
    assert_eq!(p.national_id, id);
    let seen_by_op = get_person(&op, &p.psn_no).await;
    assert_eq!(
        seen_by_op.national_id,
        format!("150302********{}", &id[14..])
    );
    assert_ne!(seen_by_op.name, "张三");
    assert!(!seen_by_op.name.is_empty());
    assert_ne!(seen_by_op.card_no, "CARD150300001");
    assert!(!seen_by_op.card_no.is_empty());
    assert_eq!(seen_by_op.psn_no, p.psn_no);
}

async fn persons_list_paged(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let ordos = ts.bureau(ORDOS).await;
    let mut enrolled = BTreeSet::new();
    for seq in 1..=5 {
        let p = enrol(
            &wuhai,
            employee(&national_id("150302", "19850412", seq), WUHAI, ""),
        )
        .await;
        enrolled.insert(p.psn_no);
    }
    enrol(
        &ordos,
        employee(&national_id("150602", "19850412", 6), ORDOS, ""),
    )
    .await;

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = wuhai
            .reg()
            .list_persons(proto::ListPersonsRequest {
                home_region: WUHAI.into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .must();
        pages.push(page.persons.len());
        seen.extend(page.persons.into_iter().map(|p| p.psn_no));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end");
        token = page.next_page_token;
    }
    assert_eq!(pages, vec![2, 2, 1]);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no person listed twice");
    assert_eq!(unique, enrolled);

    // A bureau lists only its own region; operators must name the region.
    ordos
        .reg()
        .list_persons(proto::ListPersonsRequest {
            home_region: WUHAI.into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .code_is(Code::PermissionDenied);
    assert_eq!(all_persons(&op, ORDOS).await.len(), 1);
    op.reg()
        .list_persons(proto::ListPersonsRequest {
            home_region: String::new(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .invalid("home_region");
    // A token that this service never issued.
    wuhai
        .reg()
        .list_persons(proto::ListPersonsRequest {
            home_region: WUHAI.into(),
            page_size: 2,
            page_token: "zz-not-a-token".into(),
        })
        .await
        .invalid("page_token");
}

fn set_status(
    psn_no: &str,
    status: PersonStatus,
    t: InsuranceType,
) -> proto::SetPersonStatusRequest {
    proto::SetPersonStatusRequest {
        request_id: rid(),
        psn_no: psn_no.into(),
        status: status as i32,
        insurance_type: t as i32,
        reason: "test".into(),
    }
}

fn status_of(p: &proto::Person, t: InsuranceType) -> i32 {
    p.insurances
        .iter()
        .find(|i| i.insurance_type == t as i32)
        .map(|i| i.status)
        .expect("insurance held")
}

async fn persons_status_and_card(b: Backend) {
    let (ts, _op, wuhai) = setup(b).await;
    let mut req = employee(&national_id("150302", "19850412", 1), WUHAI, "");
    req.insurances
        .push(ins(InsuranceType::Maternity, PersonCategory::Active));
    req.card_no = "CARD0001".into();
    let p = enrol(&wuhai, req).await;
    let psn = p.psn_no.as_str();

    // Whole person: suspend, reinstate.
    let s = wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Suspended,
            InsuranceType::Unspecified,
        ))
        .await
        .must();
    assert_eq!(s.status, PersonStatus::Suspended as i32);
    let s = wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Active,
            InsuranceType::Unspecified,
        ))
        .await
        .must();
    assert_eq!(s.status, PersonStatus::Active as i32);

    // One insurance type only.
    let s = wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Suspended,
            InsuranceType::Maternity,
        ))
        .await
        .must();
    assert_eq!(s.status, PersonStatus::Active as i32);
    assert_eq!(
        status_of(&s, InsuranceType::Maternity),
        PersonStatus::Suspended as i32
    );
    assert_eq!(
        status_of(&s, InsuranceType::Employee),
        PersonStatus::Active as i32
    );
    // Terminating one type is final for that type only.
    let s = wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Terminated,
            InsuranceType::Maternity,
        ))
        .await
        .must();
    assert_eq!(
        status_of(&s, InsuranceType::Maternity),
        PersonStatus::Terminated as i32
    );
    wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Active,
            InsuranceType::Maternity,
        ))
        .await
        .code_is(Code::FailedPrecondition);
    assert_eq!(
        get_person(&wuhai, psn).await.status,
        PersonStatus::Active as i32
    );

    // Bad requests and strangers.
    wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Unspecified,
            InsuranceType::Unspecified,
        ))
        .await
        .invalid("status");
    let ordos = ts.bureau(ORDOS).await;
    ordos
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Suspended,
            InsuranceType::Unspecified,
        ))
        .await
        .code_is(Code::PermissionDenied);
    wuhai
        .reg()
        .set_person_status(set_status(
            "15030000000000000000000001",
            PersonStatus::Suspended,
            InsuranceType::Unspecified,
        ))
        .await
        .code_is(Code::NotFound);

    // Cards: report lost, then re-issue with a new number.
    let card = |status: CardStatus, new: &str| proto::SetCardStatusRequest {
        request_id: rid(),
        psn_no: psn.into(),
        card_status: status as i32,
        new_card_no: new.into(),
    };
    let lost = wuhai
        .reg()
        .set_card_status(card(CardStatus::Lost, ""))
        .await
        .must();
    assert_eq!(
        (lost.card_no.as_str(), lost.card_status),
        ("CARD0001", CardStatus::Lost as i32)
    );
    let reissued = wuhai
        .reg()
        .set_card_status(card(CardStatus::Active, "CARD0002"))
        .await
        .must();
    assert_eq!(
        (reissued.card_no.as_str(), reissued.card_status),
        ("CARD0002", CardStatus::Active as i32)
    );
    let by_card = |c: &str| proto::GetPersonRequest {
        key: Some(Key::CardNo(c.into())),
    };
    assert_eq!(
        wuhai
            .reg()
            .get_person(by_card("CARD0002"))
            .await
            .must()
            .psn_no,
        psn
    );
    wuhai
        .reg()
        .get_person(by_card("CARD0001"))
        .await
        .code_is(Code::NotFound);
    wuhai
        .reg()
        .set_card_status(card(CardStatus::Frozen, ""))
        .await
        .must();
    wuhai
        .reg()
        .set_card_status(card(CardStatus::Unspecified, ""))
        .await
        .invalid("card_status");
    wuhai
        .reg()
        .set_card_status(card(CardStatus::Active, "C1"))
        .await
        .invalid("new_card_no");
    // A person without a card needs a new card number.
    let nocard = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 2), WUHAI, ""),
    )
    .await;
    wuhai
        .reg()
        .set_card_status(proto::SetCardStatusRequest {
            request_id: rid(),
            psn_no: nocard.psn_no.clone(),
            card_status: CardStatus::Lost as i32,
            new_card_no: String::new(),
        })
        .await
        .code_is(Code::FailedPrecondition);
    // A card number is unique across persons.
    wuhai
        .reg()
        .set_card_status(proto::SetCardStatusRequest {
            request_id: rid(),
            psn_no: nocard.psn_no.clone(),
            card_status: CardStatus::Active as i32,
            new_card_no: "CARD0002".into(),
        })
        .await
        .code_is(Code::AlreadyExists);

    // Whole person terminated: final.
    let t = wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Terminated,
            InsuranceType::Unspecified,
        ))
        .await
        .must();
    assert_eq!(t.status, PersonStatus::Terminated as i32);
    for then in [
        PersonStatus::Active,
        PersonStatus::Suspended,
        PersonStatus::Terminated,
    ] {
        wuhai
            .reg()
            .set_person_status(set_status(psn, then, InsuranceType::Unspecified))
            .await
            .code_is(Code::FailedPrecondition);
    }
    wuhai
        .reg()
        .set_person_status(set_status(
            psn,
            PersonStatus::Active,
            InsuranceType::Employee,
        ))
        .await
        .code_is(Code::FailedPrecondition);
    assert_eq!(
        get_person(&wuhai, psn).await.status,
        PersonStatus::Terminated as i32
    );
    // No deposits to a terminated person.
    wuhai
        .reg()
        .deposit_personal_account(deposit(psn, "10.00"))
        .await
        .code_is(Code::FailedPrecondition);
}

async fn deposits(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let p = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 1), WUHAI, "1000.00"),
    )
    .await;
    let psn = p.psn_no.as_str();

    // 1000.00 + 250.50 = 1250.50
    let d = wuhai
        .reg()
        .deposit_personal_account(deposit(psn, "250.50"))
        .await
        .must();
    assert_eq!(d.psn_no, psn);
    assert_eq!(d.balance, "1250.50");
    assert!(!d.journal_id.is_empty());
    assert_eq!(get_person(&wuhai, psn).await.account_balance, "1250.50");

    // An operator may deposit too: 1250.50 + 0.01 = 1250.51; "7" means 7.00: 1257.51.
    assert_eq!(
        op.reg()
            .deposit_personal_account(deposit(psn, "0.01"))
            .await
            .must()
            .balance,
        "1250.51"
    );
    let d7 = op
        .reg()
        .deposit_personal_account(deposit(psn, "7"))
        .await
        .must();
    assert_eq!(d7.balance, "1257.51");
    assert_ne!(d7.journal_id, d.journal_id);

    // Bad amounts change nothing.
    for bad in ["0", "0.00", "-1", "0.001", "", "1e3", "abc", "+1", "1,00"] {
        wuhai
            .reg()
            .deposit_personal_account(deposit(psn, bad))
            .await
            .invalid("amount");
    }
    // Residents have no personal account.
    let r = enrol(
        &wuhai,
        resident(&national_id("150302", "19850412", 2), WUHAI),
    )
    .await;
    wuhai
        .reg()
        .deposit_personal_account(deposit(&r.psn_no, "10.00"))
        .await
        .code_is(Code::FailedPrecondition);
    // Strangers, unknown persons.
    let ordos = ts.bureau(ORDOS).await;
    ordos
        .reg()
        .deposit_personal_account(deposit(psn, "10.00"))
        .await
        .code_is(Code::PermissionDenied);
    wuhai
        .reg()
        .deposit_personal_account(deposit("15030000000000000000000001", "10.00"))
        .await
        .code_is(Code::NotFound);
    let inst = ts.institution("H15030200001").await;
    inst.reg()
        .deposit_personal_account(deposit(psn, "10.00"))
        .await
        .code_is(Code::PermissionDenied);

    assert_eq!(get_person(&wuhai, psn).await.account_balance, "1257.51");
    assert_eq!(get_person(&wuhai, &r.psn_no).await.account_balance, "");
    verify_ok(&ts).await;
}

// ------------------------------------------------------------------------------------ idempotency

async fn idempotency_enrol_and_region(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;

    // CreateRegion replayed: the first answer again, not ALREADY_EXISTS.
    let req = region_req("640100");
    let first = op.reg().create_region(req.clone()).await.must();
    assert_eq!(op.reg().create_region(req.clone()).await.must(), first);
    // The same id with another payload.
    let mut other = req.clone();
    other.code = "640200".into();
    op.reg()
        .create_region(other)
        .await
        .code_is(Code::AlreadyExists);
    op.reg()
        .get_region(proto::GetRegionRequest {
            code: "640200".into(),
        })
        .await
        .code_is(Code::NotFound);

    // EnrolPerson replayed: identical person, enrolled once.
    let mut req = employee(&national_id("150302", "19850412", 1), WUHAI, "1000.00");
    req.card_no = "CARD0001".into();
    let first = enrol(&wuhai, req.clone()).await;
    let again = enrol(&wuhai, req.clone()).await;
    assert_eq!(again, first);
    assert_eq!(all_persons(&op, WUHAI).await.len(), 1);
    // Same id, different payload (another name).
    let mut changed = req.clone();
    changed.name = "王五".into();
    wuhai
        .reg()
        .enrol_person(changed)
        .await
        .code_is(Code::AlreadyExists);
    // Same id on another RPC.
    let mut dep = deposit(&first.psn_no, "1.00");
    dep.request_id = req.request_id.clone();
    wuhai
        .reg()
        .deposit_personal_account(dep)
        .await
        .code_is(Code::AlreadyExists);
    // Request ids are per caller: another principal may use the same id for its own request.
    let mut op_req = employee(&national_id("150302", "19850412", 2), WUHAI, "");
    op_req.request_id = req.request_id.clone();
    enrol(&op, op_req).await;
    // Empty or malformed request ids.
    let mut empty = employee(&national_id("150302", "19850412", 3), WUHAI, "");
    empty.request_id = String::new();
    wuhai.reg().enrol_person(empty).await.invalid("request_id");
    let mut long = employee(&national_id("150302", "19850412", 3), WUHAI, "");
    long.request_id = "r".repeat(65);
    wuhai.reg().enrol_person(long).await.invalid("request_id");
    let mut spaced = employee(&national_id("150302", "19850412", 3), WUHAI, "");
    spaced.request_id = "has space".into();
    wuhai.reg().enrol_person(spaced).await.invalid("request_id");
    let mut empty_dep = deposit(&first.psn_no, "1.00");
    empty_dep.request_id = String::new();
    wuhai
        .reg()
        .deposit_personal_account(empty_dep)
        .await
        .invalid("request_id");
    let mut empty_region = region_req("640300");
    empty_region.request_id = String::new();
    op.reg()
        .create_region(empty_region)
        .await
        .invalid("request_id");

    // 1000.00 opening, nothing else: the replays moved no money.
    assert_eq!(all_persons(&op, WUHAI).await.len(), 2);
    assert_eq!(
        get_person(&wuhai, &first.psn_no).await.account_balance,
        "1000.00"
    );
    assert_eq!(fen(&balance(&op, "bank:150300").await.balance), -100_000);
    verify_ok(&ts).await;
}

async fn idempotency_deposit(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let p = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 1), WUHAI, "1000.00"),
    )
    .await;
    let psn = p.psn_no.as_str();

    // Twice the same deposit: one effect, the same answer. 1000.00 + 100.00 = 1100.00.
    let req = deposit(psn, "100.00");
    let first = wuhai
        .reg()
        .deposit_personal_account(req.clone())
        .await
        .must();
    let again = wuhai
        .reg()
        .deposit_personal_account(req.clone())
        .await
        .must();
    assert_eq!(first.balance, "1100.00");
    assert_eq!(again, first);
    assert_eq!(get_person(&wuhai, psn).await.account_balance, "1100.00");

    // A later deposit does not change the replayed answer: 1100.00 + 1.00 = 1101.00, and the
    // replay of the first still says 1100.00.
    assert_eq!(
        wuhai
            .reg()
            .deposit_personal_account(deposit(psn, "1.00"))
            .await
            .must()
            .balance,
        "1101.00"
    );
    assert_eq!(
        wuhai
            .reg()
            .deposit_personal_account(req.clone())
            .await
            .must(),
        first
    );

    // Same id, different amount or memo: ALREADY_EXISTS and no effect.
    let mut other = req.clone();
    other.amount = "200.00".into();
    wuhai
        .reg()
        .deposit_personal_account(other)
        .await
        .code_is(Code::AlreadyExists);
    let mut other = req.clone();
    other.memo = "another memo".into();
    wuhai
        .reg()
        .deposit_personal_account(other)
        .await
        .code_is(Code::AlreadyExists);
    assert_eq!(get_person(&wuhai, psn).await.account_balance, "1101.00");

    // 20 concurrent identical deposits under one request id: exactly one effect, 20 equal answers.
    // 1101.00 + 7.77 = 1108.77.
    let req = deposit(psn, "7.77");
    let calls = (0..20).map(|_| {
        let c = wuhai.clone();
        let r = req.clone();
        tokio::spawn(async move { c.reg().deposit_personal_account(r).await })
    });
    let answers: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|j| j.expect("task").must())
        .collect();
    for a in &answers {
        assert_eq!(a, &answers[0]);
    }
    assert_eq!(answers[0].balance, "1108.77");
    assert_eq!(get_person(&wuhai, psn).await.account_balance, "1108.77");
    // Journal: opening + 100.00 + 1.00 + 7.77 = 4 transactions on the account.
    let b = balance(&op, &format!("pacct:{psn}")).await;
    assert_eq!((b.balance.as_str(), b.entries), ("1108.77", 4));
    verify_ok(&ts).await;
}

async fn idempotency_concurrent_same_request_id(b: Backend) {
    // A client that times out and retries while its first call is still running sends the same
    // request id concurrently: every answer must be the first answer (common.proto), never
    // ALREADY_EXISTS from the business rule the first call just satisfied.
    let (ts, op, wuhai) = setup(b).await;

    // 10 × the same CreateRegion, then 10 × the same EnrolPerson with an opening balance of
    // 100.00; both checked before asserting, so that the report names every RPC that fails.
    let req = region_req("640100");
    let calls = (0..10).map(|_| {
        let c = op.clone();
        let r = req.clone();
        tokio::spawn(async move { c.reg().create_region(r).await })
    });
    let regions: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|j| j.expect("task"))
        .collect();
    let req = employee(&national_id("150302", "19850412", 1), WUHAI, "100.00");
    let calls = (0..10).map(|_| {
        let c = wuhai.clone();
        let r = req.clone();
        tokio::spawn(async move { c.reg().enrol_person(r).await })
    });
    let persons: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|j| j.expect("task"))
        .collect();
    let failures: Vec<String> = regions
        .iter()
        .filter_map(|r| {
            r.as_ref()
                .err()
                .map(|s| format!("CreateRegion: {:?} {}", s.code(), s.message()))
        })
        .chain(persons.iter().filter_map(|r| {
            r.as_ref()
                .err()
                .map(|s| format!("EnrolPerson: {:?} {}", s.code(), s.message()))
        }))
        .collect();
    assert!(
        failures.is_empty(),
        "concurrent replays failed: {failures:#?}"
    );
    let regions: Vec<_> = regions.into_iter().map(|r| r.must()).collect();
    assert!(regions.iter().all(|a| a == &regions[0]), "{regions:?}");
    let persons: Vec<_> = persons.into_iter().map(|r| r.must()).collect();
    assert!(persons.iter().all(|a| a == &persons[0]), "{persons:?}");
    // Enrolled once, booked once: bank:150300 = −100.00.
    assert_eq!(all_persons(&op, WUHAI).await.len(), 1);
    assert_eq!(balance(&op, "bank:150300").await.balance, "-100.00");
    verify_ok(&ts).await;
}

async fn nothing_written_on_error(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let p = enrol(
        &wuhai,
        employee(&national_id("150302", "19850412", 1), WUHAI, "500.00"),
    )
    .await;
    let before = all_persons(&op, WUHAI).await;

    // A failing enrolment (bad category on the second insurance) leaves no person, no account,
    // no journal transaction.
    let mut req = employee(&national_id("150302", "19850412", 2), WUHAI, "300.00");
    req.insurances
        .push(ins(InsuranceType::Maternity, PersonCategory::Resident));
    wuhai
        .reg()
        .enrol_person(req.clone())
        .await
        .invalid("insurances[1].category");
    assert_eq!(all_persons(&op, WUHAI).await, before);
    // The same request id with the corrected payload then succeeds (nothing was stored for it).
    req.insurances.pop();
    let ok = enrol(&wuhai, req).await;
    assert_eq!(ok.account_balance, "300.00");
    // A failing enrolment that collides on the national ID, with an opening balance.
    wuhai
        .reg()
        .enrol_person(employee(
            &national_id("150302", "19850412", 2),
            WUHAI,
            "999.00",
        ))
        .await
        .code_is(Code::AlreadyExists);
    assert_eq!(all_persons(&op, WUHAI).await.len(), 2);
    // bank:150300 = −(500.00 + 300.00) = −800.00; the failed 999.00 is not booked.
    assert_eq!(balance(&op, "bank:150300").await.balance, "-800.00");

    // A failed deposit leaves the balance and the journal as they were.
    let acct = format!("pacct:{}", p.psn_no);
    let b0 = balance(&op, &acct).await;
    wuhai
        .reg()
        .deposit_personal_account(deposit(&p.psn_no, "0.001"))
        .await
        .invalid("amount");
    let mut too_long = deposit(&p.psn_no, "10.00");
    too_long.memo = "x".repeat(257);
    wuhai
        .reg()
        .deposit_personal_account(too_long)
        .await
        .invalid("memo");
    assert_eq!(balance(&op, &acct).await, b0);
    assert_eq!(
        get_person(&wuhai, &p.psn_no).await.account_balance,
        "500.00"
    );
    verify_ok(&ts).await;
}

// ------------------------------------------------------------------------------------ catalogue

fn item(
    code: &str,
    name: &str,
    class: proto::CatalogueClass,
    effective_from: &str,
) -> proto::CatalogueItem {
    proto::CatalogueItem {
        region: String::new(),
        code: code.into(),
        name: name.into(),
        kind: proto::CatalogueKind::Drug as i32,
        class: class as i32,
        b_self_pay_ratio: if class == proto::CatalogueClass::B {
            "0.10".into()
        } else {
            String::new()
        },
        price_cap: String::new(),
        effective_from: effective_from.into(),
        version: 0,
    }
}

fn upsert(region: &str, items: Vec<proto::CatalogueItem>) -> proto::UpsertCatalogueRequest {
    proto::UpsertCatalogueRequest {
        request_id: rid(),
        region: region.into(),
        items,
    }
}

fn get_item(region: &str, code: &str, on: &str) -> proto::GetCatalogueItemRequest {
    proto::GetCatalogueItemRequest {
        region: region.into(),
        code: code.into(),
        on_date: on.into(),
    }
}

fn search(
    region: &str,
    q: &str,
    on: &str,
    page_size: u32,
    token: &str,
) -> proto::SearchCatalogueRequest {
    proto::SearchCatalogueRequest {
        region: region.into(),
        query: q.into(),
        on_date: on.into(),
        page_size,
        page_token: token.into(),
    }
}

/// All pages of a search: (codes, page sizes).
async fn search_all(
    c: &Caller,
    region: &str,
    q: &str,
    on: &str,
    page_size: u32,
) -> (Vec<String>, Vec<usize>) {
    let mut codes = Vec::new();
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .reg()
            .search_catalogue(search(region, q, on, page_size, &token))
            .await
            .must();
        pages.push(page.items.len());
        codes.extend(page.items.into_iter().map(|i| i.code));
        if page.next_page_token.is_empty() {
            return (codes, pages);
        }
        assert!(pages.len() < 200, "paging does not end");
        token = page.next_page_token;
    }
}

async fn catalogue_bulk_upsert_and_versions(b: Backend) {
    let (_ts, _op, wuhai) = setup(b).await;
    use proto::CatalogueClass as C;
    // 10 000 items T00000..T09999 named 测试药品0..测试药品9999; classes A, B, C in turn; even items
    // have a price cap.
    let items: Vec<_> = (0..10_000u32)
        .map(|i| {
            let class = [C::A, C::B, C::C][(i % 3) as usize];
            let mut it = item(
                &format!("T{i:05}"),
                &format!("测试药品{i}"),
                class,
                "2026-01-01",
            );
            if i % 2 == 0 {
                it.price_cap = format!("{}.{:02}", 1 + i % 100, i % 100);
            }
            it
        })
        .collect();
    let r = wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, items))
        .await
        .must();
    assert_eq!(
        (r.region.as_str(), r.version, r.written),
        (WUHAI, 1, 10_000)
    );

    // A second call is version 2.
    let r2 = wuhai
        .reg()
        .upsert_catalogue(upsert(
            WUHAI,
            vec![item("U00001", "注射用头孢曲松钠", C::B, "2026-02-01")],
        ))
        .await
        .must();
    assert_eq!((r2.version, r2.written), (2, 1));

    // T00042: 42 % 3 = 0 → class A; even → price cap 1 + 42 = 43, ".42" → "43.42".
    let t42 = wuhai
        .reg()
        .get_catalogue_item(get_item(WUHAI, "T00042", "2026-06-01"))
        .await
        .must();
    assert_eq!(t42.region, WUHAI);
    assert_eq!(t42.name, "测试药品42");
    assert_eq!(t42.class, C::A as i32);
    assert_eq!(t42.kind, proto::CatalogueKind::Drug as i32);
    assert_eq!(t42.b_self_pay_ratio, "");
    assert_eq!(canon(&t42.price_cap), "43.42");
    assert_eq!(t42.effective_from, "2026-01-01");
    assert_eq!(t42.version, 1);
    // T00043: 43 % 3 = 1 → class B with ratio 0.10; odd → no cap.
    let t43 = wuhai
        .reg()
        .get_catalogue_item(get_item(WUHAI, "T00043", "2026-06-01"))
        .await
        .must();
    assert_eq!(
        (
            t43.class,
            canon(&t43.b_self_pay_ratio),
            t43.price_cap.as_str()
        ),
        (C::B as i32, "0.1".into(), "")
    );
    let u = wuhai
        .reg()
        .get_catalogue_item(get_item(WUHAI, "U00001", "2026-06-01"))
        .await
        .must();
    assert_eq!(u.version, 2);

    // Code prefix "T0001": T00010..T00019 = 10 items, pages of 4: 4 + 4 + 2.
    let (codes, pages) = search_all(&wuhai, WUHAI, "T0001", "2026-06-01", 4).await;
    assert_eq!(pages, vec![4, 4, 2]);
    assert_eq!(
        codes,
        (10..20).map(|i| format!("T{i:05}")).collect::<Vec<_>>()
    );
    // Name substring "测试药品999": 999 and 9990..9999 = 11 items.
    let (codes, _) = search_all(&wuhai, WUHAI, "测试药品999", "2026-06-01", 0).await;
    let mut expected = vec!["T00999".to_owned()];
    expected.extend((9990..10_000).map(|i| format!("T{i:05}")));
    assert_eq!(codes, expected);
    // Everything in force on 2026-06-01: 10 000 + 1, by pages of 1000: 11 pages.
    let (codes, pages) = search_all(&wuhai, WUHAI, "", "2026-06-01", 1000).await;
    assert_eq!(codes.len(), 10_001);
    assert_eq!(pages.len(), 11);
    assert_eq!(
        codes.iter().collect::<BTreeSet<_>>().len(),
        10_001,
        "no duplicates across pages"
    );
    // On 2026-01-15 the U item (from 2026-02-01) is not yet in force.
    let (codes, _) = search_all(&wuhai, WUHAI, "U", "2026-01-15", 0).await;
    assert!(codes.is_empty(), "{codes:?}");
}

async fn catalogue_validation_and_permissions(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    use proto::CatalogueClass as C;
    let good = || item("X01", "阿莫西林胶囊", C::A, "2026-01-01");

    // Class B needs its self-pay ratio.
    let mut b_no_ratio = item("X02", "头孢克肟片", C::B, "2026-01-01");
    b_no_ratio.b_self_pay_ratio = String::new();
    let s = wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![good(), b_no_ratio]))
        .await
        .code_is(Code::InvalidArgument);
    let fields = violated_fields(&s);
    assert!(
        fields.iter().any(|f| f.starts_with("items[1]")),
        "fields {fields:?}"
    );
    // A price cap with 7 decimals.
    let mut capped = item("X03", "布洛芬缓释胶囊", C::A, "2026-01-01");
    capped.price_cap = "1.2345678".into();
    wuhai
        .reg()
        .upsert_catalogue(upsert(
            WUHAI,
            vec![good(), item("X02", "b", C::A, "2026-01-01"), capped],
        ))
        .await
        .invalid("items[2].price_cap");
    // A ratio above 1.
    let mut ratio = item("X04", "x", C::B, "2026-01-01");
    ratio.b_self_pay_ratio = "1.5".into();
    let s = wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![ratio]))
        .await
        .code_is(Code::InvalidArgument);
    assert!(
        violated_fields(&s)
            .iter()
            .any(|f| f.starts_with("items[0]")),
        "{:?}",
        violated_fields(&s)
    );
    // The same (code, effective_from) twice in one call.
    let s = wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![good(), good()]))
        .await
        .code_is(Code::InvalidArgument);
    assert!(
        violated_fields(&s)
            .iter()
            .any(|f| f.starts_with("items[1]")),
        "{:?}",
        violated_fields(&s)
    );
    // No items; a bad date; a bad code; an unspecified class.
    wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![]))
        .await
        .invalid("items");
    let mut bad_date = good();
    bad_date.effective_from = "2026-02-30".into();
    wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![bad_date]))
        .await
        .invalid("items[0].effective_from");
    let mut bad_code = good();
    bad_code.code = "X 01".into();
    wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![bad_code]))
        .await
        .invalid("items[0].code");
    let mut no_class = good();
    no_class.class = C::Unspecified as i32;
    wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![no_class]))
        .await
        .invalid("items[0].class");

    // Writers: the region's bureau or an operator; not another bureau, not an institution.
    let ordos = ts.bureau(ORDOS).await;
    ordos
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![good()]))
        .await
        .code_is(Code::PermissionDenied);
    op.reg()
        .register_institution(hospital("H15030200001", WUHAI, 3))
        .await
        .must();
    let inst = ts.institution("H15030200001").await;
    inst.reg()
        .upsert_catalogue(upsert(WUHAI, vec![good()]))
        .await
        .code_is(Code::PermissionDenied);
    op.reg()
        .upsert_catalogue(upsert("150700", vec![good()]))
        .await
        .code_is(Code::NotFound);

    // None of the failures consumed a version or wrote an item.
    wuhai
        .reg()
        .get_catalogue_item(get_item(WUHAI, "X01", "2026-06-01"))
        .await
        .code_is(Code::NotFound);
    let r = op
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![good()]))
        .await
        .must();
    assert_eq!(r.version, 1);
}

async fn catalogue_effective_dates_and_search(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    use proto::CatalogueClass as C;
    let ordos = ts.bureau(ORDOS).await;
    op.reg()
        .register_institution(hospital("H15030200001", WUHAI, 3))
        .await
        .must();
    op.reg()
        .register_institution(hospital("H15060200001", ORDOS, 3))
        .await
        .must();

    let mut old = item("X01", "阿莫西林胶囊 0.25g", C::A, "2026-01-01");
    old.price_cap = "0.85".into();
    let mut new = item("X01", "阿莫西林胶囊 0.25g（新版）", C::B, "2026-07-01");
    new.price_cap = "0.80".into();
    let ibu = item("Y01", "布洛芬缓释胶囊", C::A, "2026-01-01");
    wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![old, new, ibu]))
        .await
        .must();

    let x = |on: &str| get_item(WUHAI, "X01", on);
    let march = wuhai.reg().get_catalogue_item(x("2026-03-01")).await.must();
    assert_eq!(
        (march.effective_from.as_str(), canon(&march.price_cap)),
        ("2026-01-01", "0.85".into())
    );
    assert_eq!(march.class, C::A as i32);
    let august = wuhai.reg().get_catalogue_item(x("2026-08-01")).await.must();
    assert_eq!(
        (august.effective_from.as_str(), canon(&august.price_cap)),
        ("2026-07-01", "0.8".into())
    );
    assert_eq!(august.name, "阿莫西林胶囊 0.25g（新版）");
    // The first day of each entry is inclusive.
    assert_eq!(
        wuhai
            .reg()
            .get_catalogue_item(x("2026-07-01"))
            .await
            .must()
            .effective_from,
        "2026-07-01"
    );
    assert_eq!(
        wuhai
            .reg()
            .get_catalogue_item(x("2026-06-30"))
            .await
            .must()
            .effective_from,
        "2026-01-01"
    );
    wuhai
        .reg()
        .get_catalogue_item(x("2025-12-31"))
        .await
        .code_is(Code::NotFound);
    // Today (2026-11-27 or later) is after 2026-07-01.
    assert_eq!(
        wuhai
            .reg()
            .get_catalogue_item(x(""))
            .await
            .must()
            .effective_from,
        "2026-07-01"
    );
    wuhai
        .reg()
        .get_catalogue_item(x("2026/08/01"))
        .await
        .invalid("on_date");
    wuhai
        .reg()
        .get_catalogue_item(get_item(WUHAI, "Z99", "2026-08-01"))
        .await
        .code_is(Code::NotFound);

    // Search: one entry per code, the one in force.
    let page = wuhai
        .reg()
        .search_catalogue(search(WUHAI, "X", "2026-08-01", 0, ""))
        .await
        .must();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].effective_from, "2026-07-01");
    let page = wuhai
        .reg()
        .search_catalogue(search(WUHAI, "布洛芬", "2026-08-01", 0, ""))
        .await
        .must();
    assert_eq!(
        page.items
            .iter()
            .map(|i| i.code.as_str())
            .collect::<Vec<_>>(),
        vec!["Y01"]
    );
    let page = wuhai
        .reg()
        .search_catalogue(search(WUHAI, "胶囊", "2026-03-01", 0, ""))
        .await
        .must();
    assert_eq!(
        page.items
            .iter()
            .map(|i| i.code.as_str())
            .collect::<Vec<_>>(),
        vec!["X01", "Y01"]
    );
    let page = wuhai
        .reg()
        .search_catalogue(search(WUHAI, "", "2025-06-01", 0, ""))
        .await
        .must();
    assert!(page.items.is_empty());

    // Readers: an institution of the region yes, of another region no.
    let local = ts.institution("H15030200001").await;
    assert_eq!(
        local.reg().get_catalogue_item(x("2026-03-01")).await.must(),
        march
    );
    local
        .reg()
        .search_catalogue(search(WUHAI, "X", "2026-08-01", 0, ""))
        .await
        .must();
    let foreign = ts.institution("H15060200001").await;
    foreign
        .reg()
        .get_catalogue_item(x("2026-03-01"))
        .await
        .code_is(Code::PermissionDenied);
    foreign
        .reg()
        .search_catalogue(search(WUHAI, "X", "2026-08-01", 0, ""))
        .await
        .code_is(Code::PermissionDenied);
    // Another region's bureau may not write it.
    ordos
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![item("X09", "x", C::A, "2026-01-01")]))
        .await
        .code_is(Code::PermissionDenied);

    // Re-upserting an existing (code, effective_from) replaces it, under the new version.
    let mut renamed = item("Y01", "布洛芬缓释胶囊 0.3g", C::A, "2026-01-01");
    renamed.price_cap = "2.5".into();
    let r = wuhai
        .reg()
        .upsert_catalogue(upsert(WUHAI, vec![renamed]))
        .await
        .must();
    assert_eq!(r.version, 2);
    let y = wuhai
        .reg()
        .get_catalogue_item(get_item(WUHAI, "Y01", "2026-08-01"))
        .await
        .must();
    assert_eq!(
        (y.name.as_str(), canon(&y.price_cap), y.version),
        ("布洛芬缓释胶囊 0.3g", "2.5".into(), 2)
    );
}

// ------------------------------------------------------------------------------------ policies

fn minus(points: &str) -> proto::Reduction {
    proto::Reduction {
        kind: Some(proto::reduction::Kind::MinusPoints(points.into())),
    }
}

fn rule(
    category: PersonCategory,
    care: proto::CareType,
    level: proto::LevelScope,
    deductible: &str,
    ratio: &str,
) -> proto::PolicyRule {
    proto::PolicyRule {
        insurance_type: InsuranceType::Employee as i32,
        category: category as i32,
        care_type: care as i32,
        level: level as i32,
        province_scope: proto::ProvinceScope::Any as i32,
        deductible_basis: proto::DeductibleBasis::PerAdmission as i32,
        deductible: deductible.into(),
        repeat_admission_deductible: "400".into(),
        ratio: ratio.into(),
        annual_cap: "150000".into(),
        critical_illness: None,
        assistance: None,
    }
}

/// Wuhai's employee inpatient policy, as a bureau would write it (amounts without decimals).
fn wuhai_policy() -> proto::PolicyBody {
    use proto::{CareType, LevelScope};
    let mut active3 = rule(
        PersonCategory::Active,
        CareType::Inpatient,
        LevelScope::Level3,
        "800",
        "0.85",
    );
    active3.critical_illness = Some(proto::CriticalIllnessLayer {
        threshold: "20000".into(),
        bands: vec![
            proto::CriticalIllnessBand {
                from: "20000".into(),
                to: "100000".into(),
                ratio: "0.60".into(),
            },
            proto::CriticalIllnessBand {
                from: "100000".into(),
                to: String::new(),
                ratio: "0.7".into(),
            },
        ],
        annual_cap: "400000".into(),
    });
    active3.assistance = Some(proto::AssistanceLayer {
        ratio: "0.5".into(),
        annual_cap: "30000.5".into(),
    });
    let active_any = rule(
        PersonCategory::Active,
        CareType::Inpatient,
        LevelScope::Any,
        "600",
        "0.8",
    );
    let mut retired3 = rule(
        PersonCategory::Retired,
        CareType::Inpatient,
        LevelScope::Level3,
        "800",
        "0.9",
    );
    retired3.province_scope = proto::ProvinceScope::OutOfProvince as i32;
    let mut outpatient = rule(
        PersonCategory::Active,
        CareType::Outpatient,
        LevelScope::Any,
        "1200",
        "0.5",
    );
    outpatient.deductible_basis = proto::DeductibleBasis::Annual as i32;
    outpatient.repeat_admission_deductible = "0".into();
    outpatient.annual_cap = String::new();
    proto::PolicyBody {
        rules: vec![active3, active_any, retired3, outpatient],
        filing_reductions: vec![proto::FilingReduction {
            filing_type: proto::FilingType::Referral as i32,
            reduction: Some(minus("0.10")),
        }],
        unfiled_allowed: false,
        unfiled_reduction: None,
        account_pays_class_c: false,
        pharmacy_national: true,
    }
}

/// `body` as the service returns it: amounts with 2 decimals; ratios compared canonically.
fn normalised(mut body: proto::PolicyBody) -> proto::PolicyBody {
    let amt = |s: &mut String| {
        if !s.is_empty() && !s.contains('.') {
            s.push_str(".00");
        } else if let Some((_, f)) = s.split_once('.')
            && f.len() == 1
        {
            s.push('0');
        }
    };
    let ratio = |s: &mut String| *s = canon(s);
    for r in &mut body.rules {
        amt(&mut r.deductible);
        amt(&mut r.repeat_admission_deductible);
        amt(&mut r.annual_cap);
        ratio(&mut r.ratio);
        if let Some(ci) = &mut r.critical_illness {
            amt(&mut ci.threshold);
            amt(&mut ci.annual_cap);
            for b in &mut ci.bands {
                amt(&mut b.from);
                amt(&mut b.to);
                ratio(&mut b.ratio);
            }
        }
        if let Some(a) = &mut r.assistance {
            ratio(&mut a.ratio);
            amt(&mut a.annual_cap);
        }
    }
    let red = |r: &mut Option<proto::Reduction>| {
        if let Some(proto::Reduction {
            kind: Some(proto::reduction::Kind::MinusPoints(s) | proto::reduction::Kind::Factor(s)),
        }) = r
        {
            *s = canon(s);
        }
    };
    for f in &mut body.filing_reductions {
        red(&mut f.reduction);
    }
    red(&mut body.unfiled_reduction);
    body
}

fn put(region: &str, from: &str, body: proto::PolicyBody) -> proto::PutPolicyRequest {
    proto::PutPolicyRequest {
        request_id: rid(),
        region: region.into(),
        effective_from: from.into(),
        body: Some(body),
    }
}

fn get_policy(region: &str, on: &str, version: u64) -> proto::GetPolicyRequest {
    proto::GetPolicyRequest {
        region: region.into(),
        on_date: on.into(),
        version,
    }
}

async fn policies_round_trip_and_versions(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    let body = wuhai_policy();
    let v1 = wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", body.clone()))
        .await
        .must();
    assert_eq!(
        (v1.region.as_str(), v1.version, v1.effective_from.as_str()),
        (WUHAI, 1, "2026-01-01")
    );
    let returned = normalised(v1.body.clone().expect("the body comes back"));
    assert_eq!(returned, normalised(body.clone()));
    // Spot checks, literally: amounts with 2 decimals, ratios as given.
    let r0 = &v1.body.as_ref().unwrap().rules[0];
    assert_eq!(r0.deductible, "800.00");
    assert_eq!(r0.repeat_admission_deductible, "400.00");
    assert_eq!(r0.annual_cap, "150000.00");
    assert_eq!(r0.ratio, "0.85");
    let ci = r0.critical_illness.as_ref().unwrap();
    assert_eq!(
        (ci.threshold.as_str(), ci.annual_cap.as_str()),
        ("20000.00", "400000.00")
    );
    assert_eq!(ci.bands[1].to, "");
    assert_eq!(
        v1.body.as_ref().unwrap().rules[3].annual_cap,
        "",
        "no cap stays empty"
    );

    // A second version from 2027-01-01: the referral reduction becomes minus 0.20.
    let mut body2 = body.clone();
    body2.filing_reductions[0].reduction = Some(minus("0.2"));
    body2.unfiled_allowed = true;
    body2.unfiled_reduction = Some(proto::Reduction {
        kind: Some(proto::reduction::Kind::Factor("0.8".into())),
    });
    let v2 = op
        .reg()
        .put_policy(put(WUHAI, "2027-01-01", body2.clone()))
        .await
        .must();
    assert_eq!(v2.version, 2);

    // In force by date: 2026-06-01 → v1; 2027-01-01 (first day) and 2027-03-01 → v2; before
    // 2026-01-01 nothing.
    for (on, version) in [
        ("2026-01-01", 1),
        ("2026-06-01", 1),
        ("2026-12-31", 1),
        ("2027-01-01", 2),
        ("2027-03-01", 2),
    ] {
        let got = wuhai
            .reg()
            .get_policy(get_policy(WUHAI, on, 0))
            .await
            .must();
        assert_eq!(got.version, version, "on {on}");
    }
    let got2 = wuhai
        .reg()
        .get_policy(get_policy(WUHAI, "2027-03-01", 0))
        .await
        .must();
    assert_eq!(normalised(got2.body.unwrap()), normalised(body2));
    wuhai
        .reg()
        .get_policy(get_policy(WUHAI, "2025-12-31", 0))
        .await
        .code_is(Code::NotFound);
    // No date means today (UTC+8): v1 until 2026-12-31, v2 from 2027-01-01.
    let today_version = if today() >= chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap() {
        2
    } else {
        1
    };
    assert_eq!(
        wuhai
            .reg()
            .get_policy(get_policy(WUHAI, "", 0))
            .await
            .must()
            .version,
        today_version
    );
    // By version (the date is ignored).
    let by_v = wuhai
        .reg()
        .get_policy(get_policy(WUHAI, "2027-03-01", 1))
        .await
        .must();
    assert_eq!(by_v, v1);
    wuhai
        .reg()
        .get_policy(get_policy(WUHAI, "", 3))
        .await
        .code_is(Code::NotFound);
    // Another bureau may read published policies; an institution may not.
    let ordos = ts.bureau(ORDOS).await;
    assert_eq!(
        ordos
            .reg()
            .get_policy(get_policy(WUHAI, "2026-06-01", 0))
            .await
            .must()
            .version,
        1
    );
    let inst = ts.institution("H15030200001").await;
    inst.reg()
        .get_policy(get_policy(WUHAI, "2026-06-01", 0))
        .await
        .code_is(Code::PermissionDenied);

    // History is never rewritten: not before, not on the latest effective date.
    wuhai
        .reg()
        .put_policy(put(WUHAI, "2027-01-01", body.clone()))
        .await
        .code_is(Code::FailedPrecondition);
    wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-06-01", body.clone()))
        .await
        .code_is(Code::FailedPrecondition);

    // Versions, newest first, without bodies.
    let list = wuhai
        .reg()
        .list_policy_versions(proto::ListPolicyVersionsRequest {
            region: WUHAI.into(),
        })
        .await
        .must();
    let summary: Vec<_> = list
        .versions
        .iter()
        .map(|v| (v.version, v.effective_from.as_str()))
        .collect();
    assert_eq!(summary, vec![(2, "2027-01-01"), (1, "2026-01-01")]);
    assert!(
        list.versions.iter().all(|v| v.body.is_none()),
        "bodies omitted"
    );
    let none = ordos
        .reg()
        .list_policy_versions(proto::ListPolicyVersionsRequest {
            region: ORDOS.into(),
        })
        .await
        .must();
    assert!(none.versions.is_empty());
}

async fn policies_validation(b: Backend) {
    let (ts, op, wuhai) = setup(b).await;
    // Duplicate rule key (rules[1] repeats rules[0]).
    let mut dup = wuhai_policy();
    dup.rules[1] = dup.rules[0].clone();
    dup.rules[1].ratio = "0.7".into();
    wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", dup))
        .await
        .invalid("body.rules[1]");
    // Ratio above 1.
    let mut high = wuhai_policy();
    high.rules[0].ratio = "1.5".into();
    let s = wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", high))
        .await
        .code_is(Code::InvalidArgument);
    let fields = violated_fields(&s);
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("body.rules[0]") && f.contains("ratio")),
        "fields {fields:?}"
    );
    // Amount with 3 decimals.
    let mut fine = wuhai_policy();
    fine.rules[0].deductible = "800.005".into();
    let s = wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", fine))
        .await
        .code_is(Code::InvalidArgument);
    let fields = violated_fields(&s);
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("body.rules[0]") && f.contains("deductible")),
        "fields {fields:?}"
    );
    // Category not under the insurance type (resident under 310).
    let mut cat = wuhai_policy();
    cat.rules[2].category = PersonCategory::Resident as i32;
    wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", cat))
        .await
        .invalid("body.rules[2].category");
    // No rules; no body; a bad date.
    let mut empty = wuhai_policy();
    empty.rules.clear();
    wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", empty))
        .await
        .invalid("body.rules");
    let mut no_body = put(WUHAI, "2026-01-01", wuhai_policy());
    no_body.body = None;
    wuhai
        .reg()
        .put_policy(no_body)
        .await
        .code_is(Code::InvalidArgument);
    wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-13-01", wuhai_policy()))
        .await
        .invalid("effective_from");
    // Bands overlapping the threshold.
    let mut band = wuhai_policy();
    band.rules[0].critical_illness.as_mut().unwrap().bands[0].from = "10000".into();
    let s = wuhai
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", band))
        .await
        .code_is(Code::InvalidArgument);
    assert!(
        violated_fields(&s)
            .iter()
            .any(|f| f.starts_with("body.rules[0].critical_illness")),
        "{:?}",
        violated_fields(&s)
    );

    // Writers: the region's bureau or an operator.
    let ordos = ts.bureau(ORDOS).await;
    ordos
        .reg()
        .put_policy(put(WUHAI, "2026-01-01", wuhai_policy()))
        .await
        .code_is(Code::PermissionDenied);
    let inst = ts.institution("H15030200001").await;
    inst.reg()
        .put_policy(put(WUHAI, "2026-01-01", wuhai_policy()))
        .await
        .code_is(Code::PermissionDenied);
    op.reg()
        .put_policy(put("150700", "2026-01-01", wuhai_policy()))
        .await
        .code_is(Code::NotFound);

    // Nothing was stored by the failures: the first good one is version 1.
    assert!(
        op.reg()
            .list_policy_versions(proto::ListPolicyVersionsRequest {
                region: WUHAI.into()
            })
            .await
            .must()
            .versions
            .is_empty()
    );
    assert_eq!(
        wuhai
            .reg()
            .put_policy(put(WUHAI, "2026-01-01", wuhai_policy()))
            .await
            .must()
            .version,
        1
    );
}

async fn policies_concurrent_puts(b: Backend) {
    // Eight bureaus' clerks publish versions at once, from 2026-01-01, 2026-02-01, … 2026-08-01.
    // Each call either gets a version or is refused because a later version won the race
    // (FAILED_PRECONDITION): never a duplicate-key ALREADY_EXISTS, never an internal error. The
    // versions that exist are 1..n with strictly increasing effective dates.
    let (_ts, _op, wuhai) = setup(b).await;
    let calls = (1..=8).map(|month| {
        let c = wuhai.clone();
        let req = put(WUHAI, &format!("2026-{month:02}-01"), wuhai_policy());
        tokio::spawn(async move { c.reg().put_policy(req).await })
    });
    let mut accepted = Vec::new();
    for r in futures::future::join_all(calls).await {
        match r.expect("task") {
            Ok(v) => accepted.push(v.into_inner()),
            Err(s) => assert_eq!(
                s.code(),
                Code::FailedPrecondition,
                "a concurrent PutPolicy failed with {:?}: {}",
                s.code(),
                s.message()
            ),
        }
    }
    assert!(!accepted.is_empty());
    let list = wuhai
        .reg()
        .list_policy_versions(proto::ListPolicyVersionsRequest {
            region: WUHAI.into(),
        })
        .await
        .must();
    let n = list.versions.len() as u64;
    assert_eq!(n, accepted.len() as u64);
    let versions: Vec<_> = list.versions.iter().map(|v| v.version).collect();
    assert_eq!(
        versions,
        (1..=n).rev().collect::<Vec<_>>(),
        "versions n..1, newest first"
    );
    let dates: Vec<_> = list
        .versions
        .iter()
        .map(|v| v.effective_from.clone())
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] > w[1]),
        "effective dates strictly decrease with the version: {dates:?}"
    );
}

// ------------------------------------------------------------------------------------ auth

async fn auth_unauthenticated(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, WUHAI).await;

    let anon = ts.anonymous();
    anon.reg()
        .get_region(proto::GetRegionRequest { code: WUHAI.into() })
        .await
        .code_is(Code::Unauthenticated);
    anon.reg()
        .list_regions(list_regions("", 0, ""))
        .await
        .code_is(Code::Unauthenticated);
    anon.reg()
        .create_region(region_req(ORDOS))
        .await
        .code_is(Code::Unauthenticated);
    anon.fil()
        .get_filing(proto::GetFilingRequest {
            filing_id: "F1".into(),
        })
        .await
        .code_is(Code::Unauthenticated);
    anon.led()
        .verify(proto::VerifyRequest {})
        .await
        .code_is(Code::Unauthenticated);

    let garbage = ts.caller(Some("not-a-token"));
    garbage
        .reg()
        .get_region(proto::GetRegionRequest { code: WUHAI.into() })
        .await
        .code_is(Code::Unauthenticated);
    garbage
        .reg()
        .create_region(region_req(ORDOS))
        .await
        .code_is(Code::Unauthenticated);
    let unknown = ts.caller(Some(&format!("ms_{}", "ab".repeat(32))));
    unknown
        .led()
        .verify(proto::VerifyRequest {})
        .await
        .code_is(Code::Unauthenticated);

    // A real token without the "Bearer " scheme is not accepted as a bearer token.
    let token = ts.token(medsettle::service::auth::Grant::Operator).await;
    let mut raw =
        medsettle::proto::registry_service_client::RegistryServiceClient::new(ts.channel.clone());
    let mut req = tonic::Request::new(proto::GetRegionRequest { code: WUHAI.into() });
    req.metadata_mut()
        .insert("authorization", format!("Basic {token}").parse().unwrap());
    raw.get_region(req).await.code_is(Code::Unauthenticated);

    // A revoked token.
    let (token_id, token) = medsettle::service::auth::issue(
        &ts.db,
        &medsettle::service::auth::Grant::Operator,
        "revoked",
    )
    .await
    .expect("issue");
    assert!(
        medsettle::service::auth::revoke(&ts.db, &token_id)
            .await
            .expect("revoke")
    );
    ts.caller(Some(&token))
        .reg()
        .get_region(proto::GetRegionRequest { code: WUHAI.into() })
        .await
        .code_is(Code::Unauthenticated);

    // Nothing was created by the unauthenticated calls.
    op.reg()
        .get_region(proto::GetRegionRequest { code: ORDOS.into() })
        .await
        .code_is(Code::NotFound);
}
