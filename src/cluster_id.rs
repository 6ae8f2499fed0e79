//! Cluster and directory ids in Kafka's text form: a random UUID as 22 characters of
//! unpadded base64url (`MkU3OEVBNTcwNTJENDM2Qk`), what `kafka-storage random-uuid` prints.
//!
//! `karst storage random-uuid` prints [`new_cluster_id`]; `karst storage format` checks a given
//! id with [`parse_cluster_id`]; the server uses the same generator when the no-argument single
//! node formats itself, so every id Karst writes has the same shape as Kafka's.

use uuid::Uuid;

/// Characters of a Kafka id: base64url, unpadded.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of a 16-byte UUID in unpadded base64: 128 bits in 6-bit characters, rounded up.
pub const CLUSTER_ID_LENGTH: usize = 22;

/// A new random cluster id. Like Kafka's `Uuid.randomUuid`, it never starts with `-`, so it
/// cannot be mistaken for a flag when pasted on a command line, and is never the nil UUID.
pub fn new_cluster_id() -> String {
    loop {
        let uuid = Uuid::new_v4();
        let text = encode(uuid);
        if !uuid.is_nil() && !text.starts_with('-') {
            return text;
        }
    }
}

/// The base64url text of `uuid`.
pub fn encode(uuid: Uuid) -> String {
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    let mut text = String::with_capacity(CLUSTER_ID_LENGTH);
    for byte in uuid.into_bytes() {
        bits = (bits << 8) | u32::from(byte);
        bit_count += 8;
        while bit_count >= 6 {
            bit_count -= 6;
            text.push(ALPHABET[((bits >> bit_count) & 0x3f) as usize] as char);
        }
    }
    // 128 = 21 * 6 + 2: the last character carries the final 2 bits, padded with zeros.
    text.push(ALPHABET[((bits << (6 - bit_count)) & 0x3f) as usize] as char);
    debug_assert_eq!(text.len(), CLUSTER_ID_LENGTH);
    text
}

/// Why a text is not a cluster id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterIdError {
    #[error("cluster id {text:?} has {length} characters; a cluster id has {CLUSTER_ID_LENGTH} (make one with `karst storage random-uuid`)")]
    Length { text: String, length: usize },
    #[error("cluster id {text:?} has {character:?}, which is not base64url (A-Z a-z 0-9 - _); make one with `karst storage random-uuid`")]
    Character { text: String, character: char },
}

/// Checks that `text` is a Kafka-style id and returns the UUID it encodes.
///
/// The 4 padding bits of the last character are ignored, as Java's base64 decoder (and so
/// `kafka-storage format`) ignores them: ids from Kafka's own documentation, such as
/// `MkU3OEVBNTcwNTJENDM2Qk`, have them set.
pub fn parse_cluster_id(text: &str) -> Result<Uuid, ClusterIdError> {
    let length = text.chars().count();
    if length != CLUSTER_ID_LENGTH {
        return Err(ClusterIdError::Length {
            text: text.to_owned(),
            length,
        });
    }
    let mut bytes = [0u8; 16];
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    let mut filled = 0;
    for character in text.chars() {
        let value = ALPHABET
            .iter()
            .position(|candidate| char::from(*candidate) == character)
            .ok_or_else(|| ClusterIdError::Character {
                text: text.to_owned(),
                character,
            })?;
        bits = (bits << 6) | value as u32;
        bit_count += 6;
        if bit_count >= 8 && filled < bytes.len() {
            bit_count -= 8;
            bytes[filled] = (bits >> bit_count) as u8;
            filled += 1;
        }
    }
    assert_eq!(filled, bytes.len(), "22 characters carry 16 bytes");
    Ok(Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_22_base64url_characters_that_parse_back() {
        for _ in 0..1000 {
            let id = new_cluster_id();
            assert_eq!(id.len(), CLUSTER_ID_LENGTH, "{id}");
            assert!(!id.starts_with('-'), "{id}");
            let uuid = parse_cluster_id(&id).unwrap();
            assert_eq!(encode(uuid), id);
        }
    }

    #[test]
    fn encoding_matches_kafka_for_known_uuids() {
        // Kafka: new Uuid(0L, 1L).toString() == "AAAAAAAAAAAAAAAAAAAAAQ".
        assert_eq!(encode(Uuid::from_u128(1)), "AAAAAAAAAAAAAAAAAAAAAQ");
        assert_eq!(encode(Uuid::from_u128(u128::MAX)), "_____________________w");
    }

    #[test]
    fn ids_from_kafka_documentation_are_accepted() {
        assert!(parse_cluster_id("MkU3OEVBNTcwNTJENDM2Qk").is_ok());
        assert!(parse_cluster_id("4L6g3nShT-eMCtK--X86sw").is_ok());
    }

    #[test]
    fn malformed_ids_are_refused_with_the_reason() {
        assert!(matches!(
            parse_cluster_id("short"),
            Err(ClusterIdError::Length { length: 5, .. })
        ));
        assert!(matches!(
            parse_cluster_id("MkU3OEVBNTcwNTJENDM2Q+"),
            Err(ClusterIdError::Character { character: '+', .. })
        ));
        let message = parse_cluster_id("").unwrap_err().to_string();
        assert!(message.contains("random-uuid"), "{message}");
    }
}
