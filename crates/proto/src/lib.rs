//! Protobuf messages and gRPC services: Loki's push format, Prometheus remote
//! write, and Lucia's internal ingester API.

#![allow(clippy::all, clippy::pedantic)]

/// Loki's `logproto` push messages.
pub mod logproto {
    include!(concat!(env!("OUT_DIR"), "/logproto.rs"));

    impl Timestamp {
        /// Unix nanoseconds as a timestamp (`nanos` always in 0..1e9).
        pub fn from_unix_nanos(nanos: i64) -> Self {
            Self {
                seconds: nanos.div_euclid(1_000_000_000),
                nanos: nanos.rem_euclid(1_000_000_000) as i32,
            }
        }

        /// The timestamp as Unix nanoseconds; out-of-range values (they come
        /// from clients) saturate instead of overflowing.
        pub fn unix_nanos(&self) -> i64 {
            self.seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(self.nanos))
        }
    }
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
