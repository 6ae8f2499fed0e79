//! karst-raft: the metadata quorum.
pub mod codec;
#[cfg(test)]
mod conformance;
mod durable_file;
pub mod image;
mod log_store;
pub mod records;
mod state_machine;
mod stored;
pub mod type_config;
