//! Ingester tests over gRPC.
