//! The DTLS record sniffing that runs on every datagram of the coaps port before OpenSSL sees
//! it: any bytes must be read without panicking, and an identity is only found in a handshake.
#![no_main]

use corral_coap::dtls::records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    let hello = records::is_client_hello(datagram);
    if let Some(identity) = records::psk_identity(datagram) {
        // The identity is bytes of the datagram, after a record and a handshake header.
        assert!(identity.len() + 13 + 12 + 2 <= datagram.len());
        assert!(identity.is_empty() || datagram.windows(identity.len()).any(|w| w == identity.as_bytes()));
    }
    // A datagram holding a ClientKeyExchange may hold a ClientHello too; both come from records.
    if hello {
        assert!(datagram.len() >= 13 + 12);
    }
});
