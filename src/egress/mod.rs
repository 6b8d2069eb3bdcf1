//! Outbound HTTP to URLs that users configured: rest_api nodes ([`rest_api`]) and data
//! sources (`crate::datasource`). One guard for both, so a chatbot's URL is exactly
//! as safe as a data source's.
//!
//! Those URLs are typed in by whoever edits the chatbots, so they must not become a
//! way into the machine's own network. The rules:
//!
//! * Loopback, private, link-local, carrier-grade NAT, benchmarking, documentation,
//!   multicast and reserved addresses are refused, as are the IPv6 forms that embed
//!   them (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`), unless
//!   an operator lists the network in `WABOT_DATASOURCE_ALLOWED_NETWORKS` (or the
//!   terminal simulator runs with `--allow-private`).
//! * A name is resolved here and refused whole if ANY of its addresses is refused (a
//!   name that mixes public and private addresses is a rebinding attempt, not a
//!   service); the connection goes to the checked addresses only, so no second lookup
//!   can answer differently (DNS pinning).
//! * Every redirect hop is checked again: an IP literal by the redirect policy, a name
//!   by the same resolver when reqwest connects to it.
//! * No proxy from the environment: a proxy would resolve the name itself and skip
//!   the check.

pub mod rest_api;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A resolved or literal address that the guard refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{host} ({addr}) is not an allowed address (private, loopback, link-local or \
     reserved); list it in WABOT_DATASOURCE_ALLOWED_NETWORKS to allow it"
)]
pub struct BlockedAddress {
    pub host: String,
    pub addr: IpAddr,
}

/// A redirect to another host, scheme or port, refused where redirects must stay on
/// the host (data sources).
#[derive(Debug, Clone, thiserror::Error)]
#[error("redirect to another host refused ({to})")]
pub struct CrossHostRedirect {
    pub to: String,
}

/// What may be reached: public addresses, plus the allowed networks.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
    allow_all: bool,
}

impl Guard {
    /// Public addresses and `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Guard {
        Guard {
            allowed,
            allow_all: false,
        }
    }

    /// Every address (the terminal simulator, where the person who runs it also
    /// wrote the chatbot).
    pub fn allow_all() -> Guard {
        Guard {
            allowed: Vec::new(),
            allow_all: true,
        }
    }

    /// Whether `ip` may be connected to.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_all || permitted(ip, &self.allowed)
    }

    /// Checks a URL's host when it is an IP literal (reqwest connects to literals
    /// without asking a resolver); names are checked by [`GuardedResolver`].
    pub fn check_url(&self, url: &url::Url) -> Result<(), BlockedAddress> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.permits(ip) {
            return Ok(());
        }
        Err(BlockedAddress {
            host: ip.to_string(),
            addr: ip,
        })
    }

    /// Checks every address of a resolved name: all of them must be permitted.
    pub fn check_resolved(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), BlockedAddress> {
        match addrs.iter().find(|a| !self.permits(a.ip())) {
            Some(bad) => Err(BlockedAddress {
                host: host.to_owned(),
                addr: bad.ip(),
            }),
            None => Ok(()),
        }
    }
}

