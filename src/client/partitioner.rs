//! Kafka's default partitioner for keyed records: murmur2 of the key bytes.
//!
//! Every Kafka client that wants keyed records of one key to land where the Java producer puts
//! them implements the Java `Utils.murmur2` bit for bit (including its 32-bit wrap-around
//! arithmetic and seed), clears the sign bit (`Utils.toPositive`), and takes the remainder by
//! the partition count. Records without a key are spread by the caller (round-robin per batch).

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`, returned as Java's
/// signed `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const MULTIPLIER: u32 = 0x5bd1_e995;
    const SHIFT: u32 = 24;

    // Java computes `seed ^ length` on ints; a key longer than 2^32 bytes cannot occur.
    let mut hash = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        word = word.wrapping_mul(MULTIPLIER);
        word ^= word >> SHIFT;
        word = word.wrapping_mul(MULTIPLIER);
        hash = hash.wrapping_mul(MULTIPLIER);
        hash ^= word;
    }
    // The tail: Java's fall-through `switch (length % 4)`.
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(MULTIPLIER);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(MULTIPLIER);
    hash ^= hash >> 15;
    hash as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partition_count`
/// partitions: `toPositive(murmur2(key)) % partition_count`.
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafkas_own_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn keyed_partition_clears_the_sign_bit_before_the_remainder() {
        // murmur2("21") is negative; a plain `%` would give a negative partition.
        assert_eq!(
            partition_for_key(b"21", 10),
            ((-973_932_308_i32) & 0x7fff_ffff) % 10
        );
        for key in [&b"21"[..], b"foobar", b"abc", b""] {
            let partition = partition_for_key(key, 7);
            assert!((0..7).contains(&partition));
        }
    }

    #[test]
    fn the_same_key_always_lands_on_the_same_partition() {
        assert_eq!(
            partition_for_key(b"user-42", 12),
            partition_for_key(b"user-42", 12)
        );
    }
}
