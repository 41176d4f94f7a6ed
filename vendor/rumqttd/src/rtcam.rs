//! rtcam: what rtcam adds to the broker (see RTCAM-PATCHES.md): who a client
//! is and what it may do (decided once, from its CONNECT, by the embedding
//! program), which WebSocket origins may connect, and how many sockets it
//! holds, per address and in all.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What one authenticated client may do. Consulted by the router for every
/// PUBLISH (after topic aliases are resolved) and every SUBSCRIBE filter,
/// and by the server for the CONNECT's will.
pub trait ClientAcl: Send + Sync + fmt::Debug {
    /// May it publish on `topic` (a topic name, never a filter)?
    fn may_publish(&self, topic: &str) -> bool;
    /// May it subscribe to `filter` (every topic the filter can match)?
    fn may_subscribe(&self, filter: &str) -> bool;
    /// May its publishes be retained? When not, the broker forwards them
    /// with the retain flag cleared and stores nothing.
    fn may_retain(&self) -> bool;
    /// Whether it may take a connection slot beyond `max_connections`
    /// (the embedding program's own client).
    fn privileged(&self) -> bool {
        false
    }
}

/// A client's rights.
pub type Acl = Arc<dyn ClientAcl>;

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong or missing credentials (v5 0x86, 3.1.1 4).
    BadCredentials,
    /// Credentials fine, but not for this (v5 0x87, 3.1.1 5).
    NotAuthorized,
}

/// What a CONNECT says about its client.
#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo<'a> {
    /// The client id (the broker-assigned one when the client sent none).
    pub client_id: &'a str,
    /// User name, if any.
    pub username: Option<&'a str>,
    /// Password, if any.
    pub password: Option<&'a str>,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// Decides who a client is from its CONNECT.
#[derive(Clone)]
pub struct Authenticator(pub Arc<dyn Fn(&ConnectInfo<'_>) -> Result<Acl, Refusal> + Send + Sync>);

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authenticator")
    }
}

/// What a WebSocket upgrade request says about where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct WsRequest<'a> {
    /// The `Origin` header (browsers always send one), if any.
    pub origin: Option<&'a str>,
    /// The `Host` header, if any.
    pub host: Option<&'a str>,
}

/// Decides whether a WebSocket upgrade may proceed.
#[derive(Clone)]
pub struct OriginCheck(pub Arc<dyn Fn(&WsRequest<'_>) -> bool + Send + Sync>);

impl fmt::Debug for OriginCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OriginCheck")
    }
}

/// Bounds on the sockets the broker holds, over all its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketLimits {
    /// Sockets open at once, handshaking or connected (keep it well below
    /// the process's descriptor limit).
    pub max_sockets: usize,
    /// Sockets open at once from one IP address.
    pub max_per_ip: usize,
    /// Of which still in their handshake (TLS, WebSocket, CONNECT).
    pub max_pending_per_ip: usize,
    /// Time a socket has for its TLS or WebSocket handshake.
    pub handshake_timeout: Duration,
}

#[derive(Debug, Default)]
struct PerIp {
    open: usize,
    pending: usize,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    per_ip: HashMap<IpAddr, PerIp>,
}

/// The sockets held, shared by every listener of one broker.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: SocketLimits,
    counts: parking_lot::Mutex<Counts>,
}

/// Why a socket was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_sockets` reached.
    Full,
    /// `max_per_ip` reached for its address.
    PerIp,
    /// `max_pending_per_ip` reached for its address.
    Pending,
}

impl Admission {
    pub(crate) fn new(limits: SocketLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: parking_lot::Mutex::new(Counts::default()),
        })
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.limits.handshake_timeout
    }

    /// Admits a new socket from `ip` (in its handshake), or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let mut c = self.counts.lock();
        if c.open >= self.limits.max_sockets {
            return Err(Refused::Full);
        }
        let entry = c.per_ip.entry(ip).or_default();
        if entry.open >= self.limits.max_per_ip {
            return Err(Refused::PerIp);
        }
        if entry.pending >= self.limits.max_pending_per_ip {
            return Err(Refused::Pending);
        }
        entry.open += 1;
        entry.pending += 1;
        c.open += 1;
        Ok(Ticket {
            admission: self.clone(),
            ip,
            pending: true,
        })
    }

    /// Sockets held now (for tests and logs).
    pub(crate) fn open(&self) -> usize {
        self.counts.lock().open
    }
}

/// One admitted socket; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    pending: bool,
}

impl Ticket {
    /// The handshake is over: the socket no longer counts as pending.
    pub(crate) fn established(&mut self) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let mut c = self.admission.counts.lock();
        if let Some(e) = c.per_ip.get_mut(&self.ip) {
            e.pending = e.pending.saturating_sub(1);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.admission.counts.lock();
        c.open = c.open.saturating_sub(1);
        let remove = match c.per_ip.get_mut(&self.ip) {
            Some(e) => {
                e.open = e.open.saturating_sub(1);
                if self.pending {
                    e.pending = e.pending.saturating_sub(1);
                }
                e.open == 0
            }
            None => false,
        };
        // No entry outlives its last socket: the map stays as small as
        // the number of addresses connected now.
        if remove {
            c.per_ip.remove(&self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SocketLimits {
        SocketLimits {
            max_sockets: 4,
            max_per_ip: 3,
            max_pending_per_ip: 2,
            handshake_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn sockets_are_bounded_per_address_and_in_all() {
        let a = Admission::new(limits());
        let ip1: IpAddr = [10, 0, 0, 1].into();
        let ip2: IpAddr = [10, 0, 0, 2].into();
        let mut t1 = a.admit(ip1).unwrap();
        let _t2 = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).unwrap_err(), Refused::Pending);
        t1.established();
        let t3 = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).unwrap_err(), Refused::PerIp);
        let _t4 = a.admit(ip2).unwrap();
        assert_eq!(a.admit(ip2).unwrap_err(), Refused::Full);
        drop(t3);
        assert!(a.admit(ip2).is_ok(), "a place freed is a place to take");
        drop(t1);
        assert_eq!(a.open(), 2, "the refused and the dropped hold nothing");
    }

    #[test]
    fn the_map_forgets_an_address_with_its_last_socket() {
        let a = Admission::new(limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let t = a.admit(ip).unwrap();
        drop(t);
        assert!(a.counts.lock().per_ip.is_empty());
        assert_eq!(a.open(), 0);
    }
}
