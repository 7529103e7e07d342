//! PharmacyService: the card swipe.

use super::encoded::EncodedPurchase;
use super::{Ctx, GrpcResult, convert, in_line, item_code, line_no, mutating, respond};
use crate::domain::ids::{CardNo, EVoucherToken};
use crate::domain::kinds::InsuranceType;
use crate::domain::money::{Amount, Quantity, UnitPrice};
use crate::domain::{DomainError, DomainResult};
use crate::proto::pharmacy_service_server::{PharmacyService, PharmacyServiceServer};
use crate::proto::*;
use crate::service::settlement::pharmacy::{self, NewLine, Swipe};
use crate::service::settlement::swipe_batch::SwipeAnswer;
use crate::service::settlement::visits::Credential;
use crate::service::{AppError, text};

mutating!(SettlePurchaseRequest, RefundPurchaseRequest);

fn credential(c: &Option<CardCredential>) -> DomainResult<Credential> {
    use card_credential::Credential as C;
    match c.as_ref().and_then(|c| c.credential.as_ref()) {
        Some(C::CardNo(n)) => CardNo::parse("credential.card_no", n).map(Credential::CardNo),
        Some(C::EvoucherToken(t)) => {
            EVoucherToken::parse("credential.evoucher_token", t).map(Credential::EVoucher)
        }
        None => Err(DomainError::invalid(
            "credential",
            "give card_no or evoucher_token",
        )),
    }
}

/// Parses and checks purchase lines (before any lookup: bad input is INVALID_ARGUMENT whatever
/// the card).
fn lines(lines: &[PurchaseLine]) -> Result<Vec<NewLine>, AppError> {
    let parsed = parse_lines(lines)?;
    pharmacy::check_lines(&parsed)?;
    Ok(parsed)
}

fn parse_lines(lines: &[PurchaseLine]) -> Result<Vec<NewLine>, AppError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| parse_line(l).map_err(|e| in_line(i, e)))
        .collect()
}

/// One line, its fields named bare ("quantity"): [`in_line`] names the line when one is bad.
fn parse_line(l: &PurchaseLine) -> Result<NewLine, AppError> {
    let code = item_code("code", &l.code)?;
    Ok(NewLine {
        line_no: line_no("line_no", &l.line_no)?,
        code,
        name: text("name", &l.name, 200)?,
        quantity: Quantity::parse("quantity", &l.quantity)?,
        unit_price: UnitPrice::parse("unit_price", &l.unit_price)?,
    })
}

#[tonic::async_trait]
impl PharmacyService for Ctx {
    async fn lookup_card(&self, req: tonic::Request<LookupCardRequest>) -> GrpcResult<CardHolder> {
        let (who, mut conn) = self.read(&req).await?;
        let c = credential(&req.get_ref().credential).map_err(AppError::from)?;
        let found = pharmacy::lookup(&mut conn, &who, &c, self.app.clock.now()).await;
        respond(found.map(|(r, refusal)| convert::card_holder(r, refusal)))
    }

    async fn pre_settle_purchase(
        &self,
        req: tonic::Request<PreSettlePurchaseRequest>,
    ) -> GrpcResult<Settlement> {
        let (who, mut conn) = self.read(&req).await?;
        let r = req.get_ref();
        let cmd = Swipe {
            credential: credential(&r.credential).map_err(AppError::from)?,
            insurance_type: InsuranceType::parse("insurance_type", r.insurance_type)
                .map_err(AppError::from)?,
            lines: lines(&r.lines)?,
            use_account: r.use_account,
            account_only: false,
            expected_total: None,
        };
        let found = pharmacy::pre_settle(&mut conn, &who, cmd, self.app.clock.now()).await;
        respond(found.map(|(s, _)| convert::settlement(s)))
    }

    /// Reached only through [`PharmacyServer`], which answers SettlePurchase itself (encoded
    /// straight from the booked purchase): the same call, its answer decoded as a message.
    async fn settle_purchase(
        &self,
        req: tonic::Request<SettlePurchaseRequest>,
    ) -> GrpcResult<Purchase> {
        use prost::Message;
        let encoded = self.settle_purchase_encoded(req).await?;
        let purchase = Purchase::decode(encoded.into_inner().0.as_slice())
            .map_err(|e| AppError::Internal(anyhow::anyhow!("purchase answer: {e}")))?;
        Ok(tonic::Response::new(purchase))
    }

