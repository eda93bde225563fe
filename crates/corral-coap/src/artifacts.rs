//! `GET devices/<id>/artifacts/<artifact-id>`: a firmware artifact for the device, block by block
//! (Block2, RFC 7959), read through `corral_services::ArtifactDownloads` from the device's own
//! tenant.
//!
//! Stateless: each request names its block (number and size exponent), which is read from the
//! artifact at `num × size` and answered at once; nothing is kept between blocks and the image is
//! never held whole. An artifact never changes once uploaded, so later blocks always continue the
//! first. A request without Block2 gets block 0 in the server's block size (`block_bytes`); a
//! client asking smaller blocks gets those, one asking larger ones gets the server's size at the
//! same offset (RFC 7959 §2.4). Size2 (the whole size) comes with block 0, and with any block
//! whose request carries Size2.

use crate::block::Block;
use crate::hooks::Speaker;
use crate::message::{Code, Message, encode_uint, option};
use crate::request::Response;
use crate::server::Shared;
use corral_model::ErrorKind;

/// `application/octet-stream` (RFC 7252 §12.3).
const OCTET_STREAM: u32 = 42;

/// The largest block number the Block option's 20 bits hold.
const MAX_NUM: u64 = (1 << 20) - 1;

fn past_the_end(offset: u64) -> Response {
    Response::error(Code::BAD_OPTION, format!("the block at byte {offset} is past the end of the artifact"))
}

/// One block of `artifact` for `speaker` (authorized for the path already).
pub(crate) async fn get(shared: &Shared, request: &Message, speaker: &Speaker, artifact: &str) -> Result<Response, Response> {
    let Some(artifacts) = &shared.artifacts else {
        return Err(Response::error(Code::NOT_FOUND, "firmware artifacts are not served here"));
    };
    let asked = match request.option(option::BLOCK2) {
        Some(value) => Some(Block::parse(value).ok_or_else(|| Response::error(Code::BAD_OPTION, "invalid Block2 option"))?),
        None => None,
    };
    let (offset, szx) = match asked {
        Some(block) => (u64::from(block.num) * block.size() as u64, block.szx.min(shared.blockwise.szx())),
        None => (0, shared.blockwise.szx()),
    };
    let size = 1usize << (szx + 4);
    // Whole blocks of the larger size are whole blocks of the smaller one too.
    let num = offset / size as u64;
    if num > MAX_NUM {
        return Err(Response::error(
            Code::BAD_OPTION,
            format!("block {num} of {size} bytes is past the Block2 option's numbers"),
        ));
    }
    let (chunk, total) = artifacts.read_chunk(&speaker.tenant, artifact, offset, size).await.map_err(|e| match e.kind {
        // The artifact exists (in the device's tenant) but ends before this offset.
        ErrorKind::BadInput => past_the_end(offset),
        _ => Response::from(e),
    })?;
    // Block 0 of an empty artifact is empty; any other block must start inside it.
    if offset > 0 && offset >= total {
        return Err(past_the_end(offset));
    }
    let block = Block { num: num as u32, more: offset + (chunk.len() as u64) < total, szx };
    let mut options = vec![(option::CONTENT_FORMAT, encode_uint(OCTET_STREAM)), (option::BLOCK2, block.encode())];
    if num == 0 || request.option(option::SIZE2).is_some() {
        // Size2 holds 4 bytes; a larger artifact goes without it.
        if let Ok(total) = u32::try_from(total) {
            options.push((option::SIZE2, encode_uint(total)));
        }
    }
    Ok(Response { code: Code::CONTENT, options, payload: chunk.to_vec(), then: None })
}
