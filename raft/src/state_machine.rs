//! The replicated state machine: the metadata image, its snapshots, and publication of every
//! change to local subscribers.
//!
//! openraft drives it from one task: `apply` gets committed entries in log order; normal
//! entries carry a [`MetadataBatch`] whose records go through [`MetadataImage::apply`]. After
//! each applied run of entries the new image is published on a `tokio::sync::watch` channel
//! *before* the writers' responses are sent, so a writer that sees its commit also sees it in
//! [`crate::MetadataQuorum::image`].
//!
//! The image lives in memory; durability comes from the log plus snapshots. A snapshot is the
//! image encoded with [`crate::codec`] together with the last applied log id and membership,
//! written (synced) to `snapshot` in the state machine's directory. On start the snapshot is
//! loaded and openraft re-applies the log from there up to the committed hint. Lagging nodes
//! receive the leader's current snapshot and install it here.
//!
//! Publishing clones the image once per applied run (copy-on-write through `Arc`), which is
//! O(image). Fine for the metadata sizes targeted now; a persistent map would remove it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use rkyv::{Archive, Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec;
use crate::durable_file::{self, Durability};
use crate::image::MetadataImage;
use crate::records::MetadataBatch;
use crate::stored::StoredSnapshotMeta;
use crate::type_config::{
    Applied, EntryPayload, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership,
    TypeConfig,
};

const SNAPSHOT_FILE: &str = "snapshot";

#[derive(Archive, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: StoredSnapshotMeta,
    /// `codec::encode(&MetadataImage)`: exactly the bytes sent to lagging nodes.
    image: Vec<u8>,
}

/// The image inside is encoded on its own, with its own version byte.
impl codec::Layout for StoredSnapshot {
    const SINCE: u8 = 1;
}

/// The newest snapshot, shared between the state machine and its snapshot builders.
struct Snapshots {
    dir: PathBuf,
    current: Mutex<Option<(SnapshotMeta, SnapshotData)>>,
    built: AtomicU64,
    installed: AtomicU64,
}

impl Snapshots {
    fn save(&self, meta: &SnapshotMeta, image: &SnapshotData) -> io::Result<()> {
        let stored = StoredSnapshot {
            meta: StoredSnapshotMeta::from(meta),
            image: image.clone(),
        };
        let bytes = codec::encode(&stored)?;
        durable_file::replace(&self.dir, SNAPSHOT_FILE, &bytes, Durability::Synced)?;
        *self.current.lock().expect("snapshot lock poisoned") = Some((meta.clone(), image.clone()));
        Ok(())
    }
}

/// Counters a test or an operator can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Snapshots this node built from its own image since it started.
    pub built: u64,
    /// Snapshots received from a leader and installed since this node started.
    pub installed: u64,
}

/// Shared read access to the snapshot counters.
#[derive(Clone)]
pub struct SnapshotCounters(Arc<Snapshots>);

impl SnapshotCounters {
    pub fn get(&self) -> SnapshotCounts {
        SnapshotCounts {
            built: self.0.built.load(Ordering::Relaxed),
            installed: self.0.installed.load(Ordering::Relaxed),
        }
    }
}

pub struct StateMachine {
    cluster_id: String,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    publisher: watch::Sender<Arc<MetadataImage>>,
    snapshots: Arc<Snapshots>,
}

/// A consistent view captured when openraft asks for a snapshot; encoding and the synced
/// write happen on openraft's builder task while `apply` goes on.
pub struct SnapshotBuilder {
    image: Arc<MetadataImage>,
    meta: SnapshotMeta,
    snapshots: Arc<Snapshots>,
}

fn decode_image(bytes: &[u8], cluster_id: &str) -> io::Result<MetadataImage> {
    let image = crate::format_v1::decode_image(bytes)?;
    if image.cluster_id != cluster_id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot of cluster {:?} offered to cluster {cluster_id:?}",
                image.cluster_id
            ),
        ));
    }
    Ok(image)
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from the snapshot there if any.
    pub fn open(dir: &Path, cluster_id: String) -> io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let snapshots = Arc::new(Snapshots {
            dir: dir.to_owned(),
            current: Mutex::new(None),
            built: AtomicU64::new(0),
            installed: AtomicU64::new(0),
        });
        let mut image = MetadataImage::new(cluster_id.clone());
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        if let Some(bytes) = durable_file::read(dir, SNAPSHOT_FILE, false)? {
            let stored = codec::decode::<StoredSnapshot>(&bytes)?;
            let meta = SnapshotMeta::try_from(stored.meta)?;
            image = decode_image(&stored.image, &cluster_id)?;
            last_applied = meta.last_log_id;
            membership = meta.last_membership.clone();
            *snapshots.current.lock().expect("snapshot lock poisoned") = Some((meta, stored.image));
        }
        let image = Arc::new(image);
        let (publisher, _) = watch::channel(Arc::clone(&image));
        Ok(StateMachine {
            cluster_id,
            image,
            last_applied,
            membership,
            publisher,
            snapshots,
        })
    }

    /// Receives every published image, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.publisher.subscribe()
    }

    pub fn snapshot_counters(&self) -> SnapshotCounters {
        SnapshotCounters(Arc::clone(&self.snapshots))
    }

    fn publish(&self) {
        self.publisher.send_replace(Arc::clone(&self.image));
    }
}

fn apply_batch(image: &mut MetadataImage, log_id: &LogId, batch: &MetadataBatch) -> Applied {
    let mut rejected = Vec::new();
    for (position, record) in batch.records.iter().enumerate() {
        if let Err(reason) = image.apply(log_id.index, record) {
            tracing::warn!(index = log_id.index, position, %reason, "metadata record rejected");
            rejected.push((position, reason));
        }
    }
    Applied {
        log_index: log_id.index,
        term: log_id.leader_id.term,
        rejected,
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut responses = Vec::new();
        let image = Arc::make_mut(&mut self.image);
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            let applied = match &entry.payload {
                EntryPayload::Blank => Applied {
                    log_index: log_id.index,
                    term: log_id.leader_id.term,
                    rejected: Vec::new(),
                },
                EntryPayload::Normal(batch) => apply_batch(image, &log_id, batch),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(log_id), membership.clone());
                    Applied {
                        log_index: log_id.index,
                        term: log_id.leader_id.term,
                        rejected: Vec::new(),
                    }
                }
            };
            image.provenance.last_applied_index = log_id.index;
            image.provenance.last_applied_term = log_id.leader_id.term;
            self.last_applied = Some(log_id);
            if let Some(responder) = responder {
                responses.push((responder, applied));
            }
        }
        self.publish();
        for (responder, applied) in responses {
            responder.send(applied);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            image: Arc::clone(&self.image),
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
            },
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let image = decode_image(&snapshot, &self.cluster_id)?;
        self.snapshots.save(meta, &snapshot)?;
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            bytes = snapshot.len(),
            "installed metadata snapshot"
        );
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.snapshots.installed.fetch_add(1, Ordering::Relaxed);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let current = self
            .snapshots
            .current
            .lock()
            .expect("snapshot lock poisoned");
        Ok(current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: data.clone(),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = codec::encode(self.image.as_ref())?;
        self.snapshots.save(&self.meta, &data)?;
        self.snapshots.built.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(last_log_id = ?self.meta.last_log_id, bytes = data.len(), "built metadata snapshot");
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: data,
        })
    }
}
