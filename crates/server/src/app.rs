//! The application state every front end shares (the services, the configuration) and the collection operations.
//! The error type the front ends map to their wire shapes is `crate::error::AppError`, re-exported here.

use std::sync::Arc;

use tessera_core::{Action, CollectionId, Permit, Target, TeamId};
use tessera_store::{Collection, Store};

use crate::config::Config;
use crate::data::DataService;
use crate::entropy::new_id;
use crate::hub::Hub;
use crate::people::PeopleService;
use crate::time::now_ms;
use crate::tokens::TokenService;

pub use crate::error::{AppError, parse_label, permit_mismatch, require_permit};

/// Shared state: one per server, and one reference count to clone. Axum clones the state into every request's
/// handler (and drops it after), so a struct of ten `Arc`s cost ten contended atomic increments and decrements a
/// request (~4 % of ingest's CPU in perf); the parts now sit behind one `Arc` and are reached through `Deref`.
#[derive(Debug, Clone)]
pub struct App(Arc<Parts>);

impl std::ops::Deref for App {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// What an [`App`] is made of. The front ends reach the store only through the services: the store handle here
/// is private to this module (the collection operations below), and the compiler refuses any other module's use
/// of it.
#[derive(Debug)]
pub struct Parts {
    pub config: Arc<Config>,
    store: Arc<dyn Store>,
    pub tokens: Arc<TokenService>,
    pub data: Arc<DataService>,
    pub people: Arc<PeopleService>,
    pub teams: Arc<crate::teams::TeamService>,
    pub hub: Arc<Hub>,
    /// The other nodes on a shared database (none on SQLite).
    pub peers: crate::peers::Peers,
    /// What the front ends count (HTTP requests, MQTT connections and messages, listeners' accept errors); the
    /// services count their own, and `/metrics` reads both. One per server, never global.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The services a server is made of, for [`App::new`].
#[derive(Debug)]
pub struct Services {
    pub tokens: Arc<TokenService>,
    pub data: Arc<DataService>,
    pub people: Arc<PeopleService>,
    pub teams: Arc<crate::teams::TeamService>,
    pub hub: Arc<Hub>,
    pub peers: crate::peers::Peers,
}

impl App {
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, services: Services) -> App {
        let Services { tokens, data, people, teams, hub, peers } = services;
        let metrics = Arc::new(crate::metrics::Metrics::default());
        App(Arc::new(Parts { config, store, tokens, data, people, teams, hub, peers, metrics }))
    }

    /// The store's connection pools' sizes now, for `/metrics`.
    pub fn store_pools(&self) -> Vec<tessera_store::PoolFigures> {
        self.store.pools()
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
    pub async fn delete_collection(
        &self,
        caller: &crate::tokens::Caller,
        permit: &Permit,
        collection: CollectionId,
    ) -> Result<(), AppError> {
        require_permit(permit, Action::Write, &Target::collection(permit.account(), collection), "delete collection")?;
        use crate::audit::{AuditEvent, EntryExt, by};
        let audit = |revoked: &[tessera_store::TokenRecord]| {
            let mut entries: Vec<_> = revoked
                .iter()
                .map(|token| {
                    by(caller, AuditEvent::TokenRevoked)
                        .about(token.id)
                        .with("kind", token.kind.as_str())
                        .with("name", token.name.clone())
                        .with("reason", "its collection was deleted")
                })
                .collect();
            entries.push(
                by(caller, AuditEvent::CollectionDeleted)
                    .with("collection", collection.to_string())
                    .with("tokens_revoked", revoked.len()),
            );
            entries
        };
        let revoked = self
            .store
            .delete_collection(permit.account(), collection, now_ms(), &audit)
            .await
            .map_err(|error| AppError::from_store("collection", error))?;
        self.tokens.forget(&revoked);
        Ok(())
    }
}
