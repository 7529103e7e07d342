//! RegistryService: regions, institutions, persons, catalogue, policies.

use super::{Ctx, GrpcResult, convert, mutating, respond};
use crate::domain::DomainResult;
use crate::domain::ids::{
    CardNo, EVoucherToken, InstitutionCode, NationalId, PersonName, ProvinceCode, RegionCode,
};
use crate::domain::kinds::{
    CardStatus, CatalogueClass, CatalogueKind, InstitutionKind, InstitutionStatus, InsuranceType,
    PersonCategory, PersonStatus,
};
use crate::domain::money::{Amount, Ratio, UnitPrice};
use crate::domain::time::{business_date, parse_date, parse_date_or, parse_opt_date};
use crate::proto::registry_service_server::RegistryService;
use crate::proto::*;
use crate::service::persons::{BatchItem, Lookup};
use crate::service::{
    AppError, catalogue, institutions, persons, policies, regions, required_text, text,
};
use crate::store::catalogue::CatalogueRow;
use tonic::{Request, Response};

mutating!(
    CreateRegionRequest,
    RegisterInstitutionRequest,
    RegisterInstitutionsRequest,
    UpdateInstitutionRequest,
    EnrolPersonRequest,
    EnrolPersonsRequest,
    SetPersonStatusRequest,
    SetCardStatusRequest,
    DepositPersonalAccountRequest,
    UpsertCatalogueRequest,
    PutPolicyRequest,
);

/// Optional free text: "" = None.
fn opt_text(field: &str, s: &str, max: usize) -> Result<Option<String>, AppError> {
    let t = text(field, s, max)?;
    Ok(if t.is_empty() { None } else { Some(t) })
}

/// Parses and checks a catalogue item of an upsert call, its fields named `{prefix}{field}`
/// ("items[3]." in UpsertCatalogue; `medsettle import catalogue` checks rows with "").
pub fn catalogue_row(prefix: &str, item: &CatalogueItem) -> Result<CatalogueRow, AppError> {
    let f = |name: &str| format!("{prefix}{name}");
    let code = item.code.as_str();
    if code.is_empty()
        || code.len() > 50
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(AppError::invalid(
            f("code"),
            "1..50 letters, digits, '.', '-' or '_'",
        ));
    }
    let class = CatalogueClass::parse(&f("class"), item.class)?;
    let b_ratio_bp = match (class, item.b_self_pay_ratio.as_str()) {
        (CatalogueClass::B, "") => {
            return Err(AppError::invalid(
                f("b_self_pay_ratio"),
                "required for class B",
            ));
        }
        (CatalogueClass::B, r) => Some(Ratio::parse(&f("b_self_pay_ratio"), r)?.to_bp()),
        (_, "") => None,
        (_, _) => {
            return Err(AppError::invalid(
                f("b_self_pay_ratio"),
                "only class B items have one",
            ));
        }
    };
    let cap_micros = if item.price_cap.is_empty() {
        None
    } else {
        Some(UnitPrice::parse(&f("price_cap"), &item.price_cap)?.to_micros())
    };
    Ok(CatalogueRow {
        region: String::new(),
        code: code.to_owned(),
        effective_from: parse_date(&f("effective_from"), &item.effective_from)?,
        name: required_text(&f("name"), &item.name, 200)?,
        kind: CatalogueKind::parse(&f("kind"), item.kind)?.code(),
        class: class.code(),
        b_ratio_bp,
        cap_micros,
        version: 0,
    })
}

/// An EnrolPerson request as a command (fields parsed, rules not yet checked).
fn enrol_command(r: &EnrolPersonRequest) -> Result<persons::Enrol, AppError> {
    let insurances = r
        .insurances
        .iter()
        .enumerate()
        .map(|(i, ins)| {
            Ok((
                InsuranceType::parse(
                    &format!("insurances[{i}].insurance_type"),
                    ins.insurance_type,
                )?,
                PersonCategory::parse(&format!("insurances[{i}].category"), ins.category)?,
            ))
        })
        .collect::<DomainResult<Vec<_>>>()?;
    Ok(persons::Enrol {
        national_id: NationalId::parse("national_id", &r.national_id)?,
        name: PersonName::parse("name", &r.name)?,
        home_region: RegionCode::parse("home_region", &r.home_region)?,
        insurances,
        card_no: (!r.card_no.is_empty())
            .then(|| CardNo::parse("card_no", &r.card_no))
            .transpose()?,
        evoucher: (!r.evoucher_token.is_empty())
            .then(|| EVoucherToken::parse("evoucher_token", &r.evoucher_token))
            .transpose()?,
        assistance_recipient: r.assistance_recipient,
        opening_balance: if r.opening_balance.is_empty() {
            Amount::zero()
        } else {
            Amount::parse_non_negative("opening_balance", &r.opening_balance)?
        },
    })
}

