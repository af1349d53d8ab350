//! Card numbers at rest: with `privacy.card_hash_key` set, every outcome
//! keeps a keyed hash of its card number (HMAC-SHA256, hex) in place of the
//! number, before it reaches any store (memory, Cassandra, OpenSearch, the
//! outcome topic). The same card always gets the same hash, so a card's
//! history stays one Cassandra partition and one Kafka key, and a query by
//! card number hashes its argument the same way. Without the key the hash
//! cannot be reversed or recomputed. (The dead-letter topic keeps records
//! exactly as they arrived; restrict who may read it.)

use std::sync::Arc;

use arrow::array::{Array, AsArray, StringArray};
use arrow::record_batch::RecordBatch;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::record::column;

/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;

/// Computes the keyed hash of card numbers.
#[derive(Clone)]
pub struct CardHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for CardHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardHasher(key not shown)")
    }
}

impl CardHasher {
    /// A hasher with `key`; None when the key is empty.
    pub fn new(key: &str) -> Result<Option<Self>, String> {
        if key.is_empty() {
            return Ok(None);
        }
        if key.chars().count() < MIN_KEY_LEN {
            return Err(format!("privacy.card_hash_key must be at least {MIN_KEY_LEN} characters"));
        }
        let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Some(Self { mac }))
    }

    /// The hash of one card number, as 64 hex digits.
    pub fn hash(&self, cc_num: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(cc_num.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `outcomes` with `cc_num` replaced by its hash.
    pub fn protect(&self, outcomes: RecordBatch) -> RecordBatch {
        let Ok(index) = outcomes.schema().index_of(column::cc_num) else { return outcomes };
        let cards = outcomes.column(index).as_string::<i32>();
        let hashed: StringArray =
            (0..cards.len()).map(|i| cards.is_valid(i).then(|| self.hash(cards.value(i)))).collect();
        let mut columns = outcomes.columns().to_vec();
        columns[index] = Arc::new(hashed);
        RecordBatch::try_new(outcomes.schema(), columns).expect("same schema, same length")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_stable_and_hex() {
        let a = CardHasher::new("key-number-one-0123").unwrap().unwrap();
        let b = CardHasher::new("key-number-two-0123").unwrap().unwrap();
        let h = a.hash("4111111111111111");
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, a.hash("4111111111111111"));
        assert_ne!(h, a.hash("4111111111111112"));
        assert_ne!(h, b.hash("4111111111111111"));
        // RFC 4231-style check of the construction: HMAC-SHA256("key", "The quick brown fox...").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(expected, "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    }

    #[test]
    fn short_keys_are_refused_and_empty_means_off() {
        assert!(CardHasher::new("").unwrap().is_none());
        assert!(CardHasher::new("short").unwrap_err().contains("at least 16"));
        assert_eq!(
            format!("{:?}", CardHasher::new("a-long-enough-key-000").unwrap().unwrap()),
            "CardHasher(key not shown)"
        );
    }
}
