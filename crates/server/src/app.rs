//! The application state every dialect shares, and the one error type of the layer between the dialects and the
//! store. Each dialect maps [`AppError`] to its own wire shape.

use std::sync::Arc;

use tessera_core::{Action, CollectionId, Denial, Label, Permit, Target, TeamId};
use tessera_store::{Collection, Store, StoreError};

use crate::config::Config;
use crate::data::DataService;
use crate::entropy::new_id;
use crate::hub::Hub;
use crate::people::PeopleService;
use crate::time::now_ms;
use crate::tokens::{TokenError, TokenService, VerifyError};
use crate::writer::WriteError;

/// Shared state: cheap to clone, one per server. The front ends reach the store only through the services: the
/// store handle here is private to this module (the collection operations below), and the compiler refuses any
/// other module's use of it.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    store: Arc<dyn Store>,
    pub tokens: Arc<TokenService>,
    pub data: Arc<DataService>,
    pub people: Arc<PeopleService>,
    pub teams: Arc<crate::teams::TeamService>,
    pub hub: Arc<Hub>,
    /// The other nodes on a shared database (none on SQLite).
    pub peers: crate::cluster::Peers,
}

/// The services a server is made of, for [`App::new`].
#[derive(Debug)]
pub struct Services {
    pub tokens: Arc<TokenService>,
    pub data: Arc<DataService>,
    pub people: Arc<PeopleService>,
    pub teams: Arc<crate::teams::TeamService>,
    pub hub: Arc<Hub>,
    pub peers: crate::cluster::Peers,
}

impl App {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, services: Services) -> App {
        let Services { tokens, data, people, teams, hub, peers } = services;
        App { config, store, tokens, data, people, teams, hub, peers }
    }

    /// The collections of the account the caller may read (refused outright to credentials that read nothing).
    pub async fn readable_collections(&self, caller: &crate::tokens::Caller) -> Result<Vec<Collection>, AppError> {
        caller.authorize_listing_of(tessera_core::Listing::Collections)?;
        let collections = self.store.list_collections(caller.account()).await?;
        Ok(collections
            .into_iter()
            .filter(|collection| {
                caller.authorize(Action::Read, &Target::collection(caller.account(), collection.id)).is_ok()
            })
            .collect())
    }

    /// Creates a collection owned by `team`, or by the account itself when `team` is `None`; needs a write
    /// permit on that team, or on the account.
    pub async fn create_collection(
        &self,
        permit: &Permit,
        name: String,
        team: Option<TeamId>,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<Collection, AppError> {
        let owner = match team {
            Some(team) => Target::team(permit.account(), team),
            None => Target::account(permit.account()),
        };
        if !permit.covers(Action::Write, &owner) || permit.target() != &owner {
            return Err(permit_mismatch(permit, "create collection"));
        }
        let collection = Collection {
            id: CollectionId(new_id()),
            account: permit.account(),
            name,
            is_default: false,
            team,
            created_at_ms: now_ms(),
            tags,
        };
        self.store.insert_collection(&collection).await.map_err(|error| AppError::from_store("team", error))?;
        if let Some(team) = team {
            // The team's members now reach one more collection.
            for (membership, _) in self.store.members(team).await? {
                self.tokens.reach_changed(tessera_store::Creator::User(membership.user));
            }
        }
        Ok(collection)
    }

    /// Deletes an empty collection and revokes its tokens, refusing them from the next request on; needs a
    /// write permit on the collection.
    pub async fn delete_collection(&self, permit: &Permit, collection: CollectionId) -> Result<(), AppError> {
        if !permit.covers(Action::Write, &Target::collection(permit.account(), collection)) {
            return Err(permit_mismatch(permit, "delete collection"));
        }
        let revoked = self
            .store
            .delete_collection(permit.account(), collection, now_ms())
            .await
            .map_err(|error| AppError::from_store("collection", error))?;
        self.tokens.forget(&revoked);
        Ok(())
    }
}

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
            other => AppError::Unauthenticated(other),
        }
    }
}

impl From<TokenError> for AppError {
    fn from(error: TokenError) -> AppError {
        match error {
            TokenError::Denied(denial) => AppError::from(denial),
            TokenError::NoSuch(what) => AppError::NotFound(what),
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
