//! Hosts as the allow-list (`capabilities.outbound_hosts`) and the
//! endpoints' health know them: one spelling per host and port, so
//! that a grant can be neither evaded nor missed by spelling a host another
//! way (`EXAMPLE.com.`, `example.com:80`, `[::1]`, `2130706433`), and
//! an endpoint's health is learnt once however it is spelt.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The spelling every loopback address is known by: the one the policy and
/// the tests write most.
const LOOPBACK: &str = "127.0.0.1";

/// A request's host and port, normalised: ASCII lowercase, without a
/// trailing dot, loopback addresses (`localhost`, `127.x.x.x`,
/// `[::1]`) as `127.0.0.1`, IP literals in their canonical form, and the
/// scheme's default port made explicit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostPort {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The port a URL of `scheme` means when it names none.
fn default_port(scheme: Option<&str>) -> u16 {
    if scheme.is_some_and(|scheme| scheme.eq_ignore_ascii_case("https")) { 443 } else { 80 }
}

/// A host in its one spelling, or why it has none: a numeric host that is
/// not a plain dotted quad (`2130706433`, `0x7f.1`, `127.1`), which a
/// resolver may read as an address the grant never named.
fn canonical_host(host: &str) -> Result<String, String> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(inner) = lower.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        let address: Ipv6Addr = inner.parse().map_err(|_| format!("`{host}` is not an IPv6 address"))?;
        return Ok(match address.to_ipv4_mapped() {
            Some(v4) if v4.is_loopback() => LOOPBACK.to_string(),
            Some(v4) => v4.to_string(),
            None if address.is_loopback() => LOOPBACK.to_string(),
            None => format!("[{address}]"),
        });
    }
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Ok(LOOPBACK.to_string());
    }
    // A name's last label is never numeric: a host whose last label is
    // numeric (or hexadecimal, `0x…`) is an address literal.
    let last = lower.rsplit('.').next().unwrap_or_default();
    let numeric = !last.is_empty() && (last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x"));
    if numeric {
        let address: Ipv4Addr = lower
            .parse()
            .ok()
            .filter(|address: &Ipv4Addr| address.to_string() == lower)
            .ok_or_else(|| format!("`{host}` is an address in an unusual spelling; write it as a dotted quad"))?;
        return Ok(if address.is_loopback() { LOOPBACK.to_string() } else { address.to_string() });
    }
    if lower.is_empty() {
        return Err("the request names no host".to_string());
    }
    Ok(lower)
}

impl HostPort {
    /// The request's host and port, or why it has none the allow-list can
    /// judge.
    pub(crate) fn of(uri: &http::Uri) -> Result<Self, String> {
        let authority = uri.authority().ok_or_else(|| "the request names no host".to_string())?;
        // Credentials in a URL would be kept in traces, and the resolver
        // would be asked for them as part of the host.
        if authority.as_str().contains('@') {
            return Err("the URL carries user-info (credentials): send them in a header instead".to_string());
        }
        let port = authority.port_u16().unwrap_or_else(|| default_port(uri.scheme_str()));
        Ok(Self { host: canonical_host(authority.host())?, port })
    }
}

/// An endpoint's one name, however the request spelt its host: the key
/// under which its health is learnt and looked up (`METHOD
/// scheme://host:port/path`, no query). `None` for a URL with no host the
/// allow-list could judge.
pub(crate) fn endpoint_name(method: &str, uri: &http::Uri) -> Option<String> {
    let target = HostPort::of(uri).ok()?;
    Some(format!("{method} {}://{target}{}", uri.scheme_str().unwrap_or("http").to_ascii_lowercase(), uri.path()))
}

/// One `capabilities.outbound_hosts` entry: a host, and the port it names,
/// if any. A bare host grants its scheme's default port only (80 for
/// `http`, 443 for `https`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostGrant {
    host: String,
    port: Option<u16>,
}

