//! The RTSP server end to end through the shipped `rtcam` binary: real
//! clients (ffmpeg, ffprobe, GStreamer's rtspsrc) decode the test pattern
//! over TCP interleaved and UDP; credentials are asked for and checked
//! (Digest through ffmpeg, Basic by hand); bad requests, unknown paths and
//! one client too many are answered and do not stop the server; a client
//! that never reads does not stall the others and is cut; clients that
//! trickle bytes or never authenticate lose their slot within the short
//! limits, and refusals beyond `max_clients` at once are closed unanswered.
//! Runs inside a private network namespace (loopback only).

mod common;

use base64::Engine as _;
use common::WAIT;
use common::agent::{AgentProcess, TestConfig};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Frames each client must decode.
const FRAMES: usize = 50;
/// Bound on one external client run.
const CLIENT_WAIT: Duration = Duration::from_secs(25);

/// An agent with the RTSP server on a free loopback port, and its stream URL
/// (from the `rtsp: serving …` line, printed before the ready line).
async fn start(
    prefix: &str,
    more: impl FnOnce(TestConfig) -> TestConfig,
) -> (AgentProcess, String) {
    let cfg = more(TestConfig::new(prefix).with("rtsp.listen", "127.0.0.1:0"));
    let agent = AgentProcess::start_unconnected(&cfg).await;
    let text = agent.log().text();
    let url = text
        .lines()
        .find_map(|l| l.split("rtsp: serving ").nth(1))
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| panic!("the log names the RTSP URL:\n{text}"));
    (agent, url)
}

/// Runs an external client to its end (bounded): its output.
async fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} runs (.ci/setup installs it): {e}"));
    tokio::time::timeout(CLIENT_WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} finished within {CLIENT_WAIT:?}"))
        .expect("the client's output")
}

/// ffmpeg decoding `frames` frames strictly: (exit ok, frames decoded, stderr).
async fn ffmpeg(url: &str, transport: &str, frames: usize) -> (bool, usize, String) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-xerror"])
        .args(["-rtsp_transport", transport, "-i", url])
        .args(["-frames:v", &frames.to_string(), "-f", "framemd5", "-"]);
    let out = run(&mut cmd, &format!("ffmpeg over {transport}")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // framemd5 writes one "stream, dts, pts, duration, size, md5" line per decoded frame.
    let decoded = stdout.lines().filter(|l| l.starts_with("0,")).count();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), decoded, err)
}

/// GStreamer's rtspsrc decoding FRAMES buffers: (exit ok, output).
async fn gstreamer(url: &str, protocols: &str) -> (bool, String) {
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.args(["-q", "rtspsrc"])
        .arg(format!("location={url}"))
        .arg(format!("protocols={protocols}"))
        .args(["!", "rtph264depay", "!", "h264parse", "!", "avdec_h264"])
        .args(["!", "fakesink"])
        .arg(format!("num-buffers={FRAMES}"));
    let out = run(&mut cmd, &format!("GStreamer over {protocols}")).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A hand-driven RTSP connection.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

/// A response: status, headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("rtsp://")
        .split('/')
        .next()
        .expect("host:port")
        .to_string()
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        Raw::on(TcpStream::connect(host_port(url)).await.expect("connects")).await
    }

    async fn on(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: Vec::new(),
            cseq: 0,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the request is sent");
    }

    async fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.cseq += 1;
        let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        self.send(text.as_bytes()).await;
        let r = self.reply().await.expect("a response");
        if r.status != 400 {
            assert_eq!(r.header("CSeq"), Some(self.cseq.to_string().as_str()));
        }
        r
    }

    /// The next response; `None` when the server closed the connection first.
    async fn reply(&mut self) -> Option<Reply> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                    let mut lines = head.lines();
                    let status = lines
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|s| s.parse().ok())
                        .expect("a status line");
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    if self.buf.len() >= end + 4 + len {
                        let body =
                            String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                        self.buf.drain(..end + 4 + len);
                        return Some(Reply {
                            status,
                            headers,
                            body,
                        });
                    }
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("the server answers in time")
    }

    /// Reads until the server closes the connection.
    async fn wait_closed(&mut self) {
        tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 65536];
            while let Ok(n) = self.stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await
        .expect("the server closes the connection");
    }
}

