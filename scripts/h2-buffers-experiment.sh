#!/usr/bin/env bash
# Measures what h2's fixed per-connection buffers cost: runs
# scripts/bench-w1.sh (same arguments) on a throwaway copy of the committed
# tree whose h2 and tokio-util are the registry's own sources with three
# initial capacities cut to 1 KiB or less: h2's write buffer (16 KiB), its
# HPACK decode buffer (4 KiB), and the read buffer of the length-delimited
# codec h2 reads frames with (8 KiB, in tokio-util). Nothing else changes,
# and the repository itself is not touched. None of these sizes can be set
# through tonic, hyper or h2 today.
#
#   scripts/h2-buffers-experiment.sh -c 10 -n 10000          # compare with scripts/bench-w1.sh -c 10 -n 10000
#   scripts/h2-buffers-experiment.sh -c 10 -n 10000 --runs 3
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d "${TMPDIR:-/tmp}/h2-buffers.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Where cargo unpacked the locked versions of a package.
source_dir() {
  cargo metadata --locked --format-version 1 2>/dev/null |
    python3 -c '
import json, os, sys
name = sys.argv[1]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == name and (p.get("source") or "").startswith("registry+"):
        print(os.path.dirname(p["manifest_path"]))
        break
' "$1"
}

# Replaces `from` with `to` in one file, failing if `from` is not there.
replace() {
  local file=$1 from=$2 to=$3
  grep -qF -- "$from" "$file" || { echo "not found in $file: $from" >&2; exit 1; }
  python3 - "$file" "$from" "$to" <<'EOF'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
open(path, "w").write(text.replace(old, new, 1))
EOF
}

H2=$(source_dir h2)
TOKIO_UTIL=$(source_dir tokio-util)
[ -n "$H2" ] && [ -n "$TOKIO_UTIL" ] || { echo "h2 or tokio-util sources not found (run cargo fetch)" >&2; exit 1; }
cp -r "$H2" "$WORK/h2"
cp -r "$TOKIO_UTIL" "$WORK/tokio-util"
replace "$WORK/h2/src/codec/framed_write.rs" \
  "const DEFAULT_BUFFER_CAPACITY: usize = 16 * 1_024;" \
  "const DEFAULT_BUFFER_CAPACITY: usize = 1_024;"
replace "$WORK/h2/src/hpack/decoder.rs" \
  "buffer: BytesMut::with_capacity(4096)," \
  "buffer: BytesMut::with_capacity(256),"
replace "$WORK/tokio-util/src/codec/framed_impl.rs" \
  "const INITIAL_CAPACITY: usize = 8 * 1024;" \
  "const INITIAL_CAPACITY: usize = 1024;"

mkdir "$WORK/tree"
git archive HEAD | tar -x -C "$WORK/tree"
cat >> "$WORK/tree/Cargo.toml" <<EOF

[patch.crates-io]
h2 = { path = "$WORK/h2" }
tokio-util = { path = "$WORK/tokio-util" }
EOF
cd "$WORK/tree"
unset CARGO_TARGET_DIR
echo "building with the patched h2 and tokio-util (profile release-lto)..."
# Records the patch in this copy's lock file, so that --locked builds pass.
cargo build --profile release-lto --quiet --example bench_server --example load_client
scripts/bench-w1.sh "$@"
