//! Named random streams: everything random derives from the one `--seed` and a name, so adding
//! a dataset or changing one dataset's epochs never reshuffles the others.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The generator of stream `parts` under `seed` (ChaCha8: fast, portable, stable across versions).
pub fn named_rng(seed: u64, parts: &[&str]) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(b"prep-mix\0");
    h.update(seed.to_le_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    ChaCha8Rng::from_seed(h.finalize().into())
}
