//! In-process metadata quorums on loopback: real Raft instances, real TCP between them on
//! 127.0.0.1 random ports, real files in temporary directories. Each test narrates its steps
//! and bounds every wait.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use karst_raft::{MetadataQuorum, MetadataRecord, QuorumOptions, Role, WriteError};
use uuid::Uuid;

const CLUSTER_ID: &str = "karst-raft-test";
/// Upper bound for any single wait: elections take about a second, catching up a few.
const WAIT: Duration = Duration::from_secs(20);
/// Upper bound for a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Writes in flight at once: enough to exercise group commit.
const WRITES_IN_FLIGHT: usize = 32;

macro_rules! step {
    ($started:expr, $($arg:tt)*) => {
        println!("[{:>7.2}s] {}", $started.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

struct Node {
    id: u64,
    dir: PathBuf,
    address: SocketAddr,
    quorum: Option<MetadataQuorum>,
}

struct Cluster {
    _root: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    tune: fn(&mut QuorumOptions),
    started: Instant,
}

fn no_tuning(_: &mut QuorumOptions) {}

impl Cluster {
    /// Starts `voters` nodes (ids 1..=voters) and bootstraps them as one quorum.
    async fn start(voters: u64, tune: fn(&mut QuorumOptions)) -> Cluster {
        let root = tempfile::tempdir().expect("temporary directory");
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            _root: root,
            tune,
            started: Instant::now(),
        };
        for id in 1..=voters {
            cluster.add_node(id).await;
        }
        let voter_addresses: BTreeMap<u64, String> = cluster
            .nodes
            .values()
            .map(|node| (node.id, node.address.to_string()))
            .collect();
        for node in cluster.nodes.values() {
            node.quorum()
                .bootstrap(voter_addresses.clone())
                .await
                .expect("bootstrap");
        }
        cluster
    }

    /// Starts node `id` on a fresh directory and a free port, outside any quorum.
    async fn add_node(&mut self, id: u64) -> &Node {
        let dir = self._root.path().join(format!("node{id}"));
        let quorum = self
            .start_member(id, dir.clone(), "127.0.0.1:0".parse().unwrap())
            .await;
        let node = Node {
            id,
            dir,
            address: quorum.local_address(),
            quorum: Some(quorum),
        };
        self.nodes.insert(id, node);
        &self.nodes[&id]
    }

    async fn start_member(&self, id: u64, dir: PathBuf, address: SocketAddr) -> MetadataQuorum {
        let mut options = QuorumOptions::new(id, CLUSTER_ID, dir, address);
        (self.tune)(&mut options);
        MetadataQuorum::start(options)
            .await
            .expect("start quorum member")
    }

    fn node(&self, id: u64) -> &MetadataQuorum {
        self.nodes[&id].quorum()
    }

    async fn stop(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let quorum = node.quorum.take().expect("node is running");
        quorum.shutdown().await;
    }

    /// Restarts a stopped node from its directory, on its old port.
    async fn restart(&mut self, id: u64) {
        let (dir, address) = {
            let node = &self.nodes[&id];
            assert!(node.quorum.is_none(), "node {id} is running");
            (node.dir.clone(), node.address)
        };
        let quorum = self.start_member(id, dir, address).await;
        self.nodes.get_mut(&id).unwrap().quorum = Some(quorum);
    }

    fn running(&self) -> impl Iterator<Item = &MetadataQuorum> {
        self.nodes.values().filter_map(|node| node.quorum.as_ref())
    }

    /// Waits until the running nodes agree on one leader that is itself running, and
    /// returns its id.
    async fn wait_for_leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let statuses: Vec<_> = self.running().map(|quorum| quorum.status()).collect();
            let leaders: Vec<u64> = statuses
                .iter()
                .filter(|status| status.role == Role::Leader)
                .map(|status| status.node_id)
                .collect();
            if let [leader] = leaders.as_slice() {
                let agreed = statuses
                    .iter()
                    .all(|status| status.leader_id == Some(*leader));
                if agreed {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single agreed leader within {WAIT:?}: {statuses:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes `count` records (one `Topic` per write) through the leader, many in flight.
    /// A write refused during a leader change is retried on the new leader; that is safe
    /// because re-applying the same topic record is idempotent. Returns the log index of the
    /// last write.
    async fn write_topics(&self, prefix: &str, count: usize) -> u64 {
        let indexes: Vec<u64> = stream::iter(0..count)
            .map(|n| {
                let record = MetadataRecord::Topic {
                    name: format!("{prefix}-{n}"),
                    topic_id: Uuid::new_v4(),
                };
                self.write_with_retry(record)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        indexes.into_iter().max().expect("at least one write")
    }

    async fn write_with_retry(&self, record: MetadataRecord) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.node(self.wait_for_leader().await);
            match leader.write(vec![record.clone()]).await {
                Ok(applied) => {
                    assert!(applied.rejected.is_empty(), "{applied:?}");
                    return applied.log_index;
                }
                Err(WriteError::NotController { .. } | WriteError::OutcomeUnknown { .. })
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("write through the leader: {error}"),
            }
        }
    }

    /// Waits until the leader has purged its log past `index`.
    async fn wait_for_leader_purged_past(&self, index: u64) -> karst_raft::QuorumStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.node(self.wait_for_leader().await).status();
            if status.purged_index.is_some_and(|purged| purged > index) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "leader never purged past {index}: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied `index`, then checks their images agree.
    async fn wait_all_applied(&self, index: u64) {
        for quorum in self.running() {
            quorum
                .wait_for_applied(index, WAIT)
                .await
                .unwrap_or_else(|error| panic!("{error}: {:#?}", quorum.status()));
        }
        let images: Vec<_> = self.running().map(|quorum| quorum.image()).collect();
        for image in &images[1..] {
            assert_eq!(image.topics, images[0].topics, "nodes disagree on topics");
        }
    }
}

impl Node {
    fn quorum(&self) -> &MetadataQuorum {
        self.quorum.as_ref().expect("node is running")
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test finished within its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_one_leader_and_all_apply_a_thousand_writes() {
    bounded(async {
        let cluster = Cluster::start(3, no_tuning).await;
        let t = cluster.started;
        step!(t, "started three voters on {:?}", cluster.nodes.values().map(|n| n.address).collect::<Vec<_>>());

        let leader = cluster.wait_for_leader().await;
        let term = cluster.node(leader).status().term;
        step!(t, "node {leader} leads in term {term}; the others follow it");
        let followers = cluster
            .running()
            .filter(|quorum| quorum.status().role == Role::Follower)
            .count();
        assert_eq!(followers, 2);

        let writes_started = Instant::now();
        let last = cluster.write_topics("orders", 1_000).await;
        step!(t, "wrote 1,000 records through the leader in {:?}; last index {last}", writes_started.elapsed());

        cluster.wait_all_applied(last).await;
        for quorum in cluster.running() {
            assert_eq!(quorum.image().topics.len(), 1_000);
        }
        step!(t, "all three nodes applied all 1,000 records and hold the same image");

        let follower = cluster.running().find(|quorum| quorum.node_id() != leader).unwrap();
        let refused = follower.write(vec![]).await.unwrap_err();
        assert!(
            matches!(refused, WriteError::NotController { leader_id: Some(id), .. } if id == leader),
            "{refused:?}"
        );
        step!(t, "a follower refuses writes and names the controller");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_the_old_leader_catches_up_from_disk() {
    bounded(async {
        let mut cluster = Cluster::start(3, no_tuning).await;
        let t = cluster.started;
        let old_leader = cluster.wait_for_leader().await;
        let old_term = cluster.node(old_leader).status().term;
        let last = cluster.write_topics("before", 100).await;
        cluster.wait_all_applied(last).await;
        step!(t, "node {old_leader} leads term {old_term}; 100 records applied everywhere");

        cluster.stop(old_leader).await;
        let failover_started = Instant::now();
        let new_leader = cluster.wait_for_leader().await;
        let new_term = cluster.node(new_leader).status().term;
        step!(t, "stopped node {old_leader}; node {new_leader} took over in term {new_term} after {:?}", failover_started.elapsed());
        assert_ne!(new_leader, old_leader);
        assert!(new_term > old_term);

        let last = cluster.write_topics("after", 100).await;
        cluster.wait_all_applied(last).await;
        step!(t, "100 more records committed by the two remaining voters");

        cluster.restart(old_leader).await;
        step!(t, "restarted node {old_leader} from its directory");
        cluster.wait_all_applied(last).await;
        let rejoined = cluster.node(old_leader);
        assert_eq!(rejoined.image().topics.len(), 200);
        assert_eq!(rejoined.status().role, Role::Follower);
        assert_eq!(rejoined.status().leader_id, Some(new_leader));
        step!(t, "node {old_leader} rejoined as a follower of node {new_leader} and holds all 200 topics");
    })
    .await;
}

fn snapshot_often(options: &mut QuorumOptions) {
    options.snapshot_interval_entries = 500;
    options.entries_kept_after_snapshot = 100;
    // Small segments so purging after a snapshot deletes files.
    options.segment_bytes_max = 64 * 1024;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_kept_down_during_two_thousand_writes_rejoins_by_snapshot() {
    bounded(async {
        let mut cluster = Cluster::start(3, snapshot_often).await;
        let t = cluster.started;
        let leader = cluster.wait_for_leader().await;
        let last = cluster.write_topics("early", 10).await;
        cluster.wait_all_applied(last).await;
        let down = cluster
            .running()
            .map(|quorum| quorum.node_id())
            .find(|id| *id != leader)
            .unwrap();
        let down_index = cluster.node(down).status().last_log_index.unwrap();
        cluster.stop(down).await;
        step!(t, "stopped follower {down} at log index {down_index}");

        let last = cluster.write_topics("while-down", 2_000).await;
        cluster.wait_all_applied(last).await;
        let leader_status = cluster.wait_for_leader_purged_past(down_index).await;
        step!(
            t,
            "wrote 2,000 records; the leader snapshotted at {:?} and purged its log through {:?}, past node {down}'s last entry",
            leader_status.snapshot_index,
            leader_status.purged_index
        );

        cluster.restart(down).await;
        assert_eq!(cluster.node(down).status().snapshots.installed, 0);
        step!(t, "restarted node {down}; it has installed no snapshot yet");
        cluster.wait_all_applied(last).await;
        let rejoined = cluster.node(down).status();
        assert!(rejoined.snapshots.installed >= 1, "{rejoined:#?}");
        assert_eq!(cluster.node(down).image().topics.len(), 2_010);
        step!(
            t,
            "node {down} installed {} snapshot(s) and caught up to index {last}",
            rejoined.snapshots.installed
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_joins_and_receives_the_log_without_voting() {
    bounded(async {
        let mut cluster = Cluster::start(3, no_tuning).await;
        let t = cluster.started;
        let leader = cluster.wait_for_leader().await;
        let last = cluster.write_topics("before-observer", 100).await;
        cluster.wait_all_applied(last).await;
        step!(t, "three voters, node {leader} leads, 100 records applied");

        let observer_address = cluster.add_node(4).await.address.to_string();
        cluster
            .node(leader)
            .add_observer(4, observer_address, true)
            .await
            .expect("add observer");
        step!(t, "node 4 started and was added as an observer");

        let last = cluster.write_topics("with-observer", 50).await;
        cluster.wait_all_applied(last).await;
        let observer = cluster.node(4).status();
        assert_eq!(observer.role, Role::Observer);
        assert_eq!(cluster.node(4).image().topics.len(), 150);
        let leader_status = cluster.node(leader).status();
        assert!(leader_status.observers.contains_key(&4));
        assert!(!leader_status.voters.contains_key(&4));
        // The leader learns the observer's progress from replication responses, a moment
        // after the observer applied.
        let deadline = Instant::now() + WAIT;
        while cluster.node(leader).status().replicated_index.get(&4) != Some(&Some(last)) {
            assert!(
                Instant::now() < deadline,
                "{:#?}",
                cluster.node(leader).status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        step!(
            t,
            "observer 4 applied all 150 records; it is listed as an observer, not a voter"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_quorum_restarts_with_its_metadata_intact() {
    bounded(async {
        let mut cluster = Cluster::start(3, snapshot_often).await;
        let t = cluster.started;
        let last = cluster.write_topics("durable", 600).await;
        cluster.wait_all_applied(last).await;
        let before = cluster.node(cluster.wait_for_leader().await).image();
        step!(
            t,
            "600 records applied on all three voters (a snapshot was taken at 500)"
        );

        for id in 1..=3 {
            cluster.stop(id).await;
        }
        step!(t, "stopped all three voters");
        for id in 1..=3 {
            cluster.restart(id).await;
        }
        step!(t, "restarted all three from their directories");

        for quorum in cluster.running() {
            quorum
                .wait_for_applied(last, WAIT)
                .await
                .expect("re-apply the committed log from snapshot and disk");
        }
        let leader = cluster.wait_for_leader().await;
        for quorum in cluster.running() {
            assert_eq!(quorum.image().topics, before.topics);
        }
        step!(
            t,
            "node {leader} leads again and every node holds the same 600 topics as before"
        );

        let last = cluster.write_topics("after-restart", 10).await;
        cluster.wait_all_applied(last).await;
        step!(t, "writes continue after the restart");
    })
    .await;
}
