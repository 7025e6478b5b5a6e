//! Identifiers: 63-bit integers, time-ordered, shown to the world as 13 lowercase base32 characters.
//!
//! An id is `(milliseconds since 2024-01-01) << 22 | 22 random bits`. Time first keeps new rows together in the
//! store's indexes and makes "order by id" mean "order by creation"; the random low bits keep ids from being
//! guessable in sequence. Storage keeps the integer (compact, fast joins); every wire format shows the text form.

use std::fmt;
use std::str::FromStr;

/// Milliseconds from the Unix epoch to 2024-01-01T00:00:00Z, the origin of the id clock.
const ID_EPOCH_MS: i64 = 1_704_067_200_000;
const RANDOM_BITS: u32 = 22;
/// Crockford's base32 alphabet in lower case: no i, l, o or u, so ids survive being read aloud or retyped.
pub(crate) const BASE32_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ID_TEXT_LEN: usize = 13;

/// An untyped identifier. Typed wrappers below keep a device id from being passed where a collection id belongs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid id: ids are 13 characters of 0-9 and a-z (without i, l, o, u)")]
pub struct InvalidId(pub String);

impl Id {
    /// Builds an id from the creation time and random bits supplied by the caller (the core draws no randomness).
    pub fn generate(now_unix_ms: i64, random: u32) -> Id {
        let since_epoch = (now_unix_ms - ID_EPOCH_MS).clamp(0, (1 << 41) - 1);
        Id((since_epoch << RANDOM_BITS) | i64::from(random & ((1 << RANDOM_BITS) - 1)))
    }

    /// The integer the store keeps.
    pub fn as_i64(self) -> i64 {
        self.0
    }

    pub const fn from_i64(value: i64) -> Id {
        Id(value)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; ID_TEXT_LEN];
        let mut value = self.0 as u64;
        for slot in out.iter_mut().rev() {
            *slot = BASE32_ALPHABET[(value & 31) as usize];
            value >>= 5;
        }
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The value of one base32 character. Only the canonical lower-case form is accepted, so every id and secret has
/// exactly one spelling (caches and logs never see two texts for one thing).
pub(crate) fn base32_value(character: u8) -> Option<u8> {
    // A table, not a search of the alphabet: every presented token's 47 characters pass through here.
    match BASE32_VALUES[usize::from(character)] {
        NOT_BASE32 => None,
        value => Some(value),
    }
}

const NOT_BASE32: u8 = u8::MAX;

/// Each byte's base32 value, or `NOT_BASE32`.
const BASE32_VALUES: [u8; 256] = {
    let mut values = [NOT_BASE32; 256];
    let mut value = 0;
    while value < BASE32_ALPHABET.len() {
        values[BASE32_ALPHABET[value] as usize] = value as u8;
        value += 1;
    }
    values
};

impl FromStr for Id {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Id, InvalidId> {
        let invalid = || InvalidId(text.chars().take(64).collect());
        if text.len() != ID_TEXT_LEN {
            return Err(invalid());
        }
        // 13 characters carry 65 bits, one more than a u64 holds (in a u64 the first character's top bit was
        // shifted out, and `g000000000001` read as the id `0000000000001`: two spellings of one id).
        let mut value: u128 = 0;
        for &byte in text.as_bytes() {
            value = (value << 5) | u128::from(base32_value(byte).ok_or_else(invalid)?);
        }
        // A valid id fits in 63 bits (non-negative i64).
        if value > i64::MAX as u128 {
            return Err(invalid());
        }
        Ok(Id(value as i64))
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Id);

        impl $name {
            pub fn as_i64(self) -> i64 {
                self.0.as_i64()
            }
            pub fn from_i64(value: i64) -> Self {
                Self(Id::from_i64(value))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(text: &str) -> Result<Self, InvalidId> {
                text.parse().map(Self)
            }
        }
    };
}

typed_id!(
    /// A tenant.
    AccountId
);
typed_id!(
    /// A set of devices: a Ubidots organization, a Horde collection, an AllThingsTalk ground.
    CollectionId
);
typed_id!(
    /// A device; its label is unique within the account.
    DeviceId
);
typed_id!(
    /// A time series of one device: a Ubidots variable, an AllThingsTalk asset.
    VariableId
);
typed_id!(
    /// The public id of a token, safe to log and show.
    TokenId
);
typed_id!(
    /// A person who logs in.
    UserId
);
typed_id!(
    /// A group of users that owns collections.
    TeamId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_is_thirteen_characters() {
        for (ms, random) in [(ID_EPOCH_MS, 0), (1_763_000_000_000, 0x3f_ffff), (4_000_000_000_000, 12345)] {
            let id = Id::generate(ms, random);
            let text = id.to_string();
            assert_eq!(text.len(), 13, "{text}");
            assert_eq!(text.parse::<Id>().unwrap(), id);
        }
    }

    #[test]
    fn ids_order_by_creation_time() {
        let earlier = Id::generate(1_763_000_000_000, 0x3f_ffff);
        let later = Id::generate(1_763_000_000_001, 0);
        assert!(earlier < later);
        assert!(earlier.to_string() < later.to_string());
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in ["", "abc", "0000000000000u", "zzzzzzzzzzzzz", "00000000000-0", "0000000000000 "] {
            assert!(text.parse::<Id>().is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn only_the_canonical_spelling_is_accepted() {
        assert!("0000000000001".parse::<Id>().is_ok());
        // The first character holds bits 60 to 64 and an id has 63, so it is at most 7; `g` (16) sets bit 64, which
        // was once shifted out, leaving `0000000000001`.
        for text in
            ["000000000000L", "O000000000001", "000000000000A", "g000000000001", "mzzzzzzzzrzzz", "8000000000000"]
        {
            assert!(text.parse::<Id>().is_err(), "{text:?} was accepted");
        }
    }
}
