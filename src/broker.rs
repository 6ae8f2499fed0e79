//! The broker context shared by every connection and handler.

use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::fetch_session::FetchSessionCache;
use crate::metadata::MetadataStore;
use crate::replica::ReplicaManager;

pub struct Broker {
    pub config: BrokerConfig,
    pub metadata: MetadataStore,
    pub replicas: ReplicaManager,
    pub fetch_sessions: FetchSessionCache,
}

pub type SharedBroker = Arc<Broker>;

impl Broker {
    pub fn cluster_id(&self) -> String {
        self.metadata.image().cluster_id.clone()
    }
}
