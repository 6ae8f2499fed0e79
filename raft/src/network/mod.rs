//! Raft RPCs between controllers over TCP on the controller listener.
//!
//! | module | role |
//! | --- | --- |
//! | [`frame`] | `[u32 length][payload]` framing, bounded by `FRAME_BYTES_MAX` |
//! | [`messages`] | our versioned request/response structs and their conversion to openraft's |
//! | [`client`] | openraft's network factory: one reconnecting connection per peer and purpose |
//! | [`server`] | accept loop and per-connection request handling, bounded and stoppable |
//!
//! Requests: append entries, vote, pre-vote, full snapshot. The request enum is the place
//! where broker-to-controller RPCs (forwarding, registration, heartbeats) will be added.

pub mod client;
pub mod frame;
pub mod messages;
pub mod server;