/// A RegisterInstitution request as a command; valid_from "" is `today`.
fn register_command(
    r: &RegisterInstitutionRequest,
    today: chrono::NaiveDate,
) -> Result<institutions::Register, AppError> {
    let valid_from = parse_date_or("valid_from", &r.valid_from, today)?;
    Ok(institutions::Register {
        code: InstitutionCode::parse("code", &r.code)?,
        name: required_text("name", &r.name, 200)?,
        region: RegionCode::parse("region", &r.region)?,
        kind: InstitutionKind::parse("kind", r.kind)?,
        level: r.level,
        cross_region_enabled: r.cross_region_enabled,
        valid_from,
        valid_until: parse_opt_date("valid_until", &r.valid_until)?,
    })
}

/// The answers of a batch call: one result per item, and the count of each outcome
/// (created, already existing, rejected).
fn batch_results(items: Vec<BatchItem>) -> (Vec<BatchItemResult>, [u32; 3]) {
    let mut counts = [0u32; 3];
    let results = items
        .into_iter()
        .map(|item| match item {
            BatchItem::Created(key) => {
                counts[0] += 1;
                BatchItemResult {
                    outcome: BatchItemOutcome::Created as i32,
                    key,
                    ..Default::default()
                }
            }
            BatchItem::Exists { field, reason } => {
                counts[1] += 1;
                BatchItemResult {
                    outcome: BatchItemOutcome::AlreadyExists as i32,
                    field,
                    reason,
                    ..Default::default()
                }
            }
            BatchItem::Rejected { field, error } => {
                counts[2] += 1;
                let code = error.code_name().to_owned();
                let reason = match error {
                    AppError::Invalid { reason, .. } => reason,
                    other => other.to_string(),
                };
                BatchItemResult {
                    outcome: BatchItemOutcome::Rejected as i32,
                    key: String::new(),
                    field,
                    reason,
                    code,
                }
            }
        })
        .collect();
    (results, counts)
}

fn lookup(key: &Option<get_person_request::Key>) -> DomainResult<Lookup> {
    use get_person_request::Key;
    match key {
        Some(Key::PsnNo(p)) if !p.is_empty() => Ok(Lookup::PsnNo(p.clone())),
        Some(Key::NationalId(n)) => NationalId::parse("national_id", n).map(Lookup::NationalId),
        Some(Key::CardNo(c)) => CardNo::parse("card_no", c).map(Lookup::CardNo),
        Some(Key::EvoucherToken(e)) => {
            EVoucherToken::parse("evoucher_token", e).map(Lookup::EVoucher)
        }
        _ => Err(crate::domain::DomainError::invalid(
            "key",
            "give psn_no, national_id, card_no or evoucher_token",
        )),
    }
}

