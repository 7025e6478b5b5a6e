//! Device and variable labels: the names devices use on the wire (Ubidots labels, AllThingsTalk asset names).

use std::fmt;

/// The longest label accepted; long enough for a MAC address, an IMEI or a UUID with a prefix.
pub const MAX_LABEL_LEN: usize = 64;

/// A label: 1 to 64 characters of lower-case letters, digits, `-` and `_`. Upper-case input is folded to lower
/// case, as the public Ubidots service does, so `Temperature` and `temperature` name one variable.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidLabel {
    #[error("a label cannot be empty")]
    Empty,
    #[error("label '{0}…' is longer than {MAX_LABEL_LEN} characters")]
    TooLong(String),
    #[error("label '{label}' contains '{character}': labels use only a-z, 0-9, '-' and '_'")]
    BadCharacter { label: String, character: char },
}

impl Label {
    pub fn parse(text: &str) -> Result<Label, InvalidLabel> {
        if text.is_empty() {
            return Err(InvalidLabel::Empty);
        }
        if text.chars().count() > MAX_LABEL_LEN {
            return Err(InvalidLabel::TooLong(text.chars().take(MAX_LABEL_LEN).collect()));
        }
        let folded = text.to_ascii_lowercase();
        if let Some(character) =
            folded.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(InvalidLabel::BadCharacter { label: text.to_owned(), character });
        }
        Ok(Label(folded))
    }

    /// Turns a free-form name ("Living room #2") into a label ("living-room-2"), for APIs that create a device or
    /// variable from a name alone.
    pub fn from_name(name: &str) -> Result<Label, InvalidLabel> {
        let mut slug = String::with_capacity(name.len());
        for character in name.trim().chars() {
            let character = character.to_ascii_lowercase();
            if character.is_ascii_lowercase() || character.is_ascii_digit() || character == '_' {
                slug.push(character);
            } else if !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let slug: String = slug.trim_matches('-').chars().take(MAX_LABEL_LEN).collect();
        Label::parse(&slug)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Label({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_folded_to_lower_case() {
        assert_eq!(Label::parse("New-Device_1").unwrap().as_str(), "new-device_1");
    }

    #[test]
    fn bad_labels_are_refused_with_the_reason() {
        assert_eq!(Label::parse(""), Err(InvalidLabel::Empty));
        assert!(matches!(Label::parse("a/b"), Err(InvalidLabel::BadCharacter { character: '/', .. })));
        assert!(matches!(Label::parse("a b"), Err(InvalidLabel::BadCharacter { character: ' ', .. })));
        assert!(matches!(Label::parse(".."), Err(InvalidLabel::BadCharacter { character: '.', .. })));
        assert!(matches!(Label::parse(&"x".repeat(65)), Err(InvalidLabel::TooLong(_))));
        assert!(Label::parse(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn names_become_labels() {
        assert_eq!(Label::from_name(" Living room #2 ").unwrap().as_str(), "living-room-2");
        assert_eq!(Label::from_name("Température").unwrap().as_str(), "temp-rature");
        assert!(Label::from_name("###").is_err());
    }
}
