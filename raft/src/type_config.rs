//! The openraft type configuration, and the crate-internal names of openraft's types.
//!
//! * node id: `u64`, the Kafka `node.id`;
//! * node: [`ControllerNode`], the address of the node's controller listener;
//! * application data: a [`MetadataBatch`]; response: [`Applied`];
//! * leader id: standard Raft (one leader per term), so the Raft term is a usable KRaft
//!   controller epoch.
//!
//! Nothing here leaves the crate except [`ControllerNode`] and [`Applied`]; the aliases keep
//! openraft's generics out of the rest of the code.

use std::fmt;

use crate::image::RecordRejected;
use crate::records::MetadataBatch;

/// How to reach a node's controller listener (Raft RPCs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ControllerNode {
    /// `host:port` of the controller listener.
    pub address: String,
}

impl ControllerNode {
    pub fn new(address: impl Into<String>) -> ControllerNode {
        ControllerNode {
            address: address.into(),
        }
    }
}

impl fmt::Display for ControllerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// What applying one committed batch reports to the writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Log index of the entry that carried the batch (KRaft's metadata offset).
    pub log_index: u64,
    /// Raft term of that entry: the controller epoch that wrote it.
    pub term: u64,
    /// Records of the batch that did not fit the image, by position in the batch.
    pub rejected: Vec<(usize, RecordRejected)>,
}

openraft::declare_raft_types!(
    /// Karst's metadata quorum types.
    pub TypeConfig:
        D = MetadataBatch,
        R = Applied,
        NodeId = u64,
        Node = ControllerNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        Vote = openraft::impls::Vote<openraft::impls::leader_id_std::LeaderId<u64, u64>>,
);

pub(crate) type LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>;
pub(crate) type CommittedLeaderId = openraft::vote::leader_id_std::CommittedLeaderId<u64>;
pub(crate) type LogId = openraft::LogId<CommittedLeaderId>;
pub(crate) type Vote = openraft::Vote<LeaderId>;
pub(crate) type EntryPayload = openraft::EntryPayload<MetadataBatch, u64, ControllerNode>;
pub(crate) type Entry = openraft::Entry<CommittedLeaderId, EntryPayload>;
pub(crate) type Membership = openraft::Membership<u64, ControllerNode>;
pub(crate) type StoredMembership =
    openraft::StoredMembership<CommittedLeaderId, u64, ControllerNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<CommittedLeaderId, u64, ControllerNode>;
/// A snapshot travels and installs as its encoded bytes (see [`crate::state_machine`]).
pub(crate) type SnapshotData = Vec<u8>;
pub(crate) type Snapshot = openraft::Snapshot<CommittedLeaderId, u64, ControllerNode, SnapshotData>;
pub(crate) type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