/// Sends `bytes` on a new connection: the server answers 400 saying `why`
/// in the body, and closes the connection.
async fn bad_request(url: &str, bytes: &[u8], why: &str) {
    let mut c = Raw::connect(url).await;
    c.send(bytes).await;
    let r = c.reply().await.expect("an answer to a bad request");
    assert_eq!(r.status, 400);
    assert!(r.body.contains(why), "{}", r.body);
    c.wait_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_and_gstreamer_decode_the_stream_over_tcp_and_udp() {
    let (agent, url) = start("rtsp-play", |c| c).await;
    assert!(url.ends_with("/cam"), "{url}");
    for transport in ["tcp", "udp"] {
        let (ok, decoded, err) = ffmpeg(&url, transport, FRAMES).await;
        assert!(ok, "ffmpeg over {transport} decodes without error: {err}");
        assert!(
            decoded >= FRAMES,
            "ffmpeg over {transport}: {decoded} frames"
        );
    }
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-rtsp_transport",
        "tcp",
        "-select_streams",
        "v:0",
    ])
    .args(["-show_entries", "stream=codec_name,width,height"])
    .args(["-of", "csv=p=0"])
    .arg(&url);
    let probe = run(&mut cmd, "ffprobe").await;
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "h264,640,480"
    );
    for protocols in ["tcp", "udp"] {
        let (ok, out) = gstreamer(&url, protocols).await;
        assert!(
            ok,
            "GStreamer over {protocols} decodes {FRAMES} buffers: {out}"
        );
    }
    // The figures see the clients come and go.
    agent
        .wait_stats("every RTSP client gone", |s| s.rtsp_clients == 0)
        .await;
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_asked_for_and_checked_digest_and_basic() {
    let (agent, url) = start("rtsp-auth", |c| {
        c.with("rtsp.username", "viewer")
            .with("rtsp.password", "s3cret-pw")
            .with_env("RTCAM_LOG", "info,rtcam::rtsp=debug")
    })
    .await;
    let mut c = Raw::connect(&url).await;
    // OPTIONS is open (clients ask it first); DESCRIBE is not.
    assert_eq!(c.request("OPTIONS", &url, &[]).await.status, 200);
    let r = c.request("DESCRIBE", &url, &[]).await;
    assert_eq!(r.status, 401);
    let challenges = r.all("WWW-Authenticate");
    assert!(
        challenges
            .iter()
            .any(|c| c.starts_with("Digest realm=\"rtcam\", nonce=\"")),
        "{challenges:?}"
    );
    assert!(
        challenges.contains(&"Basic realm=\"rtcam\""),
        "{challenges:?}"
    );
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let wrong = format!("Basic {}", b64("viewer:wrong"));
    let r = c
        .request("DESCRIBE", &url, &[("Authorization", &wrong)])
        .await;
    assert_eq!(r.status, 401, "a wrong password");
    let right = format!("Basic {}", b64("viewer:s3cret-pw"));
    let r = c
        .request("DESCRIBE", &url, &[("Authorization", &right)])
        .await;
    assert_eq!(r.status, 200, "Basic is accepted");
    assert!(r.body.contains("a=rtpmap:96 H264/90000"), "{}", r.body);
    assert!(r.body.contains("sprop-parameter-sets="), "{}", r.body);
    assert!(agent.log().text().contains("rtsp: authenticated (Basic)"));
    drop(c);

    // ffmpeg without credentials, with wrong ones, then with the right ones (Digest).
    let (ok, decoded, _) = ffmpeg(&url, "tcp", 5).await;
    assert!(!ok && decoded == 0, "no credentials, no stream");
    let wrong_url = url.replace("rtsp://", "rtsp://viewer:nope@");
    let (ok, decoded, _) = ffmpeg(&wrong_url, "tcp", 5).await;
    assert!(!ok && decoded == 0, "wrong credentials, no stream");
    let good_url = url.replace("rtsp://", "rtsp://viewer:s3cret-pw@");
    let (ok, decoded, err) = ffmpeg(&good_url, "tcp", FRAMES).await;
    assert!(ok && decoded >= FRAMES, "{decoded} frames: {err}");
    assert!(
        agent.log().text().contains("rtsp: authenticated (Digest)"),
        "ffmpeg answers the Digest challenge"
    );
    assert!(
        !agent.log().text().contains("s3cret-pw"),
        "the password is never logged"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_unknown_paths_and_one_client_too_many() {
    let (agent, url) = start("rtsp-bad", |c| c.with("rtsp.max_clients", 2)).await;
    // Garbage: 400 with a reason, and the connection is closed.
    bad_request(&url, b"\x16\x03\x01 this is not RTSP\r\n\r\n", "malformed").await;
    // No CSeq: 400 too.
    bad_request(&url, b"OPTIONS * RTSP/1.0\r\n\r\n", "CSeq").await;

    // The server still serves: other paths are 404, other methods 405/501.
    let base = url.trim_end_matches("/cam");
    let mut a = Raw::connect(&url).await;
    let r = a.request("OPTIONS", &url, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("Public").is_some_and(|p| p.contains("DESCRIBE")));
    assert_eq!(
        a.request("DESCRIBE", &format!("{base}/nope"), &[])
            .await
            .status,
        404
    );
    assert_eq!(a.request("ANNOUNCE", &url, &[]).await.status, 405);
    assert_eq!(a.request("FROBNICATE", &url, &[]).await.status, 501);
    assert_eq!(
        a.request("PLAY", &url, &[("Session", "nosuch")])
            .await
            .status,
        455,
        "PLAY before SETUP"
    );
    let r = a
        .request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", "RTP/AVP;multicast")],
        )
        .await;
    assert_eq!(r.status, 461, "multicast is not served");

    // Two clients are the limit: a third gets 503, and a slot frees when one leaves.
    let mut b = Raw::connect(&url).await;
    assert_eq!(b.request("OPTIONS", &url, &[]).await.status, 200);
    let mut c = Raw::connect(&url).await;
    assert_eq!(c.request("OPTIONS", &url, &[]).await.status, 503);
    c.wait_closed().await;
    drop(a);
    agent
        .wait_stats("a slot freed", |s| s.rtsp_clients == 1)
        .await;
    let (ok, decoded, err) = ffmpeg(&url, "tcp", FRAMES).await;
    assert!(ok && decoded >= FRAMES, "{decoded} frames: {err}");
    drop(b);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_stall_the_others_and_is_cut() {
    let (agent, url) = start("rtsp-slow", |c| c.with("rtsp.max_clients", 4)).await;
    // The slow one: a tiny receive window, interleaved RTP, never read after PLAY.
    let sock = tokio::net::TcpSocket::new_v4().expect("a socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = sock
        .connect(host_port(&url).parse().expect("an address"))
        .await
        .expect("connects");
    let mut slow = Raw::on(stream).await;
    let r = slow.request("DESCRIBE", &url, &[]).await;
    assert_eq!(r.status, 200);
    let base = r.header("Content-Base").expect("Content-Base").to_string();
    let r = slow
        .request(
            "SETUP",
            &format!("{base}trackID=0"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("Transport")
            .is_some_and(|t| t.contains("interleaved=0-1"))
    );
    let session = r.header("Session").expect("a session").to_string();
    assert!(session.ends_with(";timeout=60"), "{session}");
    let id = session.split(';').next().expect("an id").to_string();
    let r = slow.request("PLAY", &base, &[("Session", &id)]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("RTP-Info")
            .is_some_and(|i| i.contains("seq=") && i.contains("rtptime=")),
        "{:?}",
        r.headers
    );
    agent
        .wait_stats("the slow client counted", |s| s.rtsp_clients == 1)
        .await;

    // Three others at once, over both transports, all decode their frames.
    let (t1, t2, t3) = tokio::join!(
        ffmpeg(&url, "tcp", 100),
        ffmpeg(&url, "udp", 100),
        gstreamer(&url, "tcp"),
    );
    for (name, (ok, decoded, err)) in [("tcp", t1), ("udp", t2)] {
        assert!(
            ok && decoded >= 100,
            "ffmpeg over {name}: {decoded} frames: {err}"
        );
    }
    assert!(t3.0, "GStreamer: {}", t3.1);
    // The slow one could not keep up: it is cut (its socket took nothing for 5 s).
    agent
        .wait_stats("the slow client cut", |s| s.rtsp_clients == 0)
        .await;
    slow.wait_closed().await;
    assert!(
        agent.log().text().contains("cannot keep up"),
        "the cut is logged"
    );
    agent.shutdown().await;
}

/// Connects and writes `chunks` one at a time, `gap` apart (the first at
/// once), while reading what the server sends, until the server closes the
/// connection (bounded by [`WAIT`]): what it sent.
async fn trickle_until_closed(url: &str, chunks: Vec<Vec<u8>>, gap: Duration) -> String {
    let stream = TcpStream::connect(host_port(url)).await.expect("connects");
    let (mut rd, mut wr) = stream.into_split();
    let writer = async move {
        for c in chunks {
            if wr.write_all(&c).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
        std::future::pending::<()>().await
    };
    let reader = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = rd.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        got
    };
    let got = tokio::time::timeout(WAIT, async {
        tokio::select! {
            got = reader => got,
            () = writer => unreachable!("the writer never ends"),
        }
    })
    .await
    .expect("the server closes the connection within its limit");
    String::from_utf8_lossy(&got).into_owned()
}

/// Slowloris: with `max_clients = 1`, a client trickling one byte every few
/// seconds, and then one repeating `OPTIONS` without ever authenticating,
/// each hold the only slot only until their short limit (a request's bytes
/// within 10 s, credentials within 15 s of connecting), not for ever.
/// Meanwhile one refusal answers 503 and a second one at once is closed
/// unanswered. Then ffmpeg gets the slot and decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricklers_and_unauthenticated_clients_lose_their_slot() {
    let (agent, url) = start("rtsp-trickle", |c| {
        c.with("rtsp.max_clients", 1)
            .with("rtsp.username", "viewer")
            .with("rtsp.password", "s3cret-pw")
    })
    .await;
    let options =
        |cseq: u32| format!("OPTIONS {url} RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n").into_bytes();

    // A request one byte every 3 s: it never completes, and more bytes do not
    // keep it alive. While it holds the slot, others are refused.
    let bytes: Vec<Vec<u8>> = options(1).into_iter().map(|b| vec![b]).collect();
    let (sent, ()) = tokio::join!(
        trickle_until_closed(&url, bytes, Duration::from_secs(3)),
        async {
            agent
                .wait_stats("the trickler holds the slot", |s| s.rtsp_clients == 1)
                .await;
            // The first refusal waits for a request to answer 503 ...
            let mut first = Raw::connect(&url).await;
            // ... a second one while it does is closed at once, unanswered.
            let mut second = Raw::connect(&url).await;
            assert!(second.reply().await.is_none(), "closed without an answer");
            assert_eq!(first.request("OPTIONS", &url, &[]).await.status, 503);
            first.wait_closed().await;
            drop(first);
            // With no refusal under way, the next one is answered 503 again.
            let mut third = Raw::connect(&url).await;
            assert_eq!(third.request("OPTIONS", &url, &[]).await.status, 503);
        },
    );
    assert!(
        sent.is_empty(),
        "nothing answers an incomplete request: {sent:?}"
    );
    agent
        .wait_stats("the trickler's slot freed", |s| s.rtsp_clients == 0)
        .await;
    assert!(
        agent
            .log()
            .text()
            .contains("a request not completed within 10s"),
        "the cut is logged"
    );

    // Complete requests that never authenticate: OPTIONS is answered (it
    // needs no credentials) but does not keep the connection past 15 s.
    let requests: Vec<Vec<u8>> = (1..=10).map(options).collect();
    let sent = trickle_until_closed(&url, requests, Duration::from_secs(3)).await;
    assert!(sent.starts_with("RTSP/1.0 200 OK"), "{sent:?}");
    agent
        .wait_stats("the unauthenticated client's slot freed", |s| {
            s.rtsp_clients == 0
        })
        .await;
    assert!(
        agent
            .log()
            .text()
            .contains("not authenticated within 15s of connecting"),
        "the cut is logged"
    );

    // Interleaved data before PLAY is a bad request.
    bad_request(&url, b"$\x01\x00\x04abcd", "before PLAY").await;
    agent
        .wait_stats("the slot free again", |s| s.rtsp_clients == 0)
        .await;

    let good_url = url.replace("rtsp://", "rtsp://viewer:s3cret-pw@");
    let (ok, decoded, err) = ffmpeg(&good_url, "tcp", FRAMES).await;
    assert!(ok && decoded >= FRAMES, "{decoded} frames: {err}");
    agent.shutdown().await;
}

/// The three doors of the README's quick start at once, configured as
/// `.ci/demo` does (`RTCAM_RTSP_LISTEN`): an MQTT-signaled WebRTC viewer,
/// a WHEP player (aiortc) and ffmpeg over RTSP each decode the same
/// stream, three subscribers of one hub fed by one encoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_doors_serve_one_encode_at_once() {
    common::players::aiortc_python();
    let (agent, url) = start("rtsp-doors", |c| {
        c.with("video.fps", 15)
            .with_env("RTCAM_RTSP_LISTEN", "127.0.0.1:0")
    })
    .await;
    agent.wait_mqtt(true).await;
    let mut mqtt = common::viewer(agent.settings(), "doors-mqtt", true).await;
    let whep_url = format!("http://{}/whep", agent.http_addr());
    let (webrtc, whep, rtsp, _) = tokio::join!(
        common::frames(&mut mqtt, 60),
        common::whep::player(&agent, &whep_url, "", &[], &[]),
        ffmpeg(&url, "tcp", 60),
        async {
            agent
                .wait_stats("all three doors subscribed", |s| {
                    s.subscribers >= 3 && s.rtsp_clients == 1 && s.connected == 2
                })
                .await
        },
    );
    assert_eq!(webrtc.seqs.len(), 60, "the MQTT viewer's frames");
    assert!(
        whep["frames_decoded"].as_u64().unwrap_or(0) >= 20,
        "{whep:#}"
    );
    assert!(
        rtsp.0 && rtsp.1 >= 60,
        "ffmpeg over RTSP: {} frames: {}",
        rtsp.1,
        rtsp.2
    );
    drop(mqtt);
    agent.shutdown().await;
}

/// What Home Assistant's stream worker does with a Generic Camera's RTSP
/// URL: PyAV (FFmpeg's libraries, as HA uses them) opens it preferring
/// TCP and decodes. Run with the aiortc venv's PyAV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyav_opens_the_stream_as_home_assistant_does() {
    let python = common::players::aiortc_python();
    let (agent, url) = start("rtsp-pyav", |c| {
        c.with("video.width", 1280).with("video.height", 720)
    })
    .await;
    let script = "import av, sys\n\
        c = av.open(sys.argv[1], options={'rtsp_flags': 'prefer_tcp', 'timeout': '5000000'}, timeout=(10, 10))\n\
        v = c.streams.video[0]\n\
        n = 0\n\
        for f in c.decode(v):\n\
        \x20   n += 1\n\
        \x20   if n >= 50: break\n\
        print(n, v.codec_context.name, f.width, f.height)\n";
    let mut cmd = Command::new(python);
    cmd.args(["-c", script, &url]);
    let out = run(&mut cmd, "PyAV").await;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said, "50 h264 1280 720");
    agent.shutdown().await;
}
