//! `medsettle demo`: see it work in a minute. It seeds a small, realistic world over gRPC — six
//! regions (Wuhai, Ordos, Alxa League and Hohhot in Inner Mongolia, Shizuishan in Ningxia,
//! Beijing), hospitals of every level and a pharmacy in each, a catalogue per treatment region, a
//! policy per home region, a few hundred insured per region — and walks through what the platform
//! does: an eligibility check, an inpatient settlement with its breakdown, pharmacy swipes inside
//! and (refused) outside the province, a cross-province stay, a reversal, a refund, then a month's
//! clearing (close, statements, a dispute, confirmations, netting with a prepayment draw-down,
//! transfers) and `Verify`. Every figure printed is a server's answer.
//!
//! By default the server runs in-process on a fresh temporary SQLite file (or an empty database
//! given with `--demo-database-url`); tokens are issued straight into its database, as
//! `medsettle token issue` does; and the demo moves the server's business clock forward to close
//! the month. With `--server` it calls a running server instead: no RPC issues tokens, so the
//! institutions' tokens must be passed in, and business time cannot move there, so the clearing
//! part is skipped.

use crate::bench::{Auth, rid, with_token};
use crate::cli::render_table;
use crate::domain::ids::{InstitutionCode, RegionCode, national_id_check_digit};
use crate::domain::time::business_date;
use crate::proto::clearing_service_client::ClearingServiceClient;
use crate::proto::filing_service_client::FilingServiceClient;
use crate::proto::ledger_service_client::LedgerServiceClient;
use crate::proto::pharmacy_service_client::PharmacyServiceClient;
use crate::proto::registry_service_client::RegistryServiceClient;
use crate::proto::settlement_service_client::SettlementServiceClient;
use crate::proto::{self as pb};
use crate::service::App;
use crate::service::auth::{self, Grant};
use crate::store::{Db, DbConfig};
use anyhow::{Context, anyhow, bail};
use chrono::{Datelike, NaiveDate};
use futures::StreamExt;
use pb::{CareType, CatalogueClass, CatalogueKind, FilingType, InsuranceType, PersonCategory};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// `medsettle demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Call this running server instead of starting one in-process (needs --token and
    /// --institution-token; the month close is skipped: business time cannot move there).
    #[arg(long, requires = "token")]
    pub server: Option<String>,
    /// With --server: an operator token (`medsettle token issue --operator`).
    #[arg(long, env = "MEDSETTLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With --server: CODE=TOKEN for each institution the walk-through acts as (repeat it; the
    /// demo lists the codes it needs when one is missing).
    #[arg(long = "institution-token", value_name = "CODE=TOKEN")]
    pub institution_tokens: Vec<String>,
    /// In-process: run on this empty database instead of a fresh temporary SQLite file, e.g.
    /// postgres://postgres@127.0.0.1:5432/demo (kept afterwards).
    #[arg(long = "demo-database-url", conflicts_with = "server")]
    pub demo_database_url: Option<String>,
    /// In-process: keep the temporary database and print how to serve and call it.
    #[arg(long, conflicts_with = "server")]
    pub keep: bool,
    /// Insured persons enrolled per region (besides the eleven the walk-through follows).
    #[arg(long, default_value_t = 300,
          value_parser = clap::value_parser!(u16).range(1..=900))]
    pub persons: u16,
}

/// Runs the demo. The in-process server logs every mutation at `info`; the tables are the point
/// here, so the demo runs on its own runtime whose threads log warnings only (`RUST_LOG`
/// overrides), whatever the global log settings say.
pub async fn run(args: DemoArgs, db_max_connections: u32) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let quiet = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .finish(),
        );
        let for_threads = quiet.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(move || {
                // Lives as long as the thread: the runtime's threads never log elsewhere.
                std::mem::forget(tracing::dispatcher::set_default(&for_threads));
            })
            .build()
            .context("starting the demo's runtime")?;
        tracing::dispatcher::with_default(&quiet, || rt.block_on(demo(args, db_max_connections)))
    })
    .await
    .context("the demo's runtime")?
}

async fn demo(args: DemoArgs, db_max_connections: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    match args.server.clone() {
        Some(server) => remote(&args, &server).await?,
        None => in_process(&args, db_max_connections).await?,
    }
    say(&format!(
        "\ndemo finished in {}\n",
        tenths(started.elapsed().as_millis())
    ))
}

// ------------------------------------------------------------------------------ the world

/// Province 15 (Inner Mongolia).
const WUHAI: &str = "150300";
const ORDOS: &str = "150600";
const ALXA: &str = "152900";
const HOHHOT: &str = "150100";
/// Province 64 (Ningxia).
const SHIZUISHAN: &str = "640200";
/// Province 11.
const BEIJING: &str = "110000";

/// A deduction from the pooled-fund ratio, in basis points.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Minus this many basis points.
    Minus(i64),
    /// Times this factor.
    Factor(i64),
}

/// A home region's benefits, from which its policy rules are generated. Amounts in whole yuan,
/// ratios in basis points (exact integers; formatted as decimal strings for the wire).
struct PolicySpec {
    /// Inpatient deductible per admission at levels 1, 2, 3 (a repeat admission pays half).
    emp_deductible: [i64; 3],
    emp_ratio: [i64; 3],
    /// Retired employees' extra points.
    retired_plus: i64,
    res_deductible: [i64; 3],
    res_ratio: [i64; 3],
    /// Points off every inpatient ratio outside the home province.
    out_of_province_minus: i64,
    emp_cap: i64,
    res_cap: i64,
    /// Critical-illness thresholds on the year's in-scope personal burden.
    emp_ci_threshold: i64,
    res_ci_threshold: i64,
    /// Outpatient pooling: annual deductible and ratio.
    emp_outpatient: (i64, i64),
    res_outpatient: (i64, i64),
    /// Pharmacy purchases: ratio for employees and residents (no deductible).
    pharmacy_ratio: (i64, i64),
    referral: Option<Cut>,
    other_temporary: Option<Cut>,
    /// None = treatment elsewhere needs a filing.
    unfiled: Option<Cut>,
    pharmacy_national: bool,
    account_pays_class_c: bool,
}

struct RegionSpec {
    code: &'static str,
    /// County code the insured's national IDs start with.
    id_area: &'static str,
    /// Level 3, 2 and 1.
    hospitals: [&'static str; 3],
    pharmacy: &'static str,
    /// The ward bed's price cap in this region's catalogue.
    bed_cap: &'static str,
    policy: PolicySpec,
}

const REGIONS: [RegionSpec; 6] = [
    RegionSpec {
        code: WUHAI,
        id_area: "150302",
        hospitals: [
            "乌海市人民医院",
            "乌海市海勃湾区人民医院",
            "海勃湾区新华街道社区卫生服务中心",
        ],
        pharmacy: "乌海市国大药房",
        bed_cap: "35.00",
        policy: PolicySpec {
            emp_deductible: [300, 500, 800],
            emp_ratio: [9000, 8800, 8500],
            retired_plus: 500,
            res_deductible: [200, 400, 700],
            res_ratio: [8500, 7500, 6500],
            out_of_province_minus: 1000,
            emp_cap: 200_000,
            res_cap: 150_000,
            emp_ci_threshold: 20_000,
            res_ci_threshold: 15_000,
            emp_outpatient: (200, 6000),
            res_outpatient: (100, 5000),
            pharmacy_ratio: (5000, 4000),
            referral: Some(Cut::Minus(500)),
            other_temporary: Some(Cut::Minus(1500)),
            unfiled: Some(Cut::Minus(2000)),
            pharmacy_national: false,
            account_pays_class_c: false,
        },
    },
    RegionSpec {
        code: ORDOS,
        id_area: "150602",
        hospitals: [
            "鄂尔多斯市中心医院",
            "鄂尔多斯市东胜区人民医院",
            "东胜区交通街道社区卫生服务中心",
        ],
        pharmacy: "鄂尔多斯市天骄大药房",
        bed_cap: "40.00",
        policy: PolicySpec {
            emp_deductible: [200, 500, 900],
            emp_ratio: [9200, 9000, 8600],
            retired_plus: 400,
            res_deductible: [150, 400, 800],
            res_ratio: [8800, 8000, 7000],
            out_of_province_minus: 800,
            emp_cap: 250_000,
            res_cap: 200_000,
            emp_ci_threshold: 20_000,
            res_ci_threshold: 12_000,
            emp_outpatient: (200, 6500),
            res_outpatient: (100, 5500),
            pharmacy_ratio: (5000, 4500),
            referral: Some(Cut::Factor(9500)),
            other_temporary: Some(Cut::Factor(8500)),
            unfiled: Some(Cut::Factor(8000)),
            pharmacy_national: false,
            account_pays_class_c: false,
        },
    },
    RegionSpec {
        code: ALXA,
        id_area: "152921",
        hospitals: [
            "阿拉善盟中心医院",
            "阿拉善左旗医院",
            "巴彦浩特镇社区卫生服务中心",
        ],
        pharmacy: "阿拉善盟康泰大药房",
        bed_cap: "30.00",
        policy: PolicySpec {
            emp_deductible: [200, 400, 700],
            emp_ratio: [9000, 8700, 8300],
            retired_plus: 500,
            res_deductible: [100, 300, 600],
            res_ratio: [8500, 7800, 6800],
            out_of_province_minus: 1000,
            emp_cap: 180_000,
            res_cap: 150_000,
            emp_ci_threshold: 18_000,
            res_ci_threshold: 10_000,
            emp_outpatient: (150, 6000),
            res_outpatient: (100, 5000),
            pharmacy_ratio: (5000, 4000),
            referral: Some(Cut::Minus(500)),
            other_temporary: Some(Cut::Minus(1000)),
            unfiled: Some(Cut::Minus(1500)),
            pharmacy_national: false,
            account_pays_class_c: false,
        },
    },
    RegionSpec {
        code: HOHHOT,
        id_area: "150102",
        hospitals: [
            "内蒙古医科大学附属医院",
            "呼和浩特市第二医院",
            "新城区海拉尔东路社区卫生服务中心",
        ],
        pharmacy: "呼和浩特市九州大药房",
        bed_cap: "45.00",
        policy: PolicySpec {
            emp_deductible: [300, 600, 1000],
            emp_ratio: [9000, 8800, 8500],
            retired_plus: 500,
            res_deductible: [200, 500, 900],
            res_ratio: [8500, 7500, 6500],
            out_of_province_minus: 1000,
            emp_cap: 300_000,
            res_cap: 200_000,
            emp_ci_threshold: 20_000,
            res_ci_threshold: 15_000,
            emp_outpatient: (200, 6000),
            res_outpatient: (100, 5000),
            pharmacy_ratio: (5000, 4000),
            referral: None,
            other_temporary: Some(Cut::Minus(1000)),
            unfiled: Some(Cut::Minus(2000)),
            pharmacy_national: false,
            account_pays_class_c: false,
        },
    },
    RegionSpec {
        code: SHIZUISHAN,
        id_area: "640202",
        hospitals: [
            "石嘴山市第一人民医院",
            "石嘴山市第二人民医院",
            "大武口区长胜街道社区卫生服务中心",
        ],
        pharmacy: "石嘴山市仁和堂大药房",
        bed_cap: "35.00",
        policy: PolicySpec {
            emp_deductible: [300, 600, 900],
            emp_ratio: [9000, 8500, 8000],
            retired_plus: 600,
            res_deductible: [200, 500, 800],
            res_ratio: [8000, 7000, 6000],
            out_of_province_minus: 1000,
            emp_cap: 200_000,
            res_cap: 150_000,
            emp_ci_threshold: 20_000,
            res_ci_threshold: 15_000,
            emp_outpatient: (200, 5500),
            res_outpatient: (100, 5000),
            pharmacy_ratio: (5000, 4000),
            referral: Some(Cut::Minus(1000)),
            other_temporary: Some(Cut::Minus(2000)),
            unfiled: None,
            pharmacy_national: false,
            account_pays_class_c: false,
        },
    },
    RegionSpec {
        code: BEIJING,
        id_area: "110101",
        hospitals: [
            "北京协和医院",
            "北京市东城区第一人民医院",
            "东城区东华门社区卫生服务中心",
        ],
        pharmacy: "北京同仁堂药店王府井店",
        bed_cap: "60.00",
        policy: PolicySpec {
            emp_deductible: [1300, 1300, 1300],
            emp_ratio: [9000, 8700, 8500],
            retired_plus: 500,
            res_deductible: [300, 800, 1300],
            res_ratio: [8000, 7500, 7000],
            out_of_province_minus: 500,
            emp_cap: 500_000,
            res_cap: 250_000,
            emp_ci_threshold: 30_000,
            res_ci_threshold: 20_000,
            emp_outpatient: (1800, 7000),
            res_outpatient: (100, 5500),
            pharmacy_ratio: (5000, 5000),
            referral: Some(Cut::Minus(1000)),
            other_temporary: Some(Cut::Factor(8000)),
            unfiled: None,
            pharmacy_national: true,
            account_pays_class_c: true,
        },
    },
];

fn region_spec(code: &str) -> anyhow::Result<&'static RegionSpec> {
    REGIONS
        .iter()
        .find(|r| r.code == code)
        .ok_or_else(|| anyhow!("region {code} is not part of the demo"))
}

