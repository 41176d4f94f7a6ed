//! Raw MQTT: packets built byte by byte and a connection from a chosen
//! loopback address, as an attacker (or a careful test) speaks it, with no
//! client library between the test and the broker.

use super::WAIT;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// MQTT packets, built byte by byte.
pub mod wire {
    fn varint(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return;
            }
        }
    }

    fn string(s: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        varint(body.len(), &mut out);
        out.extend_from_slice(body);
        out
    }

    /// A CONNECT.
    #[derive(Clone, Copy)]
    pub struct Connect<'a> {
        pub v5: bool,
        pub client_id: &'a str,
        pub username: Option<&'a str>,
        pub password: Option<&'a str>,
        /// Topic, message, retained.
        pub will: Option<(&'a str, &'a [u8], bool)>,
    }

    impl<'a> Connect<'a> {
        pub fn new(v5: bool, client_id: &'a str) -> Connect<'a> {
            Connect {
                v5,
                client_id,
                username: None,
                password: None,
                will: None,
            }
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut flags = 0x02u8; // clean session
            let mut payload = Vec::new();
            string(self.client_id.as_bytes(), &mut payload);
            if let Some((topic, message, retain)) = self.will {
                flags |= 0x04 | (1 << 3) | if retain { 0x20 } else { 0 };
                if self.v5 {
                    payload.push(0);
                }
                string(topic.as_bytes(), &mut payload);
                string(message, &mut payload);
            }
            if let Some(u) = self.username {
                flags |= 0x80;
                string(u.as_bytes(), &mut payload);
            }
            if let Some(p) = self.password {
                flags |= 0x40;
                string(p.as_bytes(), &mut payload);
            }
            let mut body = Vec::new();
            string(b"MQTT", &mut body);
            body.push(if self.v5 { 5 } else { 4 });
            body.push(flags);
            body.extend_from_slice(&30u16.to_be_bytes());
            if self.v5 {
                body.push(0);
            }
            body.extend_from_slice(&payload);
            packet(0x10, &body)
        }
    }

    /// A PUBLISH (QoS 0 or 1; packet id 1 at QoS 1).
    pub fn publish(v5: bool, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Vec<u8> {
        let mut body = Vec::new();
        string(topic.as_bytes(), &mut body);
        if qos > 0 {
            body.extend_from_slice(&1u16.to_be_bytes());
        }
        if v5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        packet(0x30 | (qos << 1) | u8::from(retain), &body)
    }

    /// A SUBSCRIBE to one filter at QoS 1 (packet id 2).
    pub fn subscribe(v5: bool, filter: &str) -> Vec<u8> {
        let mut body = 2u16.to_be_bytes().to_vec();
        if v5 {
            body.push(0);
        }
        string(filter.as_bytes(), &mut body);
        body.push(1);
        packet(0x82, &body)
    }
}

/// CONNACK codes.
pub const ACCEPTED: u8 = 0;
pub const V5_BAD_CREDENTIALS: u8 = 0x86;
pub const V5_NOT_AUTHORIZED: u8 = 0x87;
pub const V4_NOT_AUTHORIZED: u8 = 5;

/// A raw MQTT connection from a chosen loopback address.
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// A TCP connection to `to` from `from`.
    pub async fn open(to: SocketAddr, from: IpAddr) -> std::io::Result<RawConn> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(to).await?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next packet (type and flags byte, body), or `None` if the
    /// connection closed or `wait` passed first.
    pub async fn packet_within(&mut self, wait: Duration) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(p) = self.frame() {
                    return Some(p);
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    pub async fn packet(&mut self) -> Option<(u8, Vec<u8>)> {
        self.packet_within(WAIT).await
    }

    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let (mut len, mut shift, mut i) = (0usize, 0, 1);
        loop {
            let b = *self.buf.get(i)?;
            len |= usize::from(b & 0x7f) << shift;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if self.buf.len() < i + len {
            return None;
        }
        let first = self.buf[0];
        let body = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        Some((first, body))
    }

    /// Whether the broker closes the connection (within [`WAIT`]),
    /// whatever it sends before.
    pub async fn closed(&mut self) -> bool {
        tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// Drops the connection with a TCP reset.
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
    }

    /// Connects and sends `connect`; returns the connection and the
    /// CONNACK's code (`None`: closed without one, or refused at once).
    pub async fn mqtt(
        to: SocketAddr,
        from: IpAddr,
        connect: wire::Connect<'_>,
    ) -> (Option<RawConn>, Option<u8>) {
        let Ok(mut c) = RawConn::open(to, from).await else {
            return (None, None);
        };
        if c.send(&connect.bytes()).await.is_err() {
            return (None, None);
        }
        match c.packet().await {
            Some((0x20, body)) if body.len() >= 2 => {
                let code = body[1];
                (Some(c), Some(code))
            }
            _ => (None, None),
        }
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason (0 when absent).
    pub async fn publish_acked(
        &mut self,
        v5: bool,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> u8 {
        self.send(&wire::publish(v5, topic, payload, 1, retain))
            .await
            .expect("the publish is sent");
        loop {
            let (first, body) = self
                .packet()
                .await
                .unwrap_or_else(|| panic!("a PUBACK for {topic} (retain {retain})"));
            if first >> 4 == 4 {
                return body.get(2).copied().unwrap_or(0);
            }
        }
    }

    /// Subscribes and returns the SUBACK's code.
    pub async fn subscribe_code(&mut self, v5: bool, filter: &str) -> u8 {
        self.send(&wire::subscribe(v5, filter))
            .await
            .expect("the subscribe is sent");
        loop {
            let (first, body) = self
                .packet()
                .await
                .unwrap_or_else(|| panic!("a SUBACK for {filter}"));
            if first >> 4 == 9 {
                // v5: packet id, properties (length 0), codes.
                return *body.get(if v5 { 3 } else { 2 }).expect("a return code");
            }
        }
    }
}
