<<<<<<< HEAD
//! Integration tests of the querier crate: one test binary.

mod api;
=======
//! Integration tests of the querier crate (one binary).

mod conformance;
>>>>>>> querier-engine
