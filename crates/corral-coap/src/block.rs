//! Block-wise transfer (RFC 7959): the Block1/Block2 option value, and how a body is cut into
//! blocks.

use crate::message::{decode_uint, encode_uint};

/// One Block1 or Block2 option: block `num` of `size()` bytes, `more` after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub num: u32,
    pub more: bool,
    /// Size exponent: blocks are 2^(szx + 4) bytes, 16 to 1024 (7 is reserved over UDP).
    pub szx: u8,
}

/// The largest block number the 20-bit field holds.
const MAX_NUM: u32 = (1 << 20) - 1;

impl Block {
    pub fn parse(bytes: &[u8]) -> Option<Block> {
        let value = decode_uint(bytes).ok()?;
        let szx = (value & 7) as u8;
        (szx < 7 && value >> 4 <= MAX_NUM).then_some(Block { num: value >> 4, more: value & 8 != 0, szx })
    }

    pub fn encode(self) -> Vec<u8> {
        encode_uint(self.num << 4 | u32::from(self.more) << 3 | u32::from(self.szx))
    }

    pub fn size(self) -> usize {
        1 << (self.szx + 4)
    }

    /// Where this block starts in the whole body.
    pub fn offset(self) -> usize {
        self.num as usize * self.size()
    }

    /// The largest exponent not over `max_bytes` (at least 16-byte blocks).
    pub fn szx_for(max_bytes: usize) -> u8 {
        (0..=6).rev().find(|szx| 1usize << (szx + 4) <= max_bytes).unwrap_or(0)
    }

    /// Block `num` of size 2^(szx+4) out of `body`, or `None` when it starts past the end.
    pub fn slice(body: &[u8], num: u32, szx: u8) -> Option<(Block, &[u8])> {
        let size = 1usize << (szx + 4);
        let start = num as usize * size;
        if start >= body.len() && !(start == 0 && body.is_empty()) {
            return None;
        }
        let end = (start + size).min(body.len());
        Some((Block { num, more: end < body.len(), szx }, &body[start..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_round_trip() {
        for block in [
            Block { num: 0, more: false, szx: 0 },
            Block { num: 5, more: true, szx: 6 },
            Block { num: MAX_NUM, more: false, szx: 2 },
        ] {
            assert_eq!(Block::parse(&block.encode()), Some(block));
        }
        assert_eq!(Block::parse(&[]), Some(Block { num: 0, more: false, szx: 0 }));
        assert_eq!(Block::parse(&[0x0f]), None, "szx 7 is reserved");
        assert_eq!(Block::parse(&[0, 0, 0, 0, 0]), None);
        assert_eq!(Block { num: 3, more: true, szx: 6 }.offset(), 3072);
    }

    #[test]
    fn slices_cover_the_body_once() {
        let body: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let mut joined = Vec::new();
        let mut num = 0;
        while let Some((block, bytes)) = Block::slice(&body, num, 6) {
            joined.extend_from_slice(bytes);
            num += 1;
            if !block.more {
                break;
            }
        }
        assert_eq!((num, joined), (3, body.clone()));
        assert!(Block::slice(&body, 3, 6).is_none());
        assert_eq!(Block::slice(&[], 0, 6).map(|(b, s)| (b.more, s.len())), Some((false, 0)));
        assert_eq!(Block::szx_for(1152), 6);
        assert_eq!(Block::szx_for(100), 2);
    }
}