impl HostGrant {
    /// The grant a policy's entry says, or why it says none.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let authority: http::uri::Authority =
            text.parse().map_err(|_| format!("`{text}` is not a host or host:port (no scheme, no path)"))?;
        if text.contains('/') || text.contains('@') {
            return Err(format!("`{text}` is not a host or host:port (no scheme, path or user)"));
        }
        Ok(Self { host: canonical_host(authority.host())?, port: authority.port_u16() })
    }

    /// Whether the grant covers a request to `target` over `scheme`.
    pub(crate) fn allows(&self, target: &HostPort, scheme: Option<&str>) -> bool {
        self.host == target.host && self.port.unwrap_or_else(|| default_port(scheme)) == target.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<HostPort, String> {
        HostPort::of(&url.parse::<http::Uri>().expect("a URI"))
    }

    fn allowed(grant: &str, url: &str) -> bool {
        let uri: http::Uri = url.parse().expect("a URI");
        let grant = HostGrant::parse(grant).expect("a grant");
        HostPort::of(&uri).is_ok_and(|target| grant.allows(&target, uri.scheme_str()))
    }

    #[test]
    fn every_spelling_of_a_host_is_one_host() {
        for url in [
            "http://api.example.com/x",
            "http://API.Example.COM/x",
            "http://api.example.com./x",
            "http://api.example.com:80/x",
        ] {
            assert_eq!(target(url), Ok(HostPort { host: "api.example.com".into(), port: 80 }), "{url}");
        }
        for url in [
            "http://localhost:8080/",
            "http://LOCALHOST:8080/",
            "http://localhost.:8080/",
            "http://127.0.0.1:8080/",
            "http://127.1.2.3:8080/",
            "http://[::1]:8080/",
            "http://[0:0:0:0:0:0:0:1]:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
        ] {
            assert_eq!(target(url), Ok(HostPort { host: "127.0.0.1".into(), port: 8080 }), "{url}");
        }
        assert_eq!(target("https://api.example.com/x").map(|t| t.port), Ok(443));
    }

    #[test]
    fn credentials_in_a_url_are_refused() {
        let refused = target("http://user:secret@api.example.com/x").expect_err("user-info");
        assert!(refused.contains("user-info"), "{refused}");
    }

    #[test]
    fn addresses_in_unusual_spellings_are_refused() {
        for url in ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://0177.0.0.1/", "http://127.0.0.01/"]
        {
            let refused = target(url).expect_err(url);
            assert!(refused.contains("unusual spelling"), "{url}: {refused}");
        }
    }

    #[test]
    fn a_bare_host_grants_its_default_port_only() {
        assert!(allowed("api.example.com", "http://api.example.com/"));
        assert!(allowed("api.example.com", "https://api.example.com/"));
        assert!(allowed("api.example.com", "http://API.example.com:80/"));
        assert!(!allowed("api.example.com", "http://api.example.com:8080/"), "another port");
        assert!(!allowed("api.example.com", "https://api.example.com:80/"), "not https's default port");
        assert!(allowed("api.example.com:8080", "http://api.example.com:8080/"));
        assert!(!allowed("api.example.com:8080", "http://api.example.com/"));
        assert!(allowed("127.0.0.1:9000", "http://localhost:9000/"));
        assert!(allowed("localhost:9000", "http://[::1]:9000/"));
        assert!(!allowed("127.0.0.1:9000", "http://127.0.0.1:9001/"));
        assert!(!allowed("api.example.com", "http://api.example.com.evil.test/"));
        assert!(!allowed("api.example.com", "http://evil.test/?api.example.com"));
    }

    #[test]
    fn an_endpoint_has_one_name() {
        let name = |url: &str| endpoint_name("POST", &url.parse::<http::Uri>().expect("a URI"));
        let one = Some("POST http://api.example.com:80/charges".to_string());
        assert_eq!(name("http://api.example.com/charges"), one);
        assert_eq!(name("HTTP://API.example.com.:80/charges?card=1"), one);
        assert_eq!(name("http://2130706433/charges"), None);
    }

    #[test]
    fn a_grant_is_a_host_and_an_optional_port() {
        for bad in ["http://x", "x/y", "user@x", "", "2130706433"] {
            assert!(HostGrant::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(HostGrant::parse("X.example.:81"), Ok(HostGrant { host: "x.example".into(), port: Some(81) }));
    }
}
