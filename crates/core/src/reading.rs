//! Readings: time-stamped values of a variable.

use crate::id::VariableId;

/// A reading's value. Numbers are the fast path every dialect shares; other JSON (AllThingsTalk states) and opaque
/// payloads (Horde messages) keep their form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Json(serde_json::Value),
    Bytes(Vec<u8>),
}

impl Value {
    /// The value as JSON, for dialects that show every value as JSON. Bytes that are not UTF-8 JSON are shown as
    /// `null`; dialects that carry bytes (Horde) read them directly.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Number(number) => {
                serde_json::Number::from_f64(*number).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Value::Json(json) => json.clone(),
            Value::Bytes(bytes) => serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// One time-stamped value of a variable. At most one reading exists per variable and millisecond: a second one
/// replaces the first, so a device that retries a request after a lost answer does not create duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub variable: VariableId,
    /// Milliseconds since the Unix epoch: when the value was measured.
    pub timestamp_ms: i64,
    pub value: Value,
    /// Free-form metadata attached to the reading (Ubidots `context`); an empty object when none was sent.
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Milliseconds since the Unix epoch: when Tessera received it.
    pub received_at_ms: i64,
}
