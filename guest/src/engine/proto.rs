//! The protobuf wire format, read by hand.
//!
//! A TensorFlow frozen graph (`.pb`) is one protobuf message, `GraphDef`. We do not pull in a
//! protobuf crate: the wire format is tiny, and reading it is a lesson of the kit.
//!
//! A message is a flat sequence of *fields*. Each field starts with a **key**, a varint
//! holding `(field_number << 3) | wire_type`. The wire type says how to find the end of the
//! value, so a reader can skip fields it does not know:
//!
//! | wire type | name    | value                                                        |
//! |-----------|---------|--------------------------------------------------------------|
//! | 0         | VARINT  | an integer, 7 bits per byte, low bits first; the high bit of |
//! |           |         | each byte says "another byte follows" (at most 10 bytes)     |
//! | 1         | I64     | 8 little-endian bytes (`double`, `fixed64`)                  |
//! | 2         | LEN     | a varint length, then that many bytes: strings, bytes,       |
//! |           |         | nested messages and *packed* repeated numbers                |
//! | 5         | I32     | 4 little-endian bytes (`float`, `fixed32`)                   |
//!
//! Wire types 3 and 4 (groups) are a proto2 relic that TensorFlow never writes; we refuse
//! them. Nothing in the format is trusted: every length is checked against the bytes that
//! are really there, varints longer than 10 bytes are refused, and every error is a
//! `ProtoError` that says what was being read. Garbage in gives an error out, never a panic.

use std::fmt;

/// Why the bytes could not be read. The message names the message type being read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a message starts when reading failed for want of memory, not because of the bytes:
/// the engine answers those with OutOfMemory instead of BadModel.
pub const OUT_OF_MEMORY: &str = "out of memory for ";

/// Result of reading protobuf bytes.
pub type ProtoResult<T> = Result<T, ProtoError>;

/// Build a `ProtoError` from anything printable.
pub fn err<T>(message: impl Into<String>) -> ProtoResult<T> {
    Err(ProtoError(message.into()))
}

/// One field's value, already cut out of the buffer according to its wire type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1: the 8 bytes as a little-endian integer (reinterpret for `double`).
    Fixed64(u64),
    /// Wire type 2: the payload bytes (a string, a nested message or packed numbers).
    Bytes(&'a [u8]),
    /// Wire type 5: the 4 bytes as a little-endian integer (`f32::from_bits` for `float`).
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The name protobuf's documentation uses for this wire type (for error messages).
    pub fn wire_name(&self) -> &'static str {
        match self {
            Value::Varint(_) => "VARINT",
            Value::Fixed64(_) => "I64",
            Value::Bytes(_) => "LEN",
            Value::Fixed32(_) => "I32",
        }
    }
}

/// A cursor over the bytes of one message.
///
/// `what` names the message (e.g. `"NodeDef"`) so that errors say where they happened.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

/// A varint never needs more than 10 bytes: 10 x 7 bits = 70 >= 64.
const MAX_VARINT_BYTES: usize = 10;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    /// True once every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Read one varint (LEB128): 7 payload bits per byte, least significant group first.
    pub fn varint(&mut self) -> ProtoResult<u64> {
        let mut result: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let byte = match self.buf.get(self.pos) {
                Some(&b) => b,
                None => {
                    return err(format!(
                        "{}: truncated varint at byte {}",
                        self.what, self.pos
                    ))
                }
            };
            self.pos += 1;
            // The 10th byte may only carry the single top bit of a 64-bit number.
            if i == MAX_VARINT_BYTES - 1 && byte > 1 {
                return err(format!(
                    "{}: varint overflows 64 bits at byte {}",
                    self.what,
                    self.pos - 1
                ));
            }
            result |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(result);
            }
        }
        err(format!(
            "{}: varint longer than 10 bytes at byte {}",
            self.what, self.pos
        ))
    }

    /// Take `n` bytes, or fail if fewer remain (a length that points past the end).
    fn take(&mut self, n: u64) -> ProtoResult<&'a [u8]> {
        let remaining = self.buf.len() - self.pos;
        if n > remaining as u64 {
            return err(format!(
                "{}: field of {} bytes at byte {} runs past the end ({} bytes left)",
                self.what, n, self.pos, remaining
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// Read the next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> ProtoResult<Option<(u32, Value<'a>)>> {
        if self.is_empty() {
            return Ok(None);
        }
        let at = self.pos;
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return err(format!(
                "{}: invalid field number {} at byte {}",
                self.what, field, at
            ));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            3 | 4 => {
                return err(format!(
                    "{}: groups (wire type {}) are not supported",
                    self.what,
                    key & 7
                ))
            }
            other => {
                return err(format!(
                    "{}: invalid wire type {} at byte {}",
                    self.what, other, at
                ))
            }
        };
        Ok(Some((field as u32, value)))
    }
}

