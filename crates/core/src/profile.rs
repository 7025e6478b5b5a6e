//! Asset profiles: the subset of JSON Schema AllThingsTalk assets use to say what values they take (`type`:
//! number, integer, boolean, string or object; `minimum` and `maximum` for numbers). A state the profile refuses
//! is refused with the reason; a profile outside the subset is refused when the asset is defined.

use serde_json::Value as Json;

/// A parsed profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    kind: Option<ProfileType>,
    minimum: Option<f64>,
    maximum: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProfileType {
    Number,
    Integer,
    Boolean,
    String,
    Object,
}

impl Profile {
    /// Parses a profile; `null` or `{}` accepts any JSON value.
    pub fn parse(profile: &Json) -> Result<Profile, String> {
        let fields = match profile {
            Json::Null => return Ok(Profile { kind: None, minimum: None, maximum: None }),
            Json::Object(fields) => fields,
            _ => return Err("a profile must be a JSON object such as {\"type\": \"integer\"}".into()),
        };
        let kind = match fields.get("type") {
            None => None,
            Some(Json::String(kind)) => Some(match kind.as_str() {
                "number" => ProfileType::Number,
                "integer" => ProfileType::Integer,
                "boolean" => ProfileType::Boolean,
                "string" => ProfileType::String,
                "object" => ProfileType::Object,
                other => {
                    return Err(format!(
                        "profile type '{other}' is not supported: use number, integer, boolean, string or object"
                    ));
                }
            }),
            Some(_) => return Err("the profile's 'type' must be a string".into()),
        };
        let bound = |name: &str| match fields.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(value) => value.as_f64().map(Some).ok_or_else(|| format!("the profile's '{name}' must be a number")),
        };
        let (minimum, maximum) = (bound("minimum")?, bound("maximum")?);
        if (minimum.is_some() || maximum.is_some()) && !matches!(kind, Some(ProfileType::Number | ProfileType::Integer))
        {
            return Err("'minimum' and 'maximum' apply to number and integer profiles only".into());
        }
        if let (Some(minimum), Some(maximum)) = (minimum, maximum)
            && minimum > maximum
        {
            return Err("the profile's 'minimum' is above its 'maximum'".into());
        }
        Ok(Profile { kind, minimum, maximum })
    }

    /// Checks a value against the profile, naming what is wrong.
    pub fn check(&self, value: &Json) -> Result<(), String> {
        let Some(kind) = self.kind else { return Ok(()) };
        let fits = match kind {
            ProfileType::Number => value.is_number(),
            ProfileType::Integer => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0)
            }
            ProfileType::Boolean => value.is_boolean(),
            ProfileType::String => value.is_string(),
            ProfileType::Object => value.is_object(),
        };
        if !fits {
            return Err(format!("the asset takes {} values, not {value}", kind.name()));
        }
        if let Some(number) = value.as_f64() {
            if let Some(minimum) = self.minimum.filter(|minimum| number < *minimum) {
                return Err(format!("{number} is below the asset's minimum {minimum}"));
            }
            if let Some(maximum) = self.maximum.filter(|maximum| number > *maximum) {
                return Err(format!("{number} is above the asset's maximum {maximum}"));
            }
        }
        Ok(())
    }
}

impl ProfileType {
    fn name(self) -> &'static str {
        match self {
            ProfileType::Number => "number",
            ProfileType::Integer => "integer",
            ProfileType::Boolean => "boolean",
            ProfileType::String => "string",
            ProfileType::Object => "object",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_are_checked_against_the_profile() {
        let integer = Profile::parse(&json!({"type": "integer", "minimum": 0, "maximum": 10})).unwrap();
        assert!(integer.check(&json!(5)).is_ok());
        assert!(integer.check(&json!(5.0)).is_ok());
        assert!(integer.check(&json!(5.5)).unwrap_err().contains("integer"));
        assert!(integer.check(&json!(11)).unwrap_err().contains("above"));
        assert!(integer.check(&json!(-1)).unwrap_err().contains("below"));
        assert!(integer.check(&json!("5")).is_err());
        let boolean = Profile::parse(&json!({"type": "boolean"})).unwrap();
        assert!(boolean.check(&json!(true)).is_ok());
        assert!(boolean.check(&json!(1)).is_err());
        let object = Profile::parse(&json!({"type": "object"})).unwrap();
        assert!(object.check(&json!({"lat": 1})).is_ok());
        assert!(object.check(&json!([1])).is_err());
        let string = Profile::parse(&json!({"type": "string"})).unwrap();
        assert!(string.check(&json!("on")).is_ok());
        let any = Profile::parse(&json!(null)).unwrap();
        assert!(any.check(&json!([1, 2])).is_ok());
    }

    #[test]
    fn profiles_outside_the_subset_are_refused() {
        for profile in [
            json!({"type": "array"}),
            json!({"type": 5}),
            json!("integer"),
            json!({"type": "string", "minimum": 1}),
            json!({"type": "number", "minimum": 5, "maximum": 1}),
            json!({"type": "number", "maximum": "high"}),
        ] {
            assert!(Profile::parse(&profile).is_err(), "{profile}");
        }
    }
}