/// Hospital `level` (1..=3) of `region`: H{region}0000{4 − level}, level 3 first.
fn hospital(region: &str, level: u32) -> String {
    format!("H{region}{:05}", 4 - level)
}

fn pharmacy(region: &str) -> String {
    format!("P{region}00001")
}

/// One catalogue entry (the same codes in every region; only the bed's cap differs).
struct Item {
    code: &'static str,
    name: &'static str,
    kind: CatalogueKind,
    class: CatalogueClass,
    b_ratio: &'static str,
    cap: &'static str,
}

const BED: &str = "110900001";

const fn item(
    code: &'static str,
    name: &'static str,
    kind: CatalogueKind,
    class: CatalogueClass,
    b_ratio: &'static str,
    cap: &'static str,
) -> Item {
    Item {
        code,
        name,
        kind,
        class,
        b_ratio,
        cap,
    }
}

const CATALOGUE: [Item; 26] = {
    use CatalogueClass::{A, B, C};
    use CatalogueKind::{Drug, Material, Service};
    [
        item("110200001", "普通门诊诊查费", Service, A, "", "10.00"),
        item(BED, "床位费(三人间)", Service, A, "", ""),
        item("110800001", "特需病房床位费", Service, C, "", ""),
        item("111100001", "重症监护", Service, A, "", "300.00"),
        item("120100001", "Ⅰ级护理", Service, A, "", ""),
        item("120400001", "静脉输液", Service, A, "", "10.00"),
        item("250101015", "血细胞分析(血常规)", Service, A, "", "25.00"),
        item(
            "210300001",
            "X线计算机体层(CT)平扫",
            Service,
            B,
            "0.10",
            "260.00",
        ),
        item("310701001", "常规心电图检查", Service, A, "", ""),
        item(
            "330803011",
            "经皮冠状动脉支架置入术",
            Service,
            A,
            "",
            "6000.00",
        ),
        item("331505001", "人工全髋关节置换术", Service, A, "", "5500.00"),
        item("330703004", "胸腔镜下肺叶切除术", Service, A, "", "9000.00"),
        item(
            "C02010100100",
            "冠状动脉药物洗脱支架",
            Material,
            B,
            "0.30",
            "800.00",
        ),
        item(
            "C03010200300",
            "人工髋关节假体",
            Material,
            B,
            "0.40",
            "9000.00",
        ),
        item("C14010100100", "一次性使用输液器", Material, A, "", "3.00"),
        item(
            "XJ01DDA001",
            "注射用头孢曲松钠 1g",
            Drug,
            B,
            "0.10",
            "12.00",
        ),
        item("XJ01CAA001", "阿莫西林胶囊 0.25g", Drug, A, "", "0.60"),
        item("XA10BAA001", "盐酸二甲双胍片 0.5g", Drug, A, "", ""),
        item("XC10AAA001", "阿托伐他汀钙片 20mg", Drug, B, "0.05", "3.50"),
        item("XC08CAA001", "苯磺酸氨氯地平片 5mg", Drug, A, "", "1.20"),
        item("XB01ACA001", "阿司匹林肠溶片 100mg", Drug, A, "", ""),
        item("XB05BBA001", "氯化钠注射液 0.9% 250ml", Drug, A, "", "3.00"),
        item("ZA01AAA001", "连花清瘟胶囊", Drug, B, "0.10", "0.45"),
        item("XL01CDA001", "注射用紫杉醇 30mg", Drug, B, "0.15", "500.00"),
        item("XN02BEA001", "对乙酰氨基酚片 0.5g", Drug, A, "", ""),
        item("XV06DXX001", "复合维生素片", Drug, C, "", ""),
    ]
};

fn item_name(code: &str) -> &'static str {
    CATALOGUE
        .iter()
        .find(|i| i.code == code)
        .map_or("", |i| i.name)
}

fn catalogue_items(r: &RegionSpec, effective_from: &str) -> Vec<pb::CatalogueItem> {
    CATALOGUE
        .iter()
        .map(|i| pb::CatalogueItem {
            code: i.code.into(),
            name: i.name.into(),
            kind: i.kind as i32,
            class: i.class as i32,
            b_self_pay_ratio: i.b_ratio.into(),
            price_cap: if i.code == BED { r.bed_cap } else { i.cap }.into(),
            effective_from: effective_from.into(),
            ..Default::default()
        })
        .collect()
}

/// A ratio in basis points as a decimal string: 8500 → "0.85", 9050 → "0.905".
fn ratio(bp: i64) -> String {
    let mut s = format!("{}.{:04}", bp / 10_000, bp % 10_000);
    while s.ends_with('0') && s.len() > 4 {
        s.pop();
    }
    s
}

fn yuan(n: i64) -> String {
    format!("{n}.00")
}

fn reduction(c: Cut) -> pb::Reduction {
    pb::Reduction {
        kind: Some(match c {
            Cut::Minus(bp) => pb::reduction::Kind::MinusPoints(ratio(bp)),
            Cut::Factor(bp) => pb::reduction::Kind::Factor(ratio(bp)),
        }),
    }
}

/// The critical-illness layer: bands above the threshold, steeper for residents.
fn critical_illness(threshold: i64, resident: bool) -> pb::CriticalIllnessLayer {
    let band = |from: i64, to: Option<i64>, bp: i64| pb::CriticalIllnessBand {
        from: yuan(from),
        to: to.map(yuan).unwrap_or_default(),
        ratio: ratio(bp),
    };
    let bands = if resident {
        vec![
            band(threshold, Some(50_000), 6000),
            band(50_000, Some(100_000), 7000),
            band(100_000, None, 8000),
        ]
    } else {
        vec![
            band(threshold, Some(100_000), 6000),
            band(100_000, None, 7000),
        ]
    };
    pb::CriticalIllnessLayer {
        threshold: yuan(threshold),
        bands,
        annual_cap: yuan(if resident { 300_000 } else { 400_000 }),
    }
}

/// Inpatient rules per level and province scope, outpatient pooling and pharmacy purchases, for
/// active and retired employees (310) and residents (390).
fn policy_body(s: &PolicySpec) -> pb::PolicyBody {
    use pb::{DeductibleBasis, LevelScope, ProvinceScope};
    let mut rules = Vec::new();
    for (ins, cat) in [
        (InsuranceType::Employee, PersonCategory::Active),
        (InsuranceType::Employee, PersonCategory::Retired),
        (InsuranceType::Resident, PersonCategory::Resident),
    ] {
        let resident = ins == InsuranceType::Resident;
        let plus = if cat == PersonCategory::Retired {
            s.retired_plus
        } else {
            0
        };
        let (deductibles, ratios, cap, ci, outpatient, pharmacy) = if resident {
            (
                s.res_deductible,
                s.res_ratio,
                s.res_cap,
                s.res_ci_threshold,
                s.res_outpatient,
                s.pharmacy_ratio.1,
            )
        } else {
            (
                s.emp_deductible,
                s.emp_ratio,
                s.emp_cap,
                s.emp_ci_threshold,
                s.emp_outpatient,
                s.pharmacy_ratio.0,
            )
        };
        let rule = |care: CareType, level: LevelScope, scope: ProvinceScope| pb::PolicyRule {
            insurance_type: ins as i32,
            category: cat as i32,
            care_type: care as i32,
            level: level as i32,
            province_scope: scope as i32,
            deductible_basis: DeductibleBasis::Annual as i32,
            annual_cap: yuan(cap),
            ..Default::default()
        };
        for (k, level) in [LevelScope::Level1, LevelScope::Level2, LevelScope::Level3]
            .into_iter()
            .enumerate()
        {
            for (scope, minus) in [
                (ProvinceScope::InProvince, 0),
                (ProvinceScope::OutOfProvince, s.out_of_province_minus),
            ] {
                rules.push(pb::PolicyRule {
                    deductible_basis: DeductibleBasis::PerAdmission as i32,
                    deductible: yuan(deductibles[k]),
                    repeat_admission_deductible: yuan(deductibles[k] / 2),
                    ratio: ratio((ratios[k] + plus).min(10_000) - minus),
                    critical_illness: Some(critical_illness(ci, resident)),
                    assistance: resident.then(|| pb::AssistanceLayer {
                        ratio: "0.70".into(),
                        annual_cap: "30000.00".into(),
                    }),
                    ..rule(CareType::Inpatient, level, scope)
                });
            }
        }
        rules.push(pb::PolicyRule {
            deductible: yuan(outpatient.0),
            ratio: ratio((outpatient.1 + plus).min(10_000)),
            ..rule(CareType::Outpatient, LevelScope::Any, ProvinceScope::Any)
        });
        rules.push(pb::PolicyRule {
            deductible: yuan(0),
            ratio: ratio(pharmacy),
            ..rule(CareType::Pharmacy, LevelScope::Pharmacy, ProvinceScope::Any)
        });
    }
    let mut filing_reductions = Vec::new();
    for (t, cut) in [
        (FilingType::Referral, s.referral),
        (FilingType::OtherTemporary, s.other_temporary),
    ] {
        if let Some(c) = cut {
            filing_reductions.push(pb::FilingReduction {
                filing_type: t as i32,
                reduction: Some(reduction(c)),
            });
        }
    }
    pb::PolicyBody {
        rules,
        filing_reductions,
        unfiled_allowed: s.unfiled.is_some(),
        unfiled_reduction: s.unfiled.map(reduction),
        account_pays_class_c: s.account_pays_class_c,
        pharmacy_national: s.pharmacy_national,
    }
}

// ------------------------------------------------------------------------------ clients

type Svc = InterceptedService<Channel, Auth>;

/// One principal's clients (cheap to create: they share the channel).
#[derive(Clone)]
struct Caller(Svc);

impl Caller {
    fn new(channel: &Channel, token: &str) -> anyhow::Result<Self> {
        Ok(Caller(with_token(channel.clone(), token)?))
    }
    fn reg(&self) -> RegistryServiceClient<Svc> {
        RegistryServiceClient::new(self.0.clone())
    }
    fn fil(&self) -> FilingServiceClient<Svc> {
        FilingServiceClient::new(self.0.clone())
    }
    fn setl(&self) -> SettlementServiceClient<Svc> {
        SettlementServiceClient::new(self.0.clone())
    }
    fn pharm(&self) -> PharmacyServiceClient<Svc> {
        PharmacyServiceClient::new(self.0.clone())
    }
    fn clr(&self) -> ClearingServiceClient<Svc> {
        ClearingServiceClient::new(self.0.clone())
    }
    fn led(&self) -> LedgerServiceClient<Svc> {
        LedgerServiceClient::new(self.0.clone())
    }
}

/// Who the demo acts as. Without bureau tokens (against a running server) the operator does
/// what the bureaus would.
struct Principals {
    operator: Caller,
    bureaus: BTreeMap<String, Caller>,
    institutions: BTreeMap<String, Caller>,
}

impl Principals {
    fn bureau(&self, region: &str) -> &Caller {
        self.bureaus.get(region).unwrap_or(&self.operator)
    }

    fn inst(&self, code: &str) -> anyhow::Result<&Caller> {
        self.institutions
            .get(code)
            .ok_or_else(|| anyhow!("no token for institution {code}"))
    }
}

