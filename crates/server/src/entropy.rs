//! Randomness at the edge: every random byte Tessera uses comes from the operating system's CSPRNG.

use tessera_core::{Id, SECRET_RANDOM_BYTES, Secret, TokenKind};

use crate::time::now_ms;

fn fill(bytes: &mut [u8]) {
    // Without a working OS random source no secret can be made safely; there is nothing sensible to fall back to.
    if let Err(error) = getrandom::fill(bytes) {
        panic!("the operating system's random number generator failed: {error}");
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill(&mut bytes);
    bytes
}

/// A new time-ordered id.
pub fn new_id() -> Id {
    Id::generate(now_ms(), u32::from_le_bytes(random_bytes::<4>()))
}

/// A new token secret of `kind`.
pub fn new_secret(kind: TokenKind) -> Secret {
    Secret::generate(kind, &random_bytes::<SECRET_RANDOM_BYTES>())
}
