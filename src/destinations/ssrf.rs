//! The SSRF guard: by default a destination may not point at private, loopback or
//! link-local addresses. Checked twice: when a destination is saved (a clear 400 for an
//! address literal or `localhost`) and when a request is sent (the resolver drops
//! forbidden addresses, so DNS that changes after the check cannot get through).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;

use crate::config::SecurityConfig;

#[derive(Debug, Clone)]
pub struct SsrfPolicy {
    allow_private: bool,
    allowed_nets: Vec<IpNet>,
    allowed_hosts: Vec<String>,
}

impl SsrfPolicy {
    pub fn from_config(cfg: &SecurityConfig) -> Self {
        let mut allowed_nets = Vec::new();
        let mut allowed_hosts = Vec::new();
        for entry in &cfg.ssrf_allowlist {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                allowed_nets.push(net);
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                allowed_nets.push(IpNet::from(ip));
            } else {
                allowed_hosts.push(entry.to_ascii_lowercase());
            }
        }
        Self {
            allow_private: cfg.allow_private_networks,
            allowed_nets,
            allowed_hosts,
        }
    }

    pub fn host_allowed(&self, host: &str) -> bool {
        self.allow_private
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host.trim_end_matches('.')))
    }

    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private
            || !is_internal(ip)
            || self.allowed_nets.iter().any(|net| net.contains(&ip))
    }

    /// The check made when a destination is saved: `Err` says why the URL is refused.
    pub fn check_url(&self, url: &url::Url) -> Result<(), String> {
        let host = url.host_str().ok_or("the URL has no host")?;
        if self.host_allowed(host) {
            return Ok(());
        }
        let refused = || {
            format!(
                "{host} is a private, loopback or link-local address; set allow_private_networks or add it to ssrf_allowlist"
            )
        };
        match url.host() {
            Some(url::Host::Ipv4(ip)) if !self.ip_allowed(ip.into()) => Err(refused()),
            Some(url::Host::Ipv6(ip)) if !self.ip_allowed(ip.into()) => Err(refused()),
            // A trailing dot (a fully qualified name) is the same host.
            Some(url::Host::Domain(d)) if is_localhost(d.trim_end_matches('.')) => {
                if self.ip_allowed(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
                    Ok(())
                } else {
                    Err(refused())
                }
            }
            _ => Ok(()),
        }
    }
}

/// `localhost` and its subdomains (RFC 6761), in any case.
fn is_localhost(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Loopback, private, link-local, CGNAT, unique-local, unspecified, multicast, broadcast.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // fe80::/10 link local
                || v6 == Ipv6Addr::LOCALHOST
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || (a == 100 && (64..128).contains(&b)) // 100.64.0.0/10 carrier-grade NAT
        || a == 0
}

/// The delivery client's DNS resolver (hyper-util's `HttpConnector` takes any
/// `Service<Name>`): it drops the addresses the policy forbids.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<SsrfPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<SsrfPolicy>) -> Self {
        Self { policy }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            let allowed: Vec<SocketAddr> = if policy.host_allowed(host) {
                addrs
            } else {
                addrs
                    .into_iter()
                    .filter(|a| policy.ip_allowed(a.ip()))
                    .collect()
            };
            if allowed.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or internal addresses (SSRF guard)"
                )
                .into());
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: bool, list: &[&str]) -> SsrfPolicy {
        SsrfPolicy::from_config(&SecurityConfig {
            allow_private_networks: allow,
            ssrf_allowlist: list.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn check(p: &SsrfPolicy, url: &str) -> bool {
        p.check_url(&url::Url::parse(url).unwrap()).is_ok()
    }

    #[test]
    fn private_addresses_are_refused_by_default() {
        let p = policy(false, &[]);
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.5.5/",
            "http://169.254.169.254/latest",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://0.0.0.0/",
        ] {
            assert!(!check(&p, url), "{url}");
        }
        assert!(check(&p, "https://example.com/hook"));
        assert!(check(&p, "http://93.184.216.34/"));
    }

    #[test]
    fn allowlist_admits_cidrs_and_hosts() {
        let p = policy(false, &["10.0.0.0/8", "hooks.internal", "127.0.0.1"]);
        assert!(check(&p, "http://10.9.9.9/"));
        assert!(check(&p, "http://hooks.internal/"));
        assert!(check(&p, "http://127.0.0.1:9000/"));
        assert!(check(&p, "http://localhost:9000/"));
        assert!(!check(&p, "http://192.168.1.1/"));
        assert!(check(&policy(true, &[]), "http://192.168.1.1/"));
    }
}