    async fn refund_purchase(
        &self,
        req: tonic::Request<RefundPurchaseRequest>,
    ) -> GrpcResult<Purchase> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            text("reason", &r.reason, 256)?;
            let chosen = r
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    Ok((
                        line_no(&format!("lines[{i}].line_no"), &l.line_no)?,
                        Quantity::parse(&format!("lines[{i}].quantity"), &l.quantity)?,
                    ))
                })
                .collect::<DomainResult<Vec<_>>>()?;
            let (s, l) = pharmacy::refund(
                conn,
                &call.principal,
                &r.setl_id,
                &chosen,
                &call.request_id,
                now,
            )
            .await?;
            Ok(convert::purchase(s, l))
        });
        respond(out)
    }

    async fn reverse_purchase_by_request_id(
        &self,
        req: tonic::Request<ReverseByRequestIdRequest>,
    ) -> GrpcResult<ReverseByRequestIdResponse> {
        let (call, r) = self.call(req).await?;
        let out = crate::mutate!(self.app, &call, |conn, now| {
            let original =
                crate::service::required_text("original_request_id", &r.original_request_id, 64)?;
            if original == call.request_id {
                return Err(AppError::invalid(
                    "original_request_id",
                    "must differ from this call's request_id",
                ));
            }
            let rev = pharmacy::reverse_by_request(
                conn,
                &call.principal,
                &original,
                &call.request_id,
                now,
            )
            .await?;
            Ok(ReverseByRequestIdResponse {
                found: rev.is_some(),
                reversal: rev.map(|(s, _)| convert::settlement(s)),
            })
        });
        respond(out)
    }

    async fn get_purchase(&self, req: tonic::Request<GetPurchaseRequest>) -> GrpcResult<Purchase> {
        let (who, mut conn) = self.read(&req).await?;
        let found = pharmacy::get(&mut conn, &who, &req.get_ref().setl_id).await;
        respond(found.map(|(s, l)| convert::purchase(s, l)))
    }
}

impl Ctx {
    /// SettlePurchase: the swipe checked here, booked by the swipe batcher (group commit);
    /// answered the purchase it booked, encoded here on the caller's task rather than on the
    /// batch's writer.
    async fn settle_purchase_encoded(
        &self,
        req: tonic::Request<SettlePurchaseRequest>,
    ) -> GrpcResult<EncodedPurchase> {
        let (call, r) = self.call(req).await?;
        let parsed = (|| {
            Ok::<_, AppError>(Swipe {
                credential: credential(&r.credential)?,
                insurance_type: InsuranceType::parse("insurance_type", r.insurance_type)?,
                lines: lines(&r.lines)?,
                use_account: r.use_account,
                account_only: r.account_only,
                expected_total: (!r.expected_total.is_empty())
                    .then(|| Amount::parse_non_negative("expected_total", &r.expected_total))
                    .transpose()?,
            })
        })();
        let swipe = match parsed {
            Ok(s) => s,
            Err(e) => return Err(self.app.refuse(&call, e).await.into()),
        };
        // Group commit: booked with whatever other swipes are queued, in one transaction.
        let purchase = match self.app.swipes().submit(call, swipe).await? {
            SwipeAnswer::Booked(b) => EncodedPurchase::booked(*b),
            // A replay of a first answer an earlier version stored encoded: those bytes again.
            SwipeAnswer::Stored(bytes) => EncodedPurchase(bytes),
        };
        Ok(tonic::Response::new(purchase))
    }
}

/// SettlePurchase's path.
const SETTLE_PURCHASE: &str = "/medsettle.v1.PharmacyService/SettlePurchase";

/// PharmacyService as served: SettlePurchase answered with [`EncodedPurchase`] (the generated
/// server's codec encodes a `Purchase` message built first), every other call by the generated
/// server.
#[derive(Clone)]
pub struct PharmacyServer {
    ctx: Ctx,
    generated: PharmacyServiceServer<Ctx>,
}

impl PharmacyServer {
    pub fn new(ctx: Ctx) -> PharmacyServer {
        PharmacyServer {
            generated: PharmacyServiceServer::new(ctx.clone()),
            ctx,
        }
    }
}

impl tonic::server::NamedService for PharmacyServer {
    const NAME: &'static str = <PharmacyServiceServer<Ctx> as tonic::server::NamedService>::NAME;
}

/// SettlePurchase as the generated server's unary method, answered encoded.
struct SettlePurchaseEncoded(Ctx);

impl tonic::server::UnaryService<SettlePurchaseRequest> for SettlePurchaseEncoded {
    type Response = EncodedPurchase;
    type Future = BoxFuture<tonic::Response<EncodedPurchase>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<SettlePurchaseRequest>) -> Self::Future {
        let ctx = self.0.clone();
        Box::pin(async move { ctx.settle_purchase_encoded(req).await })
    }
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl tower::Service<http::Request<tonic::body::Body>> for PharmacyServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != SETTLE_PURCHASE {
            return self.generated.call(req);
        }
        let method = SettlePurchaseEncoded(self.ctx.clone());
        Box::pin(async move {
            // As the generated server does, with its defaults (no compression, tonic's message
            // size limits).
            let codec =
                tonic_prost::ProstCodec::<EncodedPurchase, SettlePurchaseRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(method, req).await)
        })
    }
}
