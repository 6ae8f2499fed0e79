//! Cluster metadata as the broker sees it: the image replicated by the metadata quorum
//! (`karst-raft`), and read-only access to it.
//!
//! Metadata changes only by committing records through the controller
//! (`crate::controller`); every node applies the quorum's log to the same image and
//! publishes each new image to its local components (`ReplicaManager::apply_image`).

use std::sync::Arc;

use karst_raft::MetadataQuorum;
pub use karst_raft::{
    BrokerRegistration, MetadataImage, MetadataRecord, PartitionImage, TopicImage,
};

/// Read access to the current metadata image.
pub struct MetadataView {
    quorum: Arc<MetadataQuorum>,
}

impl MetadataView {
    pub fn new(quorum: Arc<MetadataQuorum>) -> MetadataView {
        MetadataView { quorum }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }
}
