//! EventService: follow settlements and clearing events from a cursor.

use super::{Ctx, GrpcResult};
use crate::domain::money::Amount;
use crate::proto::event_service_server::EventService;
use crate::proto::{Event, FollowEventsRequest};
use crate::service::events;
use crate::store::events::StoredEvent;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long a follower waits before looking again when it has caught up.
const POLL: Duration = Duration::from_millis(200);

fn event_pb(s: &StoredEvent) -> Event {
    let a = |fen| Amount::from_fen(fen).to_string();
    let e = &s.event;
    Event {
        cursor: s.cursor().encode(),
        kind: i32::try_from(e.kind).unwrap_or(0),
        occurred_at: e.occurred_at.to_rfc3339(),
        home_region: e.home_region.clone(),
        treatment_region: e.treatment_region.clone(),
        reference: e.reference.clone(),
        period: e.period.clone(),
        amount: a(e.amount_fen),
        institution: e.institution.clone(),
        reverses: e.reverses.clone(),
        medfee_sumamt: a(e.medfee_fen),
        fund_pay_sumamt: a(e.fund_fen),
        acct_pay: a(e.acct_fen),
        detail: e.detail.clone(),
    }
}

#[tonic::async_trait]
impl EventService for Ctx {
    type FollowEventsStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Event, Status>> + Send>>;

    async fn follow_events(
        &self,
        req: Request<FollowEventsRequest>,
    ) -> GrpcResult<Self::FollowEventsStream> {
        let who = self.principal(&req).await?;
        let r = req.into_inner();
        let region = events::scope(&who)?;
        let mut cursor = events::parse_cursor(&r.cursor)?;
        let kinds: Vec<i64> = r.kinds.iter().map(|k| i64::from(*k)).collect();
        let app = self.app.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let page = async {
                    let mut conn = app.read().await?;
                    let page = events::page(&mut conn, &cursor, &region).await;
                    drop(conn);
                    // Only events already on disk are sent (a swipe batch may not be yet).
                    app.db.durable().await;
                    page
                }
                .await;
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let caught_up = (page.len() as i64) < events::PAGE;
                for s in &page {
                    cursor = s.cursor();
                    if !kinds.is_empty() && !kinds.contains(&s.event.kind) {
                        continue;
                    }
                    if tx.send(Ok(event_pb(s))).await.is_err() {
                        return; // the follower went away
                    }
                }
                if caught_up {
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
