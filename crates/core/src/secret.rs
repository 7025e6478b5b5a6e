//! The token secret format and its digest.
//!
//! A secret reads `tso_` + 40 base32 characters of randomness (200 bits) + 7 base32 characters of CRC32 over
//! everything before them, for example `tso_3q8j...k2mx0f4hc1q`. The prefix names the kind of token so that a
//! person, a log scrubber or a secret scanner recognises it; the checksum lets a typo be refused before any lookup.
//! The store never sees a secret: only its HMAC-SHA256 under the server key.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::id::{BASE32_ALPHABET, base32_value};

/// Random bytes in every secret: 200 bits, comfortably above the 160 the design asks for.
pub const SECRET_RANDOM_BYTES: usize = 25;
const BODY_LEN: usize = SECRET_RANDOM_BYTES * 8 / 5;
const CHECKSUM_LEN: usize = 7;
const PREFIX_LEN: usize = 4;
const SECRET_LEN: usize = PREFIX_LEN + BODY_LEN + CHECKSUM_LEN;

/// What a token is, and therefore what it may ever do. Stored with every token and written in its secret's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// An account's master key (Ubidots API key): it only mints and manages tokens.
    ApiKey,
    /// A token with its account's full reach (Ubidots `auth/token`).
    Account,
    /// A token for one collection (Ubidots organization token).
    Collection,
    /// A token for one device's data (AllThingsTalk device token).
    Device,
    /// A token for the data of every device of one collection (AllThingsTalk ground token).
    Ground,
    /// A logged-in user's short-lived access token.
    UserAccess,
    /// A logged-in user's refresh token: it only obtains new access tokens.
    Refresh,
    /// A token scoped to a resource path (Horde).
    Resource,
}

impl TokenKind {
    pub const ALL: [TokenKind; 8] = [
        TokenKind::ApiKey,
        TokenKind::Account,
        TokenKind::Collection,
        TokenKind::Device,
        TokenKind::Ground,
        TokenKind::UserAccess,
        TokenKind::Refresh,
        TokenKind::Resource,
    ];

    /// The secret's prefix, without the underscore.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::ApiKey => "tsk",
            TokenKind::Account => "tsa",
            TokenKind::Collection => "tso",
            TokenKind::Device => "tsd",
            TokenKind::Ground => "tsg",
            TokenKind::UserAccess => "tsu",
            TokenKind::Refresh => "tsf",
            TokenKind::Resource => "tsr",
        }
    }

    /// The stable name used in storage and in the native API.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::ApiKey => "api_key",
            TokenKind::Account => "account",
            TokenKind::Collection => "collection",
            TokenKind::Device => "device",
            TokenKind::Ground => "ground",
            TokenKind::UserAccess => "user_access",
            TokenKind::Refresh => "refresh",
            TokenKind::Resource => "resource",
        }
    }

    pub fn from_name(name: &str) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    fn from_prefix(prefix: &str) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|kind| kind.prefix() == prefix)
    }
}

/// Why a presented secret was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the token is not a Tessera token (wrong length or prefix)")]
    Malformed,
    #[error("the token contains a character that no Tessera token has")]
    BadCharacter,
    #[error("the token's checksum does not match: it was mistyped or truncated")]
    BadChecksum,
}

/// A token secret, parsed. Its `Debug` form never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    kind: TokenKind,
    text: String,
}

impl Secret {
    /// Builds a new secret of `kind` from random bytes the caller drew from the operating system's CSPRNG.
    pub fn generate(kind: TokenKind, random: &[u8; SECRET_RANDOM_BYTES]) -> Secret {
        let mut text = String::with_capacity(SECRET_LEN);
        text.push_str(kind.prefix());
        text.push('_');
        // 25 bytes are exactly 40 groups of 5 bits.
        let mut buffer: u64 = 0;
        let mut bits = 0;
        for &byte in random {
            buffer = (buffer << 8) | u64::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                text.push(BASE32_ALPHABET[((buffer >> bits) & 31) as usize] as char);
            }
        }
        let checksum = crc32fast::hash(text.as_bytes());
        push_checksum(&mut text, checksum);
        Secret { kind, text }
    }

    /// Parses a presented secret, checking its shape and checksum. Nothing is looked up.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        // Byte positions below are character positions only for ASCII text.
        if text.len() != SECRET_LEN || !text.is_ascii() || text.as_bytes()[PREFIX_LEN - 1] != b'_' {
            return Err(SecretError::Malformed);
        }
        let kind = TokenKind::from_prefix(&text[..PREFIX_LEN - 1]).ok_or(SecretError::Malformed)?;
        let (signed, checksum_text) = text.split_at(PREFIX_LEN + BODY_LEN);
        if signed[PREFIX_LEN..].bytes().chain(checksum_text.bytes()).any(|b| base32_value(b).is_none()) {
            return Err(SecretError::BadCharacter);
        }
        if checksum_text.as_bytes() != checksum_chars(crc32fast::hash(signed.as_bytes())) {
            return Err(SecretError::BadChecksum);
        }
        Ok(Secret { kind, text: text.to_owned() })
    }

    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The secret itself, to be shown once to its owner and never logged.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

