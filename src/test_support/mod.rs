//! Builders for Envoy resources used by tests and examples.