#[tonic::async_trait]
impl RegistryService for Ctx {
    async fn create_region(&self, req: Request<CreateRegionRequest>) -> GrpcResult<Region> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let cmd = regions::CreateRegion {
                code: RegionCode::parse("code", &r.code)?,
                name: opt_text("name", &r.name, 100)?,
                bureau_name: opt_text("bureau_name", &r.bureau_name, 100)?,
            };
            regions::create(conn, &call.principal, cmd, now)
                .await
                .map(convert::region)
        });
        respond(out)
    }

    async fn get_region(&self, req: Request<GetRegionRequest>) -> GrpcResult<Region> {
        let (_, mut conn) = self.read(&req).await?;
        respond(
            regions::get(&mut conn, &req.get_ref().code)
                .await
                .map(convert::region),
        )
    }

    async fn list_regions(
        &self,
        req: Request<ListRegionsRequest>,
    ) -> GrpcResult<ListRegionsResponse> {
        let (_, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let province = if r.province_code.is_empty() {
            None
        } else {
            Some(ProvinceCode::parse("province_code", &r.province_code).map_err(AppError::from)?)
        };
        let page = regions::list(&mut conn, province, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListRegionsResponse {
            regions: page.items.into_iter().map(convert::region).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn register_institution(
        &self,
        req: Request<RegisterInstitutionRequest>,
    ) -> GrpcResult<Institution> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let cmd = register_command(&r, business_date(self.app.clock.now()))?;
            institutions::register(conn, &call.principal, cmd)
                .await
                .map(convert::institution)
        });
        respond(out)
    }

    async fn register_institutions(
        &self,
        req: Request<RegisterInstitutionsRequest>,
    ) -> GrpcResult<RegisterInstitutionsResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let today = business_date(self.app.clock.now());
            let items = r
                .institutions
                .iter()
                .map(|i| register_command(i, today))
                .collect();
            let outcomes = institutions::register_batch(conn, &call.principal, items).await?;
            let (results, [created, already_existing, rejected]) = batch_results(outcomes);
            Ok(RegisterInstitutionsResponse {
                results,
                created,
                already_existing,
                rejected,
            })
        });
        respond(out)
    }

    async fn update_institution(
        &self,
        req: Request<UpdateInstitutionRequest>,
    ) -> GrpcResult<Institution> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let code = InstitutionCode::parse("code", &r.code)?;
            let cmd = institutions::Update {
                name: r
                    .name
                    .as_deref()
                    .map(|n| required_text("name", n, 200))
                    .transpose()?,
                status: r
                    .status
                    .map(|s| InstitutionStatus::parse("status", s))
                    .transpose()?,
                cross_region_enabled: r.cross_region_enabled,
                valid_until: r
                    .valid_until
                    .as_deref()
                    .map(|u| parse_opt_date("valid_until", u))
                    .transpose()?,
            };
            institutions::update(conn, &call.principal, &code, cmd)
                .await
                .map(convert::institution)
        });
        respond(out)
    }

    async fn get_institution(
        &self,
        req: Request<GetInstitutionRequest>,
    ) -> GrpcResult<Institution> {
        let (who, mut conn) = self.read(&req).await?;
        respond(
            institutions::get(&mut conn, &who, &req.get_ref().code)
                .await
                .map(convert::institution),
        )
    }

    async fn list_institutions(
        &self,
        req: Request<ListInstitutionsRequest>,
    ) -> GrpcResult<ListInstitutionsResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let region = if r.region.is_empty() {
            None
        } else {
            Some(RegionCode::parse("region", &r.region).map_err(AppError::from)?)
        };
        let kind = if r.kind == 0 {
            None
        } else {
            Some(InstitutionKind::parse("kind", r.kind).map_err(AppError::from)?)
        };
        let page =
            institutions::list(&mut conn, &who, region, kind, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListInstitutionsResponse {
            institutions: page.items.into_iter().map(convert::institution).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn enrol_person(&self, req: Request<EnrolPersonRequest>) -> GrpcResult<Person> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let cmd = enrol_command(&r)?;
            persons::enrol(conn, &call.principal, cmd, now)
                .await
                .map(|p| convert::person(&call.principal, p))
        });
        respond(out)
    }

    async fn enrol_persons(
        &self,
        req: Request<EnrolPersonsRequest>,
    ) -> GrpcResult<EnrolPersonsResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let items = r.persons.iter().map(enrol_command).collect();
            let outcomes = persons::enrol_batch(conn, &call.principal, items, now).await?;
            let (results, [created, already_existing, rejected]) = batch_results(outcomes);
            Ok(EnrolPersonsResponse {
                results,
                created,
                already_existing,
                rejected,
            })
        });
        respond(out)
    }

    async fn get_person(&self, req: Request<GetPersonRequest>) -> GrpcResult<Person> {
        let (who, mut conn) = self.read(&req).await?;
        let key = lookup(&req.get_ref().key).map_err(AppError::from)?;
        respond(
            persons::get(&mut conn, &who, &key)
                .await
                .map(|p| convert::person(&who, p)),
        )
    }

    async fn list_persons(
        &self,
        req: Request<ListPersonsRequest>,
    ) -> GrpcResult<ListPersonsResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let region = RegionCode::parse("home_region", &r.home_region).map_err(AppError::from)?;
        let page = persons::list(&mut conn, &who, &region, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListPersonsResponse {
            persons: page
                .items
                .into_iter()
                .map(|p| convert::person(&who, p))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn set_person_status(&self, req: Request<SetPersonStatusRequest>) -> GrpcResult<Person> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let status = PersonStatus::parse("status", r.status)?;
            let ins = if r.insurance_type == 0 {
                None
            } else {
                Some(InsuranceType::parse("insurance_type", r.insurance_type)?)
            };
            text("reason", &r.reason, 256)?;
            persons::set_status(conn, &call.principal, &r.psn_no, status, ins)
                .await
                .map(|p| convert::person(&call.principal, p))
        });
        respond(out)
    }

    async fn set_card_status(&self, req: Request<SetCardStatusRequest>) -> GrpcResult<Person> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let status = CardStatus::parse("card_status", r.card_status)?;
            let new_card = (!r.new_card_no.is_empty())
                .then(|| CardNo::parse("new_card_no", &r.new_card_no))
                .transpose()?;
            persons::set_card(conn, &call.principal, &r.psn_no, status, new_card)
                .await
                .map(|p| convert::person(&call.principal, p))
        });
        respond(out)
    }

    async fn deposit_personal_account(
        &self,
        req: Request<DepositPersonalAccountRequest>,
    ) -> GrpcResult<DepositPersonalAccountResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let amount = Amount::parse_non_negative("amount", &r.amount)?;
            let memo = text("memo", &r.memo, 256)?;
            let (balance, journal_id) =
                persons::deposit(conn, &call.principal, &r.psn_no, amount, memo, now).await?;
            Ok(DepositPersonalAccountResponse {
                psn_no: r.psn_no.clone(),
                balance: Amount::from_fen(balance).to_string(),
                journal_id,
            })
        });
        respond(out)
    }

    async fn upsert_catalogue(
        &self,
        req: Request<UpsertCatalogueRequest>,
    ) -> GrpcResult<UpsertCatalogueResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let region = RegionCode::parse("region", &r.region)?;
            let rows = r
                .items
                .iter()
                .enumerate()
                .map(|(i, item)| catalogue_row(&format!("items[{i}]."), item))
                .collect::<Result<Vec<_>, _>>()?;
            let (version, written) =
                catalogue::upsert(conn, &call.principal, &region, rows).await?;
            Ok(UpsertCatalogueResponse {
                region: r.region.clone(),
                version: u64::try_from(version).unwrap_or(0),
                written: u32::try_from(written).unwrap_or(u32::MAX),
            })
        });
        respond(out)
    }

    async fn get_catalogue_item(
        &self,
        req: Request<GetCatalogueItemRequest>,
    ) -> GrpcResult<CatalogueItem> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let region = RegionCode::parse("region", &r.region).map_err(AppError::from)?;
        let on = parse_date_or("on_date", &r.on_date, business_date(self.app.clock.now()))
            .map_err(AppError::from)?;
        respond(
            catalogue::get(&mut conn, &who, &region, &r.code, on)
                .await
                .map(convert::catalogue_item),
        )
    }

    async fn search_catalogue(
        &self,
        req: Request<SearchCatalogueRequest>,
    ) -> GrpcResult<SearchCatalogueResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let region = RegionCode::parse("region", &r.region).map_err(AppError::from)?;
        let on = parse_date_or("on_date", &r.on_date, business_date(self.app.clock.now()))
            .map_err(AppError::from)?;
        let query = text("query", &r.query, 100)?;
        let page = catalogue::search(
            &mut conn,
            &who,
            &region,
            &query,
            on,
            r.page_size,
            &r.page_token,
        )
        .await?;
        Ok(Response::new(SearchCatalogueResponse {
            items: page
                .items
                .into_iter()
                .map(convert::catalogue_item)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn put_policy(&self, req: Request<PutPolicyRequest>) -> GrpcResult<PolicyVersion> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let region = RegionCode::parse("region", &r.region)?;
            let from = parse_date("effective_from", &r.effective_from)?;
            let policy = convert::parse_policy(r.body.as_ref())?;
            policies::put(conn, &call.principal, &region, from, policy, now)
                .await
                .map(convert::policy_version)
        });
        respond(out)
    }

    async fn get_policy(&self, req: Request<GetPolicyRequest>) -> GrpcResult<PolicyVersion> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let region = RegionCode::parse("region", &r.region).map_err(AppError::from)?;
        let on = parse_date_or("on_date", &r.on_date, business_date(self.app.clock.now()))
            .map_err(AppError::from)?;
        let version = (r.version > 0).then(|| i64::try_from(r.version).unwrap_or(i64::MAX));
        respond(
            policies::get(&mut conn, &who, &region, on, version)
                .await
                .map(convert::policy_version),
        )
    }

    async fn list_policy_versions(
        &self,
        req: Request<ListPolicyVersionsRequest>,
    ) -> GrpcResult<ListPolicyVersionsResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let region = RegionCode::parse("region", &req.get_ref().region).map_err(AppError::from)?;
        let versions = policies::versions(&mut conn, &who, &region).await?;
        Ok(Response::new(ListPolicyVersionsResponse {
            versions: versions.into_iter().map(convert::policy_version).collect(),
        }))
    }
}
