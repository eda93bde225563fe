//! Who a request speaks for, as the CoAP door words it: a token in the query or the DTLS
//! session it came on ([`Credential`]), resolved by the platform's `Identity` service to the
//! device in the path ([`Speaker`]).

use corral_model::{DeviceId, TenantId};

/// The device a request speaks for, once its token was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    /// The device named in the path: the token's own device, or a child of that gateway.
    pub device: DeviceId,
    pub tenant: TenantId,
}

/// How a request proves who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// The `t` query parameter: a device token.
    Token(&'a str),
    /// The request came on a DTLS session opened with this device's pre-shared key.
    Session(&'a str),
}
