//! Distributor tests over HTTP.
