//! The engine's [`HttpClient`] over reqwest, for rest_api nodes: a total timeout per
//! request, a cap on the response size, and a guard that keeps chatbot-configured
//! URLs away from private, loopback and link-local addresses unless the network is
//! explicitly allowed (`WABOT_DATASOURCE_ALLOWED_NETWORKS`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::config::Config;
use crate::engine::http::{HttpClient, HttpError, HttpRequest, HttpResponse};

/// A reqwest client that implements the engine's HTTP interface.
#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: reqwest::Client,
    guard: Arc<Guard>,
    max_response_bytes: usize,
}

/// What the client may reach and read.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Private or local networks that are reachable anyway.
    pub allowed_networks: Vec<IpNet>,
    /// Whether every address is reachable (the terminal simulator, where the
    /// person who runs it also wrote the chatbot).
    pub allow_all: bool,
    pub max_response_bytes: usize,
}

impl ReqwestHttp {
    pub fn new(config: &Config) -> anyhow::Result<ReqwestHttp> {
        Ok(ReqwestHttp::with_options(HttpOptions {
            allowed_networks: config.datasource.allowed_networks.clone(),
            allow_all: false,
            max_response_bytes: config.datasource.max_response_bytes,
        })?)
    }

    pub fn with_options(options: HttpOptions) -> Result<ReqwestHttp, reqwest::Error> {
        let guard = Arc::new(Guard {
            allowed: options.allowed_networks,
            allow_all: options.allow_all,
        });
        let redirect_guard = guard.clone();
        let client = reqwest::Client::builder()
            .user_agent(concat!("wabot/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(guard.clone())
            // A redirect to an IP literal skips DNS, so it is checked here too.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("too many redirects");
                }
                match redirect_guard.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .build()?;
        Ok(ReqwestHttp {
            client,
            guard,
            max_response_bytes: options.max_response_bytes,
        })
    }
}

impl HttpClient for ReqwestHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        self.guard.check_url(&url).map_err(HttpError::Forbidden)?;
        let mut builder = self
            .client
            .request(request.method, url)
            .timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let exchange = async {
            let mut response = builder.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > self.max_response_bytes {
                    return Err(HttpError::Transport(format!(
                        "the response is larger than {} bytes",
                        self.max_response_bytes
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpResponse { status, body })
        };
        // reqwest's timeout covers the body too; this outer one is a backstop.
        match tokio::time::timeout(
            request.timeout + std::time::Duration::from_millis(100),
            exchange,
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout),
        }
    }
}

fn classify(error: reqwest::Error) -> HttpError {
    if error.is_timeout() {
        return HttpError::Timeout;
    }
    // The cause chain holds the guard's refusal or the connection error.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    if message.contains(FORBIDDEN) {
        return HttpError::Forbidden(message);
    }
    HttpError::Transport(message)
}

const FORBIDDEN: &str = "is not an allowed address";

#[derive(Debug)]
struct Guard {
    allowed: Vec<IpNet>,
    allow_all: bool,
}

impl Guard {
    fn allows(&self, ip: IpAddr) -> bool {
        self.allow_all || is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }

    fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err("the URL has no host".into()),
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(format!("{ip} {FORBIDDEN}"))
        }
    }
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        let allow_all = self.allow_all;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let guard = Guard { allowed, allow_all };
            let permitted: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.allows(a.ip()))
                .collect();
            if permitted.is_empty() && !addrs.is_empty() {
                return Err(format!("{host} ({}) {FORBIDDEN}", addrs[0].ip()).into());
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether an address is on the public internet.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn allowed_networks_open_private_addresses() {
        let guard = Guard {
            allowed: vec!["127.0.0.0/8".parse().expect("net")],
            allow_all: false,
        };
        assert!(guard
            .check_url(&"http://127.0.0.1:8080/x".parse().expect("url"))
            .is_ok());
        assert!(guard
            .check_url(&"http://10.0.0.1/x".parse().expect("url"))
            .is_err());
        assert!(guard
            .check_url(&"http://[::1]/x".parse().expect("url"))
            .is_err());
    }
}