/// "FAILED_PRECONDITION" for `Code::FailedPrecondition`.
fn code_name(c: tonic::Code) -> String {
    let mut out = String::new();
    for (i, ch) in format!("{c:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

fn rpc_error(what: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow!("{what}: {} {}", code_name(s.code()), s.message())
}

/// The rule a FAILED_PRECONDITION names (its PreconditionFailure subject).
fn rule_of(s: &tonic::Status) -> String {
    s.get_details_precondition_failure()
        .and_then(|pf| pf.violations.first().map(|v| v.subject.clone()))
        .unwrap_or_default()
}

trait Answer<T> {
    /// The answer, or an error naming the call and the status.
    fn answer(self, what: &str) -> anyhow::Result<T>;
}

impl<T> Answer<T> for Result<tonic::Response<T>, tonic::Status> {
    fn answer(self, what: &str) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| rpc_error(what, &s))
    }
}

/// An enum value's proto name without its prefix: `short!(pb::LevelScope, 4, "LEVEL_SCOPE_")`
/// is "LEVEL_3" (the number itself when the value is unknown).
macro_rules! short {
    ($ty:ty, $v:expr, $prefix:literal) => {{
        let v: i32 = $v;
        <$ty>::try_from(v).map_or_else(
            |_| v.to_string(),
            |e| {
                let name = e.as_str_name();
                name.strip_prefix($prefix).unwrap_or(name).to_owned()
            },
        )
    }};
}

// ------------------------------------------------------------------------------ output

