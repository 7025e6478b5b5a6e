//! The one error type between the front ends and the services: what can go wrong, and the HTTP status each
//! dialect answers it with (each shapes its own body). Services and front ends both use it; it depends on
//! neither.

use tessera_core::{Action, Denial, Label, Permit, Target};
use tessera_store::StoreError;

use crate::tokens::{TokenError, VerifyError};
use crate::writer::WriteError;

/// What can go wrong between a dialect and the store.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The credential is no credential (never a store failure: that is `Unavailable`, answered 503, since a
    /// device told 401 concludes its token is bad).
    #[error("authentication failed: {0}")]
    Unauthenticated(VerifyError),
    #[error("access denied: {0}")]
    Denied(Denial),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    /// The caller's token used up its quota for this window (429; `Retry-After` and the `RateLimit` fields are
    /// added to every dialect's answer by `http::rate_limit`).
    #[error(transparent)]
    OverQuota(crate::quota::OverQuota),
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// A store error in a context where "not found" means `what` was not found.
    pub fn from_store(what: &'static str, error: StoreError) -> AppError {
        match error {
            StoreError::NotFound => AppError::NotFound(what),
            StoreError::Conflict(message) => AppError::Conflict(message),
            StoreError::Invalid(message) => AppError::BadRequest(message),
            StoreError::Unavailable(source) => AppError::Unavailable(source),
            StoreError::Internal(source) => AppError::Internal(source),
        }
    }

    pub fn bad_label(what: &str, error: tessera_core::label::InvalidLabel) -> AppError {
        AppError::BadRequest(format!("invalid {what} label: {error}"))
    }

    /// The HTTP status every dialect answers this error with (each shapes its own body).
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        if self.is_unauthenticated() {
            return StatusCode::UNAUTHORIZED;
        }
        match self {
            AppError::Denied(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::OverQuota(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Unauthenticated(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Denials that revoke or expire the credential are authentication failures; all others are 403s.
    pub fn is_unauthenticated(&self) -> bool {
        match self {
            AppError::Unauthenticated(_) => true,
            AppError::Denied(denial) => denial.is_unauthenticated(),
            _ => false,
        }
    }
}

impl From<Denial> for AppError {
    fn from(denial: Denial) -> AppError {
        if denial.hides_existence() {
            // Another user's token does not exist as far as this user can tell.
            return AppError::NotFound("token");
        }
        AppError::Denied(denial)
    }
}

impl From<VerifyError> for AppError {
    fn from(error: VerifyError) -> AppError {
        match error {
            VerifyError::Store(error) => AppError::from_store("token", error),
            VerifyError::OverQuota(over) => AppError::OverQuota(over),
            other => AppError::Unauthenticated(other),
        }
    }
}

impl From<TokenError> for AppError {
    fn from(error: TokenError) -> AppError {
        match error {
            TokenError::Denied(denial) => AppError::from(denial),
            TokenError::NoSuch(what) => AppError::NotFound(what),
            TokenError::Invalid(text) => AppError::BadRequest(text),
            TokenError::Store(error) => AppError::from_store("token", error),
            TokenError::PermitMismatch => AppError::Internal(Box::new(TokenError::PermitMismatch)),
        }
    }
}

impl From<WriteError> for AppError {
    fn from(error: WriteError) -> AppError {
        AppError::Unavailable(Box::new(error))
    }
}

/// Parses a label from the wire, naming what it labels in the error.
pub fn parse_label(what: &str, text: &str) -> Result<Label, AppError> {
    Label::parse(text).map_err(|error| AppError::bad_label(what, error))
}

/// `Ok` when `permit` allows `action` on `target` (`Permit::covers`); otherwise `operation` is refused as
/// [`permit_mismatch`] says. Every service operation that takes a permit begins with this.
pub fn require_permit(permit: &Permit, action: Action, target: &Target, operation: &str) -> Result<(), AppError> {
    if permit.covers(action, target) { Ok(()) } else { Err(permit_mismatch(permit, operation)) }
}

/// A permit whose action and target do not match the operation it was passed to is a programming error in the
/// caller, never a user's mistake: refuse the operation and make it loud in the log.
pub fn permit_mismatch(permit: &Permit, operation: &str) -> AppError {
    tracing::error!(?permit, operation, "permit does not cover the operation");
    AppError::Internal(format!("permit does not cover {operation}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_cannot_check_a_token_is_a_503_not_a_bad_credential() {
        let error = AppError::from(VerifyError::Store(StoreError::Unavailable("connection refused".into())));
        assert!(!error.is_unauthenticated());
        assert_eq!(error.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(AppError::from(VerifyError::Unknown).status(), axum::http::StatusCode::UNAUTHORIZED);
    }
}
