//! Cluster metadata: the image every component reads, the records that change it, and
//! where those records are made durable.
//!
//! Metadata changes only by committing [`MetadataRecord`]s (KRaft's vocabulary). On this
//! single-node build the records go to a local fsynced journal ([`journal`]); the Raft
//! quorum replaces that journal with the replicated log without changing the records or the
//! image. After each commit the new image is published (see `ReplicaManager::apply_image`).

pub mod image;
pub mod journal;
pub mod records;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

pub use image::{MetadataImage, PartitionImage, TopicImage};
pub use records::MetadataRecord;

use journal::Journal;

/// The durable record log and the current image built from it.
pub struct MetadataStore {
    journal: Mutex<Journal>,
    image: RwLock<Arc<MetadataImage>>,
}

impl MetadataStore {
    /// Replays the journal in `log_dir` into an image.
    pub fn open(log_dir: &Path, cluster_id: String) -> anyhow::Result<MetadataStore> {
        let (journal, records) = Journal::open(&log_dir.join(journal::FILE_NAME))?;
        let mut image = MetadataImage::new(cluster_id);
        for record in &records {
            image.apply(record);
        }
        Ok(MetadataStore {
            journal: Mutex::new(journal),
            image: RwLock::new(Arc::new(image)),
        })
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.read().expect("image lock poisoned"))
    }

    /// Makes `records` durable, applies them, and returns the new image. Commits are
    /// serialized: `decide` sees the image every earlier commit produced, so checks such as
    /// "topic does not exist yet" cannot race.
    pub fn commit_with<T>(
        &self,
        decide: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), crate::error::ApiError>,
    ) -> Result<(Arc<MetadataImage>, T), crate::error::ApiError> {
        let mut journal = self.journal.lock().expect("journal lock poisoned");
        let current = self.image();
        let (records, outcome) = decide(&current)?;
        if records.is_empty() {
            return Ok((current, outcome));
        }
        journal.append(&records).map_err(|error| {
            tracing::error!(%error, "metadata journal append failed");
            crate::error::ApiError::new(
                proto_kafka::ResponseError::KafkaStorageError,
                format!("metadata journal append failed: {error}"),
            )
        })?;
        let mut next = (*current).clone();
        for record in &records {
            next.apply(record);
        }
        let next = Arc::new(next);
        *self.image.write().expect("image lock poisoned") = Arc::clone(&next);
        Ok((next, outcome))
    }
}
