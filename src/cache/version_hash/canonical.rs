//! A streaming canonicalizer of protobuf wire bytes: it writes the input with
//! the entries of every map field sorted by key, at every depth, including
//! inside `google.protobuf.Any` values of known types. Sorting entries keeps
//! every length, so all other bytes (tags, length prefixes, unknown fields,
//! repeated fields in their order) are written as they are, and the output
//! is itself a valid encoding of the same message.
//!
//! Only what the schema table says can lead to a map is parsed; the rest is
//! skipped over and written in large contiguous slices. Map runs are the only
//! state kept (a stack of entry positions, reused across nesting levels).

use super::schema::{self, Kind};

/// Where canonical bytes go.
pub(super) trait Sink {
    fn write(&mut self, bytes: &[u8]);
}

impl Sink for sha2::Sha256 {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

impl Sink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The input is not a well-formed encoding (or nests too deep).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

type Result<T> = std::result::Result<T, Malformed>;

/// How deep messages, map entries and `Any`s may nest (protobuf decoders
/// stop at 100 message levels).
const MAX_DEPTH: u32 = 200;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

/// Writes the canonical form of `bytes`, a message of type `ty` (an index
/// into the schema table), to `sink`. On `Err`, `sink` has seen a prefix of
/// something: discard it.
pub(super) fn write_canonical<S: Sink>(ty: u16, bytes: &[u8], sink: &mut S) -> Result<()> {
    let mut w = Walker {
        buf: bytes,
        cursor: 0,
        sink,
        entries: Vec::new(),
        depth: 0,
    };
    w.message(ty, 0, bytes.len())?;
    w.flush(bytes.len());
    Ok(())
}

/// One field's extent: `[start, end)`; for LEN fields `payload` is the
/// content after the length prefix.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    number: u32,
    wire: u8,
    payload: usize,
    end: usize,
}

/// A map entry in a run: the whole field `[start, end)`, its content from
/// `content`, its key's payload `[key.0, key.1)` and its value's (the
/// payload of its field 2, if it has exactly one such field of type LEN;
/// else `value` is `None` and the entry is parsed again).
#[derive(Clone, Copy)]
struct Entry {
    /// The key's first 8 bytes, big-endian, zero-padded: to order most
    /// entries without comparing slices.
    prefix: u64,
    start: usize,
    content: usize,
    end: usize,
    key: (usize, usize),
    value: Option<(usize, usize)>,
}

/// What the values of a map field are, as far as walking goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    /// Nothing to walk inside.
    Opaque,
    /// Messages of type `TYPES[i]`.
    Message(u16),
    /// `google.protobuf.Any`.
    Any,
}

struct Walker<'b, 's, S> {
    buf: &'b [u8],
    /// `buf[cursor..]` up to the parse position is pending output, in order.
    cursor: usize,
    sink: &'s mut S,
    /// Map-run entries: a stack shared by nesting levels.
    entries: Vec<Entry>,
    depth: u32,
}

#[inline]
fn varint(buf: &[u8], mut pos: usize, end: usize) -> Result<(u64, usize)> {
    if pos < end && buf[pos] < 0x80 {
        return Ok((u64::from(buf[pos]), pos + 1));
    }
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        if pos >= end {
            return Err(Malformed);
        }
        let b = buf[pos];
        pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok((value, pos));
        }
    }
    Err(Malformed)
}

/// The field at `pos`, which must end by `end`.
#[inline(always)]
fn field(buf: &[u8], start: usize, end: usize, depth: u32) -> Result<Span> {
    let (tag, pos) = varint(buf, start, end)?;
    let number = u32::try_from(tag >> 3).map_err(|_| Malformed)?;
    let wire = (tag & 7) as u8;
    if number == 0 {
        return Err(Malformed);
    }
    let fixed = |n: usize| {
        let e = pos.checked_add(n).filter(|e| *e <= end).ok_or(Malformed)?;
        Ok(Span {
            start,
            number,
            wire,
            payload: pos,
            end: e,
        })
    };
    match wire {
        VARINT => {
            let (_, e) = varint(buf, pos, end)?;
            Ok(Span {
                start,
                number,
                wire,
                payload: pos,
                end: e,
            })
        }
        I64 => fixed(8),
        I32 => fixed(4),
        LEN => {
            let (len, payload) = varint(buf, pos, end)?;
            let e = usize::try_from(len)
                .ok()
                .and_then(|l| payload.checked_add(l))
                .filter(|e| *e <= end)
                .ok_or(Malformed)?;
            Ok(Span {
                start,
                number,
                wire,
                payload,
                end: e,
            })
        }
        SGROUP => {
            let e = skip_group(buf, pos, end, number, depth)?;
            Ok(Span {
                start,
                number,
                wire,
                payload: pos,
                end: e,
            })
        }
        _ => Err(Malformed),
    }
}

/// Skips the fields of group `number` from `pos` (after its start tag);
/// returns the end of its end tag. Groups (proto2, absent from Envoy's API)
/// are opaque.
#[cold]
fn skip_group(buf: &[u8], mut pos: usize, end: usize, number: u32, depth: u32) -> Result<usize> {
    if depth >= MAX_DEPTH {
        return Err(Malformed);
    }
    loop {
        let (tag, after) = varint(buf, pos, end)?;
        if tag & 7 == u64::from(EGROUP) {
            if tag >> 3 == u64::from(number) {
                return Ok(after);
            }
            return Err(Malformed);
        }
        pos = field(buf, pos, end, depth + 1)?.end;
    }
}

