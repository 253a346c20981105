//! Cross-role integration tests: one test binary for the workspace.
