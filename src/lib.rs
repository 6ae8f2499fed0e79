//! Karst: a Kafka-compatible event-streaming broker in one binary.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`server`] | `karst server`: start-up (format, recover, listen), background tasks, shutdown |
//! | [`config`] | broker and topic configs with Kafka's names, types and defaults |
//! | [`network`] | listener, connection loop, frame limits, in-order pipelined responses |
//! | [`handlers`] | one file per Kafka API, the registry that dispatches and feeds ApiVersions |
//! | [`controller`] | topic create/delete/partitions/config decisions -> metadata records |
//! | [`coordinator`] | broker-side coordinators: producer ids for InitProducerId |
//! | [`metadata`] | metadata image, records, the durable record journal |
//! | [`replication`] | hosted replicas (leader and follower): high watermark, ISR, follower fetchers, acks=all |
//! | [`clock`] | the one clock behind a trait (wall-clock ms), replaced by a manual one in tests |
//! | [`fetch_session`] | incremental fetch sessions (KIP-227) |
//! | [`admin`] | admin HTTP listener: `/metrics` (Prometheus) and `/health` |
//! | [`client`], [`cli`] | a small Kafka client and the `karst topics|produce|consume|storage|cluster` tools |
//! | [`meta_properties`], [`cluster_id`] | the data directory's identity (`meta.properties`) and Kafka-style ids |
//! | [`systemd`] | `sd_notify` readiness for `Type=notify` units |
//!
//! Storage (segments, indexes, group commit, recovery) is the `karst-storage` crate.

pub mod admin;
pub mod broker;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster_id;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod error;
pub mod fetch_session;
pub mod handlers;
pub mod meta_properties;
pub mod metadata;
pub mod network;
pub mod replication;
pub mod server;
pub mod systemd;
