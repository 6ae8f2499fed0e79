//! The records the group coordinator keeps in `__consumer_offsets`, in Kafka's schemas, so
//! Kafka's tools read Karst's data and a coordinator replays it after a failover.
//!
//! Every key and value starts with its schema version (int16):
//!
//! | key version | key | value |
//! |---|---|---|
//! | 0, 1 | offset commit: group, topic, partition | offset, leader epoch (v3+), metadata, commit timestamp (v1 adds expire timestamp) |
//! | 2 | group metadata: group | protocol type, generation, protocol, leader, state timestamp (v2+), members |
//!
//! A null value (tombstone) deletes the key: a deleted offset or group. Karst writes offset
//! values v3 and group values v3 (static membership), the newest non-flexible versions, and
//! reads v0-v3 of both; flexible v4 values (written by newer Kafka versions) are read too.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Key version of an offset commit.
const OFFSET_KEY_VERSION: i16 = 1;
/// Key version of group metadata.
const GROUP_KEY_VERSION: i16 = 2;
/// Value version Karst writes for offset commits (leader epoch, no expire timestamp).
const OFFSET_VALUE_VERSION: i16 = 3;
/// Value version Karst writes for group metadata (with group instance ids).
const GROUP_VALUE_VERSION: i16 = 3;

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when the committer did not know it.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One member in a group metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership as stored after each completed rebalance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded `__consumer_offsets` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group_id: String,
        topic: String,
        partition: i32,
    },
    Group {
        group_id: String,
    },
}

impl RecordKey {
    pub fn group_id(&self) -> &str {
        match self {
            RecordKey::Offset { group_id, .. } | RecordKey::Group { group_id } => group_id,
        }
    }
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable __consumer_offsets record: {0}")]
pub struct RecordError(&'static str);

pub fn offset_key(group_id: &str, topic: &str, partition: i32) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut out, group_id);
    put_string(&mut out, topic);
    out.put_i32(partition);
    out.freeze()
}

pub fn group_key(group_id: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(GROUP_KEY_VERSION);
    put_string(&mut out, group_id);
    out.freeze()
}

pub fn offset_value(value: &OffsetValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(OFFSET_VALUE_VERSION);
    out.put_i64(value.offset);
    out.put_i32(value.leader_epoch);
    put_string(&mut out, &value.metadata);
    out.put_i64(value.commit_timestamp_ms);
    out.freeze()
}

pub fn group_value(value: &GroupValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut out, &value.protocol_type);
    out.put_i32(value.generation_id);
    put_nullable_string(&mut out, value.protocol_name.as_deref());
    put_nullable_string(&mut out, value.leader_id.as_deref());
    out.put_i64(value.state_timestamp_ms);
    out.put_i32(value.members.len() as i32);
    for member in &value.members {
        put_string(&mut out, &member.member_id);
        put_nullable_string(&mut out, member.group_instance_id.as_deref());
        put_string(&mut out, &member.client_id);
        put_string(&mut out, &member.client_host);
        out.put_i32(member.rebalance_timeout_ms);
        out.put_i32(member.session_timeout_ms);
        put_bytes(&mut out, &member.subscription);
        put_bytes(&mut out, &member.assignment);
    }
    out.freeze()
}

pub fn decode_key(mut key: &[u8]) -> Result<RecordKey, RecordError> {
    let version = get_i16(&mut key)?;
    match version {
        0 | 1 => Ok(RecordKey::Offset {
            group_id: get_string(&mut key)?,
            topic: get_string(&mut key)?,
            partition: get_i32(&mut key)?,
        }),
        2 => Ok(RecordKey::Group {
            group_id: get_string(&mut key)?,
        }),
        _ => Err(RecordError("unknown key version")),
    }
}

pub fn decode_offset_value(mut value: &[u8]) -> Result<OffsetValue, RecordError> {
    let version = get_i16(&mut value)?;
    let flexible = version >= 4;
    let read_string = |value: &mut &[u8]| {
        if flexible {
            get_compact_string(value)
        } else {
            get_string(value)
        }
    };
    let offset = get_i64(&mut value)?;
    let leader_epoch = if version >= 3 {
        get_i32(&mut value)?
    } else {
        -1
    };
    let metadata = read_string(&mut value)?;
    let commit_timestamp_ms = get_i64(&mut value)?;
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

pub fn decode_group_value(mut value: &[u8]) -> Result<GroupValue, RecordError> {
    let version = get_i16(&mut value)?;
    if version > 3 {
        return Err(RecordError("flexible group metadata values are not read"));
    }
    let protocol_type = get_string(&mut value)?;
    let generation_id = get_i32(&mut value)?;
    let protocol_name = get_nullable_string(&mut value)?;
    let leader_id = get_nullable_string(&mut value)?;
    let state_timestamp_ms = if version >= 2 {
        get_i64(&mut value)?
    } else {
        -1
    };
    let count = get_i32(&mut value)?.max(0) as usize;
    let mut members = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let member_id = get_string(&mut value)?;
        let group_instance_id = if version >= 3 {
            get_nullable_string(&mut value)?
        } else {
            None
        };
        let client_id = get_string(&mut value)?;
        let client_host = get_string(&mut value)?;
        let rebalance_timeout_ms = if version >= 1 {
            get_i32(&mut value)?
        } else {
            -1
        };
        let session_timeout_ms = get_i32(&mut value)?;
        let subscription = get_bytes(&mut value)?;
        let assignment = get_bytes(&mut value)?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation_id,
        protocol_name,
        leader_id,
        state_timestamp_ms,
        members,
    })
}

