//! Block-wise transfer state (RFC 7959): request bodies being assembled from Block1 blocks,
//! and response bodies cut into Block2 blocks, kept so later blocks come from the same
//! representation even if the resource changed meanwhile.
//!
//! The upload table is shared by every tenant, so no device or tenant may fill it for the
//! others: a device holds at most `max_per_device` uploads, and when the table is full a new
//! upload takes the place of the stalest one of the tenant holding the most (unless that is its
//! own tenant, which then waits its turn with 5.03).

use crate::block::Block;
use crate::hooks::Speaker;
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
    /// Who sends it, for the per-device and per-tenant shares.
    device: String,
    tenant: String,
}

struct Cut {
    body: Arc<[u8]>,
    etag: [u8; 4],
    touched: Instant,
}

pub struct Blockwise {
    max_body_bytes: usize,
    max_entries: usize,
    max_per_device: usize,
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

/// Makes room for one more upload of `owner` in a full table: takes the stalest upload of the
/// tenant holding the most, if that tenant holds more than `owner`'s. False if none may go.
fn make_fair_room(uploads: &mut HashMap<Key, Assembly>, owner: &Speaker) -> bool {
    let mut held: HashMap<&str, usize> = HashMap::new();
    for a in uploads.values() {
        *held.entry(a.tenant.as_str()).or_default() += 1;
    }
    let own = held.get(owner.tenant.as_str()).copied().unwrap_or(0);
    let Some((largest, count)) = held.into_iter().max_by_key(|(_, n)| *n) else {
        return true;
    };
    if count <= own + 1 {
        return false;
    }
    let largest = largest.to_string();
    let stalest = uploads.iter().filter(|(_, a)| a.tenant == largest).min_by_key(|(_, a)| a.touched).map(|(k, _)| k.clone());
    if let Some(key) = stalest {
        uploads.remove(&key);
        tracing::info!(tenant = %largest, "coap: block-wise upload dropped to make room for another tenant's");
    }
    true
}

impl Blockwise {
    /// `max_per_device` uploads of one device at once (it may send several tables in parallel).
    pub fn new(
        max_body_bytes: usize,
        block_bytes: usize,
        max_entries: usize,
        max_per_device: usize,
        idle: Duration,
    ) -> Blockwise {
        Blockwise {
            max_body_bytes,
            max_entries,
            max_per_device,
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

    /// Takes one Block1 block of a request to `path` that `owner` sends (authorized already).
    /// `size1` is the client's announced total.
    pub fn upload(
        &self,
        peer: SocketAddr,
        path: &str,
        owner: &Speaker,
        block: Block,
        payload: &[u8],
        size1: Option<u32>,
    ) -> Upload {
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
            let device = owner.device.as_str();
            // The device's abandoned uploads do not count against it (nor wait for a full table).
            let now = Instant::now();
            uploads.retain(|_, a| a.device != device || now.duration_since(a.touched) <= self.idle);
            if uploads.values().filter(|a| a.device == device).count() >= self.max_per_device {
                return Upload::Refused(
                    Code::SERVICE_UNAVAILABLE,
                    "this device has too many block-wise uploads in progress; finish one first",
                );
            }
            if !make_room(&mut uploads, |a| a.touched, self.idle, self.max_entries) && !make_fair_room(&mut uploads, owner) {
                return Upload::Refused(Code::SERVICE_UNAVAILABLE, "too many block-wise uploads in progress; retry later");
            }
            let assembly = Assembly {
                body: Vec::new(),
                touched: Instant::now(),
                device: device.to_string(),
                tenant: owner.tenant.as_str().to_string(),
            };
            uploads.insert(key.clone(), assembly);
        }
        let Some(assembly) = uploads.get_mut(&key).filter(|a| a.device == owner.device.as_str()) else {
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

    fn owner(device: &str, tenant: &str) -> Speaker {
        Speaker { device: corral_model::DeviceId::new(device).unwrap(), tenant: corral_model::TenantId::new(tenant).unwrap() }
    }

    fn blockwise() -> Blockwise {
        Blockwise::new(3000, 1024, 2, 8, Duration::from_secs(60))
    }

    #[test]
    fn uploads_assemble_in_order_and_refuse_gaps_and_excess() {
        let b = blockwise();
        let block = |num, more| Block { num, more, szx: 6 };
        assert_eq!(
            b.upload(peer(), "p", &owner("d1", "acme"), block(0, true), &[1; 1024], None),
            Upload::Continue(block(0, true))
        );
        assert_eq!(
            b.upload(peer(), "p", &owner("d1", "acme"), block(1, true), &[2; 1024], None),
            Upload::Continue(block(1, true))
        );
        match b.upload(peer(), "p", &owner("d1", "acme"), block(2, false), &[3; 10], None) {
            Upload::Complete(body, last) => {
                assert_eq!((body.len(), body[1024], last), (2058, 2, block(2, false)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.upload(peer(), "p", &owner("d1", "acme"), block(1, true), &[2; 1024], None),
            Upload::Refused(Code::REQUEST_ENTITY_INCOMPLETE, _)
        ));
        b.upload(peer(), "p", &owner("d1", "acme"), block(0, true), &[1; 1024], None);
        assert!(matches!(
            b.upload(peer(), "p", &owner("d1", "acme"), block(2, true), &[1; 1024], None),
            Upload::Refused(Code::REQUEST_ENTITY_INCOMPLETE, _)
        ));
        assert!(matches!(
            b.upload(peer(), "p", &owner("d1", "acme"), block(0, true), &[1; 1024], Some(5000)),
            Upload::Refused(Code::REQUEST_ENTITY_TOO_LARGE, _)
        ));
        b.upload(peer(), "q", &owner("d1", "acme"), block(0, true), &[1; 1024], None);
        b.upload(peer(), "q", &owner("d1", "acme"), block(1, true), &[1; 1024], None);
        assert!(matches!(
            b.upload(peer(), "q", &owner("d1", "acme"), block(2, true), &[1; 1024], None),
            Upload::Refused(Code::REQUEST_ENTITY_TOO_LARGE, _)
        ));
        assert!(matches!(
            b.upload(peer(), "r", &owner("d1", "acme"), block(0, true), &[1; 10], None),
            Upload::Refused(Code::BAD_REQUEST, _)
        ));
    }

    #[test]
    fn uploads_are_bounded_in_number() {
        let b = blockwise();
        let first = Block { num: 0, more: true, szx: 0 };
        b.upload(peer(), "a", &owner("d1", "acme"), first, &[0; 16], None);
        b.upload(peer(), "b", &owner("d1", "acme"), first, &[0; 16], None);
        assert!(matches!(
            b.upload(peer(), "c", &owner("d1", "acme"), first, &[0; 16], None),
            Upload::Refused(Code::SERVICE_UNAVAILABLE, _)
        ));
        assert_eq!(b.uploads_in_progress(), 2);
    }

    /// Regression (tenant isolation): 1,100 unfinished uploads of one acme device filled the
    /// server-wide table and a globex device then got 5.03 for its first block.
    #[test]
    fn one_device_or_tenant_cannot_take_every_upload_slot() {
        let b = Blockwise::new(3000, 1024, 4, 2, Duration::from_secs(60));
        let first = Block { num: 0, more: true, szx: 0 };
        let refused = |u: Upload| matches!(u, Upload::Refused(Code::SERVICE_UNAVAILABLE, _));
        // Paths name their device, as `devices/<id>/telemetry/<table>` does.
        let start = |device: &str, tenant: &str, table: &str| {
            b.upload(peer(), &format!("{device}/{table}"), &owner(device, tenant), first, &[0; 16], None)
        };
        // One device: two at once, whatever the path.
        assert!(!refused(start("a1", "acme", "t1")));
        assert!(!refused(start("a1", "acme", "t2")));
        assert!(refused(start("a1", "acme", "t3")));
        // Acme's devices fill the table; acme itself waits, globex takes acme's stalest slot.
        start("a2", "acme", "t1");
        start("a2", "acme", "t2");
        assert!(refused(start("a3", "acme", "t1")));
        assert!(!refused(start("g1", "globex", "t1")));
        assert_eq!(b.uploads_in_progress(), 4);
        // A block for a path whose upload another device started does not continue it.
        let next = Block { num: 1, more: true, szx: 0 };
        let stolen = b.upload(peer(), "a2/t2", &owner("a9", "acme"), next, &[0; 16], None);
        assert!(matches!(stolen, Upload::Refused(Code::REQUEST_ENTITY_INCOMPLETE, _)));
    }

    #[test]
    fn a_devices_abandoned_uploads_do_not_hold_its_share() {
        let b = Blockwise::new(3000, 1024, 100, 2, Duration::ZERO);
        let first = Block { num: 0, more: true, szx: 0 };
        let start = |table: &str| b.upload(peer(), &format!("a1/{table}"), &owner("a1", "acme"), first, &[0; 16], None);
        start("t1");
        start("t2");
        // Both went idle (the idle limit is zero here), so a third upload may start.
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(start("t3"), Upload::Continue(_)));
        assert_eq!(b.uploads_in_progress(), 1);
    }

    #[test]
    fn a_client_sending_larger_blocks_is_asked_for_smaller_ones() {
        let b = Blockwise::new(3000, 512, 2, 8, Duration::from_secs(60));
        assert_eq!(
            b.upload(peer(), "p", &owner("d1", "acme"), Block { num: 0, more: true, szx: 6 }, &[1; 1024], None),
            Upload::Continue(Block { num: 0, more: true, szx: 5 })
        );
        // The client continues with 512-byte block 2 (offset 1024).
        assert!(
            matches!(b.upload(peer(), "p", &owner("d1", "acme"), Block { num: 2, more: false, szx: 5 }, &[2; 100], None), Upload::Complete(body, _) if body.len() == 1124)
        );
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
