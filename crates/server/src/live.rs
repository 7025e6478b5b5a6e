//! What live consumers are handed: a committed reading with where it belongs, and an actuator command. Plain
//! data, shared by the hub, the writer, the messages between nodes and every live front end.

use tessera_core::{AccountId, CollectionId, DeviceId, Reading, VariableId};

/// A reading with where it belongs, as consumers filter by it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveReading {
    pub account: AccountId,
    pub collection: CollectionId,
    pub device: DeviceId,
    pub reading: Reading,
}

/// A command sent to an actuator (AllThingsTalk): not a reading, only passed on to live consumers.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCommand {
    pub account: AccountId,
    pub collection: CollectionId,
    pub device: DeviceId,
    pub variable: VariableId,
    pub value: serde_json::Value,
    pub at_ms: i64,
}
