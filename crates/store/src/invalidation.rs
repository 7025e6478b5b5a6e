//! Cache invalidations that commit with their change. Every node caches tokens by digest, what each creator
//! reaches, and devices and variables by label; when a change alters any of them, the store itself tells the other nodes, inside the transaction that makes
//! the change (PostgreSQL delivers a `NOTIFY` issued in a transaction exactly when it commits), so "committed" and
//! "told" are one event: no node can die between the two and leave the others trusting a revoked token.
//!
//! The payload is the event format the server's cluster module reads (`tessera_server::cluster::Change` in its
//! envelope), written here because the store is what sends it; its `origin` is 0, no node's own id, so the node
//! that made the change hears it too and drops the same cache entries a second time (harmless, and rare).

use tessera_core::{AccountId, Creator, DeviceId, Label, SecretDigest, TokenId, VariableId};

/// What other nodes must forget when a change commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A token was revoked, or its scope, rights or tags changed.
    Token { id: TokenId, digest: SecretDigest },
    /// What a creator reaches changed (a membership, a role, a team's collections).
    Reach(Creator),
    /// A device was changed (its name, tags, identities) or deleted: its label may name another device from now
    /// on, and live readings are described anew (the live descriptions are kept by id).
    Device { account: AccountId, id: DeviceId, label: Label },
    /// A variable was changed (its profile, say) or deleted.
    Variable { device: DeviceId, id: VariableId, label: Label },
}

impl Invalidation {
    /// The event as nodes read it.
    pub fn payload(&self) -> String {
        let event = match self {
            Invalidation::Token { id, digest } => serde_json::json!({
                "origin": 0,
                "change": "token",
                "id": id.as_i64(),
                "digest": digest.0.iter().map(|byte| format!("{byte:02x}")).collect::<String>(),
            }),
            Invalidation::Reach(creator) => {
                let creator = match creator {
                    Creator::System => serde_json::json!({"kind": "system"}),
                    Creator::Token(token) => serde_json::json!({"kind": "token", "id": token.as_i64()}),
                    Creator::User(user) => serde_json::json!({"kind": "user", "id": user.as_i64()}),
                };
                serde_json::json!({"origin": 0, "change": "reach", "creator": creator})
            }
            Invalidation::Device { account, id, label } => serde_json::json!({
                "origin": 0, "change": "device", "account": account.as_i64(), "id": id.as_i64(),
                "label": label.as_str(),
            }),
            Invalidation::Variable { device, id, label } => serde_json::json!({
                "origin": 0, "change": "variable", "device": device.as_i64(), "id": id.as_i64(),
                "label": label.as_str(),
            }),
        };
        event.to_string()
    }
}