/// Whether `ip` may be requested: public, or inside an allowed network. An address
/// that embeds an IPv4 address (mapped, NAT64, 6to4) is judged by the embedded one,
/// against the allowed networks too.
pub fn permitted(ip: IpAddr, allowed: &[IpNet]) -> bool {
    if allowed.iter().any(|net| net.contains(&ip)) {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => allowed.iter().any(|net| net.contains(&IpAddr::V4(v4))) || public_v4(v4),
            None => public_v6(v6),
        },
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`), NAT64 well-known prefix
/// (`64:ff9b::/96`) or 6to4 (`2002::/16`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(from(s[1], s[2]));
    }
    None
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24.
        || ip.is_documentation()
        // "This network", 0.0.0.0/8.
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b == 18 || b == 19))
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // IPv4-compatible (deprecated), ::/96.
        || s[..6] == [0; 6]
        // Local-use NAT64, 64:ff9b:1::/48.
        || s[..3] == [0x64, 0xff9b, 1]
        // Discard-only, 100::/64.
        || s[..4] == [0x100, 0, 0, 0]
        // Teredo 2001::/32, whose IPv4 addresses are hidden.
        || (s[0] == 0x2001 && s[1] == 0)
        // Documentation, 2001:db8::/32 and 3fff::/20.
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] & 0xfff0) == 0x3ff0
        // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0)
}

/// A DNS resolver that checks every address it returns and refuses the whole name
/// when one of them is not permitted.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>) -> GuardedResolver {
        GuardedResolver { guard }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            guard
                .check_resolved(&host, &addrs)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Which redirects a client follows (at most five, each checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Any host the guard permits (rest_api nodes call arbitrary APIs).
    Checked,
    /// Only the same scheme, host and port (data sources: a base URL is one service).
    SameHost,
}

fn redirect_policy(guard: Arc<Guard>, redirects: Redirects) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > 5 {
            return attempt.error("too many redirects");
        }
        let to = attempt.url();
        if redirects == Redirects::SameHost {
            if let Some(first) = attempt.previous().first() {
                let same = to.scheme() == first.scheme()
                    && to.host_str() == first.host_str()
                    && to.port_or_known_default() == first.port_or_known_default();
                if !same {
                    let to = format!("{}://{}", to.scheme(), to.host_str().unwrap_or_default());
                    return attempt.error(CrossHostRedirect { to });
                }
            }
        }
        // A name is checked by the resolver when the hop connects; a literal here.
        match guard.check_url(to) {
            Ok(()) => attempt.follow(),
            Err(blocked) => attempt.error(blocked),
        }
    })
}

/// A reqwest client builder with the guard installed: the checking resolver, the
/// redirect policy, and no proxy. Callers add timeouts and build.
pub fn client_builder(guard: Arc<Guard>, redirects: Redirects) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("wabot/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver::new(guard.clone())))
        .redirect(redirect_policy(guard, redirects))
}

/// The guard's refusal inside a reqwest error's cause chain, if it is one.
pub fn blocked_cause(error: &reqwest::Error) -> Option<BlockedAddress> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<BlockedAddress>() {
            return Some(blocked.clone());
        }
        source = e.source();
    }
    None
}

/// A reqwest error as text without its URL (a key may ride in the query string or
/// the userinfo), followed by its causes (connection refused, TLS, DNS), which carry
/// no URL.
pub fn error_text(error: reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut cause = std::error::Error::source(&error);
    while let Some(e) = cause {
        causes.push(e.to_string());
        cause = e.source();
    }
    let mut message = error.without_url().to_string();
    for c in causes {
        message.push_str(": ");
        message.push_str(&c);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        !permitted(ip.parse().expect("ip"), &[])
    }

    #[test]
    fn every_non_public_ipv4_range_is_refused() {
        for ip in [
            "0.1.2.3",         // this network
            "10.1.2.3",        // private
            "100.64.0.1",      // carrier-grade NAT
            "100.127.255.254", // carrier-grade NAT, last
            "127.0.0.1",       // loopback
            "127.255.0.9",     // loopback
            "169.254.169.254", // link-local (cloud metadata)
            "172.16.0.1",      // private
            "172.31.255.255",  // private
            "192.0.0.8",       // IETF protocol assignments
            "192.0.2.1",       // documentation
            "192.168.1.1",     // private
            "198.18.0.1",      // benchmarking
            "198.19.255.255",  // benchmarking
            "198.51.100.7",    // documentation
            "203.0.113.9",     // documentation
            "224.0.0.1",       // multicast
            "239.255.255.250", // multicast
            "240.0.0.1",       // reserved
            "255.255.255.255", // broadcast
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        for ip in [
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.254",
        ] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn every_non_public_ipv6_range_is_refused() {
        for ip in [
            "::",
            "::1",
            "::10.0.0.1",   // IPv4-compatible
            "64:ff9b:1::1", // local-use NAT64
            "100::1",       // discard-only
            "2001::1",      // Teredo
            "2001:db8::1",  // documentation
            "3fff::1",      // documentation
            "fc00::1",      // unique local
            "fd12:3456::1", // unique local
            "fe80::1",      // link-local
            "fec0::1",      // site-local
            "ff02::1",      // multicast
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        for ip in ["2606:4700::1111", "2a00:1450:4001::200e"] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn ipv6_forms_that_embed_ipv4_are_judged_by_the_embedded_address() {
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:198.18.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:0a00:0001::1", // 6to4 of 10.0.0.1
            "2002:7f00:0001::",  // 6to4 of 127.0.0.1
            "2002:c0a8:0101::1", // 6to4 of 192.168.1.1
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
        for ip in ["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:0808:0808::1"] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn allowed_networks_open_private_addresses_and_their_embeddings() {
        let loopback: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        assert!(permitted("127.0.0.1".parse().expect("ip"), &loopback));
        assert!(permitted(
            "::ffff:127.0.0.1".parse().expect("ip"),
            &loopback
        ));
        assert!(!permitted("10.0.0.1".parse().expect("ip"), &loopback));
        assert!(!permitted("::1".parse().expect("ip"), &loopback));

        let guard = Guard::new(loopback);
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert!(guard.check_url(&url("http://127.0.0.1:8080/x")).is_ok());
        assert!(guard.check_url(&url("http://10.0.0.1/x")).is_err());
        assert!(guard.check_url(&url("http://[::1]/x")).is_err());
        assert!(guard.check_url(&url("http://[::ffff:a00:1]/x")).is_err());
        assert!(guard.check_url(&url("http://example.com/x")).is_ok());
        assert!(Guard::allow_all()
            .check_url(&url("http://10.0.0.1/"))
            .is_ok());
    }

    #[test]
    fn a_name_with_one_private_address_is_refused_whole() {
        let guard = Guard::new(Vec::new());
        let public: SocketAddr = "93.184.216.34:0".parse().expect("addr");
        let private: SocketAddr = "10.0.0.1:0".parse().expect("addr");
        assert!(guard.check_resolved("x.test", &[public]).is_ok());
        let error = guard
            .check_resolved("x.test", &[public, private])
            .expect_err("mixed answer refused");
        assert_eq!(error.addr, private.ip());
        assert_eq!(error.host, "x.test");
    }
}
