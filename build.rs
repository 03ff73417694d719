//! With the `rest` feature only: copies the protobuf descriptors that
//! envoy-types ships (`src/generated/types.bin`, a FileDescriptorSet of every
//! Envoy API file) into `OUT_DIR`, for the REST gateway's JSON mapping.
//!
//! envoy-types does not expose those bytes through its API, so they are
//! found in its source: `ENVOY_TYPES_DESCRIPTOR` if set; else an
//! envoy-types 0.7 directory beside this crate (a registry or `cargo vendor`
//! layout, where this crate is itself a dependency); else in Cargo's
//! registry sources (`$CARGO_HOME/registry/src/*/`). The highest 0.7.x
//! found is used.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The envoy-types minor series this crate is built against (Cargo.toml).
const SERIES: (u64, u64) = (0, 7);
/// Where the descriptors lie inside the envoy-types source.
const IN_CRATE: &str = "src/generated/types.bin";
/// Overrides the search with the path of a `types.bin`.
const OVERRIDE: &str = "ENVOY_TYPES_DESCRIPTOR";
/// Name of the copy in `OUT_DIR` (`include_bytes!`-ed by src/server/rest).
const OUT_NAME: &str = "envoy_types_descriptor.bin";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_REST").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed={OVERRIDE}");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");

    let source = match find_descriptor() {
        Ok(path) => path,
        Err(searched) => panic!(
            "the `rest` feature needs the protobuf descriptors envoy-types {}.{} ships \
             ({IN_CRATE} in its source), and none was found. Searched:\n  {}\n\
             Set {OVERRIDE} to the path of that file (for example \
             <cargo home>/registry/src/<index>/envoy-types-{}.{}.<n>/{IN_CRATE}).",
            SERIES.0,
            SERIES.1,
            searched.join("\n  "),
            SERIES.0,
            SERIES.1,
        ),
    };
    println!("cargo:rerun-if-changed={}", source.display());

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out_dir.join(OUT_NAME);
    if let Err(e) = fs::copy(&source, &target) {
        panic!("copying {} to {}: {e}", source.display(), target.display());
    }
}

/// The descriptor file to use, or every place searched.
fn find_descriptor() -> Result<PathBuf, Vec<String>> {
    if let Some(path) = env::var_os(OVERRIDE) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        // An explicit override that is wrong must not silently fall back.
        panic!("{OVERRIDE}={} is not a file", path.display());
    }

    let mut searched = Vec::new();
    let mut candidates: Vec<((u64, u64, u64), PathBuf)> = Vec::new();

    // Beside this crate: `<dir>/envoy-types-0.7.N` (registry) or
    // `<dir>/envoy-types` (vendored without versions).
    if let Some(manifest) = env::var_os("CARGO_MANIFEST_DIR") {
        if let Some(parent) = Path::new(&manifest).parent() {
            searched.push(format!(
                "{}/envoy-types-{}.{}.*",
                parent.display(),
                SERIES.0,
                SERIES.1
            ));
            candidates.extend(versioned_dirs(parent));
            let plain = parent.join("envoy-types");
            searched.push(plain.join(IN_CRATE).display().to_string());
            if plain.join(IN_CRATE).is_file() {
                if let Some(version) = vendored_version(&plain) {
                    candidates.push((version, plain));
                }
            }
        }
    }

    // Cargo's registry sources, every index.
    if let Some(home) = cargo_home() {
        let src = home.join("registry").join("src");
        searched.push(format!(
            "{}/*/envoy-types-{}.{}.*",
            src.display(),
            SERIES.0,
            SERIES.1
        ));
        if let Ok(indexes) = fs::read_dir(&src) {
            for index in indexes.flatten() {
                candidates.extend(versioned_dirs(&index.path()));
            }
        }
    }

    candidates
        .into_iter()
        .max_by_key(|(version, _)| *version)
        .map(|(_, dir)| dir.join(IN_CRATE))
        .ok_or(searched)
}

/// `envoy-types-0.7.N` directories of `dir` holding the descriptors.
fn versioned_dirs(dir: &Path) -> Vec<((u64, u64, u64), PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = parse_version(name.to_str()?.strip_prefix("envoy-types-")?)?;
            let path = entry.path();
            path.join(IN_CRATE).is_file().then_some((version, path))
        })
        .collect()
}

/// The version in a vendored envoy-types' Cargo.toml, if of the series.
fn vendored_version(dir: &Path) -> Option<(u64, u64, u64)> {
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("version"))?;
    let value = line.split('=').nth(1)?.trim().trim_matches('"');
    parse_version(value)
}

/// `0.7.N` (a pre-release or build suffix allowed) within [`SERIES`].
fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    ((version.0, version.1) == SERIES).then_some(version)
}

/// `$CARGO_HOME`, else `~/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home));
    }
    env::var_os("HOME")
        .or_else(|| env::var_os("USERPROFILE"))
        .map(|home| PathBuf::from(home).join(".cargo"))
}
