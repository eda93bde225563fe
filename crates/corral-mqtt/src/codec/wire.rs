//! Wire primitives shared by decoder and encoder: two-byte integers, variable byte integers,
//! UTF-8 strings and binary data (MQTT 5 §1.5).

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;

/// Largest value a variable byte integer can carry (four bytes).
pub const MAX_VARINT: u32 = 268_435_455;

/// A cursor over one packet's body. Every read checks bounds, so no input can panic it.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Malformed("packet ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Malformed("packet ends early"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        match decode_varint(&self.buf[self.pos..])? {
            Some((value, len)) => {
                self.pos += len;
                Ok(value)
            }
            None => Err(DecodeError::Malformed("packet ends inside a variable byte integer")),
        }
    }

    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    pub fn utf8(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.binary()?;
        check_utf8(raw)
    }
}

/// MQTT strings are UTF-8 without U+0000 (§1.5.4); surrogates are already rejected by `std`.
pub(crate) fn check_utf8(raw: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))?;
    if raw.contains(&0) {
        return Err(DecodeError::Malformed("UTF-8 string contains U+0000"));
    }
    Ok(s)
}

/// Decodes a variable byte integer at the start of `buf`: `Ok(None)` when more bytes are needed,
/// an error for a fifth byte or a non-minimal encoding.
pub fn decode_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate() {
        if i == 4 {
            return Err(DecodeError::Malformed("variable byte integer longer than 4 bytes"));
        }
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(DecodeError::Malformed("variable byte integer not minimally encoded"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return Err(DecodeError::Malformed("variable byte integer longer than 4 bytes"));
    }
    Ok(None)
}

/// Bytes a variable byte integer of `value` takes.
pub fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, mut value: u32) {
    debug_assert!(value <= MAX_VARINT);
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Writes a length-prefixed string or binary. Callers bound lengths to 65535 beforehand (the
/// decoder never produces longer ones and the broker validates what it originates).
pub(crate) fn put_binary(out: &mut BytesMut, data: &[u8]) {
    let len = data.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&data[..len]);
}

pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    put_binary(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_every_length_boundary() {
        for value in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT] {
            let mut out = BytesMut::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value));
            assert_eq!(decode_varint(&out).unwrap(), Some((value, out.len())));
            assert_eq!(decode_varint(&out[..out.len() - 1]).unwrap(), None);
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal() {
        assert!(decode_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).is_err());
        assert!(decode_varint(&[0x80, 0x80, 0x80, 0x80]).is_err());
        assert!(decode_varint(&[0x80, 0x00]).is_err());
    }

    #[test]
    fn utf8_rules() {
        assert!(check_utf8(b"a/b").is_ok());
        assert!(check_utf8(b"a\0b").is_err());
        assert!(check_utf8(&[0xED, 0xA0, 0x80]).is_err()); // encoded surrogate U+D800
        assert!(check_utf8(&[0xC0, 0x80]).is_err()); // overlong NUL
    }
}
