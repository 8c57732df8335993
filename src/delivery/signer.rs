//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256("<id>.<timestamp>.<body>")>`,
//! one per active secret, space-separated during a rotation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::SecretKey;

pub fn sign(key: &SecretKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.bytes()).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value for all `keys`.
pub fn signature_header<'a>(
    keys: impl IntoIterator<Item = &'a SecretKey>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.into_iter()
        .map(|k| sign(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn matches_the_specification_example() {
        let key = SecretKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn several_secrets_are_space_separated() {
        let a = SecretKey::generate();
        let b = SecretKey::generate();
        let header = signature_header([&a, &b], "id", 1, b"x");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [sign(&a, "id", 1, b"x"), sign(&b, "id", 1, b"x")]);
    }
}