/// Writes to stdout (an error, not a panic, when stdout is gone).
fn say(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

fn section(title: &str) -> anyhow::Result<()> {
    say(&format!("\n\n### {title}\n"))
}

/// A titled table: header first; numbers right-aligned (Chinese text goes in the last column,
/// where its double width cannot shift the others).
fn table(title: &str, header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    let mut all = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    all.extend(rows);
    say(&format!("\n{title}\n{}", render_table(&all)))
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Label-value pairs, one a line.
fn kv(title: &str, pairs: &[(&str, String)]) -> anyhow::Result<()> {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("\n{title}\n");
    for (k, v) in pairs {
        out.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    say(&out)
}

/// Left-aligns column `col`: `render_table` right-aligns what looks like a number, but a
/// catalogue code such as 110900001 is a name. Cells padded to one width are not numbers.
fn left_align(rows: &mut [Vec<String>], col: usize) {
    let width = rows
        .iter()
        .filter_map(|r| r.get(col))
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    for c in rows.iter_mut().filter_map(|r| r.get_mut(col)) {
        let pad = width.saturating_sub(c.chars().count());
        c.push_str(&" ".repeat(pad));
    }
}

/// 12345 ms → "12.3 s" (integers only).
fn tenths(ms: u128) -> String {
    format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

// ------------------------------------------------------------------------------ in-process

/// Institutions the walk-through acts as (against a running server, their tokens are needed).
const WALK_INSTITUTIONS: [&str; 4] = [
    "H15060000001",
    "P15060000001",
    "P64020000001",
    "H15010000001",
];

async fn in_process(args: &DemoArgs, max_connections: u32) -> anyhow::Result<()> {
    let temp_dir =
        std::env::temp_dir().join(format!("medsettle-demo-{:016x}", rand::random::<u64>()));
    let url = match &args.demo_database_url {
        Some(u) => u.clone(),
        None => {
            std::fs::create_dir_all(&temp_dir)
                .with_context(|| format!("creating {}", temp_dir.display()))?;
            format!("sqlite://{}", temp_dir.join("demo.db").display())
        }
    };
    let db = Db::open(&DbConfig {
        url: url.clone(),
        max_connections,
    })
    .await
    .with_context(|| format!("opening the demo database {url}"));
    let outcome = match db {
        Ok(db) => {
            let outcome = serve_and_run(args, &db, &url).await;
            db.close().await;
            outcome
        }
        Err(e) => Err(e),
    };
    if args.demo_database_url.is_none() && !(args.keep && outcome.is_ok()) {
        let _ = std::fs::remove_dir_all(&temp_dir);
    }
    outcome
}

/// Starts the server on `db`, runs the demo against it, stops it.
async fn serve_and_run(args: &DemoArgs, db: &Db, url: &str) -> anyhow::Result<()> {
    let app = Arc::new(App::new(db.clone()));
    let server = crate::server::Local::start(app.clone()).await?;
    let outcome = async {
        let channel = Channel::from_shared(format!("http://{}", server.addr))?
            .connect()
            .await
            .context("connecting to the in-process server")?;
        let (_, operator) = auth::issue(db, &Grant::Operator, "demo").await?;
        let mut p = Principals {
            operator: Caller::new(&channel, &operator)?,
            bureaus: BTreeMap::new(),
            institutions: BTreeMap::new(),
        };
        for r in &REGIONS {
            let region = RegionCode::parse("region", r.code)?;
            let (_, token) = auth::issue(db, &Grant::Bureau(region), "demo").await?;
            p.bureaus
                .insert(r.code.into(), Caller::new(&channel, &token)?);
            let codes = (1..=3).map(|l| hospital(r.code, l));
            for code in codes.chain([pharmacy(r.code)]) {
                let c = InstitutionCode::parse("institution", &code)?;
                let (_, token) = auth::issue(db, &Grant::Institution(c), "demo").await?;
                p.institutions.insert(code, Caller::new(&channel, &token)?);
            }
        }
        let engine = format!("{:?}", db.engine());
        let shown = if args.demo_database_url.is_some() {
            without_password(url)
        } else {
            "a fresh temporary SQLite file".to_owned()
        };
        say(&format!(
            "medsettle demo: the server runs in this process ({engine}, {shown}); every figure \
             below is its answer over gRPC.\n"
        ))?;
        let regions = p
            .operator
            .reg()
            .list_regions(pb::ListRegionsRequest::default())
            .await
            .answer("ListRegions")?;
        if !regions.regions.is_empty() {
            bail!(
                "{} already holds regions: the demo needs an empty database",
                without_password(url)
            );
        }
        midnight_guard(&app)?;
        run_all(&p, Some(&app), args.persons).await?;
        Ok(operator)
    }
    .await;
    let served = server.stop().await;
    let operator = outcome?;
    served.context("the in-process server")?;
    if args.keep {
        let today = business_date(app.clock.now());
        let url = without_password(url);
        let lines = [
            format!("kept: {url}"),
            format!("serve it:   medsettle --database-url {url} serve"),
            format!("operator:   {operator}"),
            "call it:    buf curl --protocol grpc --http2-prior-knowledge \\".to_owned(),
            format!("              -H \"authorization: Bearer {operator}\" -d '{{}}' \\"),
            "              http://127.0.0.1:50051/medsettle.v1.LedgerService/Verify".to_owned(),
            format!(
                "note: the demo moved business time to {today}; a server on this database runs on \
                 the real clock, in a month the demo may have closed already"
            ),
        ];
        say(&format!("\n{}\n", lines.join("\n")))?;
    }
    Ok(())
}

/// `url` with its password, if any, replaced by "***" (the URL is printed).
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) if authority[..at].contains(':') => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!("{}://{user}:***{}", &url[..scheme_end], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// Settlements of the walk-through must share a business day: a run starting minutes before
/// midnight (UTC+8) moves business time past it first.
fn midnight_guard(app: &App) -> anyhow::Result<()> {
    let local = app.clock.now() + chrono::Duration::hours(8);
    let late = chrono::NaiveTime::from_hms_opt(23, 45, 0).context("a valid time")?;
    if local.time() >= late {
        app.clock.advance(chrono::Duration::minutes(30));
        say(&format!(
            "(demo: business time moved 30 minutes forward, past midnight, to {}: the month's \
             settlements share one day)\n",
            business_date(app.clock.now())
        ))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------ remote

async fn remote(args: &DemoArgs, server: &str) -> anyhow::Result<()> {
    let token = args
        .token
        .as_deref()
        .context("--server needs --token OPERATOR_TOKEN")?;
    let mut tokens = BTreeMap::new();
    for s in &args.institution_tokens {
        let (code, token) = s
            .split_once('=')
            .with_context(|| format!("--institution-token {s:?}: expected CODE=TOKEN"))?;
        InstitutionCode::parse("--institution-token", code)?;
        tokens.insert(code.to_owned(), token.to_owned());
    }
    let missing: Vec<&str> = WALK_INSTITUTIONS
        .iter()
        .copied()
        .filter(|c| !tokens.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        let issue: Vec<String> = missing
            .iter()
            .map(|c| format!("  medsettle token issue --institution {c} --label demo > {c}.token"))
            .collect();
        let pass: Vec<String> = WALK_INSTITUTIONS
            .iter()
            .map(|c| format!("--institution-token {c}=\"$(cat {c}.token)\""))
            .collect();
        bail!(
            "the walk-through acts as hospitals and pharmacies, and no RPC issues tokens: issue \
             theirs with the server's database settings,\n{}\nthen run\n  medsettle demo --server \
             {server} --token \"$OPERATOR_TOKEN\" \\\n    {}\n(or run `medsettle demo` without \
             --server: it starts its own server)",
            issue.join("\n"),
            pass.join(" \\\n    ")
        );
    }
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("server address {server}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let mut institutions = BTreeMap::new();
    for (code, token) in &tokens {
        institutions.insert(code.clone(), Caller::new(&channel, token)?);
    }
    let p = Principals {
        operator: Caller::new(&channel, token)?,
        bureaus: BTreeMap::new(),
        institutions,
    };
    say(&format!(
        "medsettle demo against {server}: the operator token acts for the bureaus; what already \
         exists from an earlier run is reused.\n"
    ))?;
    run_all(&p, None, args.persons).await
}

// ------------------------------------------------------------------------------ the run

async fn run_all(p: &Principals, app: Option<&App>, persons: u16) -> anyhow::Result<()> {
    let since = format!("{}-01-01", business_year(app));
    seed(p, persons, &since).await?;
    let cast = enrol_cast(p).await?;
    let walk = walk_through(p, &cast).await?;
    match app {
        Some(app) => {
            let month = rest_of_month(p, &cast).await?;
            clearing(p, app, &walk, &month).await?;
        }
        None => {
            section("Month close: skipped")?;
            say(
                "month close needs an ended month: run the demo without --server to see it (it \
                 moves its own server's business clock)\n",
            )?;
        }
    }
    verify(p).await
}

/// The business year (UTC+8) of the server's clock (the system clock for a running server).
fn business_year(app: Option<&App>) -> i32 {
    let now = app.map_or_else(chrono::Utc::now, |a| a.clock.now());
    business_date(now).year()
}

// ------------------------------------------------------------------------------ seeding

/// Enrolments of a region, by kind.
#[derive(Default, Clone)]
struct Enrolled {
    active: usize,
    retired: usize,
    residents: usize,
    cards: usize,
    evouchers: usize,
    assistance: usize,
    existing: usize,
}

async fn seed(p: &Principals, persons: u16, since: &str) -> anyhow::Result<()> {
    section("The world")?;
    let started = Instant::now();
    let op = &p.operator;
    let mut regions = Vec::new();
    for r in &REGIONS {
        let created = op
            .reg()
            .create_region(pb::CreateRegionRequest {
                request_id: rid(),
                code: r.code.into(),
                ..Default::default()
            })
            .await;
        let region = match created {
            Ok(a) => a.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => op
                .reg()
                .get_region(pb::GetRegionRequest {
                    code: r.code.into(),
                })
                .await
                .answer("GetRegion")?,
            Err(s) => return Err(rpc_error("CreateRegion", &s)),
        };
        regions.push(region);
    }

    let mut institutions = Vec::new();
    for r in &REGIONS {
        let mut wanted: Vec<(String, &str, pb::InstitutionKind, u32)> = (1..=3)
            .map(|level| {
                (
                    hospital(r.code, level),
                    r.hospitals[3 - level as usize],
                    pb::InstitutionKind::Hospital,
                    level,
                )
            })
            .rev()
            .collect();
        wanted.push((
            pharmacy(r.code),
            r.pharmacy,
            pb::InstitutionKind::Pharmacy,
            0,
        ));
        for (code, name, kind, level) in wanted {
            let mut reg = p.bureau(r.code).reg();
            let registered = reg
                .register_institution(pb::RegisterInstitutionRequest {
                    request_id: rid(),
                    code: code.clone(),
                    name: name.into(),
                    region: r.code.into(),
                    kind: kind as i32,
                    level,
                    cross_region_enabled: true,
                    valid_from: since.into(),
                    valid_until: String::new(),
                })
                .await;
            institutions.push(match registered {
                Ok(a) => a.into_inner(),
                Err(s) if s.code() == tonic::Code::AlreadyExists => reg
                    .get_institution(pb::GetInstitutionRequest { code })
                    .await
                    .answer("GetInstitution")?,
                Err(s) => return Err(rpc_error("RegisterInstitution", &s)),
            });
        }
    }

    let mut catalogues = BTreeMap::new();
    let mut policies = BTreeMap::new();
    for r in &REGIONS {
        let mut reg = p.bureau(r.code).reg();
        let c = reg
            .upsert_catalogue(pb::UpsertCatalogueRequest {
                request_id: rid(),
                region: r.code.into(),
                items: catalogue_items(r, since),
            })
            .await
            .answer("UpsertCatalogue")?;
        catalogues.insert(r.code, c);
        let versions = reg
            .list_policy_versions(pb::ListPolicyVersionsRequest {
                region: r.code.into(),
            })
            .await
            .answer("ListPolicyVersions")?;
        let policy = if versions.versions.is_empty() {
            reg.put_policy(pb::PutPolicyRequest {
                request_id: rid(),
                region: r.code.into(),
                effective_from: since.into(),
                body: Some(policy_body(&r.policy)),
            })
            .await
            .answer("PutPolicy")?
        } else {
            reg.get_policy(pb::GetPolicyRequest {
                region: r.code.into(),
                ..Default::default()
            })
            .await
            .answer("GetPolicy (the version in force)")?
        };
        policies.insert(r.code, policy);
    }

    let enrolled = enrol_population(p, persons).await?;

    let mut rows = Vec::new();
    for (r, region) in REGIONS.iter().zip(&regions) {
        let e = enrolled
            .get(r.code)
            .map_or_else(Enrolled::default, Enrolled::clone);
        let c = catalogues.get(r.code);
        let pv = policies.get(r.code);
        rows.push(vec![
            region.code.clone(),
            region.province_code.clone(),
            e.active.to_string(),
            e.retired.to_string(),
            e.residents.to_string(),
            e.cards.to_string(),
            e.evouchers.to_string(),
            e.assistance.to_string(),
            c.map_or_else(String::new, |c| format!("v{} {}", c.version, c.written)),
            pv.map_or_else(String::new, |v| {
                format!("v{} {}", v.version, v.effective_from)
            }),
            format!("{} {}", region.name, region.bureau_name),
        ]);
    }
    table(
        "Regions and their insured (EnrolPerson answers; employees have personal accounts)",
        &[
            "region",
            "prov",
            "employees",
            "retired",
            "residents",
            "cards",
            "e-vouchers",
            "assistance",
            "catalogue",
            "policy",
            "name / bureau",
        ],
        rows,
    )?;
    let existing: usize = enrolled.values().map(|e| e.existing).sum();
    if existing > 0 {
        say(&format!(
            "({existing} were enrolled already, by an earlier run)\n"
        ))?;
    }

    table(
        "Designated institutions (RegisterInstitution answers)",
        &["code", "region", "kind", "level", "cross-region", "name"],
        institutions
            .iter()
            .map(|i| {
                vec![
                    i.code.clone(),
                    i.region.clone(),
                    short!(pb::InstitutionKind, i.kind, "INSTITUTION_KIND_"),
                    i.level.to_string(),
                    i.cross_region_enabled.to_string(),
                    i.name.clone(),
                ]
            })
            .collect(),
    )?;

    policy_table(&policies)?;
    catalogue_table(op, ORDOS).await?;
    say(&format!(
        "\nseeded in {} over gRPC\n",
        tenths(started.elapsed().as_millis())
    ))
}

/// A valid national ID: area + birth date (YYYYMMDD) + sequence + check character.
fn national_id(area: &str, birth: NaiveDate, seq: u16) -> anyhow::Result<String> {
    let body = format!("{area}{}{seq:03}", birth.format("%Y%m%d"));
    let check = national_id_check_digit(&body).with_context(|| format!("ID body {body}"))?;
    Ok(format!("{body}{check}"))
}

const SURNAMES: [&str; 24] = [
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "郑", "梁", "韩", "冯", "曹",
];
const GIVEN: [&str; 20] = [
    "伟", "芳", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
    "明", "超", "桂兰", "志刚", "海燕",
];

/// Person `i` of region `r`: half active employees, a fifth retired, the rest residents (one
/// in seven an assistance recipient); every one with a card, every third with an e-voucher.
fn population_person(r: &RegionSpec, i: u16) -> anyhow::Result<(pb::EnrolPersonRequest, u8)> {
    let n = u32::from(i);
    // Birth dates spread over `span` days from `base` (the sequence number keeps IDs distinct).
    let day = |base: (i32, u32, u32), step: u32, span: u32| -> anyhow::Result<NaiveDate> {
        NaiveDate::from_ymd_opt(base.0, base.1, base.2)
            .map(|d| d + chrono::Days::new(u64::from(n * step % span)))
            .context("a birth date")
    };
    let (ins, cat, birth, opening, kind) = match i % 10 {
        0..=4 => (
            InsuranceType::Employee,
            PersonCategory::Active,
            day((1966, 1, 1), 37, 12_000)?,
            format!("{}.{:02}", 800 + (n * 37) % 2400, (n * 13) % 100),
            0,
        ),
        5 | 6 => (
            InsuranceType::Employee,
            PersonCategory::Retired,
            day((1940, 1, 1), 23, 7_300)?,
            format!("{}.{:02}", 2000 + (n * 53) % 4000, (n * 7) % 100),
            1,
        ),
        _ => (
            InsuranceType::Resident,
            PersonCategory::Resident,
            day((1945, 1, 1), 83, 25_000)?,
            String::new(),
            2,
        ),
    };
    let name = format!(
        "{}{}",
        SURNAMES[i as usize % SURNAMES.len()],
        GIVEN[(i as usize * 7) % GIVEN.len()]
    );
    Ok((
        pb::EnrolPersonRequest {
            request_id: rid(),
            national_id: national_id(r.id_area, birth, i)?,
            name,
            home_region: r.code.into(),
            insurances: vec![pb::PersonInsurance {
                insurance_type: ins as i32,
                category: cat as i32,
                status: pb::PersonStatus::Active as i32,
            }],
            card_no: format!("K{}{i:05}", r.code),
            evoucher_token: if i.is_multiple_of(3) {
                format!("EV{}{i:05}", r.code)
            } else {
                String::new()
            },
            assistance_recipient: kind == 2 && i.is_multiple_of(7),
            opening_balance: opening,
        },
        kind,
    ))
}

/// Enrols `persons` per region, 64 calls in flight.
async fn enrol_population(
    p: &Principals,
    persons: u16,
) -> anyhow::Result<BTreeMap<&'static str, Enrolled>> {
    let mut jobs = Vec::new();
    for r in &REGIONS {
        for i in 0..persons {
            let (req, kind) = population_person(r, i)?;
            jobs.push((r.code, kind, req));
        }
    }
    let answers: Vec<_> = futures::stream::iter(jobs.into_iter().map(|(region, kind, req)| {
        let mut reg = p.bureau(region).reg();
        let extras = (
            !req.evoucher_token.is_empty(),
            req.assistance_recipient,
            !req.card_no.is_empty(),
        );
        async move { (region, kind, extras, reg.enrol_person(req).await) }
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    let mut out: BTreeMap<&'static str, Enrolled> = BTreeMap::new();
    for (region, kind, (evoucher, assistance, card), answer) in answers {
        let e = out.entry(region).or_default();
        match answer {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => e.existing += 1,
            Err(s) => return Err(rpc_error("EnrolPerson", &s)),
        }
        match kind {
            0 => e.active += 1,
            1 => e.retired += 1,
            _ => e.residents += 1,
        }
        e.cards += usize::from(card);
        e.evouchers += usize::from(evoucher);
        e.assistance += usize::from(assistance);
    }
    Ok(out)
}

fn rule_in(
    body: &pb::PolicyBody,
    ins: InsuranceType,
    cat: PersonCategory,
    care: CareType,
    level: pb::LevelScope,
    scope: pb::ProvinceScope,
) -> Option<&pb::PolicyRule> {
    body.rules.iter().find(|r| {
        r.insurance_type == ins as i32
            && r.category == cat as i32
            && r.care_type == care as i32
            && r.level == level as i32
            && r.province_scope == scope as i32
    })
}

fn reduction_text(r: Option<&pb::Reduction>) -> String {
    match r.and_then(|r| r.kind.as_ref()) {
        Some(pb::reduction::Kind::MinusPoints(p)) => format!("-{p}"),
        Some(pb::reduction::Kind::Factor(f)) => format!("x{f}"),
        None => "none".into(),
    }
}

/// The policies as the server stored them: level-3 inpatient figures and the rules that differ.
fn policy_table(policies: &BTreeMap<&str, pb::PolicyVersion>) -> anyhow::Result<()> {
    use pb::{LevelScope, ProvinceScope};
    let mut rows = Vec::new();
    for r in &REGIONS {
        let Some(pv) = policies.get(r.code) else {
            continue;
        };
        let Some(body) = &pv.body else { continue };
        let inpatient = |ins, cat, scope| {
            rule_in(
                body,
                ins,
                cat,
                CareType::Inpatient,
                LevelScope::Level3,
                scope,
            )
        };
        let active = inpatient(
            InsuranceType::Employee,
            PersonCategory::Active,
            ProvinceScope::InProvince,
        );
        let retired = inpatient(
            InsuranceType::Employee,
            PersonCategory::Retired,
            ProvinceScope::InProvince,
        );
        let resident = inpatient(
            InsuranceType::Resident,
            PersonCategory::Resident,
            ProvinceScope::InProvince,
        );
        let away = inpatient(
            InsuranceType::Employee,
            PersonCategory::Active,
            ProvinceScope::OutOfProvince,
        );
        let filing = |t: FilingType| {
            reduction_text(
                body.filing_reductions
                    .iter()
                    .find(|f| f.filing_type == t as i32)
                    .and_then(|f| f.reduction.as_ref()),
            )
        };
        let field = |r: Option<&pb::PolicyRule>, f: fn(&pb::PolicyRule) -> &str| {
            r.map_or_else(String::new, |r| f(r).to_owned())
        };
        rows.push(vec![
            r.code.into(),
            format!("v{}", pv.version),
            field(active, |r| &r.deductible),
            field(active, |r| &r.ratio),
            field(retired, |r| &r.ratio),
            field(resident, |r| &r.ratio),
            field(away, |r| &r.ratio),
            field(active, |r| &r.annual_cap),
            field(active, |r| {
                r.critical_illness
                    .as_ref()
                    .map_or("", |c| c.threshold.as_str())
            }),
            filing(FilingType::Referral),
            filing(FilingType::OtherTemporary),
            if body.unfiled_allowed {
                reduction_text(body.unfiled_reduction.as_ref())
            } else {
                "refused".into()
            },
            if body.pharmacy_national {
                "national".into()
            } else {
                "province".into()
            },
        ]);
    }
    table(
        "Home policies (PutPolicy answers; inpatient at level 3: deductible and ratios)",
        &[
            "region",
            "version",
            "deductible",
            "active",
            "retired",
            "resident",
            "out-of-prov",
            "annual cap",
            "CI from",
            "referral",
            "temporary",
            "unfiled",
            "pharmacy",
        ],
        rows,
    )?;
    say(
        "(each policy has 24 rules: employees active and retired and residents; inpatient by \
         level and province, outpatient pooling, pharmacy; critical-illness bands; assistance \
         for residents)\n",
    )
}

async fn catalogue_table(op: &Caller, region: &str) -> anyhow::Result<()> {
    let found = op
        .reg()
        .search_catalogue(pb::SearchCatalogueRequest {
            region: region.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .answer("SearchCatalogue")?;
    let mut rows: Vec<Vec<String>> = found
        .items
        .iter()
        .map(|i| {
            vec![
                i.code.clone(),
                short!(pb::CatalogueKind, i.kind, "CATALOGUE_KIND_"),
                short!(pb::CatalogueClass, i.class, "CATALOGUE_CLASS_"),
                or_dash(&i.b_self_pay_ratio).to_owned(),
                or_dash(&i.price_cap).to_owned(),
                format!("v{}", i.version),
                i.name.clone(),
            ]
        })
        .collect();
    left_align(&mut rows, 0);
    table(
        &format!(
            "Catalogue of {region} (SearchCatalogue; every region has one, the bed's cap differs)"
        ),
        &[
            "code",
            "kind",
            "class",
            "B self-pay",
            "price cap",
            "version",
            "name",
        ],
        rows,
    )
}

// ------------------------------------------------------------------------------ the cast

/// Someone the walk-through follows.
struct Role {
    key: &'static str,
    name: &'static str,
    home: &'static str,
    birth: (i32, u32, u32),
    seq: u16,
    category: PersonCategory,
    opening: &'static str,
    assistance: bool,
    /// (type, destination, referring institution)
    filing: Option<(FilingType, &'static str, &'static str)>,
    role: &'static str,
}

const CAST: [Role; 11] = {
    use FilingType::{LongTermResident, OtherTemporary, PostedWorker, Referral};
    use PersonCategory::{Active, Resident, Retired};
    [
        Role {
            key: "wang",
            name: "王建国",
            home: WUHAI,
            birth: (1978, 3, 12),
            seq: 901,
            category: Active,
            opening: "3000.00",
            assistance: false,
            filing: Some((LongTermResident, ORDOS, "")),
            role: "inpatient in Ordos, pharmacy swipes",
        },
        Role {
            key: "zhao",
            name: "赵淑芬",
            home: BEIJING,
            birth: (1956, 8, 23),
            seq: 902,
            category: Retired,
            opening: "6000.00",
            assistance: false,
            filing: Some((Referral, HOHHOT, "H11000000001")),
            role: "cross-province stay in Hohhot, reversal",
        },
        Role {
            key: "liu",
            name: "刘海涛",
            home: ORDOS,
            birth: (1983, 5, 17),
            seq: 903,
            category: Active,
            opening: "2000.00",
            assistance: false,
            filing: None,
            role: "unfiled stay in Wuhai, pharmacy",
        },
        Role {
            key: "qimuge",
            name: "其木格",
            home: ALXA,
            birth: (1969, 11, 2),
            seq: 904,
            category: Resident,
            opening: "",
            assistance: true,
            filing: Some((OtherTemporary, HOHHOT, "")),
            role: "surgery in Hohhot (critical illness, assistance)",
        },
        Role {
            key: "gao",
            name: "高志强",
            home: HOHHOT,
            birth: (1990, 7, 21),
            seq: 905,
            category: Active,
            opening: "1500.00",
            assistance: false,
            filing: None,
            role: "pharmacy in Ordos",
        },
        Role {
            key: "ma",
            name: "马玉兰",
            home: SHIZUISHAN,
            birth: (1972, 1, 30),
            seq: 906,
            category: Active,
            opening: "2500.00",
            assistance: false,
            filing: Some((LongTermResident, "15", "")),
            role: "lives in Inner Mongolia, stay in Ordos",
        },
        Role {
            key: "sun",
            name: "孙浩然",
            home: BEIJING,
            birth: (1992, 4, 14),
            seq: 907,
            category: Active,
            opening: "1200.00",
            assistance: false,
            filing: Some((PostedWorker, ORDOS, "")),
            role: "posted to Ordos, outpatient",
        },
        Role {
            key: "li",
            name: "李红梅",
            home: WUHAI,
            birth: (1985, 9, 9),
            seq: 908,
            category: Active,
            opening: "1800.00",
            assistance: false,
            filing: Some((Referral, ORDOS, "H15030000001")),
            role: "referred to Ordos (the disputed stay)",
        },
        Role {
            key: "bateer",
            name: "巴特尔",
            home: ORDOS,
            birth: (1961, 12, 5),
            seq: 909,
            category: Resident,
            opening: "",
            assistance: false,
            filing: None,
            role: "unfiled outpatient in Alxa",
        },
        Role {
            key: "zhang",
            name: "张桂英",
            home: HOHHOT,
            birth: (1952, 6, 18),
            seq: 910,
            category: Retired,
            opening: "5000.00",
            assistance: false,
            filing: Some((Referral, BEIJING, "H15010000001")),
            role: "referred to Beijing",
        },
        Role {
            key: "wuyun",
            name: "乌云",
            home: ALXA,
            birth: (1988, 2, 26),
            seq: 912,
            category: Active,
            opening: "900.00",
            assistance: false,
            filing: None,
            role: "pharmacy in Hohhot",
        },
    ]
};

/// An enrolled member of the cast.
struct Insured {
    name: &'static str,
    national_id: String,
    card_no: String,
    evoucher: String,
    insurance: InsuranceType,
}

struct Cast(BTreeMap<&'static str, Insured>);

impl Cast {
    fn get(&self, key: &str) -> anyhow::Result<&Insured> {
        self.0
            .get(key)
            .ok_or_else(|| anyhow!("{key} is not in the cast"))
    }
}

async fn enrol_cast(p: &Principals) -> anyhow::Result<Cast> {
    let mut cast = BTreeMap::new();
    let mut rows = Vec::new();
    for c in &CAST {
        let r = region_spec(c.home)?;
        let birth =
            NaiveDate::from_ymd_opt(c.birth.0, c.birth.1, c.birth.2).context("a birth date")?;
        let insurance = if c.category == PersonCategory::Resident {
            InsuranceType::Resident
        } else {
            InsuranceType::Employee
        };
        let req = pb::EnrolPersonRequest {
            request_id: rid(),
            national_id: national_id(r.id_area, birth, c.seq)?,
            name: c.name.into(),
            home_region: c.home.into(),
            insurances: vec![pb::PersonInsurance {
                insurance_type: insurance as i32,
                category: c.category as i32,
                status: pb::PersonStatus::Active as i32,
            }],
            card_no: format!("K{}{:05}", c.home, c.seq),
            evoucher_token: format!("EV{}{:05}", c.home, c.seq),
            assistance_recipient: c.assistance,
            opening_balance: c.opening.into(),
        };
        let bureau = p.bureau(c.home);
        let person = match bureau.reg().enrol_person(req.clone()).await {
            Ok(a) => a.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => bureau
                .reg()
                .get_person(pb::GetPersonRequest {
                    key: Some(pb::get_person_request::Key::NationalId(
                        req.national_id.clone(),
                    )),
                })
                .await
                .answer("GetPerson")?,
            Err(s) => return Err(rpc_error("EnrolPerson", &s)),
        };
        let filing = match c.filing {
            Some((t, dest, referrer)) => {
                let f = ensure_filing(bureau, &person.psn_no, t, dest, referrer).await?;
                format!(
                    "{} -> {} {}..{}",
                    short!(pb::FilingType, f.filing_type, "FILING_TYPE_"),
                    f.destination,
                    f.valid_from,
                    f.valid_until
                )
            }
            None => "-".into(),
        };
        rows.push(vec![
            person.psn_no.clone(),
            person.home_region.clone(),
            format!(
                "{}/{}",
                insurance as i32,
                short!(pb::PersonCategory, c.category as i32, "PERSON_CATEGORY_")
            ),
            or_dash(&person.account_balance).to_owned(),
            person.card_no.clone(),
            filing,
            format!("{} — {}", c.name, c.role),
        ]);
        cast.insert(
            c.key,
            Insured {
                name: c.name,
                national_id: req.national_id,
                card_no: req.card_no,
                evoucher: req.evoucher_token,
                insurance,
            },
        );
    }
    left_align(&mut rows, 5);
    table(
        "The people the walk-through follows (EnrolPerson and FileFiling answers)",
        &[
            "psn_no",
            "home",
            "insurance",
            "account",
            "card",
            "filing",
            "who",
        ],
        rows,
    )?;
    Ok(Cast(cast))
}

/// The person's active filing of this type to `dest`, filed now unless one exists already.
async fn ensure_filing(
    bureau: &Caller,
    psn_no: &str,
    t: FilingType,
    dest: &str,
    referrer: &str,
) -> anyhow::Result<pb::Filing> {
    let existing = bureau
        .fil()
        .list_filings(pb::ListFilingsRequest {
            psn_no: psn_no.into(),
            include_revoked: false,
        })
        .await
        .answer("ListFilings")?;
    if let Some(f) = existing
        .filings
        .into_iter()
        .find(|f| f.filing_type == t as i32 && f.destination == dest)
    {
        return Ok(f);
    }
    bureau
        .fil()
        .file_filing(pb::FileFilingRequest {
            request_id: rid(),
            psn_no: psn_no.into(),
            filing_type: t as i32,
            destination: dest.into(),
            valid_from: String::new(),
            valid_until: String::new(),
            referring_institution: referrer.into(),
        })
        .await
        .answer("FileFiling")
}

// ------------------------------------------------------------------------------ flows

/// (line_no, catalogue code, quantity, unit price).
type Fee = (&'static str, &'static str, &'static str, &'static str);

fn by_card(card: &str) -> Option<pb::PatientCredential> {
    Some(pb::PatientCredential {
        credential: Some(pb::patient_credential::Credential::CardNo(card.into())),
    })
}

fn by_evoucher(token: &str) -> Option<pb::PatientCredential> {
    Some(pb::PatientCredential {
        credential: Some(pb::patient_credential::Credential::EvoucherToken(
            token.into(),
        )),
    })
}

fn by_id(national_id: &str) -> Option<pb::PatientCredential> {
    Some(pb::PatientCredential {
        credential: Some(pb::patient_credential::Credential::NationalId(
            national_id.into(),
        )),
    })
}

fn card_of(card: &str) -> Option<pb::CardCredential> {
    Some(pb::CardCredential {
        credential: Some(pb::card_credential::Credential::CardNo(card.into())),
    })
}

/// A visit at a hospital: what to open and the bill.
struct Visit<'a> {
    credential: Option<pb::PatientCredential>,
    insurance: InsuranceType,
    care: CareType,
    diagnoses: &'a [&'a str],
    lines: &'a [Fee],
    use_account: bool,
}

struct Stay {
    mdtrt_id: String,
    uploaded: pb::UploadFeeLinesResponse,
    settlement: pb::Settlement,
}

/// Opens the visit, uploads the bill, discharges an inpatient and settles (expecting the total
/// the upload reported).
async fn hospital_visit(h: &Caller, v: Visit<'_>) -> anyhow::Result<Stay> {
    let mut c = h.setl();
    let visit = c
        .open_visit(pb::OpenVisitRequest {
            request_id: rid(),
            credential: v.credential,
            visit_no: format!("V{}", rid()),
            insurance_type: v.insurance as i32,
            care_type: v.care as i32,
            diagnoses: v.diagnoses.iter().map(|d| (*d).to_owned()).collect(),
            begin_date: String::new(),
        })
        .await
        .answer("OpenVisit")?;
    let uploaded = c
        .upload_fee_lines(pb::UploadFeeLinesRequest {
            request_id: rid(),
            mdtrt_id: visit.mdtrt_id.clone(),
            lines: v
                .lines
                .iter()
                .map(|(no, code, qty, price)| pb::FeeLine {
                    line_no: (*no).into(),
                    code: (*code).into(),
                    name: item_name(code).into(),
                    quantity: (*qty).into(),
                    unit_price: (*price).into(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .answer("UploadFeeLines")?;
    if v.care == CareType::Inpatient {
        c.discharge_visit(pb::DischargeVisitRequest {
            request_id: rid(),
            mdtrt_id: visit.mdtrt_id.clone(),
            ..Default::default()
        })
        .await
        .answer("DischargeVisit")?;
    }
    let settlement = c
        .settle(pb::SettleRequest {
            request_id: rid(),
            mdtrt_id: visit.mdtrt_id.clone(),
            use_account: v.use_account,
            expected_total: uploaded.unsettled_total.clone(),
        })
        .await
        .answer("Settle")?;
    Ok(Stay {
        mdtrt_id: visit.mdtrt_id,
        uploaded,
        settlement,
    })
}

fn purchase_lines(lines: &[Fee]) -> Vec<pb::PurchaseLine> {
    lines
        .iter()
        .map(|(no, code, qty, price)| pb::PurchaseLine {
            line_no: (*no).into(),
            code: (*code).into(),
            name: item_name(code).into(),
            quantity: (*qty).into(),
            unit_price: (*price).into(),
        })
        .collect()
}

async fn swipe(
    pharmacy: &Caller,
    card: &str,
    insurance: InsuranceType,
    lines: &[Fee],
) -> Result<pb::Purchase, tonic::Status> {
    pharmacy
        .pharm()
        .settle_purchase(pb::SettlePurchaseRequest {
            request_id: rid(),
            credential: card_of(card),
            insurance_type: insurance as i32,
            lines: purchase_lines(lines),
            use_account: true,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The per-line split of an upload.
fn fee_line_table(title: &str, lines: &[pb::FeeLineResult]) -> anyhow::Result<()> {
    let mut rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            vec![
                l.line_no.clone(),
                l.code.clone(),
                l.amount.clone(),
                short!(pb::CatalogueClass, l.class, "CATALOGUE_CLASS_"),
                or_dash(&l.price_cap).to_owned(),
                or_dash(&l.b_self_pay_ratio).to_owned(),
                l.fulamt_ownpay_amt.clone(),
                l.overlmt_selfpay.clone(),
                l.preselfpay_amt.clone(),
                l.inscp_scp_amt.clone(),
                item_name(&l.code).to_owned(),
            ]
        })
        .collect();
    left_align(&mut rows, 1);
    table(
        title,
        &[
            "line",
            "code",
            "amount",
            "class",
            "cap",
            "B ratio",
            "fully self",
            "over cap",
            "first self",
            "in scope",
            "item",
        ],
        rows,
    )
}

fn purchase_line_table(title: &str, lines: &[pb::PurchaseLineResult]) -> anyhow::Result<()> {
    table(
        title,
        &[
            "line",
            "code",
            "qty",
            "price",
            "amount",
            "class",
            "fully self",
            "over cap",
            "first self",
            "in scope",
            "refunded",
            "item",
        ],
        lines
            .iter()
            .map(|l| {
                vec![
                    l.line_no.clone(),
                    l.code.clone(),
                    l.quantity.clone(),
                    l.unit_price.clone(),
                    l.amount.clone(),
                    short!(pb::CatalogueClass, l.class, "CATALOGUE_CLASS_"),
                    l.fulamt_ownpay_amt.clone(),
                    l.overlmt_selfpay.clone(),
                    l.preselfpay_amt.clone(),
                    l.inscp_scp_amt.clone(),
                    l.refunded_quantity.clone(),
                    item_name(&l.code).to_owned(),
                ]
            })
            .collect(),
    )
}

/// The money fields of a settlement: NHSA name and meaning.
const MONEY: [(&str, &str); 14] = [
    ("medfee_sumamt", "医疗费总额"),
    ("fulamt_ownpay_amt", "全自费 (class C, unlisted)"),
    ("overlmt_selfpay", "超限价自费"),
    ("preselfpay_amt", "先行自付 (class B)"),
    ("inscp_scp_amt", "符合政策范围"),
    ("act_pay_dedc", "起付线"),
    ("hifp_pay", "统筹基金"),
    ("hifmi_pay", "大病保险"),
    ("maf_pay", "医疗救助"),
    ("fund_pay_sumamt", "基金支付合计"),
    ("psn_part_amt", "个人负担"),
    ("acct_pay", "个人账户支付"),
    ("psn_cash_pay", "现金支付"),
    ("balance_after", "账户余额"),
];

/// The value of a [`MONEY`] field ("-" when empty).
fn money<'a>(s: &'a pb::Settlement, field: &str) -> &'a str {
    let v = match field {
        "medfee_sumamt" => &s.medfee_sumamt,
        "fulamt_ownpay_amt" => &s.fulamt_ownpay_amt,
        "overlmt_selfpay" => &s.overlmt_selfpay,
        "preselfpay_amt" => &s.preselfpay_amt,
        "inscp_scp_amt" => &s.inscp_scp_amt,
        "act_pay_dedc" => &s.act_pay_dedc,
        "hifp_pay" => &s.hifp_pay,
        "hifmi_pay" => &s.hifmi_pay,
        "maf_pay" => &s.maf_pay,
        "fund_pay_sumamt" => &s.fund_pay_sumamt,
        "psn_part_amt" => &s.psn_part_amt,
        "acct_pay" => &s.acct_pay,
        "psn_cash_pay" => &s.psn_cash_pay,
        "balance_after" => &s.balance_after,
        _ => "",
    };
    or_dash(v)
}

fn breakdown_table(title: &str, s: &pb::Settlement) -> anyhow::Result<()> {
    let mut rows: Vec<Vec<String>> = MONEY
        .iter()
        .map(|(k, m)| row([k, money(s, k), m]))
        .collect();
    rows.extend(
        s.funds
            .iter()
            .map(|f| row([&format!("  fund {}", f.fund_pay_type), &f.amount, &f.name])),
    );
    table(
        &format!(
            "{title}: {} ({} -> {}, clearing period {})",
            s.setl_id, s.home_region, s.treatment_region, s.clearing_period
        ),
        &["field", "amount", "meaning"],
        rows,
    )
}

fn filing_text(f: Option<&pb::AppliedFiling>) -> String {
    f.map_or_else(
        || "none (unfiled)".into(),
        |f| {
            format!(
                "{} {} -> {} {}..{}",
                f.filing_id,
                short!(pb::FilingType, f.filing_type, "FILING_TYPE_"),
                f.destination,
                f.valid_from,
                f.valid_until
            )
        },
    )
}

fn explanation_table(s: &pb::Settlement) -> anyhow::Result<()> {
    let Some(x) = &s.explanation else {
        return say("(no explanation)\n");
    };
    let versions: Vec<String> = x
        .catalogue_versions
        .iter()
        .map(|v| format!("v{v}"))
        .collect();
    let before = x.before.as_ref().map_or_else(String::new, |b| {
        format!(
            "pooled fund {}, burden {}, critical illness {}, admissions {}",
            b.pooled_fund, b.in_scope_burden, b.critical_illness, b.admissions
        )
    });
    let repeat = if x.repeat_admission {
        " (repeat admission)"
    } else {
        ""
    };
    kv(
        "Explanation: the rules and figures that produced it",
        &[
            (
                "policy",
                format!("{} v{} (home region)", x.policy_region, x.policy_version),
            ),
            (
                "catalogue",
                format!(
                    "{} {} (treatment region)",
                    s.treatment_region,
                    versions.join(" ")
                ),
            ),
            ("filing", filing_text(x.filing.as_ref())),
            (
                "level, province",
                format!(
                    "{}, {}",
                    short!(pb::LevelScope, x.level, "LEVEL_SCOPE_"),
                    short!(pb::ProvinceScope, x.province, "PROVINCE_SCOPE_")
                ),
            ),
            (
                "ratio",
                format!(
                    "{} -> {} ({})",
                    x.base_ratio, x.effective_ratio, x.reduction
                ),
            ),
            (
                "deductible",
                format!(
                    "{} outstanding, {}{repeat}",
                    x.deductible_outstanding,
                    short!(pb::DeductibleBasis, x.deductible_basis, "DEDUCTIBLE_BASIS_")
                ),
            ),
            (
                "annual cap left",
                or_dash(&x.annual_cap_remaining).to_owned(),
            ),
            ("year to date before", before),
        ],
    )
}

/// Settlements side by side.
fn compare_table(title: &str, cols: &[(&str, &pb::Settlement)]) -> anyhow::Result<()> {
    let mut header = vec!["field"];
    header.extend(cols.iter().map(|(h, _)| *h));
    let mut rows = Vec::new();
    let mut push = |name: &str, f: &dyn Fn(&pb::Settlement) -> String| {
        let mut r = vec![name.to_owned()];
        r.extend(cols.iter().map(|(_, s)| f(s)));
        rows.push(r);
    };
    push("setl_id", &|s| s.setl_id.clone());
    push("kind", &|s| {
        short!(pb::SettlementKind, s.kind, "SETTLEMENT_KIND_")
    });
    push("reverses", &|s| or_dash(&s.reverses).to_owned());
    push("fee lines", &|s| s.line_count.to_string());
    for (k, _) in MONEY {
        push(k, &|s| money(s, k).to_owned());
    }
    push("clearing_period", &|s| s.clearing_period.clone());
    table(title, &header, rows)
}

// ------------------------------------------------------------------------------ walk-through

const WANG_STAY: [Fee; 14] = [
    ("1", BED, "7", "55.00"),
    ("2", "111100001", "2", "280.00"),
    ("3", "120100001", "7", "28.00"),
    ("4", "250101015", "3", "25.00"),
    ("5", "210300001", "1", "280.00"),
    ("6", "310701001", "4", "22.00"),
    ("7", "330803011", "1", "5800.00"),
    ("8", "C02010100100", "2", "798.00"),
    ("9", "XJ01DDA001", "14", "11.50"),
    ("10", "XC10AAA001", "28", "3.20"),
    ("11", "XB01ACA001", "30", "0.15"),
    ("12", "XB05BBA001", "14", "3.50"),
    ("13", "120400001", "14", "8.00"),
    ("14", "XV06DXX001", "1", "68.00"),
];

const WANG_PURCHASE: [Fee; 4] = [
    ("1", "XA10BAA001", "60", "0.28"),
    ("2", "XC10AAA001", "28", "3.20"),
    ("3", "ZA01AAA001", "24", "0.55"),
    ("4", "XV06DXX001", "1", "45.00"),
];

/// Line 5 is the CT entered twice by mistake.
const ZHAO_STAY: [Fee; 11] = [
    ("1", BED, "10", "45.00"),
    ("2", "120100001", "10", "28.00"),
    ("3", "250101015", "4", "25.00"),
    ("4", "210300001", "1", "260.00"),
    ("5", "210300001", "1", "260.00"),
    ("6", "331505001", "1", "5200.00"),
    ("7", "C03010200300", "1", "8600.00"),
    ("8", "XJ01DDA001", "10", "11.50"),
    ("9", "XB05BBA001", "20", "2.80"),
    ("10", "120400001", "20", "8.00"),
    ("11", "XN02BEA001", "20", "0.12"),
];

/// What the walk-through settled that the clearing part reads.
struct Walk {
    inpatient: pb::Settlement,
}

async fn walk_through(p: &Principals, cast: &Cast) -> anyhow::Result<Walk> {
    let wang = cast.get("wang")?;
    let zhao = cast.get("zhao")?;
    let ordos_h = p.inst(&hospital(ORDOS, 3))?;
    let hohhot_h = p.inst(&hospital(HOHHOT, 3))?;
    let ordos_p = p.inst(&pharmacy(ORDOS))?;
    let nx_p = p.inst(&pharmacy(SHIZUISHAN))?;

    section(&format!(
        "1. Eligibility (2001): {} of Wuhai, filed to Ordos, at Ordos's level-3 hospital {}",
        wang.name,
        hospital(ORDOS, 3)
    ))?;
    let e = ordos_h
        .setl()
        .check_eligibility(pb::CheckEligibilityRequest {
            credential: by_card(&wang.card_no),
            insurance_type: wang.insurance as i32,
            care_type: CareType::Inpatient as i32,
            service_date: String::new(),
        })
        .await
        .answer("CheckEligibility")?;
    let insurances: Vec<String> = e
        .insurances
        .iter()
        .map(|i| {
            format!(
                "{}/{}/{}",
                i.insurance_type,
                short!(pb::PersonCategory, i.category, "PERSON_CATEGORY_"),
                short!(pb::PersonStatus, i.status, "PERSON_STATUS_")
            )
        })
        .collect();
    kv(
        "CheckEligibility (card, employee insurance, inpatient): what the hospital sees",
        &[
            ("psn_no", e.psn_no.clone()),
            (
                "name, national ID",
                format!("{} {}", e.name_masked, e.national_id_masked),
            ),
            ("home region", e.home_region.clone()),
            ("insurances", insurances.join(" ")),
            ("allowed", e.allowed.to_string()),
            ("filing", filing_text(e.filing.as_ref())),
            ("effective ratio", e.effective_ratio.clone()),
            ("deductible outstanding", e.deductible_outstanding.clone()),
            (
                "annual cap remaining",
                or_dash(&e.annual_cap_remaining).to_owned(),
            ),
            ("account balance", or_dash(&e.account_balance).to_owned()),
            ("policy version", format!("v{}", e.policy_version)),
        ],
    )?;
    if !e.allowed {
        bail!(
            "the eligibility check refused: {} {}",
            e.refusal_rule,
            e.refusal_detail
        );
    }

    section(&format!(
        "2. Inpatient stay at {} (PCI with two stents): admit, upload 14 fee lines, discharge, settle with the personal account",
        hospital(ORDOS, 3)
    ))?;
    let stay = hospital_visit(
        ordos_h,
        Visit {
            credential: by_card(&wang.card_no),
            insurance: wang.insurance,
            care: CareType::Inpatient,
            diagnoses: &["I21.0", "I10"],
            lines: &WANG_STAY,
            use_account: true,
        },
    )
    .await?;
    fee_line_table(
        &format!(
            "UploadFeeLines {}: the split per line (treatment region's catalogue)",
            stay.mdtrt_id
        ),
        &stay.uploaded.lines,
    )?;
    breakdown_table(
        "Settle: the breakdown (home region's policy)",
        &stay.settlement,
    )?;
    explanation_table(&stay.settlement)?;

    section(&format!(
        "3. Pharmacy inside the province: {}'s Wuhai card at {} in Ordos",
        wang.name,
        pharmacy(ORDOS)
    ))?;
    let purchase = swipe(ordos_p, &wang.card_no, wang.insurance, &WANG_PURCHASE)
        .await
        .map_err(|s| rpc_error("SettlePurchase in Ordos", &s))?;
    let bought = purchase
        .settlement
        .clone()
        .context("SettlePurchase answered no settlement")?;
    purchase_line_table("SettlePurchase: the lines", &purchase.lines)?;
    breakdown_table("SettlePurchase: the breakdown", &bought)?;

    section(&format!(
        "4. Pharmacy outside the province: the same card at {} in Shizuishan (Ningxia)",
        pharmacy(SHIZUISHAN)
    ))?;
    let holder = nx_p
        .pharm()
        .lookup_card(pb::LookupCardRequest {
            credential: card_of(&wang.card_no),
        })
        .await
        .answer("LookupCard")?;
    let refused = match swipe(nx_p, &wang.card_no, wang.insurance, &WANG_PURCHASE).await {
        Ok(p) => bail!(
            "the swipe outside the province was booked ({}): expected pharmacy_out_of_province",
            p.settlement.map(|s| s.setl_id).unwrap_or_default()
        ),
        Err(s) => s,
    };
    if refused.code() != tonic::Code::FailedPrecondition {
        return Err(rpc_error("SettlePurchase in Shizuishan", &refused));
    }
    table(
        "Refused, nothing booked",
        &["call", "answer", "rule", "detail"],
        vec![
            row([
                "LookupCard",
                &format!("allowed={}", holder.allowed),
                or_dash(&holder.refusal_rule),
                "",
            ]),
            row([
                "SettlePurchase",
                &code_name(refused.code()),
                &rule_of(&refused),
                refused.message(),
            ]),
        ],
    )?;

    section(&format!(
        "5. Across provinces: {} of Beijing, referred by {} to Hohhot, at {} (hip replacement)",
        zhao.name,
        hospital(BEIJING, 3),
        hospital(HOHHOT, 3)
    ))?;
    let zstay = hospital_visit(
        hohhot_h,
        Visit {
            credential: by_evoucher(&zhao.evoucher),
            insurance: zhao.insurance,
            care: CareType::Inpatient,
            diagnoses: &["S72.0", "M16.1"],
            lines: &ZHAO_STAY,
            use_account: true,
        },
    )
    .await?;
    fee_line_table(
        "UploadFeeLines (by e-voucher): the split per line",
        &zstay.uploaded.lines,
    )?;
    breakdown_table("Settle: the breakdown", &zstay.settlement)?;
    explanation_table(&zstay.settlement)?;

    section(
        "6. Reversal: the hospital finds the CT entered twice (line 5); it reverses, deletes the line and settles again",
    )?;
    let mut hc = hohhot_h.setl();
    let reversal = hc
        .reverse_settlement(pb::ReverseSettlementRequest {
            request_id: rid(),
            setl_id: zstay.settlement.setl_id.clone(),
            reason: "CT entered twice".into(),
        })
        .await
        .answer("ReverseSettlement")?;
    let deleted = hc
        .delete_fee_lines(pb::DeleteFeeLinesRequest {
            request_id: rid(),
            mdtrt_id: zstay.mdtrt_id.clone(),
            line_nos: vec!["5".into()],
        })
        .await
        .answer("DeleteFeeLines")?;
    let corrected = hc
        .settle(pb::SettleRequest {
            request_id: rid(),
            mdtrt_id: zstay.mdtrt_id.clone(),
            use_account: true,
            expected_total: String::new(),
        })
        .await
        .answer("Settle (corrected)")?;
    compare_table(
        &format!(
            "ReverseSettlement, DeleteFeeLines ({} deleted), Settle: every amount negated, then the corrected bill",
            deleted.deleted
        ),
        &[
            ("original", &zstay.settlement),
            ("reversal", &reversal),
            ("corrected", &corrected),
        ],
    )?;

    section(&format!(
        "7. Refund: {} returns 12 of the 24 连花清瘟 capsules (line 3) to {}",
        wang.name,
        pharmacy(ORDOS)
    ))?;
    let refund = ordos_p
        .pharm()
        .refund_purchase(pb::RefundPurchaseRequest {
            request_id: rid(),
            setl_id: bought.setl_id.clone(),
            lines: vec![pb::RefundLine {
                line_no: "3".into(),
                quantity: "12".into(),
            }],
            reason: "returned unopened".into(),
        })
        .await
        .answer("RefundPurchase")?;
    let refunded = refund
        .settlement
        .clone()
        .context("RefundPurchase answered no settlement")?;
    compare_table(
        "RefundPurchase: a negative mirror of the refunded part, its own setl_id",
        &[("purchase", &bought), ("refund", &refunded)],
    )?;

    Ok(Walk {
        inpatient: stay.settlement,
    })
}

// ------------------------------------------------------------------------------ the month

/// Who did what for the rest of the month, and the answer.
struct Booked {
    key: &'static str,
    where_: String,
    settlement: pb::Settlement,
}

struct Month {
    booked: Vec<Booked>,
}

impl Month {
    fn setl(&self, key: &str) -> anyhow::Result<&pb::Settlement> {
        self.booked
            .iter()
            .find(|b| b.key == key)
            .map(|b| &b.settlement)
            .ok_or_else(|| anyhow!("{key} settled nothing"))
    }
}

/// One background settlement: a hospital visit or a swipe.
enum Job {
    Hospital {
        key: &'static str,
        at: String,
        care: CareType,
        diagnoses: &'static [&'static str],
        lines: &'static [Fee],
    },
    Swipe {
        key: &'static str,
        at: String,
        lines: &'static [Fee],
    },
}

const PNEUMONIA: [Fee; 7] = [
    ("1", BED, "6", "35.00"),
    ("2", "120100001", "6", "20.00"),
    ("3", "250101015", "2", "25.00"),
    ("4", "210300001", "1", "230.00"),
    ("5", "XJ01DDA001", "12", "11.50"),
    ("6", "XB05BBA001", "12", "3.00"),
    ("7", "120400001", "12", "8.00"),
];

const LUNG_SURGERY: [Fee; 10] = [
    ("1", BED, "24", "45.00"),
    ("2", "111100001", "10", "290.00"),
    ("3", "120100001", "24", "28.00"),
    ("4", "330703004", "1", "8800.00"),
    ("5", "XL01CDA001", "36", "480.00"),
    ("6", "210300001", "3", "260.00"),
    ("7", "250101015", "8", "25.00"),
    ("8", "XB05BBA001", "40", "3.00"),
    ("9", "120400001", "40", "8.00"),
    ("10", "C14010100100", "40", "2.50"),
];

const DIABETES: [Fee; 6] = [
    ("1", BED, "8", "40.00"),
    ("2", "120100001", "8", "24.00"),
    ("3", "250101015", "4", "25.00"),
    ("4", "XA10BAA001", "48", "0.28"),
    ("5", "XC08CAA001", "16", "1.10"),
    ("6", "310701001", "2", "22.00"),
];

const CHEST_PAIN: [Fee; 6] = [
    ("1", BED, "5", "40.00"),
    ("2", "120100001", "5", "24.00"),
    ("3", "310701001", "3", "22.00"),
    ("4", "210300001", "1", "260.00"),
    ("5", "XB01ACA001", "30", "0.15"),
    ("6", "XC10AAA001", "14", "3.20"),
];

const OUTPATIENT: [Fee; 4] = [
    ("1", "110200001", "1", "10.00"),
    ("2", "210300001", "1", "260.00"),
    ("3", "XJ01CAA001", "24", "0.55"),
    ("4", "XN02BEA001", "10", "0.12"),
];

const CLINIC: [Fee; 3] = [
    ("1", "110200001", "1", "8.00"),
    ("2", "XJ01CAA001", "24", "0.50"),
    ("3", "XN02BEA001", "10", "0.12"),
];

const BEIJING_STAY: [Fee; 7] = [
    ("1", BED, "9", "60.00"),
    ("2", "120100001", "9", "30.00"),
    ("3", "330803011", "1", "6000.00"),
    ("4", "C02010100100", "1", "760.00"),
    ("5", "250101015", "4", "25.00"),
    ("6", "XC10AAA001", "28", "3.40"),
    ("7", "XB01ACA001", "30", "0.15"),
];

const BLOOD_PRESSURE: [Fee; 2] = [
    ("1", "XC08CAA001", "28", "1.05"),
    ("2", "XB01ACA001", "30", "0.15"),
];

const COLD: [Fee; 3] = [
    ("1", "ZA01AAA001", "24", "0.45"),
    ("2", "XN02BEA001", "20", "0.12"),
    ("3", "XV06DXX001", "1", "39.00"),
];

/// The rest of the month, so that the month's clearing has something to clear: nine more
/// settlements between the regions, made concurrently.
async fn rest_of_month(p: &Principals, cast: &Cast) -> anyhow::Result<Month> {
    use CareType::{Inpatient, Outpatient};
    section("8. The rest of the month: more of the cast are treated away from home")?;
    let jobs = vec![
        Job::Hospital {
            key: "liu",
            at: hospital(WUHAI, 2),
            care: Inpatient,
            diagnoses: &["J18.9"],
            lines: &PNEUMONIA,
        },
        Job::Swipe {
            key: "liu",
            at: pharmacy(WUHAI),
            lines: &BLOOD_PRESSURE,
        },
        Job::Hospital {
            key: "qimuge",
            at: hospital(HOHHOT, 3),
            care: Inpatient,
            diagnoses: &["C34.9"],
            lines: &LUNG_SURGERY,
        },
        Job::Swipe {
            key: "gao",
            at: pharmacy(ORDOS),
            lines: &COLD,
        },
        Job::Hospital {
            key: "ma",
            at: hospital(ORDOS, 2),
            care: Inpatient,
            diagnoses: &["E11.9"],
            lines: &DIABETES,
        },
        Job::Hospital {
            key: "li",
            at: hospital(ORDOS, 2),
            care: Inpatient,
            diagnoses: &["R07.4"],
            lines: &CHEST_PAIN,
        },
        Job::Hospital {
            key: "sun",
            at: hospital(ORDOS, 3),
            care: Outpatient,
            diagnoses: &["J20.9"],
            lines: &OUTPATIENT,
        },
        Job::Hospital {
            key: "bateer",
            at: hospital(ALXA, 1),
            care: Outpatient,
            diagnoses: &["J06.9"],
            lines: &CLINIC,
        },
        Job::Hospital {
            key: "zhang",
            at: hospital(BEIJING, 3),
            care: Inpatient,
            diagnoses: &["I25.1"],
            lines: &BEIJING_STAY,
        },
        Job::Swipe {
            key: "wuyun",
            at: pharmacy(HOHHOT),
            lines: &COLD,
        },
    ];
    let runs = jobs.iter().map(|job| async move {
        let (key, at) = match job {
            Job::Hospital { key, at, .. } | Job::Swipe { key, at, .. } => (*key, at.clone()),
        };
        let who = cast.get(key)?;
        let inst = p.inst(&at)?;
        let settlement = match job {
            Job::Hospital {
                care,
                diagnoses,
                lines,
                ..
            } => {
                hospital_visit(
                    inst,
                    Visit {
                        credential: by_id(&who.national_id),
                        insurance: who.insurance,
                        care: *care,
                        diagnoses,
                        lines,
                        use_account: true,
                    },
                )
                .await?
                .settlement
            }
            Job::Swipe { lines, .. } => swipe(inst, &who.card_no, who.insurance, lines)
                .await
                .map_err(|s| rpc_error(&format!("SettlePurchase at {at}"), &s))?
                .settlement
                .context("SettlePurchase answered no settlement")?,
        };
        anyhow::Ok(Booked {
            key,
            where_: at,
            settlement,
        })
    });
    let booked = futures::future::try_join_all(runs).await?;
    let mut rows = Vec::new();
    for b in &booked {
        let s = &b.settlement;
        let who = cast.get(b.key)?;
        let reduction = s.explanation.as_ref().map_or_else(String::new, |x| {
            format!("{} {}", x.effective_ratio, x.reduction)
        });
        rows.push(vec![
            s.home_region.clone(),
            b.where_.clone(),
            short!(pb::CareType, s.care_type, "CARE_TYPE_"),
            s.medfee_sumamt.clone(),
            s.inscp_scp_amt.clone(),
            s.act_pay_dedc.clone(),
            s.hifp_pay.clone(),
            s.hifmi_pay.clone(),
            s.maf_pay.clone(),
            s.acct_pay.clone(),
            s.psn_cash_pay.clone(),
            format!("{} — {reduction}", who.name),
        ]);
    }
    table(
        "Settle / SettlePurchase answers",
        &[
            "home",
            "at",
            "care",
            "medfee",
            "in scope",
            "deductible",
            "pooled",
            "CI",
            "assist",
            "account",
            "cash",
            "who — ratio and why",
        ],
        rows,
    )?;
    Ok(Month { booked })
}

fn statement_rows(ss: &[pb::Statement]) -> Vec<Vec<String>> {
    ss.iter()
        .map(|s| {
            vec![
                s.statement_id.clone(),
                s.home_region.clone(),
                s.treatment_region.clone(),
                short!(pb::ClearingType, s.clearing_type, "CLEARING_TYPE_"),
                s.line_count.to_string(),
                s.medfee_sumamt.clone(),
                s.fund_pay_sumamt.clone(),
                s.acct_pay.clone(),
                s.due.clone(),
                s.disputed_count.to_string(),
                s.disputed_due.clone(),
                short!(pb::StatementStatus, s.status, "STATEMENT_STATUS_"),
            ]
        })
        .collect()
}

const STATEMENT_HEADER: [&str; 12] = [
    "statement",
    "home",
    "treat",
    "type",
    "lines",
    "medfee",
    "fund",
    "account",
    "due",
    "disputed",
    "disp. due",
    "status",
];

async fn statements(op: &Caller, period: &str) -> anyhow::Result<Vec<pb::Statement>> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = op
            .clr()
            .list_statements(pb::ListStatementsRequest {
                period: period.into(),
                page_size: 1000,
                page_token,
            })
            .await
            .answer("ListStatements")?;
        out.extend(page.statements);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

fn period_line(p: &pb::ClearingPeriod) -> String {
    format!(
        "period {}: {} ({} statements, {} confirmed; confirm by {})",
        p.period,
        short!(pb::PeriodStatus, p.status, "PERIOD_STATUS_"),
        p.statements,
        p.confirmed_statements,
        or_dash(&p.confirm_deadline)
    )
}

/// The month's clearing, business time moved to the first day the month may close.
async fn clearing(p: &Principals, app: &App, walk: &Walk, month: &Month) -> anyhow::Result<()> {
    let op = &p.operator;
    let period = walk.inpatient.clearing_period.clone();
    section(&format!(
        "9. Monthly clearing of {period}: prepayments, close, statements, a dispute, confirmations, netting, transfers"
    ))?;
    let today = business_date(app.clock.now());
    let mut rows = Vec::new();
    for (region, amount) in [(BEIJING, "20000.00"), (SHIZUISHAN, "1000.00")] {
        let pre = p
            .bureau(region)
            .clr()
            .deposit_prepayment(pb::DepositPrepaymentRequest {
                request_id: rid(),
                region: region.into(),
                amount: amount.into(),
                bank_reference: format!("PRE-{region}-{period}"),
                value_date: today.to_string(),
            })
            .await
            .answer("DepositPrepayment")?;
        rows.push(vec![
            pre.region,
            amount.to_owned(),
            pre.balance,
            pre.deposit_id,
        ]);
    }
    table(
        "DepositPrepayment (earlier in the month): bureaus that expect to pay deposit 预付金",
        &["region", "deposited", "balance", "deposit"],
        rows,
    )?;

    let next = NaiveDate::parse_from_str(&format!("{period}01"), "%Y%m%d")
        .with_context(|| format!("period {period}"))?
        + chrono::Months::new(1);
    let second = next + chrono::Days::new(1);
    let days = (second - today).num_days();
    if days > 0 {
        app.clock.advance(chrono::Duration::days(days));
    }
    say(&format!(
        "\n(demo: business time moved to {} — a month closes from the 2nd of the next month, UTC+8)\n",
        business_date(app.clock.now())
    ))?;

    let closed = op
        .clr()
        .close_period(pb::ClosePeriodRequest {
            request_id: rid(),
            period: period.clone(),
            confirm_days: 0,
            deadline_action: 0,
        })
        .await
        .answer("ClosePeriod")?;
    say(&format!("\nClosePeriod: {}\n", period_line(&closed)))?;
    let listed = statements(op, &period).await?;
    table(
        "ListStatements: one per (home, treatment, clearing type); due = fund + account",
        &STATEMENT_HEADER,
        statement_rows(&listed),
    )?;

    // Wuhai disputes 李红梅's stay in Ordos; the Ordos bureau accepts it into next month.
    let disputed = month.setl("li")?;
    let st = listed
        .iter()
        .find(|s| {
            s.home_region == disputed.home_region
                && s.treatment_region == disputed.treatment_region
                && s.clearing_type == pb::ClearingType::Inpatient as i32
        })
        .context("no statement holds the stay to dispute")?;
    let after = p
        .bureau(&disputed.home_region)
        .clr()
        .dispute_lines(pb::DisputeLinesRequest {
            request_id: rid(),
            statement_id: st.statement_id.clone(),
            lines: vec![pb::DisputedLine {
                setl_id: disputed.setl_id.clone(),
                reason: "admission papers missing from the referral".into(),
            }],
        })
        .await
        .answer("DisputeLines")?;
    let resolved = p
        .bureau(&disputed.treatment_region)
        .clr()
        .resolve_dispute(pb::ResolveDisputeRequest {
            request_id: rid(),
            statement_id: st.statement_id.clone(),
            setl_id: disputed.setl_id.clone(),
            accept: true,
            note: "papers received; to be cleared next month".into(),
        })
        .await
        .answer("ResolveDispute")?;
    let line = resolved.line.unwrap_or_default();
    table(
        &format!(
            "DisputeLines by {} on {}, ResolveDispute by {}",
            disputed.home_region, st.statement_id, disputed.treatment_region
        ),
        &[
            "setl_id",
            "due",
            "state",
            "stmt due",
            "stmt disputed",
            "reason",
        ],
        vec![vec![
            line.setl_id.clone(),
            line.due.clone(),
            short!(pb::DisputeState, line.dispute_state, "DISPUTE_STATE_"),
            after.due.clone(),
            after.disputed_due.clone(),
            format!("{} / {}", line.dispute_reason, line.resolution_note),
        ]],
    )?;

    for s in &listed {
        p.bureau(&s.home_region)
            .clr()
            .confirm_statement(pb::ConfirmStatementRequest {
                request_id: rid(),
                statement_id: s.statement_id.clone(),
            })
            .await
            .answer("ConfirmStatement")?;
    }
    let confirmed = statements(op, &period).await?;
    table(
        "ConfirmStatement by every home bureau: the figures, frozen (the disputed line left out)",
        &STATEMENT_HEADER,
        statement_rows(&confirmed),
    )?;

    let netting = op
        .clr()
        .net_period(pb::NetPeriodRequest {
            request_id: rid(),
            period: period.clone(),
        })
        .await
        .answer("NetPeriod")?;
    if let Some(np) = &netting.period {
        say(&format!("\nNetPeriod: {}\n", period_line(np)))?;
    }
    table(
        "Net positions (receivable − payable; they sum to 0.00), prepayment drawn first",
        &[
            "region",
            "payable",
            "receivable",
            "net",
            "prepay before",
            "drawn",
            "prepay after",
            "warning line",
            "top up",
        ],
        netting
            .positions
            .iter()
            .map(|x| {
                vec![
                    x.region.clone(),
                    x.payable.clone(),
                    x.receivable.clone(),
                    x.net.clone(),
                    x.prepay_before.clone(),
                    x.prepay_drawn.clone(),
                    x.prepay_after.clone(),
                    x.warning_line.clone(),
                    x.top_up.to_string(),
                ]
            })
            .collect(),
    )?;
    let instructions = |n: &[pb::TransferInstruction]| -> Vec<Vec<String>> {
        n.iter()
            .map(|i| {
                vec![
                    i.instruction_id.clone(),
                    i.payer.clone(),
                    i.receiver.clone(),
                    i.amount.clone(),
                    i.prepay.clone(),
                    i.bank.clone(),
                    i.recorded.to_string(),
                    or_dash(&i.bank_reference).to_owned(),
                    or_dash(&i.value_date).to_owned(),
                ]
            })
            .collect()
    };
    let header = [
        "instruction",
        "payer",
        "receiver",
        "amount",
        "prepay",
        "bank",
        "recorded",
        "reference",
        "value date",
    ];
    table(
        "Transfer instructions (at most bureaus − 1)",
        &header,
        instructions(&netting.instructions),
    )?;

    let value_date = business_date(app.clock.now()).to_string();
    for i in netting.instructions.iter().filter(|i| !i.recorded) {
        p.bureau(&i.payer)
            .clr()
            .record_transfer(pb::RecordTransferRequest {
                request_id: rid(),
                instruction_id: i.instruction_id.clone(),
                amount: i.bank.clone(),
                bank_reference: format!("{}-{}-{:03}", i.payer, period, i.seq),
                value_date: value_date.clone(),
            })
            .await
            .answer("RecordTransfer")?;
    }
    let settled = op
        .clr()
        .get_netting(pb::GetNettingRequest {
            period: period.clone(),
        })
        .await
        .answer("GetNetting")?;
    table(
        "RecordTransfer by each paying bureau (its bank part)",
        &header,
        instructions(&settled.instructions),
    )?;
    let status = settled.period.context("GetNetting answered no period")?;
    say(&format!(
        "\n{} (settled at {})\n",
        period_line(&status),
        or_dash(&status.settled_at)
    ))?;
    if status.status != pb::PeriodStatus::Settled as i32 {
        bail!("period {period} is not SETTLED after every transfer");
    }
    Ok(())
}

async fn verify(p: &Principals) -> anyhow::Result<()> {
    section("Verify: the books")?;
    let v = p
        .operator
        .led()
        .verify(pb::VerifyRequest {})
        .await
        .answer("Verify")?;
    table(
        "LedgerService.Verify",
        &["check", "ok", "detail"],
        v.checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    if c.ok { "ok" } else { "FAIL" }.to_owned(),
                    c.detail.clone(),
                ]
            })
            .collect(),
    )?;
    if !v.ok {
        bail!("verify failed: see the checks above");
    }
    say("\nverify: ok, every check passed\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_valid_and_ids_check() {
        for r in &REGIONS {
            let body = policy_body(&r.policy);
            assert_eq!(body.rules.len(), 24, "{}", r.code);
            let policy = crate::grpc::convert::parse_policy(Some(&body)).expect("parses");
            policy.validate().expect("a valid policy");
            for i in [0, 5, 7, 894, 895, 899] {
                let (req, _) = population_person(r, i).expect("a person");
                crate::domain::ids::NationalId::parse("id", &req.national_id).expect("valid ID");
            }
        }
        assert_eq!(ratio(8500), "0.85");
        assert_eq!(
            without_password("postgres://u:secret@h:5432/d?x=1"),
            "postgres://u:***@h:5432/d?x=1"
        );
        assert_eq!(without_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(ratio(9050), "0.905");
        assert_eq!(ratio(10_000), "1.00");
        assert_eq!(
            code_name(tonic::Code::FailedPrecondition),
            "FAILED_PRECONDITION"
        );
        assert_eq!(
            short!(
                pb::LevelScope,
                pb::LevelScope::Level3 as i32,
                "LEVEL_SCOPE_"
            ),
            "LEVEL_3"
        );
    }
}
