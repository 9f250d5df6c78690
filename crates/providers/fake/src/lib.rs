//! An in-memory cloud provider that records every call, for tests.
