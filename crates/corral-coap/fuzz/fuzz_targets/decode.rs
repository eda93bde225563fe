//! Coverage-guided fuzzing of the CoAP datagram decoder and the payload decoders behind it:
//! `cargo +nightly fuzz run decode` from `crates/corral-coap` (seed corpus in
//! `fuzz/corpus/decode`). Whatever parses must re-encode and parse to the same message; Block
//! options and every telemetry content format must refuse or accept without panicking.
#![no_main]

use corral_coap::Message;
use corral_coap::block::Block;
use corral_ingest::decode::{Limits, TelemetryFormat};
use corral_model::TableName;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::parse(data) else { return };
    let again = Message::parse(&message.encode()).expect("a re-encoded message parses");
    assert_eq!(again, message);
    for (_, value) in &message.options {
        if let Some(block) = Block::parse(value) {
            assert_eq!(Block::parse(&block.encode()), Some(block));
        }
    }
    for format in [50, 60, 110, 112] {
        let format = TelemetryFormat::from_coap_content_format(format).expect("telemetry format");
        let _ = format.decode(&message.payload, "fuzz", &TableName::telemetry(), 0, &Limits::default());
    }
});
