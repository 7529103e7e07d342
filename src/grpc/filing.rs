//! FilingService.

use super::{Ctx, GrpcResult, convert, mutating, respond};
use crate::domain::filing::Destination;
use crate::domain::ids::InstitutionCode;
use crate::domain::kinds::FilingType;
use crate::domain::time::parse_opt_date;
use crate::proto::filing_service_server::FilingService;
use crate::proto::*;
use crate::service::{filings, text};
use tonic::{Request, Response};

mutating!(FileFilingRequest, RevokeFilingRequest);

#[tonic::async_trait]
impl FilingService for Ctx {
    async fn file_filing(&self, req: Request<FileFilingRequest>) -> GrpcResult<Filing> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let cmd = filings::File {
                psn_no: r.psn_no.clone(),
                filing_type: FilingType::parse("filing_type", r.filing_type)?,
                destination: Destination::parse("destination", &r.destination)?,
                valid_from: parse_opt_date("valid_from", &r.valid_from)?,
                valid_until: parse_opt_date("valid_until", &r.valid_until)?,
                referring_institution: (!r.referring_institution.is_empty())
                    .then(|| {
                        InstitutionCode::parse("referring_institution", &r.referring_institution)
                    })
                    .transpose()?,
            };
            filings::file(conn, &call.principal, cmd, now)
                .await
                .map(convert::filing)
        });
        respond(out)
    }

    async fn get_filing(&self, req: Request<GetFilingRequest>) -> GrpcResult<Filing> {
        let (who, mut conn) = self.read(&req).await?;
        respond(
            filings::get(&mut conn, &who, &req.get_ref().filing_id, false)
                .await
                .map(convert::filing),
        )
    }

    async fn list_filings(
        &self,
        req: Request<ListFilingsRequest>,
    ) -> GrpcResult<ListFilingsResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let rows = filings::list(&mut conn, &who, &r.psn_no, r.include_revoked).await?;
        Ok(Response::new(ListFilingsResponse {
            filings: rows.into_iter().map(convert::filing).collect(),
        }))
    }

    async fn revoke_filing(&self, req: Request<RevokeFilingRequest>) -> GrpcResult<Filing> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let reason = text("reason", &r.reason, 256)?;
            filings::revoke(conn, &call.principal, &r.filing_id, &reason, now)
                .await
                .map(convert::filing)
        });
        respond(out)
    }
}
