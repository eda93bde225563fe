//! The CoAP message format (RFC 7252 §3): a 4-byte header, a token, options in delta encoding,
//! and an optional payload after the 0xFF marker. Pure bytes in, bytes out; nothing here
//! allocates more than the datagram it reads.

use crate::error::FormatError;

/// Message type (RFC 7252 §4.2-4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirmable,
    NonConfirmable,
    Acknowledgement,
    Reset,
}

impl Kind {
    fn from_bits(bits: u8) -> Kind {
        match bits & 3 {
            0 => Kind::Confirmable,
            1 => Kind::NonConfirmable,
            2 => Kind::Acknowledgement,
            _ => Kind::Reset,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Kind::Confirmable => 0,
            Kind::NonConfirmable => 1,
            Kind::Acknowledgement => 2,
            Kind::Reset => 3,
        }
    }
}

/// A method or response code, `class.detail` (RFC 7252 §5.9, §12.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u8);

impl Code {
    pub const EMPTY: Code = Code(0);
    pub const GET: Code = Code(1);
    pub const POST: Code = Code(2);
    pub const PUT: Code = Code(3);
    pub const DELETE: Code = Code(4);
    /// RFC 8132: FETCH (a GET with a body), PATCH and iPATCH (its idempotent form).
    pub const FETCH: Code = Code(5);
    pub const PATCH: Code = Code(6);
    pub const IPATCH: Code = Code(7);
    pub const CHANGED: Code = Code::new(2, 4);
    pub const CONTENT: Code = Code::new(2, 5);
    pub const CONTINUE: Code = Code::new(2, 31);
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    pub const BAD_OPTION: Code = Code::new(4, 2);
    pub const FORBIDDEN: Code = Code::new(4, 3);
    pub const NOT_FOUND: Code = Code::new(4, 4);
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    pub const TOO_MANY_REQUESTS: Code = Code::new(4, 29);
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);

    pub const fn new(class: u8, detail: u8) -> Code {
        Code(class << 5 | detail)
    }

    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    pub fn detail(self) -> u8 {
        self.0 & 31
    }

    pub fn is_request(self) -> bool {
        self.class() == 0 && self.0 != 0
    }

    pub fn is_response(self) -> bool {
        (2..=5).contains(&self.class())
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Option numbers this server reads or writes (RFC 7252 §12.2, RFC 7641, RFC 7959).
pub mod option {
    pub const URI_HOST: u16 = 3;
    pub const ETAG: u16 = 4;
    pub const OBSERVE: u16 = 6;
    pub const URI_PORT: u16 = 7;
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
    pub const ACCEPT: u16 = 17;
    pub const BLOCK2: u16 = 23;
    pub const BLOCK1: u16 = 27;
    pub const SIZE2: u16 = 28;
    pub const SIZE1: u16 = 60;

    /// Critical options have odd numbers (RFC 7252 §5.4.6): one this server does not know must
    /// fail the request with 4.02 Bad Option.
    pub fn is_critical(number: u16) -> bool {
        number & 1 == 1
    }

    /// The critical options a request may carry here.
    pub fn is_understood(number: u16) -> bool {
        matches!(number, URI_HOST | URI_PORT | URI_PATH | URI_QUERY | CONTENT_FORMAT | ACCEPT | BLOCK1 | BLOCK2)
            || !is_critical(number)
    }
}

/// One CoAP message. Options are kept sorted by number (the wire order), repeats in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub code: Code,
    pub message_id: u16,
    /// 0 to 8 bytes chosen by the client to match responses to requests.
    pub token: Vec<u8>,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

/// The most bytes a token may have (RFC 7252 §3).
pub const MAX_TOKEN_BYTES: usize = 8;

impl Message {
    pub fn new(kind: Kind, code: Code, message_id: u16, token: Vec<u8>) -> Message {
        Message { kind, code, message_id, token, options: Vec::new(), payload: Vec::new() }
    }

    /// An empty ACK or RST for `message_id` (RFC 7252 §4.2-4.3).
    pub fn empty(kind: Kind, message_id: u16) -> Message {
        Message::new(kind, Code::EMPTY, message_id, Vec::new())
    }

    /// Reads one datagram. A datagram with a version other than 1 is a [`FormatError`] whose
    /// `header` is `None` (RFC 7252 §3: silently ignored); any other error keeps the header so a
    /// Confirmable message can be answered with Reset.
    pub fn parse(bytes: &[u8]) -> Result<Message, FormatError> {
        if bytes.len() < 4 {
            return Err(FormatError { header: None, reason: "shorter than the 4-byte header" });
        }
        if bytes[0] >> 6 != 1 {
            return Err(FormatError { header: None, reason: "version is not 1" });
        }
        let kind = Kind::from_bits(bytes[0] >> 4);
        let token_len = usize::from(bytes[0] & 0x0f);
        let code = Code(bytes[1]);
        let message_id = u16::from_be_bytes([bytes[2], bytes[3]]);
        let fail = |reason| Err(FormatError { header: Some((kind, message_id)), reason });
        if token_len > MAX_TOKEN_BYTES {
            return fail("token length over 8");
        }
        if bytes.len() < 4 + token_len {
            return fail("datagram ends inside the token");
        }
        let token = bytes[4..4 + token_len].to_vec();
        if code == Code::EMPTY && (token_len != 0 || bytes.len() > 4) {
            return fail("empty message with a token, options or payload");
        }
        if (1..=7).contains(&code.class()) && !code.is_request() && !code.is_response() {
            return fail("reserved code class");
        }
        let mut message = Message::new(kind, code, message_id, token);
        let mut rest = &bytes[4 + token_len..];
        let mut number: u32 = 0;
        while let Some(&first) = rest.first() {
            if first == 0xff {
                if rest.len() == 1 {
                    return fail("payload marker without a payload");
                }
                message.payload = rest[1..].to_vec();
                break;
            }
            rest = &rest[1..];
            let Some(delta) = extended(first >> 4, &mut rest) else { return fail("bad option delta") };
            let Some(length) = extended(first & 0x0f, &mut rest) else { return fail("bad option length") };
            number += delta;
            if number > u32::from(u16::MAX) {
                return fail("option number over 65535");
            }
            let length = length as usize;
            if rest.len() < length {
                return fail("datagram ends inside an option");
            }
            message.options.push((number as u16, rest[..length].to_vec()));
            rest = &rest[length..];
        }
        Ok(message)
    }

    /// The datagram for this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.token.len() + self.payload.len() + 16 * self.options.len() + 1);
        out.push(1 << 6 | self.kind.bits() << 4 | self.token.len() as u8);
        out.push(self.code.0);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.token);
        let mut previous = 0u16;
        for (number, value) in &self.options {
            let delta = u32::from(number - previous);
            previous = *number;
            let (d, d_ext) = nibble(delta);
            let (l, l_ext) = nibble(value.len() as u32);
            out.push(d << 4 | l);
            out.extend_from_slice(&d_ext);
            out.extend_from_slice(&l_ext);
            out.extend_from_slice(value);
        }
        if !self.payload.is_empty() {
            out.push(0xff);
            out.extend_from_slice(&self.payload);
        }
        out
    }

    /// Adds an option in wire order (after any of the same number).
    pub fn add_option(&mut self, number: u16, value: Vec<u8>) {
        let at = self.options.partition_point(|(n, _)| *n <= number);
        self.options.insert(at, (number, value));
    }

    /// Adds an unsigned-integer option in its shortest form (RFC 7252 §3.2).
    pub fn add_uint(&mut self, number: u16, value: u32) {
        self.add_option(number, encode_uint(value));
    }

    pub fn option(&self, number: u16) -> Option<&[u8]> {
        self.options.iter().find(|(n, _)| *n == number).map(|(_, v)| v.as_slice())
    }

    pub fn options_of(&self, number: u16) -> impl Iterator<Item = &[u8]> {
        self.options.iter().filter(move |(n, _)| *n == number).map(|(_, v)| v.as_slice())
    }

    /// An unsigned-integer option; `Err` when it is longer than 4 bytes.
    pub fn uint(&self, number: u16) -> Result<Option<u32>, UintTooLong> {
        self.option(number).map(decode_uint).transpose()
    }
}

