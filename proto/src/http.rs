//! The HTTP `Host` header (and the `http.hosts` allow-list, which uses the
//! same syntax): a host name or an IP literal with an optional port, and
//! nothing else (no user info, path, query, spaces or odd characters). The
//! web viewer puts the host into the broker URL it gives the page, so only
//! what parses here, printed back from its parts, can get there. Pure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest `Host` value looked at (a DNS name is at most 253 characters).
pub const MAX_HOST_LEN: usize = 260;

/// The host part of a `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostName {
    /// An IPv4 literal, or an IPv6 one in brackets.
    Ip(IpAddr),
    /// A DNS name: lowercase, without a trailing dot.
    Name(String),
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            HostName::Ip(ip) => write!(f, "{ip}"),
            HostName::Name(n) => f.write_str(n),
        }
    }
}

/// A parsed `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Name or address.
    pub name: HostName,
    /// Port, when given.
    pub port: Option<u16>,
}

/// Why a `Host` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing there.
    #[error("empty host")]
    Empty,
    /// Longer than [`MAX_HOST_LEN`].
    #[error("host longer than {MAX_HOST_LEN} characters")]
    TooLong,
    /// A character no host name holds (`@`, `/`, space, control, …).
    #[error("host holds {0:?}, which no host name holds")]
    BadChar(char),
    /// Brackets around something that is not an IPv6 address, or unclosed.
    #[error("brackets hold an IPv6 address only")]
    BadIpv6,
    /// A port that is not 1-65535.
    #[error("port must be 1-65535")]
    BadPort,
    /// A label that is empty, too long or starts or ends with `-`.
    #[error("not a host name (labels of 1-63 letters, digits, - and _)")]
    BadName,
    /// Ends in a number without being an IPv4 address (`1.2.3`, `10.0.0.256`).
    #[error("looks like an IPv4 address but is not one")]
    BadIpv4,
}

fn port(text: &str) -> Result<u16, HostError> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(HostError::BadPort)
}

/// A DNS name, an IPv4 literal or a bracketed IPv6 literal, with no port.
pub fn parse_host_name(text: &str) -> Result<HostName, HostError> {
    if text.is_empty() {
        return Err(HostError::Empty);
    }
    if text.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':')))
    {
        return Err(HostError::BadChar(c));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::BadIpv6)?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| HostName::Ip(IpAddr::V6(ip)))
            .map_err(|_| HostError::BadIpv6);
    }
    if text.contains(['[', ']', ':']) {
        return Err(HostError::BadIpv6);
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    let labels: Vec<&str> = name.split('.').collect();
    if name.len() > 253
        || labels
            .iter()
            .any(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
    {
        return Err(HostError::BadName);
    }
    let last = labels.last().copied().unwrap_or_default();
    // A name ending in a number is an IPv4 address to a browser (WHATWG URL):
    // it must be a plain dotted quad, nothing a browser would read otherwise.
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.len() > 2 && last[..2].eq_ignore_ascii_case("0x"));
    if numeric {
        return match name.parse::<Ipv4Addr>() {
            Ok(ip) if ip.to_string() == name => Ok(HostName::Ip(IpAddr::V4(ip))),
            _ => Err(HostError::BadIpv4),
        };
    }
    Ok(HostName::Name(name.to_ascii_lowercase()))
}

/// A `Host` header: [`parse_host_name`] with an optional `:port`.
pub fn parse_host(text: &str) -> Result<Host, HostError> {
    if text.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if !text.starts_with('[') && text.matches(':').count() > 1 {
        return Err(HostError::BadIpv6);
    }
    let (name, port_text) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => {
                let (n, rest) = text.split_at(end + 1);
                match rest {
                    "" => (n, None),
                    _ => (n, Some(rest.strip_prefix(':').ok_or(HostError::BadIpv6)?)),
                }
            }
            None => return Err(HostError::BadIpv6),
        }
    } else {
        match text.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text, None),
        }
    };
    let name = parse_host_name(name)?;
    let port = port_text.map(port).transpose()?;
    Ok(Host { name, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_literals_parse_with_optional_ports() {
        let h = parse_host("Cam.LAN.:8080").expect("a name");
        assert_eq!(h.name, HostName::Name("cam.lan".into()));
        assert_eq!(h.port, Some(8080));
        let h = parse_host("192.168.1.5").expect("IPv4");
        assert_eq!(h.name.to_string(), "192.168.1.5");
        assert_eq!(h.port, None);
        let h = parse_host("[::1]:80").expect("IPv6");
        assert_eq!(h.name.to_string(), "[::1]");
        assert_eq!(h.port, Some(80));
        assert_eq!(
            parse_host("raspberrypi.local").expect("mDNS").name,
            HostName::Name("raspberrypi.local".into())
        );
        assert!(parse_host("my_cam").is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        for (bad, why) in [
            ("", HostError::Empty),
            ("evil.com@cam", HostError::BadChar('@')),
            ("cam/path", HostError::BadChar('/')),
            ("cam lan", HostError::BadChar(' ')),
            ("cam\r\nX: y", HostError::BadChar('\r')),
            ("cam?q", HostError::BadChar('?')),
            ("cam#f", HostError::BadChar('#')),
            ("c\u{e4}m", HostError::BadChar('\u{e4}')),
            ("cam:0", HostError::BadPort),
            ("cam:65536", HostError::BadPort),
            ("cam:", HostError::BadPort),
            ("cam:80:80", HostError::BadIpv6),
            ("::1", HostError::BadIpv6),
            ("[cam]", HostError::BadIpv6),
            ("[::1", HostError::BadIpv6),
            ("[::1]x", HostError::BadIpv6),
            ("a..b", HostError::BadName),
            ("-a.b", HostError::BadName),
            (".", HostError::BadName),
            ("1.2.3", HostError::BadIpv4),
            ("10.0.0.256", HostError::BadIpv4),
            ("010.0.0.1", HostError::BadIpv4),
            ("cam.0x10", HostError::BadIpv4),
        ] {
            assert_eq!(parse_host(bad), Err(why), "{bad:?}");
        }
        assert_eq!(parse_host(&"a".repeat(300)), Err(HostError::TooLong));
        assert_eq!(parse_host(&"a".repeat(64)), Err(HostError::BadName));
    }

    #[test]
    fn what_parses_prints_back_to_itself() {
        for text in ["cam.lan", "10.0.0.1", "[fe80::1]", "a-b_c.d"] {
            let h = parse_host_name(text).expect(text);
            assert_eq!(h.to_string(), text);
            assert_eq!(parse_host_name(&h.to_string()), Ok(h));
        }
    }
}
