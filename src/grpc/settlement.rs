//! SettlementService: the hospital flow.

use super::{Ctx, GrpcResult, convert, mutating, respond};
use crate::domain::ids::{CardNo, EVoucherToken, Icd10Code, NationalId};
use crate::domain::kinds::{CareType, InsuranceType};
use crate::domain::money::{Amount, Quantity, UnitPrice};
use crate::domain::time::{business_date, parse_date, parse_date_or, parse_opt_date};
use crate::domain::{DomainError, DomainResult};
use crate::proto::settlement_service_server::SettlementService;
use crate::proto::*;
use crate::service::settlement::lines::{self, NewLine};
use crate::service::settlement::visits::{self, Credential};
use crate::service::settlement::{eligibility, query, reverse, settle};
use crate::service::{AppError, required_text, text};
use crate::store::settlement::SettlementFilter;
use tonic::{Request, Response};

mutating!(
    OpenVisitRequest,
    UpdateVisitRequest,
    DischargeVisitRequest,
    CancelVisitRequest,
    UploadFeeLinesRequest,
    DeleteFeeLinesRequest,
    SettleRequest,
    ReverseSettlementRequest,
    ReverseByRequestIdRequest,
);

/// Most diagnoses on a visit.
const MAX_DIAGNOSES: usize = 20;

fn credential(c: &Option<PatientCredential>) -> DomainResult<Credential> {
    use patient_credential::Credential as C;
    match c.as_ref().and_then(|c| c.credential.as_ref()) {
        Some(C::NationalId(n)) => {
            NationalId::parse("credential.national_id", n).map(Credential::NationalId)
        }
        Some(C::CardNo(n)) => CardNo::parse("credential.card_no", n).map(Credential::CardNo),
        Some(C::EvoucherToken(t)) => {
            EVoucherToken::parse("credential.evoucher_token", t).map(Credential::EVoucher)
        }
        None => Err(DomainError::invalid(
            "credential",
            "give national_id, card_no or evoucher_token",
        )),
    }
}

fn diagnoses(codes: &[String], required: bool) -> DomainResult<Vec<Icd10Code>> {
    if codes.len() > MAX_DIAGNOSES || (required && codes.is_empty()) {
        return Err(DomainError::invalid(
            "diagnoses",
            format!("1..{MAX_DIAGNOSES} ICD-10 codes"),
        ));
    }
    codes
        .iter()
        .enumerate()
        .map(|(i, c)| Icd10Code::parse(&format!("diagnoses[{i}]"), c))
        .collect()
}

fn visit_no(s: &str) -> DomainResult<String> {
    if s.is_empty() || s.len() > 50 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DomainError::invalid(
            "visit_no",
            "1..50 printable ASCII characters",
        ));
    }
    Ok(s.to_owned())
}

/// One fee line, its fields named bare (the caller names the line: [`super::in_line`]).
fn new_line(l: &FeeLine) -> Result<NewLine, AppError> {
    Ok(NewLine {
        line_no: super::line_no("line_no", &l.line_no)?,
        code: super::item_code("code", &l.code)?,
        name: text("name", &l.name, 200)?,
        quantity: Quantity::parse("quantity", &l.quantity)?,
        unit_price: UnitPrice::parse("unit_price", &l.unit_price)?,
        fee_date: parse_opt_date("fee_date", &l.fee_date)?,
        refund_of: (!l.refund_of.is_empty()).then(|| l.refund_of.clone()),
    })
}

