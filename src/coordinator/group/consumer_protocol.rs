//! The consumer protocol's subscription and assignment bytes, which the coordinator
//! otherwise passes through opaquely: read only to answer OffsetDelete
//! (GROUP_SUBSCRIBED_TO_TOPIC) and to show assignments in `karst groups describe`.
//!
//! Each starts with its version (int16). Newer versions only append fields, so a version
//! above the newest known one is read as the newest known one.

use bytes::{Buf, Bytes};
use proto_kafka::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use proto_kafka::protocol::Decodable;

/// Newest version of either structure this build knows.
const NEWEST_KNOWN_VERSION: i16 = 3;

/// Topics a member subscribes to; `None` if the bytes are not a consumer subscription.
pub fn subscription_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let (version, mut body) = split_version(metadata)?;
    let subscription = ConsumerProtocolSubscription::decode(&mut body, version).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// The partitions assigned to a member, per topic; `None` if unreadable.
pub fn assigned_partitions(assignment: &Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let (version, mut body) = split_version(assignment)?;
    let assignment = ConsumerProtocolAssignment::decode(&mut body, version).ok()?;
    Some(
        assignment
            .assigned_partitions
            .into_iter()
            .map(|topic| (topic.topic.to_string(), topic.partitions))
            .collect(),
    )
}

fn split_version(bytes: &Bytes) -> Option<(i16, Bytes)> {
    if bytes.len() < 2 {
        return None;
    }
    let mut body = bytes.clone();
    let version = body.get_i16();
    if version < 0 {
        return None;
    }
    Some((version.min(NEWEST_KNOWN_VERSION), body))
}
