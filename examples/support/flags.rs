//! A tiny command-line flag parser for the benchmark examples (included with
//! `#[path]`): `--name value`, `--name=value` and boolean `--name`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// Parsed flags; each accessor consumes its flag so `finish` can reject
/// unknown ones.
pub struct Flags {
    values: HashMap<String, Option<String>>,
    usage: &'static str,
}

impl Flags {
    /// Parses the process arguments; `booleans` are the flags taking no value.
    /// Prints `usage` and exits on `--help`.
    pub fn parse(usage: &'static str, booleans: &[&str]) -> Result<Flags, String> {
        Self::parse_from(std::env::args().skip(1), usage, booleans)
    }

    /// Parses `args` (without the program name).
    pub fn parse_from(
        args: impl IntoIterator<Item = String>,
        usage: &'static str,
        booleans: &[&str],
    ) -> Result<Flags, String> {
        let mut values = HashMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}\n{usage}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None if booleans.contains(&body) => (body.to_string(), None),
                None => {
                    let value = args
                        .next()
                        .ok_or_else(|| format!("--{body} needs a value\n{usage}"))?;
                    (body.to_string(), Some(value))
                }
            };
            values.insert(name, value);
        }
        Ok(Flags { values, usage })
    }

    /// The value of `--name`, or `default`.
    pub fn get<T: FromStr>(&mut self, name: &str, default: T) -> Result<T, String>
    where
        T::Err: Display,
    {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    /// The value of `--name`, if given.
    pub fn opt<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: Display,
    {
        match self.values.remove(name) {
            None => Ok(None),
            Some(None) => Err(format!("--{name} needs a value")),
            Some(Some(v)) => v
                .parse()
                .map(Some)
                .map_err(|e| format!("--{name} {v:?}: {e}")),
        }
    }

    /// Whether boolean `--name` was given.
    pub fn flag(&mut self, name: &str) -> bool {
        self.values.remove(name).is_some()
    }

    /// Fails on any flag no accessor asked for.
    pub fn finish(self) -> Result<(), String> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!("unknown flag --{name}\n{}", self.usage)),
        }
    }
}