fn push_checksum(text: &mut String, checksum: u32) {
    text.extend(checksum_chars(checksum).map(char::from));
}

/// The checksum's base32 characters, most significant first.
fn checksum_chars(checksum: u32) -> [u8; CHECKSUM_LEN] {
    std::array::from_fn(|index| {
        let position = CHECKSUM_LEN - 1 - index;
        BASE32_ALPHABET[((u64::from(checksum) >> (position * 5)) & 31) as usize]
    })
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}_<redacted>)", self.kind.prefix())
    }
}

/// What the store keeps of a secret: HMAC-SHA256 under the server key. Without the key, a stolen database
/// yields nothing that can be presented.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretDigest(pub [u8; 32]);

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretDigest(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The server's HMAC key. The keyed HMAC state is prepared once, so each digest costs only the message's blocks.
#[derive(Clone)]
pub struct ServerKey {
    keyed: Hmac<Sha256>,
}

impl ServerKey {
    pub const LEN: usize = 32;

    pub fn new(key: &[u8; ServerKey::LEN]) -> ServerKey {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
            Ok(keyed) => keyed,
            Err(_) => unreachable!("HMAC-SHA256 accepts a 32-byte key"),
        };
        ServerKey { keyed }
    }

    pub fn digest(&self, secret: &Secret) -> SecretDigest {
        self.digest_bytes(secret.text.as_bytes())
    }

    /// The digest of any other one-time secret kept the same way (invite codes, recovery codes).
    pub fn digest_bytes(&self, bytes: &[u8]) -> SecretDigest {
        let mut mac = self.keyed.clone();
        mac.update(bytes);
        SecretDigest(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: TokenKind, seed: u8) -> Secret {
        let mut random = [0u8; SECRET_RANDOM_BYTES];
        for (index, byte) in random.iter_mut().enumerate() {
            *byte = seed.wrapping_mul(31).wrapping_add(index as u8 * 7);
        }
        Secret::generate(kind, &random)
    }

    #[test]
    fn every_kind_round_trips_through_its_text() {
        for kind in TokenKind::ALL {
            let secret = sample(kind, 3);
            assert!(secret.expose().starts_with(&format!("{}_", kind.prefix())));
            assert_eq!(secret.expose().len(), SECRET_LEN);
            assert_eq!(Secret::parse(secret.expose()), Ok(secret.clone()));
            assert_eq!(TokenKind::from_name(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let secret = sample(TokenKind::Collection, 9);
        let text = secret.expose();
        for position in PREFIX_LEN..text.len() {
            for &replacement in BASE32_ALPHABET {
                if text.as_bytes()[position] == replacement {
                    continue;
                }
                let mut changed = text.as_bytes().to_vec();
                changed[position] = replacement;
                let changed = String::from_utf8(changed).unwrap();
                assert_eq!(Secret::parse(&changed), Err(SecretError::BadChecksum), "{position}");
            }
        }
    }

    #[test]
    fn malformed_secrets_are_refused() {
        let text = sample(TokenKind::Account, 1).expose().to_owned();
        assert_eq!(Secret::parse(""), Err(SecretError::Malformed));
        assert_eq!(Secret::parse(&text[..text.len() - 1]), Err(SecretError::Malformed));
        assert_eq!(Secret::parse(&format!("xyz{}", &text[3..])), Err(SecretError::Malformed));
        assert_eq!(Secret::parse(&text.to_uppercase()), Err(SecretError::Malformed));
        let mut upper = text.clone();
        upper.replace_range(10..11, "A");
        assert_eq!(Secret::parse(&upper), Err(SecretError::BadCharacter));
        // Same length in bytes, but a two-byte character where the checksum begins.
        let mut non_ascii = text[..text.len() - 8].to_owned();
        non_ascii.push_str("é000000");
        assert_eq!(non_ascii.len(), text.len());
        assert_eq!(Secret::parse(&non_ascii), Err(SecretError::Malformed));
    }

    #[test]
    fn changing_the_prefix_breaks_the_checksum() {
        let text = sample(TokenKind::Collection, 5).expose().replacen("tso", "tsa", 1);
        assert_eq!(Secret::parse(&text), Err(SecretError::BadChecksum));
    }

    #[test]
    fn digests_depend_on_key_and_secret() {
        let first = ServerKey::new(&[1; 32]);
        let second = ServerKey::new(&[2; 32]);
        let secret = sample(TokenKind::Device, 4);
        assert_eq!(first.digest(&secret), first.digest(&secret));
        assert_ne!(first.digest(&secret), second.digest(&secret));
        assert_ne!(first.digest(&secret), first.digest(&sample(TokenKind::Device, 5)));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let secret = sample(TokenKind::ApiKey, 2);
        assert!(!format!("{secret:?}").contains(&secret.expose()[4..]));
        assert!(!format!("{:?}", ServerKey::new(&[7; 32])).contains('7'));
    }
}
