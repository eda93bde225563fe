//! Block-wise transfer state (RFC 7959): request bodies being assembled from Block1 blocks,
//! and response bodies cut into Block2 blocks, kept so later blocks come from the same
//! representation even if the resource changed meanwhile.

use crate::block::Block;
use crate::message::Code;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A body is identified by who sends or fetches it and the resource path (RFC 7959 §2.3).
type Key = (SocketAddr, String);

/// What to do with one Block1 block.
#[derive(Debug, PartialEq, Eq)]
pub enum Upload {
    /// More blocks are expected: answer 2.31 Continue with this Block1.
    Continue(Block),
    /// The last block arrived: here is the whole body; answer with this Block1.
    Complete(Vec<u8>, Block),
    /// Refuse the block (4.08 out of order, 4.13 too large, 4.00, 5.03 too many uploads).
    Refused(Code, &'static str),
}

struct Assembly {
    body: Vec<u8>,
    touched: Instant,
}

struct Cut {
    body: Arc<[u8]>,
    etag: [u8; 4],
    touched: Instant,
}

pub struct Blockwise {
    max_body_bytes: usize,
    max_entries: usize,
    idle: Duration,
    /// The server's block size exponent: larger client blocks are answered with this one.
    szx: u8,
    uploads: Mutex<HashMap<Key, Assembly>>,
    downloads: Mutex<HashMap<Key, Cut>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops entries idle longer than `idle`; then, if still full, refuses room for one more.
fn make_room<V>(map: &mut HashMap<Key, V>, touched: impl Fn(&V) -> Instant, idle: Duration, max: usize) -> bool {
    if map.len() >= max {
        let now = Instant::now();
        map.retain(|_, v| now.duration_since(touched(v)) <= idle);
    }
    map.len() < max
}

impl Blockwise {
    pub fn new(max_body_bytes: usize, block_bytes: usize, max_entries: usize, idle: Duration) -> Blockwise {
        Blockwise {
            max_body_bytes,
            max_entries,
            idle,
            szx: Block::szx_for(block_bytes),
            uploads: Mutex::default(),
            downloads: Mutex::default(),
        }
    }

    pub fn block_bytes(&self) -> usize {
        1 << (self.szx + 4)
    }

    pub fn uploads_in_progress(&self) -> usize {
        lock(&self.uploads).len()
    }

    /// Takes one Block1 block of a request to `path`. `size1` is the client's announced total.
    pub fn upload(&self, peer: SocketAddr, path: &str, block: Block, payload: &[u8], size1: Option<u32>) -> Upload {
        if size1.is_some_and(|s| s as usize > self.max_body_bytes) {
            return Upload::Refused(Code::REQUEST_ENTITY_TOO_LARGE, "the body is over the server's limit");
        }
        if block.more && payload.len() != block.size() {
            return Upload::Refused(Code::BAD_REQUEST, "a block other than the last must fill its block size");
        }
        let key = (peer, path.to_string());
        let mut uploads = lock(&self.uploads);
        if block.num == 0 {
            uploads.remove(&key);
            if !make_room(&mut uploads, |a| a.touched, self.idle, self.max_entries) {
                return Upload::Refused(Code::SERVICE_UNAVAILABLE, "too many block-wise uploads in progress; retry later");
            }
            uploads.insert(key.clone(), Assembly { body: Vec::new(), touched: Instant::now() });
        }
        let Some(assembly) = uploads.get_mut(&key) else {
            return Upload::Refused(Code::REQUEST_ENTITY_INCOMPLETE, "no upload in progress: start again from block 0");
        };
        // Offsets, not numbers, must line up: the server may have asked for smaller blocks.
        if block.offset() != assembly.body.len() {
            uploads.remove(&key);
            return Upload::Refused(Code::REQUEST_ENTITY_INCOMPLETE, "block out of order: start again from block 0");
        }
        if assembly.body.len() + payload.len() > self.max_body_bytes {
            uploads.remove(&key);
            return Upload::Refused(Code::REQUEST_ENTITY_TOO_LARGE, "the body is over the server's limit");
        }
        assembly.body.extend_from_slice(payload);
        assembly.touched = Instant::now();
        let answer_szx = block.szx.min(self.szx);
        if block.more {
            // A smaller size in the answer asks the client to go on with smaller blocks, numbered
            // for that size (RFC 7959 §3.3, Figure 12); the number stays the one received.
            return Upload::Continue(Block { num: block.num, more: true, szx: answer_szx });
        }
        let body = uploads.remove(&key).map(|a| a.body).unwrap_or_default();
        Upload::Complete(body, Block { num: block.num, more: false, szx: block.szx })
    }

