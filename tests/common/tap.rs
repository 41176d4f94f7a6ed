//! A TCP relay between a test's MQTT client and the broker: it keeps what
//! the client sent (to see what a viewer published without subscribing to
//! its topics, which the embedded broker allows no one else), and the test
//! can cut it (the client's connection drops and cannot come back, so
//! another connection may take over its client id without the two taking
//! it from each other at every reconnect).

use rtcam::config::settings::{MqttScheme, MqttUrl};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running relay.
pub struct Tap {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
    more: tokio::sync::watch::Receiver<usize>,
    cut: CancellationToken,
}

impl Tap {
    /// Relays connections made to [`Tap::url`] to `target`.
    pub async fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (more_tx, more) = tokio::sync::watch::channel(0usize);
        let more_tx = Arc::new(more_tx);
        let cut = CancellationToken::new();
        let stop = cut.clone();
        let log = sent.clone();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = stop.cancelled() => break,
                    c = listener.accept() => match c {
                        Ok((c, _)) => c,
                        Err(_) => continue,
                    },
                };
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let (stop_up, stop_down) = (stop.clone(), stop.clone());
                let (log, more_tx) = (log.clone(), more_tx.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = tokio::select! {
                            _ = stop_up.cancelled() => break,
                            n = cr.read(&mut buf) => match n {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            },
                        };
                        let total = {
                            let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
                            l.extend_from_slice(&buf[..n]);
                            l.len()
                        };
                        more_tx.send_replace(total);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = tokio::select! {
                            _ = stop_down.cancelled() => break,
                            n = sr.read(&mut buf) => match n {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            },
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
            // The listener is dropped here: later connects are refused.
        });
        Tap {
            addr,
            sent,
            more,
            cut,
        }
    }

    /// The URL to give the client (plain MQTT).
    pub fn url(&self) -> MqttUrl {
        MqttUrl {
            scheme: MqttScheme::Mqtt,
            host: "127.0.0.1".into(),
            port: self.addr.port(),
            path: String::new(),
        }
    }

    /// Drops every relayed connection and stops accepting new ones.
    pub fn cut(&self) {
        self.cut.cancel();
    }

    /// Waits until the client has sent `needle` (in any packet); panics
    /// naming `what` after [`super::WAIT`]. Returns what it sent so far.
    pub async fn wait_sent(&self, what: &str, needle: &[u8]) -> Vec<u8> {
        let mut more = self.more.clone();
        let found = tokio::time::timeout(super::WAIT, async {
            loop {
                {
                    let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
                    if sent.windows(needle.len()).any(|w| w == needle) {
                        return sent.clone();
                    }
                }
                if more.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for the client to send {what}"))
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}
