//! Protobuf messages and gRPC services: Loki's push format, Prometheus remote
//! write, and Lucia's internal ingester API.

#![allow(clippy::all, clippy::pedantic)]

/// Loki's `logproto` push messages.
pub mod logproto {
    include!(concat!(env!("OUT_DIR"), "/logproto.rs"));
}

/// Prometheus remote write 1.0 messages.
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Lucia's internal services.
pub mod lucia {
    /// The ingester's gRPC service.
    pub mod ingester {
        include!(concat!(env!("OUT_DIR"), "/lucia.ingester.rs"));
    }
}

pub use lucia::ingester;
