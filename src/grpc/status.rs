//! The one mapping from service errors to gRPC statuses. INVALID_ARGUMENT carries a
//! google.rpc.BadRequest naming the field; FAILED_PRECONDITION a PreconditionFailure naming the
//! rule. Internal details are logged, never sent.

use crate::service::AppError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        let message = e.to_string();
        match e {
            AppError::Invalid { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            AppError::Precondition { rule, detail } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation("RULE", rule, detail),
            ),
            AppError::NotFound(_) => Status::not_found(message),
            AppError::AlreadyExists(_) => Status::already_exists(message),
            AppError::PermissionDenied(_) => Status::permission_denied(message),
            AppError::Unauthenticated(_) => Status::unauthenticated(message),
            AppError::Retry(_) => {
                Status::aborted(format!("{message}; retry with the same request_id"))
            }
            AppError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                Status::internal("internal error")
            }
        }
    }
}
