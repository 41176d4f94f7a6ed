//! A viewer built from the WebRTC stack directly, holding its DataChannels
//! itself: to close one alone, or to open several (an attacker trying to
//! multiply its command budget).

use super::{WAIT, mqtt_for};
use rtcam::config::Settings;
use rtcam::peer::{Channel, ChannelEvent, Peer, PeerEvent, PeerOptions};
use rtcam::signaling::messages::{self, IceCandidate};
use rtcam::signaling::mqtt::{Link, LinkEvent, LinkPublisher};
use rtcam::signaling::topics::{ClientId, Topics};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// A DataChannel-only viewer with the channels of `labels`.
pub struct ChannelViewer {
    /// Its peer connection.
    pub peer: Arc<Peer>,
    /// Its channels, in the order of the labels.
    pub channels: Vec<Channel>,
    publisher: LinkPublisher,
    bye_topic: String,
    session: Arc<Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How a [`ChannelViewer`] connects.
pub struct Options {
    /// WebRTC options (mDNS mode, addresses).
    pub peer: PeerOptions,
    /// Ignore the agent's candidates (in its answer and trickled): the
    /// connection then only comes up if the agent reaches this viewer's own
    /// candidates, e.g. a `.local` name it must resolve.
    pub deaf: bool,
    /// Reach the broker there (a [`super::tap::Tap`]) rather than directly.
    pub broker: Option<rtcam::config::settings::MqttUrl>,
}

impl ChannelViewer {
    /// Offers (with a proof of `token`, if given), trickles candidates,
    /// applies the answer, and returns once the first channel is open.
    pub async fn connect(
        s: &Settings,
        client: &str,
        labels: &[&str],
        token: Option<&str>,
    ) -> ChannelViewer {
        let opts = Options {
            peer: PeerOptions::for_viewer(&s.webrtc),
            deaf: false,
            broker: None,
        };
        Self::connect_with(s, client, labels, token, opts).await
    }

