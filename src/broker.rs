//! The broker context shared by every connection, handler and background task.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use karst_raft::MetadataQuorum;

use crate::config::BrokerConfig;
use crate::controller::ControllerState;
use crate::coordinator::group::GroupCoordinator;
use crate::coordinator::producer_ids::ProducerIdManager;
use crate::fetch_session::FetchSessionCache;
use crate::metadata::MetadataView;
use crate::replication::fetcher::Fetchers;
use crate::replication::ReplicaManager;

pub struct Broker {
    pub config: BrokerConfig,
    pub quorum: Arc<MetadataQuorum>,
    pub metadata: MetadataView,
    pub replicas: ReplicaManager,
    pub fetchers: Fetchers,
    pub fetch_sessions: FetchSessionCache,
    pub controller: ControllerState,
    /// Producer ids this broker hands out (InitProducerId).
    pub producer_ids: ProducerIdManager,
    /// Consumer groups coordinated here (the leader's share of `__consumer_offsets`).
    pub groups: GroupCoordinator,
    /// This broker's epoch from its registration; -1 until registered.
    pub broker_epoch: AtomicI64,
    /// `directory.id` of the data directory (`meta.properties`).
    pub directory_id: Option<String>,
}

pub type SharedBroker = Arc<Broker>;

/// A broker as Metadata and DescribeCluster report it.
#[derive(Clone, Debug)]
pub struct LiveBroker {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

impl Broker {
    /// The image records this process's registration (its broker epoch): it is at least as
    /// new as the moment this node joined, so replicas may act on it and /health calls the
    /// node caught up.
    pub fn holds_own_registration(&self, image: &crate::metadata::MetadataImage) -> bool {
        let epoch = self.broker_epoch.load(std::sync::atomic::Ordering::SeqCst);
        epoch >= 0
            && image
                .broker(self.config.node_id)
                .is_some_and(|registration| registration.broker_epoch == epoch)
    }

    pub fn cluster_id(&self) -> String {
        self.metadata.image().cluster_id.clone()
    }

    /// Brokers clients can use: registered and unfenced, with their PLAINTEXT endpoint and
    /// rack. Before this broker's own registration is visible it is listed from its config,
    /// so a client never sees an empty cluster.
    pub fn live_brokers(&self) -> Vec<LiveBroker> {
        let image = self.metadata.image();
        let mut brokers: Vec<LiveBroker> = image
            .brokers
            .values()
            .filter(|registration| !registration.fenced)
            .filter_map(|registration| {
                let endpoint = registration
                    .listeners
                    .iter()
                    .find(|l| l.name == "PLAINTEXT")?;
                Some(LiveBroker {
                    id: registration.broker_id,
                    host: endpoint.host.clone(),
                    port: endpoint.port,
                    rack: registration.rack.clone(),
                })
            })
            .collect();
        if self.config.roles_broker && !brokers.iter().any(|b| b.id == self.config.node_id) {
            brokers.push(LiveBroker {
                id: self.config.node_id,
                host: self.config.advertised_host.clone(),
                port: self.config.advertised_port,
                rack: self.config.rack.clone(),
            });
            brokers.sort_by_key(|b| b.id);
        }
        brokers
    }

    /// The `controller_id` Metadata and DescribeCluster report: this broker, as KRaft brokers
    /// report a live broker rather than the quorum leader (KIP-590). Clients send admin
    /// requests there and the broker forwards them to the real controller, so a dead
    /// controller never strands a client holding stale metadata.
    pub fn reported_controller_id(&self) -> i32 {
        if self.config.roles_broker {
            self.config.node_id
        } else {
            self.controller_id().unwrap_or(-1)
        }
    }

    /// The node id of the current controller (the quorum leader), if one is known.
    pub fn controller_id(&self) -> Option<i32> {
        self.quorum.status().leader_id.map(|id| id as i32)
    }
}
