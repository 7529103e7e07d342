//! `medsettle import persons|catalogue|institutions FILE.csv` end to end: the real binary
//! against a real server on both engines. Rejected rows (line, field, reason), the summary and
//! the exit code; what was written, read back over gRPC; batches written all or nothing; re-runs
//! replayed, not written twice.

#[macro_use]
mod common;

use common::*;
use medsettle::domain::ids::{InstitutionCode, RegionCode};
use medsettle::proto;
use medsettle::service::auth::Grant;
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsettle-import-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// What a run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `medsettle import KIND FILE --server … --token … ARGS…` (off the async workers: the
/// server runs on them).
async fn import(ts: &TestServer, token: &str, kind: &str, file: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medsettle"));
    cmd.arg("import")
        .arg(kind)
        .arg(file)
        .args(["--server", &format!("http://{}", ts.addr), "--token", token])
        .args(args)
        .env_remove("MEDSETTLE_SERVER")
        .env_remove("MEDSETTLE_TOKEN");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("running medsettle import");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "{run:#?}");
    run
}

fn region(code: &str) -> RegionCode {
    RegionCode::parse("region", code).expect("a region code")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn count_persons(c: &Caller, region: &str) -> usize {
    c.reg()
        .list_persons(proto::ListPersonsRequest {
            home_region: region.into(),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .must()
        .persons
        .len()
}

async fn person_by_id(
    c: &Caller,
    national_id: &str,
) -> Result<tonic::Response<proto::Person>, tonic::Status> {
    c.reg()
        .get_person(proto::GetPersonRequest {
            key: Some(proto::get_person_request::Key::NationalId(
                national_id.into(),
            )),
        })
        .await
}

async fn count_institutions(c: &Caller, region: &str) -> usize {
    c.reg()
        .list_institutions(proto::ListInstitutionsRequest {
            region: region.into(),
            kind: 0,
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .must()
        .institutions
        .len()
}

/// Every item of a region's catalogue in force on `on`.
async fn catalogue(c: &Caller, region: &str, on: &str) -> Vec<proto::CatalogueItem> {
    all_pages("SearchCatalogue", |token| async move {
        let page = c
            .reg()
            .search_catalogue(proto::SearchCatalogueRequest {
                region: region.into(),
                query: String::new(),
                on_date: on.into(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .must();
        (page.items, page.next_page_token)
    })
    .await
}

/// Persons: client-side and server-side rejections with their lines, the rest enrolled in
/// batches (opening balances booked), a person enrolled beforehand counted as already enrolled;
/// the same run again replays every batch; other batch boundaries find everyone already
/// enrolled.
async fn persons(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, "150300").await;
    create_region(&op, "150200").await;
    let id = |seq| national_id("150302", "19800101", seq);
    let pre = id(90);
    op.reg().enrol_person(resident(&pre, "150300")).await.must();
    let dir = temp_dir();
    let file = dir.join("persons.csv");
    let mut csv = Vec::new();
    csv.extend(b"national_id,name,home_region,insurance_type,category,card_no,opening_balance\n");
    csv.extend(format!("{},张三,150300,310,active,K10000001,1000.00\n", id(1)).as_bytes()); // 2
    csv.extend(format!("{},李四,150300,390,resident,,\n", id(2)).as_bytes()); // 3
    csv.extend(
        format!(
            "{},王五,150300,310,active,,\n",
            with_wrong_check_digit(&id(3))
        )
        .as_bytes(),
    ); // 4
    csv.extend(format!("{},赵六,150900,390,resident,,\n", id(4)).as_bytes()); // 5
    csv.extend(format!("{},张三,150300,310,active,,\n", id(1)).as_bytes()); // 6
    csv.extend(format!("{},孙七,150300,310;510,active,,12.345\n", id(5)).as_bytes()); // 7
    csv.extend(format!("{},周八,150300,999,active,,\n", id(6)).as_bytes()); // 8
    csv.extend(format!("{},吴九,150300,390\n", id(7)).as_bytes()); // 9
    csv.extend(format!("{},", id(8)).as_bytes()); // 10
    csv.extend(b"\xff\xfe,150300,390,resident,,\n");
    csv.extend(
        format!(
            "{},\"郑,十\",150200,310;510,retired,K10000002,\"0.50\"\n",
            id(9)
        )
        .as_bytes(),
    ); // 11
    csv.extend(b"\r\n"); // 12: blank
    csv.extend(format!("{},\"钱\n十一\",150300,390,resident,,\n", id(10)).as_bytes()); // 13-14
    csv.extend(format!("{},冯二,150300,310,active,K10000001,\n", id(11)).as_bytes()); // 15
    csv.extend(format!(" {} ,陈三,150300,Employee,RETIRED,,7\n", id(12)).as_bytes()); // 16
    csv.extend(format!("{pre},李四,150300,390,resident,,\n").as_bytes()); // 17
    std::fs::write(&file, &csv).expect("write csv");
    let rejects = dir.join("rejects.csv");
    let token = ts.token(Grant::Operator).await;
    let args = [
        "--batch-size",
        "3",
        "--rejects",
        rejects.to_str().expect("utf-8 path"),
    ];

    let run = import(&ts, &token, "persons", &file, &args).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stdout, "persons: 14 rows read, 4 imported, 1 already enrolled, 9 rejected\n",
        "{run:#?}"
    );
    let expected_rejects = "line,field,reason\n\
        4,national_id,check digit mismatch\n\
        5,home_region,region 150900 is not registered\n\
        6,national_id,the same national_id as line 2\n\
        7,opening_balance,must have at most 2 decimal places\n\
        8,insurance_type,\"\"\"999\"\" is not 310, 390, 510, employee, resident or maternity\"\n\
        9,,4 fields where the header has 7\n\
        10,name,not valid UTF-8\n\
        13,name,must not contain control characters\n\
        15,card_no,the same card_no as line 2\n";
    assert_eq!(read(&rejects), expected_rejects);

    // What was written, read back.
    assert_eq!(count_persons(&op, "150300").await, 4);
    assert_eq!(count_persons(&op, "150200").await, 1);
    let p1 = person_by_id(&op, &id(1)).await.must();
    assert_eq!(p1.account_balance, "1000.00");
    assert_eq!(p1.home_region, "150300");
    let p9 = person_by_id(&op, &id(9)).await.must();
    assert_eq!(p9.account_balance, "0.50");
    assert_eq!(p9.insurances.len(), 2);
    assert!(p9.insurances.iter().all(|i| i.category == 2), "{p9:?}");
    let baotou = ts.bureau("150200").await;
    let p9_own = person_by_id(&baotou, &id(9)).await.must();
    assert_eq!(p9_own.name, "郑,十");
    assert_eq!(p9_own.card_no, "K10000002");
    let p12 = person_by_id(&op, &id(12)).await.must();
    assert_eq!(p12.account_balance, "7.00");
    for seq in [2, 4, 5, 6, 7, 8, 10, 11] {
        let got = person_by_id(&op, &id(seq)).await;
        let enrolled = got.is_ok();
        assert_eq!(enrolled, seq == 2, "person {seq}: {got:?}");
    }
    verify_ok(&ts).await;

    // The same import again: every batch replayed, the same answer, nothing written twice.
    let again = import(&ts, &token, "persons", &file, &args).await;
    assert_eq!(again.code, 1, "{again:#?}");
    assert_eq!(again.stdout, run.stdout);
    assert_eq!(read(&rejects), expected_rejects);
    assert_eq!(count_persons(&op, "150300").await, 4);
    assert_eq!(count_persons(&op, "150200").await, 1);
    let p1 = person_by_id(&op, &id(1)).await.must();
    assert_eq!(p1.account_balance, "1000.00");

    // Other batch boundaries are other calls: everyone is already enrolled, the same rejections.
    let other = [
        "--batch-size",
        "5",
        "--rejects",
        rejects.to_str().expect("utf-8 path"),
    ];
    let regrouped = import(&ts, &token, "persons", &file, &other).await;
    assert_eq!(regrouped.code, 1, "{regrouped:#?}");
    assert_eq!(
        regrouped.stdout,
        "persons: 14 rows read, 0 imported, 5 already enrolled, 9 rejected\n"
    );
    assert_eq!(read(&rejects), expected_rejects);
    assert_eq!(count_persons(&op, "150300").await, 4);
    verify_ok(&ts).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bureau imports only into its own region (other rows are rejected as the single call
/// refuses them); rejected rows go to stderr without --rejects; an institution may not import
/// at all: its first batch is refused as a whole and the import stops.
async fn persons_as_bureau(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, "150300").await;
    create_region(&op, "150200").await;
    op.reg()
        .register_institution(hospital("H15030200001", "150300", 2))
        .await
        .must();
    let id = |seq| national_id("150302", "19900202", seq);
    let dir = temp_dir();
    let file = dir.join("p.csv");
    std::fs::write(
        &file,
        format!(
            "name,national_id,home_region,insurance_type,category\n\
             甲,{},150300,resident,resident\n\
             乙,{},150200,resident,resident\n\
             丙,{},150300,resident,\n",
            id(1),
            id(2),
            id(3)
        ),
    )
    .expect("write");
    let wuhai = ts.token(Grant::Bureau(region("150300"))).await;
    let run = import(&ts, &wuhai, "persons", &file, &[]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stdout,
        "persons: 3 rows read, 1 imported, 0 already enrolled, 2 rejected\n"
    );
    assert!(
        run.stderr
            .contains("line 3: home_region: bureau:150300 may not act for region 150200\n"),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains("line 4: category: at least one category is required\n"),
        "{run:#?}"
    );
    assert!(person_by_id(&op, &id(1)).await.is_ok());
    person_by_id(&op, &id(2)).await.code_is(Code::NotFound);

    let hospital = ts
        .token(Grant::Institution(
            InstitutionCode::parse("code", "H15030200001").expect("code"),
        ))
        .await;
    let rejects = dir.join("r.csv");
    let refused = import(
        &ts,
        &hospital,
        "persons",
        &file,
        &[
            "--batch-size",
            "2",
            "--rejects",
            rejects.to_str().expect("path"),
        ],
    )
    .await;
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert_eq!(
        refused.stdout,
        "persons: 2 rows read, 0 imported, 0 already enrolled, 2 rejected\n"
    );
    assert!(
        refused.stderr.contains(
            "import stopped: the batch of lines 2-3 failed: PERMISSION_DENIED: \
             institution:H15030200001 may not do this: bureaus and operators only; \
             the rows after line 3 were not read"
        ),
        "{refused:#?}"
    );
    let why = "not imported: the batch of lines 2-3 failed: PERMISSION_DENIED: \
               institution:H15030200001 may not do this: bureaus and operators only";
    assert_eq!(
        read(&rejects),
        format!("line,field,reason\n2,,{why}\n3,,{why}\n")
    );
    person_by_id(&op, &id(3)).await.code_is(Code::NotFound);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A batch whose transaction fails is written not at all, its rows reported rejected with the
/// reason, and the import stops there; once the cause is gone, the same import replays the
/// batch already done and writes the rest.
async fn failing_batch_writes_nothing(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, "150300").await;
    let id = |seq| national_id("150302", "19750505", seq);
    let poisoned = id(4);
    // A trigger that fails the insert of one person: the database refuses mid-transaction.
    let mut conn = ts.db.begin().await.expect("begin");
    match conn.raw() {
        medsettle::store::Raw::Sqlite(c) => {
            sqlx::query(&format!(
                "CREATE TRIGGER boom BEFORE INSERT ON person WHEN NEW.national_id = '{poisoned}' \
                 BEGIN SELECT RAISE(ABORT, 'boom'); END"
            ))
            .execute(c)
            .await
            .expect("sqlite trigger");
        }
        medsettle::store::Raw::Direct(_) => panic!("a pool transaction is not a direct connection"),
        medsettle::store::Raw::Pg(c) => {
            sqlx::query(&format!(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.national_id = '{poisoned}' THEN RAISE EXCEPTION 'boom'; END IF; \
                 RETURN NEW; END $$"
            ))
            .execute(&mut *c)
            .await
            .expect("pg function");
            sqlx::query(
                "CREATE TRIGGER boom BEFORE INSERT ON person FOR EACH ROW EXECUTE FUNCTION boom()",
            )
            .execute(&mut *c)
            .await
            .expect("pg trigger");
        }
    }
    conn.commit().await.expect("commit");

    let dir = temp_dir();
    let file = dir.join("p.csv");
    let mut csv =
        String::from("national_id,name,home_region,insurance_type,category,opening_balance\n");
    for seq in 1..=5 {
        csv.push_str(&format!(
            "{},某{seq},150300,310,active,{seq}00.00\n",
            id(seq)
        ));
    }
    std::fs::write(&file, csv).expect("write");
    let rejects = dir.join("r.csv");
    let token = ts.token(Grant::Operator).await;
    let args = [
        "--batch-size",
        "2",
        "--rejects",
        rejects.to_str().expect("path"),
    ];
    let run = import(&ts, &token, "persons", &file, &args).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stdout,
        "persons: 4 rows read, 2 imported, 0 already enrolled, 2 rejected\n"
    );
    let why = "not imported: the batch of lines 4-5 failed: INTERNAL: internal error";
    assert_eq!(
        read(&rejects),
        format!("line,field,reason\n4,,{why}\n5,,{why}\n")
    );
    assert!(
        run.stderr.contains("the rows after line 5 were not read"),
        "{run:#?}"
    );
    // The first batch is there; nothing of the failing one (line 4 was valid), nor after it.
    assert!(person_by_id(&op, &id(1)).await.is_ok());
    assert!(person_by_id(&op, &id(2)).await.is_ok());
    for seq in 3..=5 {
        person_by_id(&op, &id(seq)).await.code_is(Code::NotFound);
    }
    assert_eq!(count_persons(&op, "150300").await, 2);
    verify_ok(&ts).await;

    let mut conn = ts.db.begin().await.expect("begin");
    match conn.raw() {
        medsettle::store::Raw::Sqlite(c) => {
            sqlx::query("DROP TRIGGER boom")
                .execute(c)
                .await
                .expect("drop");
        }
        medsettle::store::Raw::Direct(_) => panic!("a pool transaction is not a direct connection"),
        medsettle::store::Raw::Pg(c) => {
            sqlx::query("DROP TRIGGER boom ON person")
                .execute(c)
                .await
                .expect("drop");
        }
    }
    conn.commit().await.expect("commit");
    let rerun = import(&ts, &token, "persons", &file, &args).await;
    assert_eq!(rerun.code, 0, "{rerun:#?}");
    assert_eq!(
        rerun.stdout,
        "persons: 5 rows read, 5 imported, 0 already enrolled, 0 rejected\n"
    );
    assert_eq!(read(&rejects), "line,field,reason\n");
    assert_eq!(count_persons(&op, "150300").await, 5);
    for seq in 1..=5u32 {
        let p = person_by_id(&op, &id(seq)).await.must();
        assert_eq!(p.account_balance, format!("{seq}00.00"));
    }
    verify_ok(&ts).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Catalogue: rows checked with the server's rules (rejected by line), the rest upserted in
/// batches; a 20,000-row file streams through in 20 batches; a region the token may not write
/// stops the import at its first batch.
async fn catalogue_import(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, "150300").await;
    create_region(&op, "150200").await;
    let wuhai = ts.token(Grant::Bureau(region("150300"))).await;
    let dir = temp_dir();

    let small = dir.join("small.csv");
    std::fs::write(
        &small,
        "code,name,kind,class,b_self_pay_ratio,price_cap,effective_from\n\
         XA01,阿司匹林,drug,A,,,2026-01-01\n\
         XB01,某乙类药,drug,B,,,2026-01-01\n\
         XA02,某甲类药,drug,A,,abc,2026-01-01\n\
         XA01,阿司匹林,drug,A,,,2026-01-01\n\
         XA01,阿司匹林(新),drug,A,,,2026-06-01\n\
         XF01,某食品,food,C,,,2026-01-01\n\
         XB02,某乙类耗材,material,b,0.10,12.345678,2026-01-01\n",
    )
    .expect("write");
    let rejects = dir.join("r.csv");
    let rj = rejects.to_str().expect("path");
    let run = import(
        &ts,
        &wuhai,
        "catalogue",
        &small,
        &["--region", "150300", "--rejects", rj],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stdout,
        "catalogue: 7 rows read, 3 imported, 4 rejected\n"
    );
    assert_eq!(
        read(&rejects),
        "line,field,reason\n\
         3,b_self_pay_ratio,required for class B\n\
         4,price_cap,\"must be a plain decimal number: optional '-', digits, optional '.' and digits\"\n\
         5,code,the same code and effective_from as line 2\n\
         7,kind,\"\"\"food\"\" is not drug, service or material\"\n"
    );
    let items = catalogue(&op, "150300", "2026-07-01").await;
    let codes: Vec<&str> = items.iter().map(|i| i.code.as_str()).collect();
    assert_eq!(codes, ["XA01", "XB02"]);
    assert_eq!(items[0].name, "阿司匹林(新)");
    assert_eq!(canon(&items[1].b_self_pay_ratio), "0.1");
    assert_eq!(canon(&items[1].price_cap), "12.345678");
    assert_eq!(
        catalogue(&op, "150300", "2026-02-01").await[0].name,
        "阿司匹林"
    );

    // Missing --region; a region the bureau may not write: stopped at the first batch.
    let no_region = import(&ts, &wuhai, "catalogue", &small, &[]).await;
    assert_eq!(no_region.code, 1);
    assert!(
        no_region.stderr.contains("needs --region"),
        "{no_region:#?}"
    );
    let other = import(
        &ts,
        &wuhai,
        "catalogue",
        &small,
        &["--region", "150200", "--rejects", rj],
    )
    .await;
    assert_eq!(other.code, 1, "{other:#?}");
    assert!(
        other
            .stderr
            .contains("PERMISSION_DENIED: bureau:150300 may not act for region 150200"),
        "{other:#?}"
    );
    assert!(catalogue(&op, "150200", "2026-07-01").await.is_empty());

    // 20,000 rows, default batches of 1000: one version per batch.
    let big = dir.join("big.csv");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&big).expect("create"));
        writeln!(w, "effective_from,code,name,kind,class,price_cap").expect("write");
        for n in 0..20_000 {
            writeln!(
                w,
                "2026-03-01,D{n:06},药品{n},drug,A,{}.{:02}",
                n % 500,
                n % 100
            )
            .expect("write");
        }
        w.flush().expect("flush");
    }
    let run = import(&ts, &wuhai, "catalogue", &big, &["--region", "150200"]).await;
    assert_eq!(run.code, 1, "not its region: {run:#?}");
    let run = import(&ts, &wuhai, "catalogue", &big, &["--region", "150300"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.stdout,
        "catalogue: 20000 rows read, 20000 imported, 0 rejected\n"
    );
    assert_eq!(run.stderr, "");
    let all = catalogue(&op, "150300", "2026-07-01").await;
    assert_eq!(all.len(), 20_002);
    let last = all.iter().find(|i| i.code == "D019999").expect("last row");
    assert_eq!(last.name, "药品19999");
    assert_eq!(canon(&last.price_cap), "499.99");
    // Versions 1 (the small file) and 2..21 (20 batches).
    assert_eq!(last.version, 21);
    let first = all.iter().find(|i| i.code == "D000000").expect("first row");
    assert_eq!(first.version, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Institutions: the rules of RegisterInstitution per row, codes registered before counted as
/// already registered, a re-run replayed.
async fn institutions(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, "150300").await;
    op.reg()
        .register_institution(hospital("H15030200008", "150300", 1))
        .await
        .must();
    let dir = temp_dir();
    let file = dir.join("i.csv");
    std::fs::write(
        &file,
        "code,name,region,kind,level,cross_region_enabled,valid_from,valid_until\n\
         H15030200001,乌海市人民医院,150300,hospital,3,true,2026-01-01,\n\
         P15030200002,乌海大药房,150300,pharmacy,,yes,2026-01-01,2030-12-31\n\
         H15030200003,错字母药店,150300,pharmacy,0,true,2026-01-01,\n\
         H15030200004,五级医院,150300,hospital,5,true,2026-01-01,\n\
         H15090000005,未知地区医院,150900,hospital,2,true,2026-01-01,\n\
         H15030200001,重复医院,150300,hospital,2,true,2026-01-01,\n\
         H15030200006,倒序医院,150300,hospital,2,true,2026-06-01,2026-01-01\n\
         H15030200007,某医院,150300,hospital,x,true,2026-01-01,\n\
         H15030200008,已有医院,150300,hospital,1,true,2026-01-01,\n",
    )
    .expect("write");
    let rejects = dir.join("r.csv");
    let token = ts.token(Grant::Operator).await;
    let args = [
        "--batch-size",
        "4",
        "--rejects",
        rejects.to_str().expect("path"),
    ];
    let run = import(&ts, &token, "institutions", &file, &args).await;
    assert_eq!(run.code, 1, "{run:#?}");
    let summary = "institutions: 9 rows read, 2 imported, 1 already registered, 6 rejected\n";
    assert_eq!(run.stdout, summary);
    let expected = "line,field,reason\n\
        4,code,a Pharmacy code starts with 'P'\n\
        5,level,\"hospital level is 1, 2 or 3\"\n\
        6,region,region 150900 is not registered\n\
        7,code,the same code as line 2\n\
        8,valid_until,must not be before valid_from\n\
        9,level,\"\"\"x\"\" is not 0, 1, 2 or 3\"\n";
    assert_eq!(read(&rejects), expected);
    let h = op
        .reg()
        .get_institution(proto::GetInstitutionRequest {
            code: "H15030200001".into(),
        })
        .await
        .must();
    assert_eq!((h.level, h.cross_region_enabled), (3, true));
    assert_eq!(h.name, "乌海市人民医院");
    let p = op
        .reg()
        .get_institution(proto::GetInstitutionRequest {
            code: "P15030200002".into(),
        })
        .await
        .must();
    assert_eq!(p.valid_until, "2030-12-31");
    assert_eq!(count_institutions(&op, "150300").await, 3);

    let again = import(&ts, &token, "institutions", &file, &args).await;
    assert_eq!(again.code, 1);
    assert_eq!(again.stdout, summary);
    assert_eq!(read(&rejects), expected);
    assert_eq!(count_institutions(&op, "150300").await, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whatever the bytes, no panic: an oversized row is rejected and reading goes on after it;
/// a bad header, an empty file, a missing file are errors before anything is sent; a header
/// alone imports nothing and succeeds; binary garbage is rejected row by row.
async fn hostile_input(b: Backend) {
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, "150300").await;
    let token = ts.token(Grant::Operator).await;
    let id = |seq| national_id("150302", "20000101", seq);
    let dir = temp_dir();

    let huge = dir.join("huge.csv");
    let mut csv = b"national_id,name,home_region,insurance_type,category\n".to_vec();
    csv.extend(format!("{},甲,150300,390,resident\n", id(1)).as_bytes());
    csv.extend(format!("{},\"", id(2)).as_bytes());
    csv.extend(std::iter::repeat_n(b'x', 1 << 20));
    csv.extend(b"\",150300,390,resident\n");
    csv.extend(format!("{},丙,150300,390,resident\n", id(3)).as_bytes());
    std::fs::write(&huge, &csv).expect("write");
    let run = import(&ts, &token, "persons", &huge, &[]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        run.stdout,
        "persons: 3 rows read, 2 imported, 0 already enrolled, 1 rejected\n"
    );
    assert!(
        run.stderr
            .contains("line 3: the row is longer than 64 KiB\n"),
        "{run:#?}"
    );
    assert!(person_by_id(&op, &id(1)).await.is_ok());
    assert!(person_by_id(&op, &id(3)).await.is_ok());

    let bad_header = dir.join("bad-header.csv");
    std::fs::write(
        &bad_header,
        format!(
            "national_id,nmae,home_region,insurance_type,category\n{},乙,150300,390,resident\n",
            id(4)
        ),
    )
    .expect("write");
    let run = import(&ts, &token, "persons", &bad_header, &[]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("unknown column \"nmae\""), "{run:#?}");
    assert_eq!(run.stdout, "");

    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "").expect("write");
    let run = import(&ts, &token, "persons", &empty, &[]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("is empty"), "{run:#?}");
    let run = import(&ts, &token, "persons", &dir.join("missing.csv"), &[]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("opening"), "{run:#?}");

    let header_only = dir.join("header.csv");
    std::fs::write(&header_only, "code,name,region,kind\n").expect("write");
    let run = import(&ts, &token, "institutions", &header_only, &[]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.stdout,
        "institutions: 0 rows read, 0 imported, 0 already registered, 0 rejected\n"
    );

    let garbage = dir.join("garbage.csv");
    let mut bytes = b"code,name,region,kind\n".to_vec();
    let mut x: u32 = 12345;
    for _ in 0..200_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        bytes.push((x >> 16) as u8);
    }
    std::fs::write(&garbage, &bytes).expect("write");
    let rejects = dir.join("r.csv");
    let run = import(
        &ts,
        &token,
        "institutions",
        &garbage,
        &["--rejects", rejects.to_str().expect("path")],
    )
    .await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.starts_with("institutions: "), "{run:#?}");
    assert!(run.stdout.contains(" 0 imported"), "{run:#?}");
    assert_eq!(count_institutions(&op, "150300").await, 0);
    assert_eq!(count_persons(&op, "150300").await, 2);

    // --batch-size beyond what one call takes.
    let run = import(&ts, &token, "persons", &huge, &["--batch-size", "5001"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("--batch-size must be 1..5000"),
        "{run:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's persons header and example row import as the README says.
async fn readme_example(b: Backend) {
    let readme = read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let section = readme
        .split("## Importing")
        .nth(1)
        .expect("an Importing section in the README");
    let header = section
        .lines()
        .find_map(|l| l.strip_prefix("persons:"))
        .expect("the persons header")
        .trim()
        .replace(['[', ']'], "");
    let row = section
        .split("For example `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .expect("an example row");
    let ts = TestServer::start(b).await;
    let op = ts.operator().await;
    create_region(&op, "150300").await;
    let dir = temp_dir();
    let file = dir.join("persons.csv");
    std::fs::write(&file, format!("{header}\n{row}\n")).expect("write");
    let token = ts.token(Grant::Bureau(region("150300"))).await;
    let run = import(&ts, &token, "persons", &file, &[]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.stdout,
        "persons: 1 rows read, 1 imported, 0 already enrolled, 0 rejected\n"
    );
    let p = person_by_id(&op, "150302198001010015").await.must();
    assert_eq!(p.account_balance, "1000.00");
    let types: Vec<i32> = p.insurances.iter().map(|i| i.insurance_type).collect();
    assert_eq!(types, [310, 510]);
    let _ = std::fs::remove_dir_all(&dir);
}

both_engines!(
    readme_example,
    persons,
    persons_as_bureau,
    failing_batch_writes_nothing,
    catalogue_import,
    institutions,
    hostile_input,
);
