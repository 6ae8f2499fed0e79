//! Loading a shard: replaying a `__consumer_offsets` partition from its log start to its
//! durable end into groups, when this broker becomes the partition's leader.
//!
//! Later records win per key; a tombstone (null value) deletes an offset or a group's
//! metadata. A group with metadata comes back Stable with its members (who keep
//! heartbeating to the new coordinator) or Empty; a group with only offsets comes back
//! Empty without a protocol type, as Kafka's simple consumers leave it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use karst_storage::{Offset, TopicPartition};

use super::records::{self, GroupValue, OffsetValue, RecordKey};
use super::state::Group;
use super::{Shard, LOAD_READ_BYTES, OFFSETS_TOPIC};
use crate::broker::Broker;
use crate::client::records::decode_fetched;
use crate::replication::now_ms;

/// A group as its records say so far.
#[derive(Default)]
struct Replayed {
    metadata: Option<GroupValue>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
}

pub async fn load(broker: Arc<Broker>, shard: Arc<Shard>) {
    let key = TopicPartition::new(OFFSETS_TOPIC, shard.partition);
    let Some(partition) = broker.replicas.partition(&key) else {
        return;
    };
    let started = std::time::Instant::now();
    let log = Arc::clone(&partition.log);
    let replayed = tokio::task::spawn_blocking(move || replay(&log)).await;
    let groups = match replayed {
        Ok(Ok(groups)) => groups,
        Ok(Err(error)) => {
            tracing::error!(partition = %key, %error, "replaying group state failed; the shard stays unloaded");
            return;
        }
        Err(error) => {
            tracing::error!(partition = %key, %error, "replaying group state panicked");
            return;
        }
    };
    let now = now_ms();
    let delay_ms = broker.groups.options.initial_rebalance_delay_ms;
    let mut loaded = HashMap::new();
    for (group_id, replayed) in groups {
        let mut group = match replayed.metadata {
            Some(metadata) => Group::from_record(&group_id, metadata, delay_ms, now),
            None => Group::new(&group_id, delay_ms, now),
        };
        group.offsets = replayed.offsets;
        if !group.is_forgettable() {
            loaded.insert(group_id, Arc::new(Mutex::new(group)));
        }
    }
    let count = loaded.len();
    *shard.groups.lock().expect("groups lock") = loaded;
    shard
        .loaded
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let level_info = count > 0;
    if !level_info {
        tracing::debug!(partition = %key, epoch = shard.leader_epoch, "loaded group state: no groups");
        return;
    }
    tracing::info!(
        partition = %key,
        epoch = shard.leader_epoch,
        groups = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded group state"
    );
}

fn replay(log: &karst_storage::Log) -> anyhow::Result<HashMap<String, Replayed>> {
    let offsets = log.offsets();
    let end = offsets.durable_end_offset;
    let mut offset = offsets.log_start_offset;
    let mut groups: HashMap<String, Replayed> = HashMap::new();
    while offset < end {
        let bytes = log.read(offset, LOAD_READ_BYTES, end)?;
        if bytes.is_empty() {
            break;
        }
        let (records, next) = decode_fetched(bytes, offset.0)?;
        for record in records {
            apply(&mut groups, record.key.as_deref(), record.value.as_deref());
        }
        if next <= offset.0 {
            anyhow::bail!("no progress replaying at offset {}", offset.0);
        }
        offset = Offset(next);
    }
    Ok(groups)
}

fn apply(groups: &mut HashMap<String, Replayed>, key: Option<&[u8]>, value: Option<&[u8]>) {
    let Some(key) = key else { return };
    let key = match records::decode_key(key) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!(%error, "skipping a record with an unreadable key");
            return;
        }
    };
    let entry = groups.entry(key.group_id().to_owned()).or_default();
    match (key, value) {
        (
            RecordKey::Offset {
                topic, partition, ..
            },
            Some(value),
        ) => match records::decode_offset_value(value) {
            Ok(value) => {
                entry.offsets.insert((topic, partition), value);
            }
            Err(error) => tracing::warn!(%error, "skipping an unreadable offset record"),
        },
        (
            RecordKey::Offset {
                topic, partition, ..
            },
            None,
        ) => {
            entry.offsets.remove(&(topic, partition));
        }
        (RecordKey::Group { .. }, Some(value)) => match records::decode_group_value(value) {
            Ok(value) => entry.metadata = Some(value),
            Err(error) => tracing::warn!(%error, "skipping an unreadable group record"),
        },
        (RecordKey::Group { .. }, None) => entry.metadata = None,
    }
}
