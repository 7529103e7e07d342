//! LedgerService.

use super::{Ctx, GrpcResult, convert};
use crate::domain::money::Amount;
use crate::proto::ledger_service_server::LedgerService;
use crate::proto::*;
use crate::service::ledger;
use tonic::{Request, Response};

#[tonic::async_trait]
impl LedgerService for Ctx {
    async fn get_balance(&self, req: Request<GetBalanceRequest>) -> GrpcResult<Balance> {
        let (who, mut conn) = self.read(&req).await?;
        let account = req.get_ref().account.clone();
        let (fen, entries) = ledger::balance(&mut conn, &who, &account).await?;
        Ok(Response::new(Balance {
            account,
            balance: Amount::from_fen(fen).to_string(),
            entries: u64::try_from(entries).unwrap_or(0),
        }))
    }

    async fn list_journal(
        &self,
        req: Request<ListJournalRequest>,
    ) -> GrpcResult<ListJournalResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let page = ledger::journal(&mut conn, &who, &r.account, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListJournalResponse {
            transactions: page
                .items
                .into_iter()
                .map(|(t, e)| convert::journal_tx(t, e))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn verify(&self, req: Request<VerifyRequest>) -> GrpcResult<VerifyResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let report = ledger::verify(&mut conn, &who).await?;
        Ok(Response::new(VerifyResponse {
            ok: report.ok(),
            checks: report
                .checks
                .into_iter()
                .map(|c| VerifyCheck {
                    name: c.name.to_owned(),
                    ok: c.ok,
                    detail: c.detail,
                })
                .collect(),
        }))
    }

    async fn list_audit(&self, req: Request<ListAuditRequest>) -> GrpcResult<ListAuditResponse> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let page = ledger::audit(&mut conn, &who, &r.principal, r.page_size, &r.page_token).await?;
        Ok(Response::new(ListAuditResponse {
            records: page.items.into_iter().map(convert::audit).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
