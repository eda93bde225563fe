//! Coverage-guided fuzzing of the packet decoder: `cargo +nightly fuzz run decode` from
//! `crates/corral-mqtt` (seed corpus in `fuzz/corpus/decode`). Whatever decodes must re-encode
//! and decode to the same packet; nothing may panic.
#![no_main]

use bytes::BytesMut;
use corral_mqtt::codec::{decode_packet, encode_packet, ProtocolVersion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode_packet(&mut buf, version, 64 * 1024) {
            let mut again = BytesMut::new();
            encode_packet(&packet, version, &mut again);
            let back = decode_packet(&mut again, version, usize::MAX).expect("re-encoded packet decodes");
            assert_eq!(back.as_ref(), Some(&packet));
        }
    }
});
