//! Credentials in a NATS URL (`nats://user:password@host`, `nats://token@host`) are taken
//! out of it and handed to the client as options: async-nats logs the address it connects
//! to, password included, at debug level, and the URL also appears in hookstream's logs.

use percent_encoding::percent_decode_str;

#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    UserPassword(String, String),
    Token(String),
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The server list without credentials, and the first credentials found in it.
/// Addresses that are not URLs (`127.0.0.1:4222`) pass unchanged.
pub fn split(servers: &str) -> (String, Option<UrlCredentials>) {
    let mut found = None;
    let cleaned: Vec<String> = servers
        .split(',')
        .map(str::trim)
        .map(|server| match url::Url::parse(server) {
            Ok(mut url) if !url.username().is_empty() => {
                let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
                let credentials = match url.password() {
                    Some(password) => {
                        UrlCredentials::UserPassword(decode(url.username()), decode(password))
                    }
                    None => UrlCredentials::Token(decode(url.username())),
                };
                found.get_or_insert(credentials);
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.to_string()
            }
            _ => server.to_string(),
        })
        .collect();
    (cleaned.join(","), found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url() {
        let (url, creds) = split("nats://svc:p%40ss@10.0.0.1:4222,nats://10.0.0.2:4222");
        assert_eq!(url, "nats://10.0.0.1:4222,nats://10.0.0.2:4222");
        assert_eq!(
            creds,
            Some(UrlCredentials::UserPassword("svc".into(), "p@ss".into()))
        );
        let (url, creds) = split("tls://s3cr3t-token@nats.internal:4222");
        assert_eq!(url, "tls://nats.internal:4222");
        assert_eq!(creds, Some(UrlCredentials::Token("s3cr3t-token".into())));
        assert_eq!(
            split("127.0.0.1:4222"),
            ("127.0.0.1:4222".to_string(), None)
        );
        assert_eq!(format!("{creds:?}"), "Some([redacted])");
    }
}
