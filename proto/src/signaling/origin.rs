//! Which web pages may open the embedded broker's WebSocket. Browsers send
//! the page's origin (`Origin: http://host:port`) with every WebSocket
//! handshake, and any page a browser on the LAN opens could otherwise
//! reach the broker through it. Pure.
//!
//! Allowed:
//! - a handshake without `Origin` (not a browser: MQTT tools, the probe);
//! - the page's own origin: `http(s)://H:W` where `W` is the web viewer's
//!   port (`http.listen`) and `H` is either the address the WebSocket
//!   itself was opened to (an IP literal: the `Host` header; DNS names are
//!   not trusted there, a rebinding attacker controls them), a loopback
//!   address, or one of the names the web viewer is reached by
//!   (`localhost`, this machine's name and `name.local`, `http.hosts`);
//! - each origin listed in `broker.ws_origins` (`"*"` allows any).
//!
//! Refused: everything else, `Origin: null` (sandboxed and `file:` pages)
//! included.

use std::net::IpAddr;

/// A parsed `scheme://host:port` origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Host, lower case; an IPv6 address without its brackets.
    pub host: String,
    /// Port (the scheme's default when omitted).
    pub port: u16,
}

impl Origin {
    /// Parses an origin as browsers send it (`https://cam.lan`,
    /// `http://192.168.1.20:8080`, `http://[fd00::2]:8080`); `None` for
    /// anything else (paths, user info, `null`, other schemes).
    pub fn parse(text: &str) -> Option<Origin> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            addr.parse::<std::net::Ipv6Addr>().ok()?;
            (addr.to_string(), port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            Some(p) => p.parse().ok().filter(|p| *p != 0)?,
            None => default_port,
        };
        Some(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// The host part of a `Host` header (`[::1]:9001` → `::1`, `cam:9001` → `cam`).
fn host_of(header: &str) -> String {
    let h = header.trim();
    let host = if let Some(v6) = h.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        h.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

/// The WebSocket origin rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    listed: Vec<Origin>,
    web_port: Option<u16>,
    names: Vec<String>,
}

impl OriginPolicy {
    /// Rules allowing `listed` (`broker.ws_origins`, already validated;
    /// `"*"` allows any) beside the page's own origins: those on the web
    /// viewer's port `web_port` (none: the web viewer is off) whose host is
    /// the handshake's own IP address or one of `names` (`localhost`, the
    /// host name…).
    pub fn new(listed: &[String], web_port: Option<u16>, names: &[String]) -> Self {
        Self {
            any: listed.iter().any(|o| o.trim() == "*"),
            listed: listed.iter().filter_map(|o| Origin::parse(o)).collect(),
            web_port,
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a handshake with these `Origin` and `Host` headers may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.any {
            return true;
        }
        let Some(o) = Origin::parse(origin) else {
            return false;
        };
        if self.listed.contains(&o) {
            return true;
        }
        if Some(o.port) != self.web_port {
            return false;
        }
        if let Ok(ip) = o.host.parse::<IpAddr>() {
            let asked = host.map(host_of).and_then(|h| h.parse::<IpAddr>().ok());
            return asked == Some(ip) || ip.is_loopback() || self.names.contains(&o.host);
        }
        self.names.contains(&o.host)
    }
}

/// Checks one `broker.ws_origins` entry.
pub fn check_listed(entry: &str) -> Result<(), String> {
    if entry.trim() == "*" || Origin::parse(entry).is_some() {
        Ok(())
    } else {
        Err(format!(
            "{entry:?} is not an origin such as \"https://cam.example.org\" or \"http://192.168.1.20:8080\" (or \"*\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(listed: &[&str]) -> OriginPolicy {
        let listed: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
        OriginPolicy::new(
            &listed,
            Some(8080),
            &["localhost".into(), "garage".into(), "garage.local".into()],
        )
    }

    #[test]
    fn origins_parse_as_browsers_send_them() {
        let o = Origin::parse("HTTP://Cam.LAN:8080").unwrap();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port),
            ("http", "cam.lan", 8080)
        );
        assert_eq!(Origin::parse("https://cam.lan").unwrap().port, 443);
        assert_eq!(
            Origin::parse("http://[fd00::2]:8080").unwrap().host,
            "fd00::2"
        );
        for bad in [
            "null",
            "",
            "cam.lan",
            "ftp://cam.lan",
            "http://cam.lan/path",
            "http://user@cam.lan",
            "http://cam.lan:0",
            "http://cam.lan:99999",
            "http://[nope]:80",
            "http://",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_pages_own_origin_and_non_browsers_are_allowed() {
        let p = policy(&[]);
        assert!(p.allows(None, Some("192.168.1.20:9001")));
        assert!(p.allows(Some("http://192.168.1.20:8080"), Some("192.168.1.20:9001")));
        assert!(p.allows(Some("http://[fd00::2]:8080"), Some("[fd00::2]:9001")));
        assert!(p.allows(Some("http://localhost:8080"), Some("localhost:9001")));
        assert!(p.allows(Some("http://127.0.0.1:8080"), Some("192.168.1.20:9001")));
        assert!(p.allows(Some("http://garage.local:8080"), Some("garage.local:9001")));
        assert!(p.allows(Some("https://GARAGE:8080"), Some("192.168.1.20:9001")));
    }

    #[test]
    fn other_sites_are_refused() {
        let p = policy(&[]);
        for (origin, host) in [
            ("http://evil.example", "192.168.1.20:9001"),
            // DNS rebinding: the attacker's name now points at the camera.
            ("http://evil.example:8080", "evil.example:9001"),
            // Another IP's page.
            ("http://192.168.1.66:8080", "192.168.1.20:9001"),
            // Another service on the camera's own address.
            ("http://192.168.1.20", "192.168.1.20:9001"),
            ("http://localhost:3000", "localhost:9001"),
            ("null", "192.168.1.20:9001"),
            ("file://", "192.168.1.20:9001"),
        ] {
            assert!(!p.allows(Some(origin), Some(host)), "{origin} via {host}");
        }
        assert!(!p.allows(Some("http://192.168.1.20:8080"), None));
    }

    #[test]
    fn listed_origins_are_added_and_a_star_allows_any() {
        let p = policy(&["https://cam.example.org"]);
        assert!(p.allows(Some("https://cam.example.org"), Some("cam.example.org")));
        assert!(p.allows(Some("https://cam.example.org:443"), None));
        assert!(!p.allows(Some("http://cam.example.org"), None));
        assert!(
            p.allows(Some("http://garage:8080"), None),
            "the default stays"
        );
        assert!(policy(&["*"]).allows(Some("http://anything.example"), None));
        let no_web = OriginPolicy::new(&[], None, &["localhost".into()]);
        assert!(!no_web.allows(Some("http://localhost:8080"), Some("localhost:9001")));
        assert!(no_web.allows(None, None));
    }

    #[test]
    fn listed_entries_are_checked() {
        assert!(check_listed("*").is_ok());
        assert!(check_listed("https://cam.example.org").is_ok());
        assert!(check_listed("cam.example.org").is_err());
        assert!(check_listed("https://cam.example.org/viewer").is_err());
    }
}
