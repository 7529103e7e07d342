//! The one mechanism every mutating RPC goes through: request-id idempotency, one database
//! transaction, retry on transient conflicts, and an audit record of every outcome.

use super::App;
use super::auth::Principal;
use super::error::{AppError, AppResult};
use crate::domain::ids::RequestId;
use crate::store::access::{self, AuditRow, IdempotencyRow};
use crate::store::{Committed, Conn, Db};
use chrono::{DateTime, Utc};

/// A mutating call as the service sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub principal: Principal,
    /// Full RPC path, e.g. "/medsettle.v1.RegistryService/EnrolPerson".
    pub rpc: String,
    /// The caller's request id, as sent (validated here).
    pub request_id: String,
    /// SHA-256 of the request payload without its request id.
    pub payload_hash: [u8; 32],
}

/// Attempts of one call when the database reports a transient conflict.
pub const MAX_ATTEMPTS: u32 = 8;

/// How a mutating call starts: with the stored first answer, or with a fresh transaction.
pub enum Begun {
    Replay(IdempotencyRow),
    Fresh(Conn, DateTime<Utc>),
}

/// Runs a mutating call: `mutate!(app, &call, |conn, now| { …body returning AppResult<R>… })`.
///
/// Under the call's request id a replay with the same payload returns the stored first answer;
/// a different payload is ALREADY_EXISTS. The body runs in one transaction (`conn`), retried on
/// transient conflicts; any error rolls everything back; every outcome is audited. On SQLite
/// each attempt runs in a lane (`store::Lane`), and the call waits for its commit to be durable
/// after leaving it. A macro rather than a closure-taking function: the body is an inline
/// `async` block, so the handler's future stays `Send` without boxing or cloning the request
/// per attempt.
#[macro_export]
macro_rules! mutate {
    ($app:expr, $call:expr, |$conn:ident, $now:ident| $body:block) => {{
        let app: &$crate::service::App = &$app;
        let call: &$crate::service::mutate::Call = $call;
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            let once = match app.db.lane().await {
                Err(e) => Err(e.into()),
                Ok(lane) => {
                    lane.run(async {
                        match app.begin_call(call).await {
                            Ok($crate::service::mutate::Begun::Replay(first)) => {
                                $crate::service::mutate::replay(call, first)
                                    .map(|r| (r, true, None))
                            }
                            Ok($crate::service::mutate::Begun::Fresh(mut conn, $now)) => {
                                let out: $crate::service::AppResult<_> = async {
                                    let $conn = &mut conn;
                                    $body
                                }
                                .await;
                                match out {
                                    Ok(response) => app
                                        .finish_call(call, conn, &response, $now)
                                        .await
                                        .map(|c| (response, false, Some(c))),
                                    Err(e) => Err(e),
                                }
                            }
                            Err(e) => Err(e),
                        }
                    })
                    .await
                }
            };
            // Durable outside the lane: the fsync is shared, and the lane free for the next.
            let once = match once {
                Ok((response, replayed, committed)) => {
                    if let Some(c) = committed {
                        c.durable().await;
                    }
                    Ok((response, replayed))
                }
                Err(e) => Err(e),
            };
            match once {
                Err($crate::service::AppError::Retry(why))
                    if attempt < $crate::service::mutate::MAX_ATTEMPTS =>
                {
                    app.back_off(attempt, &why).await;
                }
                other => break other,
            }
        };
        app.after_call(call, result).await
    }};
}

impl App {
    /// Claims the request id inside a new transaction, or returns the first answer stored
    /// under it. The claim is the first write of the transaction, so a concurrent twin waits on
    /// it and then replays the committed answer (or, if this call fails, runs itself).
    pub async fn begin_call(&self, call: &Call) -> AppResult<Begun> {
        let request_id = RequestId::parse("request_id", &call.request_id)?;
        let mut conn = self.db.begin().await?;
        let principal = call.principal.key();
        // Microseconds: what both engines store, so an answer equals what is read back later.
        let now = self.clock.now();
        let claimed = access::claim_idempotent(
            &mut conn,
            &self.db.request_ids(),
            &principal,
            request_id.as_str(),
            &call.rpc,
            &call.payload_hash,
            now,
        )
        .await?;
        if claimed {
            return Ok(Begun::Fresh(conn, now));
        }
        let first = access::find_idempotent(&mut conn, &principal, request_id.as_str())
            .await?
            .ok_or_else(|| AppError::Retry("request id claim vanished".into()))?;
        conn.rollback().await?;
        Ok(Begun::Replay(first))
    }

