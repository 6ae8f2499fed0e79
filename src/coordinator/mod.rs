//! Coordinators: broker-side services that hand out or keep state on behalf of clients.
//!
//! | module | owns |
//! |---|---|
//! | [`producer_ids`] | producer ids for InitProducerId, from blocks the controller allocates |
//!
//! The group and transaction coordinators will live here too (`group/`, `txn/`).

pub mod producer_ids;
