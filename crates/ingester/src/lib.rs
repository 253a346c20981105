//! The logs write path.
//!
//! - [`distributor`]: `POST /loki/api/v1/push`, validation, per-tenant limits,
//!   sharding over the ingester ring and replication with a write quorum.
//! - [`ingester`]: write-ahead log, per-stream head blocks and compressed
//!   chunks, flushing to the object store, and a gRPC read API.

pub mod distributor;
pub mod ingester;
pub mod limits;

mod detection;
mod fanout;
mod push;
mod rate_limit;
mod stream;
mod validation;
mod wal;
