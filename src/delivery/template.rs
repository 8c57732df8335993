//! URL templates of `GET` destinations (postback style):
//! `https://x/cb?user={user_id}&amount={amount}` filled from the event's `data`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Everything but unreserved characters is encoded (RFC 3986).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Replaces each `{name}` (or `{a.b}` for nested fields) with the URL-encoded value from
/// `data`. A missing field becomes empty; objects and arrays are inserted as JSON.
pub fn fill(template: &str, data: &Value) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let path = &after[..end];
                let value = path
                    .split('.')
                    .try_fold(data, |v, key| v.get(key))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default();
                out.extend(utf8_percent_encode(&value, COMPONENT));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_and_encodes() {
        let data = json!({"user_id": "u 1&x=2", "amount": 12.5, "deep": {"k": "v"}});
        assert_eq!(
            fill(
                "https://x/cb?user={user_id}&amount={amount}&d={deep.k}&m={missing}",
                &data
            ),
            "https://x/cb?user=u%201%26x%3D2&amount=12.5&d=v&m="
        );
        assert_eq!(fill("https://x/{unclosed", &data), "https://x/{unclosed");
    }
}
