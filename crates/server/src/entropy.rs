//! Randomness at the edge: every random byte Tessera uses comes from the operating system's CSPRNG.

use std::sync::atomic::{AtomicI64, Ordering};

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

/// A new time-ordered id, strictly greater than every id this process made before: two rows created in the same
/// millisecond still list in the order they were made.
pub fn new_id() -> Id {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let candidate = Id::generate(now_ms(), u32::from_le_bytes(random_bytes::<4>())).as_i64();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Id::from_i64(next),
            Err(current) => last = current,
        }
    }
}

/// A new token secret of `kind`.
pub fn new_secret(kind: TokenKind) -> Secret {
    Secret::generate(kind, &random_bytes::<SECRET_RANDOM_BYTES>())
}
