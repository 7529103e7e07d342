//! The service layer's error: every failure a use case can answer with. Mapped to a gRPC status
//! in exactly one place (`grpc::status`).

use crate::domain::DomainError;
use crate::ledger::LedgerError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input; `field` is the request field path.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A business rule forbids it; `rule` names the rule.
    #[error("{rule}: {detail}")]
    Precondition { rule: &'static str, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A transient conflict (serialization failure, busy database); the call may be retried.
    #[error("transient conflict: {0}")]
    Retry(String),
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AppError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn precondition(rule: &'static str, detail: impl Into<String>) -> Self {
        AppError::Precondition {
            rule,
            detail: detail.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        AppError::NotFound(what.into())
    }

    pub fn denied(why: impl Into<String>) -> Self {
        AppError::PermissionDenied(why.into())
    }

    /// The gRPC status code name, as recorded in the audit log.
    pub fn code_name(&self) -> &'static str {
        match self {
            AppError::Invalid { .. } => "INVALID_ARGUMENT",
            AppError::Precondition { .. } => "FAILED_PRECONDITION",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::AlreadyExists(_) => "ALREADY_EXISTS",
            AppError::PermissionDenied(_) => "PERMISSION_DENIED",
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Retry(_) => "ABORTED",
            AppError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<DomainError> for AppError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, reason } => AppError::Invalid { field, reason },
            DomainError::Precondition { rule, detail } => AppError::Precondition { rule, detail },
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Retry(m) => AppError::Retry(m),
            StoreError::Unique { constraint } => {
                AppError::AlreadyExists(format!("already exists ({constraint})"))
            }
            StoreError::Check(m) => AppError::Internal(anyhow::anyhow!("check violation: {m}")),
            StoreError::Other(e) => AppError::Internal(e),
        }
    }
}

impl From<LedgerError> for AppError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Insufficient {
                account,
                balance_fen,
                debit_fen,
            } => AppError::precondition(
                "insufficient_balance",
                format!("{account} holds {balance_fen} fen, {debit_fen} fen requested"),
            ),
            LedgerError::Unbalanced { .. } => AppError::Internal(anyhow::Error::new(e)),
            LedgerError::Store(s) => s.into(),
        }
    }
}

/// Maps a unique violation whose constraint text mentions `column` to ALREADY_EXISTS with
/// `message`; other errors convert as usual.
pub fn unique_as(e: StoreError, column: &str, message: impl Into<String>) -> AppError {
    match &e {
        StoreError::Unique { constraint } if constraint.contains(column) => {
            AppError::AlreadyExists(message.into())
        }
        _ => e.into(),
    }
}