fn put_string(out: &mut BytesMut, value: &str) {
    out.put_i16(value.len() as i16);
    out.put_slice(value.as_bytes());
}

fn put_nullable_string(out: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(value) => put_string(out, value),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

fn get_i16(input: &mut &[u8]) -> Result<i16, RecordError> {
    (input.remaining() >= 2)
        .then(|| input.get_i16())
        .ok_or(RecordError("truncated int16"))
}

fn get_i32(input: &mut &[u8]) -> Result<i32, RecordError> {
    (input.remaining() >= 4)
        .then(|| input.get_i32())
        .ok_or(RecordError("truncated int32"))
}

fn get_i64(input: &mut &[u8]) -> Result<i64, RecordError> {
    (input.remaining() >= 8)
        .then(|| input.get_i64())
        .ok_or(RecordError("truncated int64"))
}

fn take(input: &mut &[u8], length: usize) -> Result<Vec<u8>, RecordError> {
    if input.remaining() < length {
        return Err(RecordError("truncated field"));
    }
    let (head, rest) = input.split_at(length);
    *input = rest;
    Ok(head.to_vec())
}

fn get_nullable_string(input: &mut &[u8]) -> Result<Option<String>, RecordError> {
    let length = get_i16(input)?;
    if length < 0 {
        return Ok(None);
    }
    let bytes = take(input, length as usize)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| RecordError("string is not UTF-8"))
}

fn get_string(input: &mut &[u8]) -> Result<String, RecordError> {
    get_nullable_string(input)?.ok_or(RecordError("null where a string is required"))
}

fn get_compact_string(input: &mut &[u8]) -> Result<String, RecordError> {
    let length = get_unsigned_varint(input)?;
    if length == 0 {
        return Err(RecordError("null where a string is required"));
    }
    let bytes = take(input, (length - 1) as usize)?;
    String::from_utf8(bytes).map_err(|_| RecordError("string is not UTF-8"))
}

fn get_unsigned_varint(input: &mut &[u8]) -> Result<u64, RecordError> {
    let mut value = 0u64;
    for shift in (0..35).step_by(7) {
        let byte = *input.first().ok_or(RecordError("truncated varint"))?;
        *input = &input[1..];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RecordError("varint too long"))
}

fn get_bytes(input: &mut &[u8]) -> Result<Bytes, RecordError> {
    let length = get_i32(input)?;
    if length < 0 {
        return Ok(Bytes::new());
    }
    Ok(Bytes::from(take(input, length as usize)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip() {
        let key = offset_key("payments", "orders", 7);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::Offset {
                group_id: "payments".into(),
                topic: "orders".into(),
                partition: 7
            }
        );
        let value = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_offset_value(&offset_value(&value)).unwrap(), value);
    }

    #[test]
    fn group_records_round_trip() {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation_id: 4,
            protocol_name: Some("range".into()),
            leader_id: Some("a-1".into()),
            state_timestamp_ms: 5,
            members: vec![MemberValue {
                member_id: "a-1".into(),
                group_instance_id: Some("instance-a".into()),
                client_id: "a".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        };
        assert_eq!(decode_group_value(&group_value(&value)).unwrap(), value);
        assert_eq!(
            decode_key(&group_key("g")).unwrap(),
            RecordKey::Group {
                group_id: "g".into()
            }
        );
    }

    #[test]
    fn kafka_offset_value_v1_is_read() {
        // Version 1: offset, metadata, commit timestamp, expire timestamp.
        let mut out = BytesMut::new();
        out.put_i16(1);
        out.put_i64(9);
        put_string(&mut out, "");
        out.put_i64(100);
        out.put_i64(200);
        let value = decode_offset_value(&out).unwrap();
        assert_eq!((value.offset, value.leader_epoch), (9, -1));
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let key = offset_key("g", "t", 1);
        for cut in 0..key.len() {
            assert!(decode_key(&key[..cut]).is_err());
        }
    }
}
