//! Coordinators: broker-side services that hand out or keep state on behalf of clients.
//!
//! | module | owns |
//! |---|---|
//! | [`producer_ids`] | producer ids for InitProducerId, from blocks the controller allocates |
//! | [`group`] | consumer groups (classic protocol) and committed offsets in `__consumer_offsets` |
//!
//! The transaction coordinator will live here too (`txn/`).

pub mod group;
pub mod producer_ids;
