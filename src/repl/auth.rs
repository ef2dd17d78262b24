//! Mutual HMAC-SHA256 challenge-response (pure; the handshake does the I/O).
//!
//! Each side sends a fresh 32-byte nonce. A node proves it knows the secret
//! by answering the peer's nonce with
//!
//! ```text
//! mac = HMAC-SHA256(key = secret,
//!         "repd-auth-v1"                       12 ASCII bytes
//!         || challenger_nonce                  32 bytes: the nonce being answered
//!         || responder_nonce                   32 bytes: the responder's own nonce
//!         || u16 len || resource               big-endian length, UTF-8
//!         || u16 len || responder_node)        the name the responder gave in its Hello
//! ```
//!
//! The secret never crosses the wire. Both nonces bind the MAC to this
//! connection; the nonce order and the responder's name bind it to a
//! direction, so a MAC reflected back at its sender (or relayed from another
//! connection) does not verify. Verification is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain-separation prefix of every MAC input.
pub const AUTH_CONTEXT: &[u8] = b"repd-auth-v1";

/// A challenge nonce.
pub type Nonce = [u8; 32];

/// A fresh random nonce (OS-seeded CSPRNG).
pub fn new_nonce() -> Nonce {
    rand::random()
}

fn keyed(
    secret: &[u8],
    challenger_nonce: &Nonce,
    responder_nonce: &Nonce,
    resource: &str,
    responder_node: &str,
) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(AUTH_CONTEXT);
    m.update(challenger_nonce);
    m.update(responder_nonce);
    for s in [resource, responder_node] {
        // Names are capped at MAX_STRING on the wire, so they fit a u16.
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        m.update(&len.to_be_bytes());
        m.update(s.as_bytes());
    }
    m
}

/// The MAC `responder_node` sends to answer `challenger_nonce`.
pub fn response_mac(
    secret: &[u8],
    challenger_nonce: &Nonce,
    responder_nonce: &Nonce,
    resource: &str,
    responder_node: &str,
) -> [u8; 32] {
    keyed(secret, challenger_nonce, responder_nonce, resource, responder_node).finalize().into_bytes().into()
}

/// Whether `mac` is the right answer from `responder_node`; constant-time.
pub fn verify_response(
    secret: &[u8],
    challenger_nonce: &Nonce,
    responder_nonce: &Nonce,
    resource: &str,
    responder_node: &str,
    mac: &[u8; 32],
) -> bool {
    keyed(secret, challenger_nonce, responder_nonce, resource, responder_node).verify_slice(mac).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_bound_to_direction_and_secret() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let m = response_mac(b"s", &a, &b, "r0", "beta");
        assert!(verify_response(b"s", &a, &b, "r0", "beta", &m));
        assert!(!verify_response(b"t", &a, &b, "r0", "beta", &m), "other secret");
        assert!(!verify_response(b"s", &b, &a, "r0", "beta", &m), "swapped nonces");
        assert!(!verify_response(b"s", &a, &b, "r0", "alpha", &m), "reflected to the other node");
        assert!(!verify_response(b"s", &a, &b, "r1", "beta", &m), "other resource");
        assert_ne!(new_nonce(), new_nonce());
    }
}