    /// Stores the answer under the claimed request id, audits success, commits (durable once
    /// the returned commit is).
    pub async fn finish_call<R: prost::Message>(
        &self,
        call: &Call,
        mut conn: Conn,
        response: &R,
        now: DateTime<Utc>,
    ) -> AppResult<Committed> {
        let principal = call.principal.key();
        // The settlement this call booked, if any: found by its request id through this row.
        let setl_id = conn.first_booked().map(str::to_owned);
        access::complete_idempotent(
            &mut conn,
            &self.db.request_ids(),
            &principal,
            &call.request_id,
            &response.encode_to_vec(),
            setl_id.as_deref(),
        )
        .await?;
        access::insert_audit(&mut conn, &audit_row(call, "OK", "", now)).await?;
        let booked = conn.take_booked();
        let committed = conn.commit_lazily().await?;
        // Only a committed transaction's settlements count (a retried attempt's never do).
        for b in &booked {
            self.metrics.booked(b);
        }
        tracing::info!(outcome = "OK", "mutation committed");
        Ok(committed)
    }

    /// Waits before the next attempt after a transient conflict (exponential, jittered).
    pub async fn back_off(&self, attempt: u32, why: &str) {
        tracing::debug!(attempt, why, "transient conflict; retrying");
        let ms = 2u64.pow(attempt.min(6)) + u64::from(rand::random::<u8>() % 8);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }

    /// Audits failures and replays (successes were audited inside their transaction).
    pub async fn after_call<R>(&self, call: &Call, result: AppResult<(R, bool)>) -> AppResult<R> {
        match result {
            Ok((r, replayed)) => {
                if replayed {
                    self.audit_alone(call, "OK", "replay").await;
                }
                Ok(r)
            }
            Err(e) => Err(self.refuse(call, e).await),
        }
    }

    /// Audits a refused call and hands its error back.
    pub async fn refuse(&self, call: &Call, e: AppError) -> AppError {
        tracing::info!(outcome = e.code_name(), error = %e, "mutation refused");
        self.audit_alone(call, e.code_name(), &e.to_string()).await;
        e
    }

    async fn audit_alone(&self, call: &Call, outcome: &str, detail: &str) {
        audit_alone(&self.db, call, outcome, detail).await;
    }
}

/// Audits a failure (or a replay) in its own short transaction: the call's own transaction
/// wrote nothing. A failure to audit is logged, not returned.
pub async fn audit_alone(db: &Db, call: &Call, outcome: &str, detail: &str) {
    let row = audit_row(call, outcome, detail, Utc::now());
    let result = async {
        db.lane()
            .await?
            .run(async {
                let mut conn = db.begin().await?;
                access::insert_audit(&mut conn, &row).await?;
                conn.commit_lazily().await
            })
            .await?
            .durable()
            .await;
        crate::store::StoreResult::Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, rpc = %call.rpc, "could not write audit record");
    }
}

/// The stored first answer's bytes, or ALREADY_EXISTS for a different payload (or a request id
/// closed by a 冲正) under the same id.
pub fn replay_bytes(call: &Call, first: IdempotencyRow) -> AppResult<Vec<u8>> {
    check_replay(call, &first)?;
    Ok(first.response)
}

/// ALREADY_EXISTS unless `call` repeats the first call under its request id (the same RPC and
/// payload; a request id closed by a 冲正 repeats nothing).
pub fn check_replay(call: &Call, first: &IdempotencyRow) -> AppResult<()> {
    if first.rpc != call.rpc || first.payload_hash != call.payload_hash {
        return Err(AppError::AlreadyExists(format!(
            "request_id {:?} was already used for a different request ({}); use a new request id",
            call.request_id, first.rpc
        )));
    }
    Ok(())
}

/// Decodes the stored first answer, or refuses a different payload under the same id.
pub fn replay<R: prost::Message + Default>(call: &Call, first: IdempotencyRow) -> AppResult<R> {
    let bytes = replay_bytes(call, first)?;
    R::decode(bytes.as_slice())
        .map_err(|e| AppError::Internal(anyhow::anyhow!("stored response does not decode: {e}")))
}

/// Most characters of a failure message kept in the audit log.
const DETAIL_MAX: usize = 500;

pub fn audit_row(call: &Call, outcome: &str, detail: &str, at: DateTime<Utc>) -> AuditRow {
    AuditRow {
        audit_id: crate::store::new_id("A", at),
        principal: call.principal.key(),
        rpc: call.rpc.clone(),
        request_id: call.request_id.chars().take(64).collect(),
        outcome: outcome.to_owned(),
        detail: detail.chars().take(DETAIL_MAX).collect(),
        at,
    }
}