    /// Block `num` (size exponent at most `szx`) of a response body to `path`. Block 0 cuts
    /// `body` and keeps it for the later blocks; a later block comes from what was kept (or
    /// from `body` if nothing was). `None` when `num` is past the end.
    pub fn download(&self, peer: SocketAddr, path: &str, body: Vec<u8>, num: u32, szx: u8) -> Option<(Block, Vec<u8>, [u8; 4])> {
        let szx = szx.min(self.szx);
        let key = (peer, path.to_string());
        let mut downloads = lock(&self.downloads);
        let cut = match downloads.get_mut(&key) {
            Some(cut) if num > 0 => {
                cut.touched = Instant::now();
                (cut.body.clone(), cut.etag)
            }
            _ => {
                let etag = etag_of(&body);
                let body: Arc<[u8]> = body.into();
                if body.len() > 1 << (szx + 4) && make_room(&mut downloads, |c| c.touched, self.idle, self.max_entries) {
                    downloads.insert(key.clone(), Cut { body: body.clone(), etag, touched: Instant::now() });
                }
                (body, etag)
            }
        };
        let (block, bytes) = Block::slice(&cut.0, num, szx)?;
        if !block.more {
            downloads.remove(&key);
        }
        Some((block, bytes.to_vec(), cut.1))
    }

    /// The server's block size exponent, for a response the client did not ask blocks of.
    pub fn szx(&self) -> u8 {
        self.szx
    }
}

/// A short validator for a representation (RFC 7252 §5.10.6): FNV-1a of the body.
fn etag_of(body: &[u8]) -> [u8; 4] {
    let hash = body.iter().fold(0x811c9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x01000193));
    hash.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    fn blockwise() -> Blockwise {
        Blockwise::new(3000, 1024, 2, Duration::from_secs(60))
    }

    #[test]
    fn uploads_assemble_in_order_and_refuse_gaps_and_excess() {
        let b = blockwise();
        let block = |num, more| Block { num, more, szx: 6 };
        assert_eq!(b.upload(peer(), "p", block(0, true), &[1; 1024], None), Upload::Continue(block(0, true)));
        assert_eq!(b.upload(peer(), "p", block(1, true), &[2; 1024], None), Upload::Continue(block(1, true)));
        match b.upload(peer(), "p", block(2, false), &[3; 10], None) {
            Upload::Complete(body, last) => assert_eq!((body.len(), body[1024], last), (2058, 2, block(2, false))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(b.upload(peer(), "p", block(1, true), &[2; 1024], None), Upload::Refused(Code::REQUEST_ENTITY_INCOMPLETE, _)));
        b.upload(peer(), "p", block(0, true), &[1; 1024], None);
        assert!(matches!(b.upload(peer(), "p", block(2, true), &[1; 1024], None), Upload::Refused(Code::REQUEST_ENTITY_INCOMPLETE, _)));
        assert!(matches!(b.upload(peer(), "p", block(0, true), &[1; 1024], Some(5000)), Upload::Refused(Code::REQUEST_ENTITY_TOO_LARGE, _)));
        b.upload(peer(), "q", block(0, true), &[1; 1024], None);
        b.upload(peer(), "q", block(1, true), &[1; 1024], None);
        assert!(matches!(b.upload(peer(), "q", block(2, true), &[1; 1024], None), Upload::Refused(Code::REQUEST_ENTITY_TOO_LARGE, _)));
        assert!(matches!(b.upload(peer(), "r", block(0, true), &[1; 10], None), Upload::Refused(Code::BAD_REQUEST, _)));
    }

    #[test]
    fn uploads_are_bounded_in_number() {
        let b = blockwise();
        let first = Block { num: 0, more: true, szx: 0 };
        b.upload(peer(), "a", first, &[0; 16], None);
        b.upload(peer(), "b", first, &[0; 16], None);
        assert!(matches!(b.upload(peer(), "c", first, &[0; 16], None), Upload::Refused(Code::SERVICE_UNAVAILABLE, _)));
        assert_eq!(b.uploads_in_progress(), 2);
    }

    #[test]
    fn a_client_sending_larger_blocks_is_asked_for_smaller_ones() {
        let b = Blockwise::new(3000, 512, 2, Duration::from_secs(60));
        assert_eq!(b.upload(peer(), "p", Block { num: 0, more: true, szx: 6 }, &[1; 1024], None), Upload::Continue(Block { num: 0, more: true, szx: 5 }));
        // The client continues with 512-byte block 2 (offset 1024).
        assert!(matches!(b.upload(peer(), "p", Block { num: 2, more: false, szx: 5 }, &[2; 100], None), Upload::Complete(body, _) if body.len() == 1124));
    }

    #[test]
    fn later_blocks_come_from_the_representation_cut_first() {
        let b = blockwise();
        let first: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let (block, bytes, etag) = b.download(peer(), "c", first.clone(), 0, 6).unwrap();
        assert_eq!((block.more, bytes.len()), (true, 1024));
        // The resource changed meanwhile: block 1 still continues the first representation.
        let (block, bytes, etag1) = b.download(peer(), "c", b"new".to_vec(), 1, 6).unwrap();
        assert_eq!((block.more, bytes.as_slice(), etag1), (false, &first[1024..], etag));
        assert!(b.download(peer(), "c", b"new".to_vec(), 5, 6).is_none());
    }
}
