//! End-to-end test support for Sakshi.
