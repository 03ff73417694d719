//! Hand-written protobuf encoding for the few messages the server sends on
//! every stream, so they can be assembled from bytes encoded once instead
//! of being rebuilt as structs and re-encoded per stream.
//!
//! Sizes are computed before writing, so every buffer is allocated at its
//! exact size. Fields follow proto3 rules as prost applies them: a string or
//! bytes field that is empty is omitted, a present message is written even
//! when empty, and every element of a repeated field is written.

use bytes::{BufMut, BytesMut};

/// Wire type of length-delimited fields (strings, bytes, messages).
const LEN: u32 = 2;
/// Wire type of varint fields.
const VARINT: u32 = 0;

/// Bytes a varint takes.
pub(crate) const fn varint_len(value: u64) -> usize {
    // One byte per 7 significant bits, at least one.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(crate) fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn key_len(tag: u32) -> usize {
    varint_len(u64::from(tag << 3))
}

fn put_key(buf: &mut BytesMut, tag: u32, wire_type: u32) {
    put_varint(buf, u64::from((tag << 3) | wire_type));
}

/// Size of a length-delimited field holding `len` bytes, always written
/// (a message, or an element of a repeated field).
pub(crate) fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + varint_len(len as u64) + len
}

/// Writes a length-delimited field's key and length; the caller writes the
/// `len` bytes of its content next.
pub(crate) fn put_field_header(buf: &mut BytesMut, tag: u32, len: usize) {
    put_key(buf, tag, LEN);
    put_varint(buf, len as u64);
}

/// Writes a length-delimited field, always (a message or repeated element).
pub(crate) fn put_field(buf: &mut BytesMut, tag: u32, bytes: &[u8]) {
    put_field_header(buf, tag, bytes.len());
    buf.put_slice(bytes);
}

/// Size of a singular string or bytes field: nothing when empty.
pub(crate) fn string_len(tag: u32, value: &[u8]) -> usize {
    if value.is_empty() {
        0
    } else {
        field_len(tag, value.len())
    }
}

/// Writes a singular string or bytes field, unless it is empty.
pub(crate) fn put_string(buf: &mut BytesMut, tag: u32, value: &[u8]) {
    if !value.is_empty() {
        put_field(buf, tag, value);
    }
}

/// Size of a singular varint field (`int64`, non-negative `int32`):
/// nothing when zero.
pub(crate) fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + varint_len(value)
    }
}

/// Writes a singular varint field, unless it is zero.
pub(crate) fn put_varint_field(buf: &mut BytesMut, tag: u32, value: u64) {
    if value != 0 {
        put_key(buf, tag, VARINT);
        put_varint(buf, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn varints_match_prost() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            let mut expected = Vec::new();
            prost::encoding::encode_varint(value, &mut expected);
            assert_eq!(&buf[..], &expected[..], "{value}");
            assert_eq!(varint_len(value), expected.len(), "{value}");
        }
    }

    #[test]
    fn fields_match_prost() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Sample {
            #[prost(string, tag = "1")]
            a: String,
            #[prost(int64, tag = "2")]
            b: i64,
            #[prost(bytes = "vec", repeated, tag = "300")]
            c: Vec<Vec<u8>>,
        }
        let sample = Sample {
            a: "x".repeat(200),
            b: 1 << 40,
            c: vec![vec![], vec![7; 3]],
        };
        let len = string_len(1, sample.a.as_bytes())
            + varint_field_len(2, sample.b as u64)
            + sample
                .c
                .iter()
                .map(|c| field_len(300, c.len()))
                .sum::<usize>();
        let mut buf = BytesMut::with_capacity(len);
        put_string(&mut buf, 1, sample.a.as_bytes());
        put_varint_field(&mut buf, 2, sample.b as u64);
        for c in &sample.c {
            put_field(&mut buf, 300, c);
        }
        assert_eq!(buf.len(), len);
        assert_eq!(&buf[..], &sample.encode_to_vec()[..]);
        // Defaults are omitted.
        assert_eq!(string_len(1, b""), 0);
        assert_eq!(varint_field_len(2, 0), 0);
    }
}
