//! The `Host` check against DNS rebinding: a request must name this
//! service, not whatever host name a hostile page resolved to our address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The `Host` values this service answers to (lower case), and the bound
/// address: on an unspecified address (`0.0.0.0`, `[::]`) any IP literal
/// with our port is accepted too. An IP literal cannot be DNS-rebound; a
/// name can, so names must be the listen address's or `--public-url`'s.
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts {
    names: Vec<String>,
    bound: SocketAddr,
}

impl AllowedHosts {
    /// The bound address (and `localhost:<port>` when it is loopback), plus
    /// the public URL's hosts.
    pub(crate) fn new(bound: SocketAddr, public_hosts: &[String]) -> Self {
        let mut hosts = vec![bound.to_string()];
        if bound.ip().is_loopback() {
            hosts.push(format!("localhost:{}", bound.port()));
        }
        hosts.extend(public_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Self {
            names: hosts,
            bound,
        }
    }

    /// Whether `host` (a `Host` header or the request's authority) is one of ours.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.names.contains(&host) {
            return true;
        }
        // Any IP literal with our port when bound to every address.
        self.bound.ip().is_unspecified()
            && host
                .parse::<SocketAddr>()
                .is_ok_and(|addr| addr.port() == self.bound.port())
    }
}

/// The middleware: 421 for a request that names another host, 400 for one
/// that names none; the request goes no further.
pub(crate) async fn check(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let named = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    match named {
        Some(host) if hosts.allows(&host) => next.run(request).await,
        Some(_) => (
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not served here (see --public-url)\n",
        )
            .into_response(),
        None => (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response(),
    }
}

/// The `Host` values `url` is reached at: `host:port`, and the bare host
/// when the port is the scheme's default or absent.
pub(crate) fn public_hosts(url: &str) -> Result<Vec<String>, &'static str> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("expected a URL like https://deploy.example.com")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err("expected an http:// or https:// URL"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_ascii_lowercase();
    let (host, port) = split_port(&authority)?;
    if host.is_empty() {
        return Err("the URL has no host");
    }
    let port = port.unwrap_or(default_port);
    let mut hosts = vec![format!("{host}:{port}")];
    if port == default_port {
        hosts.push(host.to_owned());
    }
    Ok(hosts)
}

/// `host[:port]`, with `[v6]` literals.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let end = v6.find(']').ok_or("unterminated [IPv6] host")?;
            let host = &authority[..end + 2];
            let rest = &authority[end + 2..];
            (host, rest.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| "the port is not a number"))
        .transpose()?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_address_and_localhost_for_loopback() {
        let hosts = AllowedHosts::new("127.0.0.1:8080".parse().expect("addr"), &[]);
        assert!(hosts.allows("127.0.0.1:8080"));
        assert!(hosts.allows("LOCALHOST:8080"));
        assert!(!hosts.allows("localhost:8081"));
        assert!(!hosts.allows("evil.example:8080"));
        assert!(!hosts.allows("127.0.0.1"));
        let v6 = AllowedHosts::new("[::1]:9".parse().expect("addr"), &[]);
        assert!(v6.allows("[::1]:9"));
        let any = AllowedHosts::new("0.0.0.0:9".parse().expect("addr"), &[]);
        assert!(!any.allows("localhost:9"), "a name could be rebound");
        assert!(any.allows("10.0.0.5:9"), "an IP literal cannot");
        assert!(any.allows("[fe80::1]:9"));
        assert!(!any.allows("10.0.0.5:10"), "another port");
        assert!(!any.allows("evil.example:9"));
        let one = AllowedHosts::new("10.0.0.5:9".parse().expect("addr"), &[]);
        assert!(!one.allows("10.0.0.6:9"), "only the bound IP");
    }

    #[test]
    fn public_urls_give_host_and_port() {
        assert_eq!(
            public_hosts("https://Deploy.example.com/hooks").expect("ok"),
            ["deploy.example.com:443", "deploy.example.com"]
        );
        assert_eq!(
            public_hosts("http://u:p@x.example:8080").expect("ok"),
            ["x.example:8080"]
        );
        assert_eq!(
            public_hosts("http://[::1]:80/").expect("ok"),
            ["[::1]:80", "[::1]"]
        );
        assert!(public_hosts("deploy.example.com").is_err());
        assert!(public_hosts("ftp://x").is_err());
        assert!(public_hosts("https://:443").is_err());
        assert!(public_hosts("https://x:port").is_err());
    }
}