/// Read a whole buffer of varints (a *packed* repeated integer field).
pub fn packed_varints(bytes: &[u8], what: &'static str) -> ProtoResult<Vec<u64>> {
    let mut r = Reader::new(bytes, what);
    let mut out: Vec<u64> = Vec::new();
    while !r.is_empty() {
        // Up to 8 bytes of output per byte of input: grow fallibly.
        if out.len() == out.capacity() && out.try_reserve(out.len().max(16)).is_err() {
            return err(format!(
                "{}{}: {} integers",
                OUT_OF_MEMORY,
                what,
                out.len() * 2
            ));
        }
        out.push(r.varint()?);
    }
    Ok(out)
}

/// Read a packed repeated `float` field: consecutive little-endian `f32`s.
pub fn packed_f32s(bytes: &[u8], what: &'static str) -> ProtoResult<Vec<f32>> {
    if bytes.len() % 4 != 0 {
        return err(format!(
            "{}: packed floats of {} bytes (not a multiple of 4)",
            what,
            bytes.len()
        ));
    }
    let mut out: Vec<f32> = Vec::new();
    if out.try_reserve_exact(bytes.len() / 4).is_err() {
        return err(format!(
            "{}{}: {} floats",
            OUT_OF_MEMORY,
            what,
            bytes.len() / 4
        ));
    }
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(out)
}

/// Decode a UTF-8 string field.
pub fn string(bytes: &[u8], what: &'static str) -> ProtoResult<String> {
    String::from_utf8(bytes.to_vec())
        .or_else(|_| err(format!("{}: string is not valid UTF-8", what)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let mut r = Reader::new(
            &[
                0x01, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            "t",
        );
        assert_eq!(r.varint().unwrap(), 1);
        assert_eq!(r.varint().unwrap(), 300);
        assert_eq!(r.varint().unwrap(), u64::MAX);
        assert!(r.is_empty());
    }

    #[test]
    fn overlong_and_truncated_varints_fail() {
        let overlong = [0xffu8; 11];
        assert!(Reader::new(&overlong, "t").varint().is_err());
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Reader::new(&overflow, "t").varint().is_err());
        assert!(Reader::new(&[0x80, 0x80], "t").varint().is_err());
    }

    #[test]
    fn fields_of_each_wire_type() {
        // field 1 varint 150, field 2 "hi", field 3 float 1.5, field 4 fixed64 7
        let mut bytes = vec![0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1d];
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.push(0x21);
        bytes.extend_from_slice(&7u64.to_le_bytes());
        let mut r = Reader::new(&bytes, "t");
        assert_eq!(r.next_field().unwrap(), Some((1, Value::Varint(150))));
        assert_eq!(r.next_field().unwrap(), Some((2, Value::Bytes(b"hi"))));
        assert_eq!(
            r.next_field().unwrap(),
            Some((3, Value::Fixed32(1.5f32.to_bits())))
        );
        assert_eq!(r.next_field().unwrap(), Some((4, Value::Fixed64(7))));
        assert_eq!(r.next_field().unwrap(), None);
    }

    #[test]
    fn lengths_past_the_end_fail() {
        assert!(Reader::new(&[0x12, 0x05, b'a'], "t").next_field().is_err());
        // A length near u64::MAX must not overflow any addition.
        let huge = [
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(Reader::new(&huge, "t").next_field().is_err());
        assert!(Reader::new(&[0x1d, 0x00], "t").next_field().is_err());
        assert!(Reader::new(&[0x0b], "t").next_field().is_err()); // group
        assert!(Reader::new(&[0x00, 0x00], "t").next_field().is_err()); // field 0
    }
}