#[tonic::async_trait]
impl SettlementService for Ctx {
    async fn check_eligibility(
        &self,
        req: Request<CheckEligibilityRequest>,
    ) -> GrpcResult<Eligibility> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let parsed = (|| {
            Ok::<_, DomainError>((
                credential(&r.credential)?,
                InsuranceType::parse("insurance_type", r.insurance_type)?,
                CareType::parse("care_type", r.care_type)?,
                parse_date_or(
                    "service_date",
                    &r.service_date,
                    business_date(self.app.clock.now()),
                )?,
            ))
        })()
        .map_err(AppError::from)?;
        let (c, t, care, date) = parsed;
        respond(
            eligibility::check(&mut conn, &who, &c, t, care, date)
                .await
                .map(convert::eligibility),
        )
    }

    async fn open_visit(&self, req: Request<OpenVisitRequest>) -> GrpcResult<Visit> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let cmd = visits::Open {
                credential: credential(&r.credential)?,
                visit_no: visit_no(&r.visit_no)?,
                insurance_type: InsuranceType::parse("insurance_type", r.insurance_type)?,
                care_type: CareType::parse("care_type", r.care_type)?,
                diagnoses: diagnoses(&r.diagnoses, true)?,
                begin_date: parse_date_or(
                    "begin_date",
                    &r.begin_date,
                    business_date(self.app.clock.now()),
                )?,
            };
            visits::open(conn, &call.principal, cmd, now)
                .await
                .map(convert::visit)
        });
        respond(out)
    }

    async fn update_visit(&self, req: Request<UpdateVisitRequest>) -> GrpcResult<Visit> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let d = diagnoses(&r.diagnoses, true)?;
            visits::update(conn, &call.principal, &r.mdtrt_id, d)
                .await
                .map(convert::visit)
        });
        respond(out)
    }

    async fn discharge_visit(&self, req: Request<DischargeVisitRequest>) -> GrpcResult<Visit> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let end = parse_date_or("end_date", &r.end_date, business_date(self.app.clock.now()))?;
            let d = diagnoses(&r.diagnoses, false)?;
            visits::discharge(conn, &call.principal, &r.mdtrt_id, end, d)
                .await
                .map(convert::visit)
        });
        respond(out)
    }

    async fn cancel_visit(&self, req: Request<CancelVisitRequest>) -> GrpcResult<Visit> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            visits::cancel(conn, &call.principal, &r.mdtrt_id)
                .await
                .map(convert::visit)
        });
        respond(out)
    }

    async fn get_visit(&self, req: Request<GetVisitRequest>) -> GrpcResult<Visit> {
        let (who, mut conn) = self.read(&req).await?;
        respond(
            visits::get(&mut conn, &who, &req.get_ref().mdtrt_id)
                .await
                .map(convert::visit),
        )
    }

    async fn upload_fee_lines(
        &self,
        req: Request<UploadFeeLinesRequest>,
    ) -> GrpcResult<UploadFeeLinesResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let new = r
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| new_line(l).map_err(|e| super::in_line(i, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let (stored, total) = lines::upload(conn, &call.principal, &r.mdtrt_id, new).await?;
            Ok(UploadFeeLinesResponse {
                lines: stored.into_iter().map(convert::fee_line).collect(),
                unsettled_total: total.to_string(),
            })
        });
        respond(out)
    }

    async fn delete_fee_lines(
        &self,
        req: Request<DeleteFeeLinesRequest>,
    ) -> GrpcResult<DeleteFeeLinesResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, _now| {
            let n = lines::delete(conn, &call.principal, &r.mdtrt_id, &r.line_nos).await?;
            Ok(DeleteFeeLinesResponse {
                deleted: u32::try_from(n).unwrap_or(u32::MAX),
            })
        });
        respond(out)
    }

    async fn pre_settle(&self, req: Request<PreSettleRequest>) -> GrpcResult<Settlement> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        respond(
            settle::pre_settle(
                &mut conn,
                &who,
                &r.mdtrt_id,
                r.use_account,
                self.app.clock.now(),
            )
            .await
            .map(convert::settlement),
        )
    }

    async fn settle(&self, req: Request<SettleRequest>) -> GrpcResult<Settlement> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let expected = (!r.expected_total.is_empty())
                .then(|| Amount::parse_non_negative("expected_total", &r.expected_total))
                .transpose()?;
            settle::settle(
                conn,
                &call.principal,
                &r.mdtrt_id,
                r.use_account,
                expected,
                &call.request_id,
                now,
            )
            .await
            .map(convert::settlement)
        });
        respond(out)
    }

    async fn reverse_settlement(
        &self,
        req: Request<ReverseSettlementRequest>,
    ) -> GrpcResult<Settlement> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            text("reason", &r.reason, 256)?;
            reverse::reverse(conn, &call.principal, &r.setl_id, &call.request_id, now)
                .await
                .map(convert::settlement)
        });
        respond(out)
    }

    async fn reverse_by_request_id(
        &self,
        req: Request<ReverseByRequestIdRequest>,
    ) -> GrpcResult<ReverseByRequestIdResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let original = required_text("original_request_id", &r.original_request_id, 64)?;
            if original == call.request_id {
                return Err(AppError::invalid(
                    "original_request_id",
                    "must differ from this call's request_id",
                ));
            }
            let rev = reverse::reverse_by_request(
                conn,
                &call.principal,
                &original,
                &call.request_id,
                now,
            )
            .await?;
            Ok(ReverseByRequestIdResponse {
                found: rev.is_some(),
                reversal: rev.map(convert::settlement),
            })
        });
        respond(out)
    }

    async fn get_settlement(&self, req: Request<GetSettlementRequest>) -> GrpcResult<Settlement> {
        let (who, mut conn) = self.read(&req).await?;
        use get_settlement_request::Key;
        let found = match &req.get_ref().key {
            Some(Key::SetlId(id)) => query::get(&mut conn, &who, id).await,
            Some(Key::RequestId(rid)) => query::by_request(&mut conn, &who, rid).await,
            None => Err(AppError::invalid("key", "give setl_id or request_id")),
        };
        respond(found.map(convert::settlement))
    }

    async fn list_settlements(
        &self,
        req: Request<ListSettlementsRequest>,
    ) -> GrpcResult<ListSettlementsResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        use list_settlements_request::Filter;
        let filter = match &r.filter {
            Some(Filter::MdtrtId(m)) => SettlementFilter::Visit(m.clone()),
            Some(Filter::PsnNo(p)) => SettlementFilter::Person(p.clone()),
            Some(Filter::InstitutionDay(d)) => SettlementFilter::InstitutionDay(
                d.institution.clone(),
                parse_date("institution_day.date", &d.date).map_err(AppError::from)?,
            ),
            None => {
                return Err(AppError::invalid(
                    "filter",
                    "give mdtrt_id, psn_no or institution_day",
                )
                .into());
            }
        };
        let page = query::list(&mut conn, &who, filter, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListSettlementsResponse {
            settlements: page.items.into_iter().map(convert::settlement).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
