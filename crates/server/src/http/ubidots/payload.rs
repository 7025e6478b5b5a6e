//! Ubidots dots on the wire, parsed into core values. Pure functions: every rule about what a body may hold is
//! here and tested here.
//!
//! A dot is a number, or `{"value": <number>, "timestamp"?: <ms>, "context"?: {...}}`; a variable takes one dot or
//! a list of them; a device body maps variable labels to those.

use serde_json::{Map, Value as Json};
use tessera_core::time::{EARLIEST_MS, LATEST_MS, check_range};
use tessera_core::{Label, Value};

use crate::data::Dot;

/// Dots of one variable, in body order.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableDots {
    pub label: Label,
    pub dots: Vec<Dot>,
}

/// Parses a device body (`{"<variable>": <dot or dots>, ...}`). `default_timestamp_ms` applies to dots without a
/// timestamp of their own. Any error refuses the whole body, naming the variable and what is wrong.
pub fn parse_device_body(body: &Json, default_timestamp_ms: i64) -> Result<Vec<VariableDots>, String> {
    let Json::Object(variables) = body else {
        return Err(format!("the body must be a JSON object mapping variable labels to values, not {}", kind(body)));
    };
    if variables.is_empty() {
        return Err("the body names no variables".into());
    }
    let mut parsed: Vec<VariableDots> = Vec::with_capacity(variables.len());
    for (key, value) in variables {
        let label = Label::parse(key).map_err(|error| format!("invalid variable label: {error}"))?;
        let dots = parse_dots(value, default_timestamp_ms).map_err(|error| format!("variable '{key}': {error}"))?;
        // `Temp` and `temp` fold to one label: keep their dots together.
        match parsed.iter_mut().find(|entry| entry.label == label) {
            Some(entry) => entry.dots.extend(dots),
            None => parsed.push(VariableDots { label, dots }),
        }
    }
    Ok(parsed)
}

/// Parses one dot or a list of dots for a single variable.
pub fn parse_dots(value: &Json, default_timestamp_ms: i64) -> Result<Vec<Dot>, String> {
    match value {
        Json::Array(items) if items.is_empty() => Err("the list of dots is empty".into()),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| parse_dot(item, default_timestamp_ms).map_err(|error| format!("dot {index}: {error}")))
            .collect(),
        single => Ok(vec![parse_dot(single, default_timestamp_ms)?]),
    }
}

/// Parses one dot: a bare number or an object with `value`.
pub fn parse_dot(value: &Json, default_timestamp_ms: i64) -> Result<Dot, String> {
    match value {
        Json::Number(_) => Ok(Dot { timestamp_ms: default_timestamp_ms, value: number(value)?, context: Map::new() }),
        Json::Object(fields) => {
            let value = match fields.get("value") {
                Some(value) => number(value)?,
                None => return Err("the dot has no \"value\"".into()),
            };
            let timestamp_ms = match fields.get("timestamp") {
                None | Some(Json::Null) => default_timestamp_ms,
                Some(timestamp) => timestamp_ms(timestamp)?,
            };
            let context = match fields.get("context") {
                None | Some(Json::Null) => Map::new(),
                Some(Json::Object(context)) => context.clone(),
                Some(other) => return Err(format!("\"context\" must be a JSON object, not {}", kind(other))),
            };
            Ok(Dot { timestamp_ms, value, context })
        }
        other => Err(format!("a dot must be a number or an object with \"value\", not {}", kind(other))),
    }
}

fn number(value: &Json) -> Result<Value, String> {
    match value.as_f64() {
        Some(number) if number.is_finite() => Ok(Value::Number(number)),
        _ => Err(format!("\"value\" must be a number, not {}", kind(value))),
    }
}

/// Milliseconds since the epoch: an integer (or a float without a fraction, as some firmware sends) within the
/// range Tessera keeps (`tessera_core::time::check_range`).
pub fn timestamp_ms(value: &Json) -> Result<i64, String> {
    let invalid = || {
        format!(
            "\"timestamp\" must be milliseconds since the Unix epoch, from {EARLIEST_MS} to {LATEST_MS} \
             (1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z), not {value}"
        )
    };
    let milliseconds = match (value.as_i64(), value.as_f64()) {
        (Some(integer), _) => integer,
        (None, Some(float)) if float.fract() == 0.0 && (0.0..=LATEST_MS as f64).contains(&float) => float as i64,
        _ => return Err(invalid()),
    };
    check_range(milliseconds).map_err(|_| invalid())
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn dot(timestamp_ms: i64, value: f64) -> Dot {
        Dot { timestamp_ms, value: Value::Number(value), context: Map::new() }
    }

    #[test]
    fn the_three_body_forms_and_their_mix() {
        let body = json!({
            "humidity": 22,
            "temperature": {"value": 10, "timestamp": 1634311791000_i64, "context": {"lat": 6.1, "lng": -1.2}},
            "pressure": [{"value": 10, "timestamp": 1634311791000_i64}, {"value": 11.5, "timestamp": 1634311792000_i64}],
        });
        let parsed = parse_device_body(&body, NOW).unwrap();
        let by_label = |label: &str| parsed.iter().find(|entry| entry.label.as_str() == label).unwrap().dots.clone();
        assert_eq!(by_label("humidity"), vec![dot(NOW, 22.0)]);
        let temperature = by_label("temperature");
        assert_eq!(temperature[0].timestamp_ms, 1634311791000);
        assert_eq!(temperature[0].context, json!({"lat": 6.1, "lng": -1.2}).as_object().unwrap().clone());
        assert_eq!(by_label("pressure"), vec![dot(1634311791000, 10.0), dot(1634311792000, 11.5)]);
    }

    #[test]
    fn labels_differing_in_case_are_one_variable() {
        let parsed = parse_device_body(&json!({"Temp": 1, "temp": 2}), NOW).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].dots.len(), 2);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let cases = [
            (json!([1, 2]), "must be a JSON object"),
            (json!({}), "names no variables"),
            (json!({"bad label": 1}), "invalid variable label"),
            (json!({"t": "22"}), "variable 't': a dot must be a number or an object"),
            (json!({"t": {"value": "22"}}), "\"value\" must be a number, not a string"),
            (json!({"t": {"timestamp": 5}}), "has no \"value\""),
            (json!({"t": {"value": 1, "timestamp": -5}}), "\"timestamp\" must be milliseconds"),
            (json!({"t": {"value": 1, "timestamp": 1.5}}), "\"timestamp\" must be milliseconds"),
            (json!({"t": {"value": 1, "context": [1]}}), "\"context\" must be a JSON object, not a list"),
            (json!({"t": []}), "the list of dots is empty"),
            (json!({"t": [1, {"value": true}]}), "dot 1: \"value\" must be a number, not a boolean"),
        ];
        for (body, expected) in cases {
            let error = parse_device_body(&body, NOW).unwrap_err();
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn float_timestamps_without_a_fraction_are_accepted() {
        assert_eq!(timestamp_ms(&json!(1634311791000.0)), Ok(1634311791000));
    }
}
