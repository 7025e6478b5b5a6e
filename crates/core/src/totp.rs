//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps), as authenticator apps
//! compute them. Pure: the caller passes the time and the last accepted step.
//!
//! A code is accepted once: the step it matched is returned, the caller stores it, and a code matching that step
//! or an earlier one is refused as a replay. One step of clock drift either way is allowed.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

pub const STEP_MS: i64 = 30_000;
pub const DIGITS: usize = 6;
/// Bytes in a new secret: 160 bits, as RFC 4226 recommends for HMAC-SHA1.
pub const SECRET_BYTES: usize = 20;

const RFC4648_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A TOTP shared secret. Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the code must be 6 digits")]
    Malformed,
    #[error("the code is wrong or too old")]
    Wrong,
    #[error("the code was already used")]
    Replayed,
}

impl TotpSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> TotpSecret {
        TotpSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret in RFC 4648 base32 without padding, as authenticator apps take it.
    pub fn to_base32(&self) -> String {
        let mut out = String::with_capacity(self.0.len().div_ceil(5) * 8);
        let mut buffer: u32 = 0;
        let mut bits = 0;
        for &byte in &self.0 {
            buffer = (buffer << 8) | u32::from(byte);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(RFC4648_ALPHABET[((buffer >> bits) & 31) as usize] as char);
            }
        }
        if bits > 0 {
            out.push(RFC4648_ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
        }
        out
    }

    /// The `otpauth://` URI an authenticator app scans.
    pub fn otpauth_uri(&self, issuer: &str, account_name: &str) -> String {
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={}",
            uri_escape(issuer),
            uri_escape(account_name),
            self.to_base32(),
            uri_escape(issuer),
            STEP_MS / 1000
        )
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

fn uri_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The time step containing `unix_ms`.
pub fn step_at(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(STEP_MS)
}

/// The code for one time step, as a number below 10^6.
pub fn code_at(secret: &TotpSecret, step: i64) -> u32 {
    let mut mac = match <Hmac<Sha1> as KeyInit>::new_from_slice(&secret.0) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(&(step as u64).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let truncated =
        u32::from_be_bytes([digest[offset], digest[offset + 1], digest[offset + 2], digest[offset + 3]]) & 0x7fff_ffff;
    truncated % 10u32.pow(DIGITS as u32)
}

/// Checks a code typed by a person at `now_ms`. Returns the step it matched, which the caller must remember as the
/// new last accepted step.
pub fn verify(secret: &TotpSecret, code: &str, now_ms: i64, last_accepted_step: Option<i64>) -> Result<i64, TotpError> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let presented: u32 = code.parse().map_err(|_| TotpError::Malformed)?;
    let now = step_at(now_ms);
    let mut replayed = false;
    for step in [now, now - 1, now + 1] {
        if constant_time_eq(code_at(secret, step), presented) {
            if last_accepted_step.is_some_and(|last| step <= last) {
                replayed = true;
                continue;
            }
            return Ok(step);
        }
    }
    Err(if replayed { TotpError::Replayed } else { TotpError::Wrong })
}

fn constant_time_eq(a: u32, b: u32) -> bool {
    (a ^ b) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    #[test]
    fn rfc_6238_test_vectors_truncated_to_six_digits() {
        for (seconds, expected) in [
            (59, 287_082),
            (1_111_111_109, 81_804),
            (1_111_111_111, 50_471),
            (1_234_567_890, 5_924),
            (2_000_000_000, 279_037),
        ] {
            assert_eq!(code_at(&rfc_secret(), step_at(seconds * 1000)), expected, "{seconds}");
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_one_step_of_drift_is_allowed() {
        let secret = rfc_secret();
        let now = 1_234_567_890_000;
        let code = |step: i64| format!("{:06}", code_at(&secret, step));
        let step = step_at(now);
        assert_eq!(verify(&secret, &code(step), now, None), Ok(step));
        assert_eq!(verify(&secret, &code(step), now, Some(step)), Err(TotpError::Replayed));
        assert_eq!(verify(&secret, &code(step - 1), now, Some(step - 2)), Ok(step - 1));
        assert_eq!(verify(&secret, &code(step + 1), now, Some(step)), Ok(step + 1));
        assert_eq!(verify(&secret, &code(step - 2), now, None), Err(TotpError::Wrong));
        assert_eq!(verify(&secret, &code(step + 2), now, None), Err(TotpError::Wrong));
        assert_eq!(verify(&secret, "12345", now, None), Err(TotpError::Malformed));
        assert_eq!(verify(&secret, "12345a", now, None), Err(TotpError::Malformed));
    }

    #[test]
    fn secrets_encode_as_rfc_4648_base32() {
        assert_eq!(rfc_secret().to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let uri = rfc_secret().otpauth_uri("Tessera", "ada@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Tessera:ada@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Tessera\
             &algorithm=SHA1&digits=6&period=30"
        );
        assert!(!format!("{:?}", rfc_secret()).contains("GEZ"));
    }
}