/// Reads an option delta or length nibble with its extension bytes (RFC 7252 §3.1).
fn extended(nibble: u8, rest: &mut &[u8]) -> Option<u32> {
    match nibble {
        0..=12 => Some(u32::from(nibble)),
        13 => {
            let (&b, tail) = rest.split_first()?;
            *rest = tail;
            Some(u32::from(b) + 13)
        }
        14 => {
            if rest.len() < 2 {
                return None;
            }
            let v = u32::from(u16::from_be_bytes([rest[0], rest[1]])) + 269;
            *rest = &rest[2..];
            Some(v)
        }
        _ => None, // 15 is reserved outside the payload marker
    }
}

fn nibble(value: u32) -> (u8, Vec<u8>) {
    match value {
        0..=12 => (value as u8, Vec::new()),
        13..=268 => (13, vec![(value - 13) as u8]),
        _ => (14, ((value - 269) as u16).to_be_bytes().to_vec()),
    }
}

pub fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// An unsigned-integer option value of more than 4 bytes (RFC 7252 §3.2 allows at most 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UintTooLong;

pub fn decode_uint(bytes: &[u8]) -> Result<u32, UintTooLong> {
    if bytes.len() > 4 {
        return Err(UintTooLong);
    }
    Ok(bytes.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7252_figure_16_get_with_piggybacked_response() {
        // CON GET /temperature, MID 0x7d34, no token
        let request = [0x40, 0x01, 0x7d, 0x34, 0xbb, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u', b'r', b'e'];
        let m = Message::parse(&request).unwrap();
        assert_eq!((m.kind, m.code, m.message_id), (Kind::Confirmable, Code::GET, 0x7d34));
        assert_eq!(m.options, vec![(option::URI_PATH, b"temperature".to_vec())]);
        assert_eq!(m.encode(), request);
    }

    #[test]
    fn options_use_extended_deltas_and_lengths_both_ways() {
        let mut m = Message::new(Kind::NonConfirmable, Code::POST, 7, vec![1, 2, 3]);
        m.add_option(option::URI_PATH, b"devices".to_vec());
        m.add_option(option::URI_PATH, vec![b'x'; 300]);
        m.add_uint(option::SIZE1, 70_000);
        m.add_uint(option::CONTENT_FORMAT, 0);
        m.add_option(2000, vec![b'y'; 13]);
        m.payload = b"{}".to_vec();
        let parsed = Message::parse(&m.encode()).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(parsed.option(option::CONTENT_FORMAT), Some(&[][..]));
        assert_eq!(parsed.uint(option::SIZE1), Ok(Some(70_000)));
        assert_eq!(parsed.options_of(option::URI_PATH).count(), 2);
    }

    #[test]
    fn malformed_datagrams_are_refused_with_the_header_when_readable() {
        let err = |bytes: &[u8]| Message::parse(bytes).unwrap_err();
        assert_eq!(err(&[0x40, 0x01]).header, None);
        assert_eq!(err(&[0x80, 0x01, 0, 1]).header, None, "version 2 is ignored");
        assert_eq!(err(&[0x49, 0x01, 0, 1]).reason, "token length over 8");
        assert_eq!(err(&[0x42, 0x01, 0, 1, 9]).reason, "datagram ends inside the token");
        assert_eq!(err(&[0x40, 0x01, 0, 1, 0xff]).reason, "payload marker without a payload");
        assert_eq!(err(&[0x40, 0x01, 0, 1, 0xf0]).reason, "bad option delta");
        assert_eq!(err(&[0x40, 0x01, 0, 1, 0xb5, b'a']).reason, "datagram ends inside an option");
        assert_eq!(err(&[0x40, 0x00, 0, 1, 0xb0]).reason, "empty message with a token, options or payload");
        assert_eq!(err(&[0x40, 0x20, 0, 1]).reason, "reserved code class");
        assert_eq!(err(&[0x40, 0x01, 0x12, 0x34, 0xe0, 0xff, 0xff, 0xe0, 0xff, 0xff]).header, Some((Kind::Confirmable, 0x1234)));
    }

    #[test]
    fn empty_ping_parses() {
        let m = Message::parse(&[0x40, 0x00, 0xab, 0xcd]).unwrap();
        assert_eq!(m, Message::empty(Kind::Confirmable, 0xabcd));
    }

    #[test]
    fn uints_are_shortest_big_endian() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(60), vec![60]);
        assert_eq!(encode_uint(0x1234), vec![0x12, 0x34]);
        assert_eq!(decode_uint(&[1, 0, 0]), Ok(65536));
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), Err(UintTooLong));
    }
}
