//! Tessera's pure core: the data model, the token secret format, and `authorize`, the one function that decides
//! every access. Nothing here performs I/O, reads a clock or draws random bytes: time and randomness are passed in
//! by the caller, so every rule in this crate is testable with a table.

pub mod access;
pub mod id;
pub mod label;
pub mod profile;
pub mod quota;
pub mod reading;
pub mod resource;
pub mod secret;
pub mod time;
pub mod totp;

pub use access::{
    Action, Creator, Denial, Grant, ListedTokens, Listing, ManagedToken, Node, Permit, Presentation, Reach, Rights,
    Role, Scope, Target, authorize, authorize_listing, authorize_listing_of, authorize_mint, authorize_token_change,
    authorize_token_listing, authorize_token_management, authorize_token_rotation, authorize_untargeted, check_live,
    check_presentation,
};
pub use id::{AccountId, CollectionId, DeviceId, Id, TeamId, TokenId, UserId, VariableId};
pub use label::Label;
pub use quota::{Quota, QuotaSetting};
pub use reading::{Reading, Value};
pub use resource::{InvalidResource, Resource};
pub use secret::{SECRET_RANDOM_BYTES, Secret, SecretDigest, SecretError, ServerKey, TokenKind};
