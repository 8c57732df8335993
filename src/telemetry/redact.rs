//! Text that may hold secrets, made safe to log or export.

/// `scheme://host[:port]/path`: no user, password, query or fragment. For webhook URLs
/// (receivers put tokens in queries; GET destinations put event data there) and NATS
/// URLs (`nats://user:password@host`, several separated by commas).
pub fn url(url: &str) -> String {
    if url.contains(',') {
        return url
            .split(',')
            .map(|one| self::url(one.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "[unparsable URL]".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_credentials_query_and_fragment() {
        assert_eq!(
            super::url("https://user:pw@hooks.example.com:8443/in/42?token=s3cret#x"),
            "https://hooks.example.com:8443/in/42"
        );
        assert_eq!(
            super::url("nats://svc:n4ts-pass@10.0.0.1:4222"),
            "nats://10.0.0.1:4222"
        );
        assert_eq!(
            super::url("nats://svc:s3cret@nats-1:4222,nats://u:p@nats-2:4222"),
            "nats://nats-1:4222,nats://nats-2:4222"
        );
        assert_eq!(super::url("not a url"), "[unparsable URL]");
    }
}
