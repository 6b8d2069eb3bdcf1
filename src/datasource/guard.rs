//! The network guard of user-configured URLs.
//!
//! A data source's base_url is typed in by whoever edits the chatbots, so it must not
//! become a way into the machine's own network: loopback, private, link-local and
//! other non-public addresses are refused unless `WABOT_DATASOURCE_ALLOWED_NETWORKS`
//! lists them. Names are resolved here, every resolved address is checked, and the
//! connection goes to the checked addresses only (no second lookup that a hostile DNS
//! server could answer differently). Redirects may not leave the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A resolved or literal address that the guard refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{host} ({addr}) is a private, loopback or link-local address; \
     list it in WABOT_DATASOURCE_ALLOWED_NETWORKS to allow it"
)]
pub struct BlockedAddress {
    pub host: String,
    pub addr: IpAddr,
}

/// A redirect to another host, scheme or port, which is never followed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redirect to another host refused ({to})")]
pub struct CrossHostRedirect {
    pub to: String,
}

/// Whether `ip` may be requested: public, or inside an allowed network.
pub fn permitted(ip: IpAddr, allowed: &[IpNet]) -> bool {
    if allowed.iter().any(|net| net.contains(&ip)) {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => allowed.iter().any(|net| net.contains(&IpAddr::V4(v4))) || public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, 198.18.0.0/15, and the reserved 240.0.0.0/4.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7 and link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // Documentation 2001:db8::/32.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// A DNS resolver that checks every address it returns.
pub struct GuardedResolver {
    pub allowed: Arc<Vec<IpNet>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !permitted(a.ip(), &allowed)) {
                return Err(Box::new(BlockedAddress {
                    host,
                    addr: bad.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Follows at most five redirects, and only on the same scheme, host and port.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        let to = attempt.url();
        let same = to.scheme() == first.scheme()
            && to.host_str() == first.host_str()
            && to.port_or_known_default() == first.port_or_known_default();
        if !same {
            let to = format!("{}://{}", to.scheme(), to.host_str().unwrap_or_default());
            return attempt.error(CrossHostRedirect { to });
        }
        if attempt.previous().len() > 5 {
            return attempt.stop();
        }
        attempt.follow()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused_unless_allowed() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!permitted(ip, &[]), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(permitted(ip.parse().unwrap(), &[]), "{ip} must be allowed");
        }
        let loopback: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(permitted("127.0.0.1".parse().unwrap(), &loopback));
        assert!(permitted("::ffff:127.0.0.1".parse().unwrap(), &loopback));
        assert!(!permitted("10.0.0.1".parse().unwrap(), &loopback));
    }
}