    /// [`Self::connect`] with [`Options`].
    pub async fn connect_with(
        s: &Settings,
        client: &str,
        labels: &[&str],
        token: Option<&str>,
        opts: Options,
    ) -> ChannelViewer {
        let deaf = opts.deaf;
        let topics = Topics::new(&s.mqtt.topic_prefix);
        let cid = ClientId::parse(client).expect("a valid client id");
        let (answer_t, ice_t) = (topics.answer(&cid), topics.ice(&cid));
        let mut mqtt = mqtt_for(s, client);
        if let Some(url) = &opts.broker {
            mqtt.url = url.clone();
        }
        let mut link = Link::new(&mqtt, vec![answer_t.clone(), ice_t.clone()]).expect("link");
        let publisher = link.publisher();
        let (msg_tx, mut msgs) = mpsc::unbounded_channel();
        let (up_tx, mut up) = tokio::sync::watch::channel(false);
        let link_task = tokio::spawn(async move {
            loop {
                match link.next().await {
                    Ok(LinkEvent::Connected) => {
                        let _ = up_tx.send(true);
                    }
                    Ok(LinkEvent::Message(t, p)) => {
                        let _ = msg_tx.send((t, p));
                    }
                    Err(_) => {}
                }
            }
        });
        tokio::time::timeout(WAIT, up.wait_for(|c| *c))
            .await
            .expect("connected to the broker in time")
            .expect("link alive");
        let (peer, sdp, channels, mut events) = Peer::offer_channels(&opts.peer, false, labels)
            .await
            .expect("an offer");
        let peer = Arc::new(peer);
        let mut offer = json!({"type": "offer", "sdp": sdp});
        if let Some(t) = token {
            let fp = rtcam::auth::sdp_fingerprint(&sdp).expect("a fingerprint");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as u64;
            offer["auth"] =
                serde_json::to_value(rtcam::auth::prove(t, client, fp, now)).expect("JSON");
        }
        assert!(publisher.publish(&topics.offer(&cid), offer.to_string()));
        // Signaling both ways until the test ends: our candidates out, the
        // answer and the agent's candidates in (ours come back: skipped).
        let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
        let session: Arc<Mutex<Option<String>>> = Arc::default();
        let bg_session = session.clone();
        let bg_peer = peer.clone();
        let bg_publisher = publisher.clone();
        let signaling = tokio::spawn(async move {
            let mut answered = false;
            let mut early: Vec<IceCandidate> = Vec::new();
            loop {
                tokio::select! {
                    ev = events.recv() => match ev {
                        Some(PeerEvent::LocalCandidate(c)) => {
                            sent.lock().unwrap_or_else(PoisonError::into_inner).insert(c.candidate.clone());
                            bg_publisher.publish(&ice_t, messages::candidate_json(&c));
                        }
                        Some(PeerEvent::GatheringComplete) => {
                            bg_publisher.publish(&ice_t, messages::candidate_json(&IceCandidate::end()));
                        }
                        Some(_) => {}
                        None => break,
                    },
                    m = msgs.recv() => {
                        let Some((t, p)) = m else { break };
                        if t == answer_t && !answered {
                            let v: Value = serde_json::from_slice(&p).unwrap_or(Value::Null);
                            if let Some(sdp) = v["sdp"].as_str() {
                                let sdp: String = if deaf {
                                    sdp.split_inclusive('\n')
                                        .filter(|l| !l.starts_with("a=candidate:"))
                                        .collect()
                                } else {
                                    sdp.to_string()
                                };
                                let sdp = sdp.as_str();
                                *bg_session.lock().unwrap_or_else(PoisonError::into_inner) =
                                    v["session"].as_str().map(str::to_string);
                                bg_peer.accept_answer(sdp).await.expect("the answer applies");
                                answered = true;
                                for c in early.drain(..) {
                                    let _ = bg_peer.add_remote_candidate(&c).await;
                                }
                            }
                        } else if t == ice_t
                            && !deaf
                            && let Ok(c) = messages::parse_candidate(&p)
                            && !c.is_end()
                            && !sent.lock().unwrap_or_else(PoisonError::into_inner).contains(&c.candidate)
                        {
                            if answered {
                                let _ = bg_peer.add_remote_candidate(&c).await;
                            } else {
                                early.push(c);
                            }
                        }
                    }
                }
            }
        });
        let first = channels.first().expect("at least one channel");
        let opened = tokio::time::timeout(WAIT, async {
            loop {
                match first.recv().await {
                    Some(ChannelEvent::Open) => return true,
                    Some(_) => {}
                    None => return false,
                }
            }
        })
        .await;
        assert_eq!(opened, Ok(true), "{client}'s first channel opens");
        ChannelViewer {
            peer,
            channels,
            publisher,
            bye_topic: topics.bye(&cid),
            session,
            tasks: vec![link_task, signaling],
        }
    }

    /// Sends a command on the first channel and returns its reply.
    pub async fn command(&self, id: u64, req: Value) -> Value {
        self.command_on(0, id, req).await
    }

    /// Sends a command on channel `i` and returns its reply (the next text
    /// with its id).
    pub async fn command_on(&self, i: usize, id: u64, mut req: Value) -> Value {
        req["id"] = json!(id);
        self.send_on(i, &req).await;
        tokio::time::timeout(WAIT, async {
            loop {
                match self.channels[i].recv().await {
                    Some(ChannelEvent::Text(t)) => {
                        let v: Value = serde_json::from_str(&t).expect("replies are JSON");
                        if v["id"] == json!(id) {
                            return v;
                        }
                    }
                    Some(_) => {}
                    None => panic!("channel {i} closed before reply {id}"),
                }
            }
        })
        .await
        .expect("a reply in time")
    }

    /// Sends a request on the first channel without waiting for its reply.
    pub async fn send(&self, req: &Value) {
        self.send_on(0, req).await;
    }

    /// Sends a request on channel `i` without waiting for its reply.
    pub async fn send_on(&self, i: usize, req: &Value) {
        self.channels[i]
            .send_text(&req.to_string())
            .await
            .expect("sent on the channel");
    }

    /// Says bye over MQTT with the session's secret (the broker has it when
    /// this returns); the peer connection stays open.
    pub async fn bye(&self) {
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let n = self
            .publisher
            .publish_counted(&self.bye_topic, json!({ "session": session }).to_string())
            .expect("the bye is queued");
        assert!(
            self.publisher.wait_acked(n, WAIT).await,
            "the broker acknowledges the bye"
        );
    }

    /// Closes the peer connection without a bye.
    pub async fn close(self) {
        self.peer.close().await;
        self.publisher.disconnect();
        for t in &self.tasks {
            t.abort();
        }
    }
}
