#!/usr/bin/env bash
# Regenerates src/cache/version_hash/schema_table.rs, the schema facts the
# canonical delta-version hashing needs (which message types can hold a
# protobuf map or a google.protobuf.Any, and through which fields), from the
# FileDescriptorSet that envoy-types ships as src/generated/types.bin.
#
# The generator is Rust test code (src/cache/version_hash/schema_gen.rs), the
# same code that, without CANONICAL_SCHEMA_WRITE, checks the committed table
# in `cargo test`. It finds types.bin in the cargo registry source of the
# envoy-types version in Cargo.lock; set ENVOY_TYPES_DESCRIPTOR=/path/to/types.bin
# to use another. Run it after changing the envoy-types version.
set -euo pipefail
cd "$(dirname "$0")/.."
CANONICAL_SCHEMA_WRITE=1 cargo test --lib -- --exact --nocapture \
    cache::version_hash::schema_gen::schema_table_matches_descriptor_set
