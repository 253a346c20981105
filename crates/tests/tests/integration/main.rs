//! Cross-role integration tests: the workspace's one cross-role test binary.
//! Each module is one area.

mod consul;
