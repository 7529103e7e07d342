//! The one mechanism every mutating RPC goes through: request-id idempotency, one database
//! transaction, retry on transient conflicts, and an audit record of every outcome.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use super::App;
use crate::domain::ids::RequestId;
use crate::store::access::{self, AuditRow, IdempotencyRow};
use crate::store::{Conn, StoreError};
use chrono::{DateTime, Utc};

/// A mutating call as the service sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub principal: Principal,
    /// Full RPC path, e.g. "/medsettle.v1.RegistryService/EnrolPerson".
    pub rpc: &'static str,
    /// The caller's request id, as sent (validated here).
    pub request_id: String,
    /// SHA-256 of the request payload without its request id.
    pub payload_hash: [u8; 32],
}

/// Attempts of one call when the database reports a transient conflict.
const MAX_ATTEMPTS: u32 = 8;

impl App {
    /// Runs `work` in one transaction under the call's request id. A replay with the same
    /// payload returns the stored first answer; a different payload is ALREADY_EXISTS. Any error
    /// rolls everything back; every outcome is audited.
    pub async fn mutate<R, F>(&self, call: &Call, mut work: F) -> AppResult<R>
    where
        R: prost::Message + Default,
        F: AsyncFnMut(&mut Conn, DateTime<Utc>) -> AppResult<R>,
    {
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.attempt(call, &mut work).await {
                Err(AppError::Retry(why)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, %why, "transient conflict; retrying");
                    let backoff = 2u64.pow(attempt.min(6)) + u64::from(rand::random::<u8>() % 8);
                    tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
                }
                other => break other,
            }
        };
        match &result {
            Ok((_, Replayed(true))) => self.audit_alone(call, "OK", "replay").await,
            Ok(_) => {}
            Err(e) => self.audit_alone(call, e.code_name(), &e.to_string()).await,
        }
        result.map(|(r, _)| r)
    }

    async fn attempt<R, F>(&self, call: &Call, work: &mut F) -> AppResult<(R, Replayed)>
    where
        R: prost::Message + Default,
        F: AsyncFnMut(&mut Conn, DateTime<Utc>) -> AppResult<R>,
    {
        let request_id = RequestId::parse("request_id", &call.request_id)?;
        let principal = call.principal.key();
        let mut conn = self.db.begin().await?;
        if let Some(first) = access::find_idempotent(&mut conn, &principal, request_id.as_str()).await? {
            conn.rollback().await?;
            return replay(call, first).map(|r| (r, Replayed(true)));
        }
        let now = Utc::now();
        let response = work(&mut conn, now).await?;
        let row = IdempotencyRow {
            rpc: call.rpc.to_owned(),
            payload_hash: call.payload_hash.to_vec(),
            response: response.encode_to_vec(),
        };
        access::insert_idempotent(&mut conn, &principal, request_id.as_str(), &row, now)
            .await
            .map_err(|e| match e {
                // A concurrent call with the same request id committed first: run again to
                // replay its answer.
                StoreError::Unique { .. } => AppError::Retry("concurrent request id".into()),
                other => other.into(),
            })?;
        access::insert_audit(&mut conn, &audit_row(call, "OK", "", now)).await?;
        conn.commit().await?;
        Ok((response, Replayed(false)))
    }

    /// Audits a failure (or a replay) in its own short transaction: the call's own transaction
    /// wrote nothing. A failure to audit is logged, not returned.
    async fn audit_alone(&self, call: &Call, outcome: &str, detail: &str) {
        let row = audit_row(call, outcome, detail, Utc::now());
        let result = async {
            let mut conn = self.db.begin().await?;
            access::insert_audit(&mut conn, &row).await?;
            conn.commit().await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, rpc = call.rpc, "could not write audit record");
        }
    }
}

/// Whether the answer came from the idempotency store.
struct Replayed(bool);

fn replay<R: prost::Message + Default>(call: &Call, first: IdempotencyRow) -> AppResult<R> {
    if first.rpc != call.rpc || first.payload_hash != call.payload_hash {
        return Err(AppError::AlreadyExists(format!(
            "request_id {:?} was already used for a different request ({}); use a new request id",
            call.request_id, first.rpc
        )));
    }
    R::decode(first.response.as_slice())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored response does not decode: {e}")))
}

/// Most characters of a failure message kept in the audit log.
const DETAIL_MAX: usize = 500;

fn audit_row(call: &Call, outcome: &str, detail: &str, at: DateTime<Utc>) -> AuditRow {
    AuditRow {
        audit_id: crate::store::new_id("A", at),
        principal: call.principal.key(),
        rpc: call.rpc.to_owned(),
        request_id: call.request_id.chars().take(64).collect(),
        outcome: outcome.to_owned(),
        detail: detail.chars().take(DETAIL_MAX).collect(),
        at,
    }
}
