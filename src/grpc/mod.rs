//! tonic adapters: authenticate, convert proto ⇄ domain, call one use case, map errors to a
//! status (in exactly one place, `status`). No business rules here.

pub mod clearing;
pub mod convert;
pub mod encoded;
pub mod events;
pub mod filing;
pub mod ledger;
pub mod pharmacy;
pub mod reconciliation;
pub mod registry;
pub mod settlement;
pub mod status;

use crate::service::auth::Principal;
use crate::service::mutate::Call;
use crate::service::{App, AppError};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tonic::{Request, Status};

/// What every adapter holds.
#[derive(Clone)]
pub struct Ctx {
    pub app: Arc<App>,
}

/// Requests of mutating RPCs: they carry a request id, and their payload without it is what
/// idempotency compares.
pub trait Mutating: prost::Message + Sized {
    fn request_id(&self) -> &str;
    fn request_id_mut(&mut self) -> &mut String;

    /// SHA-256 of the encoded request with its request id cleared (prost encodes
    /// deterministically: fields in tag order). The id is taken out for the encoding and put
    /// back, instead of encoding a copy of the whole request.
    fn payload_hash(&mut self) -> [u8; 32] {
        let id = std::mem::take(self.request_id_mut());
        let hash = Sha256::digest(self.encode_to_vec()).into();
        *self.request_id_mut() = id;
        hash
    }
}

/// Implements [`Mutating`] for request types with a `request_id: String` field.
macro_rules! mutating {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::grpc::Mutating for $t {
            fn request_id(&self) -> &str { &self.request_id }
            fn request_id_mut(&mut self) -> &mut String { &mut self.request_id }
        }
    )+};
}
pub(crate) use mutating;

/// The full RPC path of a request, e.g. "/medsettle.v1.RegistryService/EnrolPerson", put in the
/// request's extensions by the server (see `server::run`).
#[derive(Debug, Clone)]
pub struct RpcPath(pub String);

fn rpc_path<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<RpcPath>()
        .map(|p| p.0.clone())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Ctx {
    /// Authenticates the bearer token in `authorization` metadata.
    pub async fn principal<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("authorization must be: Bearer <token>"))?;
        let who = self.app.authenticate(token).await.map_err(Status::from)?;
        tracing::Span::current().record("principal", who.key());
        Ok(who)
    }

    /// Authenticates a mutating request and describes the call for `App::mutate`.
    pub async fn call<T: Mutating>(&self, req: Request<T>) -> Result<(Call, T), Status> {
        let principal = self.principal(&req).await?;
        let rpc = rpc_path(&req);
        let mut body = req.into_inner();
        tracing::Span::current().record("request_id", body.request_id());
        let call = Call {
            principal,
            rpc,
            request_id: body.request_id().to_owned(),
            payload_hash: body.payload_hash(),
        };
        Ok((call, body))
    }

    /// Authenticates a read and opens a connection for it.
    pub async fn read<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(Principal, crate::store::Conn), Status> {
        let who = self.principal(req).await?;
        let conn = self.app.read().await?;
        Ok((who, conn))
    }
}

/// Shorthand for converting a service result.
pub type GrpcResult<T> = Result<tonic::Response<T>, Status>;

/// Wraps a use-case result into a response.
pub fn respond<T>(r: Result<T, AppError>) -> GrpcResult<T> {
    r.map(tonic::Response::new).map_err(Status::from)
}

/// A fee or purchase line's number: 1..30 printable ASCII characters.
fn line_no(field: &str, s: &str) -> crate::domain::DomainResult<String> {
    if s.is_empty() || s.len() > 30 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(crate::domain::DomainError::invalid(
            field,
            "1..30 printable ASCII characters",
        ));
    }
    Ok(s.to_owned())
}

/// A fee or purchase line's catalogue code: 1..50 letters, digits, '.', '-' or '_'.
fn item_code(field: &str, s: &str) -> crate::domain::DomainResult<String> {
    if s.is_empty()
        || s.len() > 50
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(crate::domain::DomainError::invalid(
            field,
            "1..50 letters, digits, '.', '-' or '_'",
        ));
    }
    Ok(s.to_owned())
}

/// Puts line `i` into the field an input error names: `quantity` becomes `lines[i].quantity`. A
/// line's fields are parsed under bare names, so that a good line costs no field-name formatting
/// (every swipe has a few lines).
fn in_line(i: usize, e: AppError) -> AppError {
    match e {
        AppError::Invalid { field, reason } => AppError::Invalid {
            field: format!("lines[{i}].{field}"),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::Mutating;
    use crate::proto::{PurchaseLine, SettlePurchaseRequest};
    use prost::Message;
    use sha2::{Digest, Sha256};

    fn swipe(request_id: &str, quantity: &str) -> SettlePurchaseRequest {
        SettlePurchaseRequest {
            request_id: request_id.into(),
            lines: vec![PurchaseLine {
                line_no: "1".into(),
                code: "X01".into(),
                name: "阿莫西林胶囊".into(),
                quantity: quantity.into(),
                unit_price: "12.50".into(),
            }],
            use_account: true,
            ..Default::default()
        }
    }

    /// The hash is SHA-256 of the request encoded with an empty request id — what the stored
    /// hashes of earlier versions were computed as (a copy with the id cleared) — and the
    /// request keeps its id.
    #[test]
    fn payload_hash_is_the_request_without_its_id() {
        let mut r = swipe("P1-0001", "2");
        let expected: [u8; 32] = Sha256::digest(swipe("", "2").encode_to_vec()).into();
        assert_eq!(r.payload_hash(), expected);
        assert_eq!(r.request_id, "P1-0001");
        assert_eq!(swipe("another id", "2").payload_hash(), expected);
        assert_ne!(swipe("P1-0001", "3").payload_hash(), expected);
    }
}