impl<S: Sink> Walker<'_, '_, S> {
    /// Writes the pending bytes up to `upto`.
    #[inline]
    fn flush(&mut self, upto: usize) {
        if upto > self.cursor {
            self.sink.write(&self.buf[self.cursor..upto]);
            self.cursor = upto;
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Malformed);
        }
        Ok(())
    }

    /// Walks `buf[start..end]`, a message of type `ty`.
    fn message(&mut self, ty: u16, start: usize, end: usize) -> Result<()> {
        self.enter()?;
        let mut pos = start;
        while pos < end {
            let f = field(self.buf, pos, end, self.depth)?;
            pos = f.end;
            if f.wire != LEN {
                continue;
            }
            match schema::field_kind(ty, f.number) {
                None => {}
                Some(Kind::M(t)) => self.message(t, f.payload, f.end)?,
                Some(Kind::A) => self.any(f.payload, f.end)?,
                Some(Kind::Map) => pos = self.map_run(f, end, Values::Opaque)?,
                Some(Kind::MapM(t)) => pos = self.map_run(f, end, Values::Message(t))?,
                Some(Kind::MapA) => pos = self.map_run(f, end, Values::Any)?,
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Walks `buf[start..end]`, a `google.protobuf.Any`: its `value` (2) as
    /// the message its `type_url` (1) names, if the schema knows that type.
    fn any(&mut self, start: usize, end: usize) -> Result<()> {
        self.enter()?;
        let mut type_url = None;
        let mut pos = start;
        while pos < end {
            let f = field(self.buf, pos, end, self.depth)?;
            if f.number == 1 && f.wire == LEN {
                type_url = Some((f.payload, f.end));
            }
            pos = f.end;
        }
        let ty = type_url
            .and_then(|(s, e)| std::str::from_utf8(&self.buf[s..e]).ok())
            .and_then(|url| schema::type_index(url.rsplit('/').next().unwrap_or(url)));
        if let Some(ty) = ty {
            let mut pos = start;
            while pos < end {
                let f = field(self.buf, pos, end, self.depth)?;
                if f.number == 2 && f.wire == LEN {
                    self.message(ty, f.payload, f.end)?;
                }
                pos = f.end;
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// Handles the run of entries of a map field that starts with `first`,
    /// in a message ending at `end`; returns where the run ends.
    fn map_run(&mut self, first: Span, end: usize, values: Values) -> Result<usize> {
        let base = self.entries.len();
        let mut f = first;
        let run_start = first.start;
        let run_end;
        loop {
            let entry = self.entry(f)?;
            self.entries.push(entry);
            if f.end >= end {
                run_end = f.end;
                break;
            }
            let next = field(self.buf, f.end, end, self.depth)?;
            if next.number != first.number || next.wire != LEN {
                run_end = f.end;
                break;
            }
            f = next;
        }

        let buf = self.buf;
        let order = |a: &Entry, b: &Entry| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| buf[a.key.0..a.key.1].cmp(&buf[b.key.0..b.key.1]))
                .then_with(|| buf[a.start..a.end].cmp(&buf[b.start..b.end]))
        };
        let run = &mut self.entries[base..];
        if run.is_sorted_by(|a, b| order(a, b).is_le()) {
            // Already canonical: walk the values in place, nothing to move.
            if values != Values::Opaque {
                for i in base..self.entries.len() {
                    let e = self.entries[i];
                    self.entry_value(values, e)?;
                }
            }
        } else {
            run.sort_unstable_by(order);
            self.flush(run_start);
            for i in base..self.entries.len() {
                let e = self.entries[i];
                self.cursor = e.start;
                if values != Values::Opaque {
                    self.entry_value(values, e)?;
                }
                self.flush(e.end);
            }
            self.cursor = run_end;
        }
        self.entries.truncate(base);
        Ok(run_end)
    }

    /// Parses the map entry field `f`: where its key and value are.
    #[inline]
    fn entry(&self, f: Span) -> Result<Entry> {
        // The key's payload; empty if absent (the default key).
        let mut key = (f.payload, f.payload);
        let mut value = None;
        let mut values = 0;
        let mut pos = f.payload;
        while pos < f.end {
            let g = field(self.buf, pos, f.end, self.depth)?;
            if g.number == 1 {
                key = (g.payload, g.end);
            } else if g.number == 2 && g.wire == LEN {
                value = Some((g.payload, g.end));
                values += 1;
            }
            pos = g.end;
        }
        let k = &self.buf[key.0..key.1];
        let mut p = [0u8; 8];
        let n = k.len().min(8);
        p[..n].copy_from_slice(&k[..n]);
        Ok(Entry {
            prefix: u64::from_be_bytes(p),
            start: f.start,
            content: f.payload,
            end: f.end,
            key,
            value: value.filter(|_| values == 1),
        })
    }

    /// Walks the value (field 2, of type `values`) of the map entry `e`.
    fn entry_value(&mut self, values: Values, e: Entry) -> Result<()> {
        if let Some((start, end)) = e.value {
            return self.value(values, start, end);
        }
        // No value (nothing to walk), or several (merged by decoders): walk
        // each.
        let mut pos = e.content;
        while pos < e.end {
            let f = field(self.buf, pos, e.end, self.depth)?;
            if f.number == 2 && f.wire == LEN {
                self.value(values, f.payload, f.end)?;
            }
            pos = f.end;
        }
        Ok(())
    }

    fn value(&mut self, values: Values, start: usize, end: usize) -> Result<()> {
        match values {
            Values::Opaque => Ok(()),
            Values::Message(t) => self.message(t, start, end),
            Values::Any => self.any(start, end),
        }
    }
}
