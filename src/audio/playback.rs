//! Talkback: the floor (one talker at a time) and the speaker's thread,
//! which plays the floor holder's Opus packets through a jitter buffer on
//! the ALSA output, one 20 ms frame per tick of its own clock. The device
//! is open only while someone talks; a device that fails is retried with
//! backoff while the floor is held.

use super::codec::OpusDecoder;
use super::floor::{Floor, FloorError};
use super::jitter::{JitterBuffer, Playout};
use super::{AudioError, AudioStats, FRAME, FRAME_SAMPLES, pcm};
use crate::backoff::Backoff;
use crate::config::AudioSettings;
use crate::gpio::failsafe::SessionKey;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Packets queued for the speaker's thread before new ones are dropped.
const QUEUE: usize = 64;
/// Talkback is played in mono: one voice.
const CHANNELS: u8 = 1;

enum TalkIn {
    Start,
    Packet(u16, Bytes),
    Stop,
}

/// The floor and the way to the speaker.
pub struct Talkback {
    floor: Mutex<Floor<SessionKey>>,
    tx: SyncSender<TalkIn>,
    stats: Arc<AudioStats>,
}

impl Talkback {
    /// Starts the speaker's thread for `settings.output` (which must be set);
    /// it ends when the last `Talkback` handle is dropped.
    pub fn spawn(settings: &AudioSettings, stats: Arc<AudioStats>) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let device = settings.output.clone().unwrap_or_else(|| "default".into());
        let jitter = (settings.jitter.as_millis() / FRAME.as_millis()).max(1) as usize;
        let volume = settings.volume_percent;
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("rtcam-audio-out".into())
            .spawn(move || speaker(&rx, &device, jitter, volume, &thread_stats))?;
        Ok(Arc::new(Self {
            floor: Mutex::new(Floor::new()),
            tx,
            stats,
        }))
    }

    fn floor(&self) -> std::sync::MutexGuard<'_, Floor<SessionKey>> {
        self.floor.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `who` the floor, unless another session holds it.
    pub fn take(&self, who: SessionKey) -> Result<(), FloorError> {
        let mut f = self.floor();
        let had = f.holds(&who);
        f.take(&who)?;
        if !had {
            tracing::info!(session = who, "talkback: floor taken");
            let _ = self.tx.try_send(TalkIn::Start);
        }
        Ok(())
    }

    /// Takes the floor from `who` if it holds it (its command, or its end);
    /// true if it did.
    pub fn release(&self, who: SessionKey) -> bool {
        let released = self.floor().release(&who);
        if released {
            tracing::info!(session = who, "talkback: floor released");
            // Blocking is fine: the speaker's thread drains quickly.
            let _ = self.tx.send(TalkIn::Stop);
        }
        released
    }

    /// The session talking now.
    pub fn talker(&self) -> Option<SessionKey> {
        self.floor().holder().copied()
    }

    /// An Opus packet of `who`'s microphone: played if `who` holds the
    /// floor, dropped otherwise (a viewer's track sends before and after).
    pub fn push(&self, who: SessionKey, seq: u16, payload: Bytes) {
        if !self.floor().holds(&who) {
            return;
        }
        match self.tx.try_send(TalkIn::Packet(seq, payload)) {
            Ok(()) => {
                self.stats.talk_packets.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.stats.talk_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The speaker's thread: idle until a Start, then plays until a Stop and
/// an empty buffer.
fn speaker(rx: &Receiver<TalkIn>, device: &str, jitter: usize, volume: u32, stats: &AudioStats) {
    let mut backoff = Backoff::standard();
    loop {
        // Idle: wait for someone to take the floor.
        match rx.recv() {
            Ok(TalkIn::Start) => {}
            Ok(_) => continue,
            Err(_) => return,
        }
        loop {
            match play(rx, device, jitter, volume, stats) {
                Ok(Some(())) => {
                    backoff.reset();
                    break;
                }
                Ok(None) => return,
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    tracing::warn!(device, error = %e, retry_in = ?delay, "speaker failed");
                    // Packets that come meanwhile are dropped; a Stop ends the retries.
                    let until = Instant::now() + delay;
                    let mut stopped = false;
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        match rx.recv_timeout(left) {
                            Ok(TalkIn::Stop) => {
                                stopped = true;
                                break;
                            }
                            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    if stopped {
                        break;
                    }
                }
            }
        }
    }
}

/// Plays one talk: Ok(Some) when it ended, Ok(None) when the agent stops.
fn play(
    rx: &Receiver<TalkIn>,
    device: &str,
    jitter: usize,
    volume: u32,
    stats: &AudioStats,
) -> Result<Option<()>, AudioError> {
    let pcm = pcm::open(device, true, CHANNELS)?;
    let mut dec = super::codec::OpusDecoder::new(CHANNELS)?;
    let mut buf = JitterBuffer::new(jitter, jitter * 4 + 10);
    let mut out = vec![0i16; FRAME_SAMPLES * 6];
    let silence = vec![0i16; FRAME_SAMPLES];
    let gain = f64::from(volume) / 100.0;
    let mut stopping = false;
    let mut next = Instant::now();
    tracing::info!(device, "speaker open");
    let ended = loop {
        // Take what has come until this frame is due.
        loop {
            let left = next.saturating_duration_since(Instant::now());
            let got = if left.is_zero() {
                rx.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            } else {
                rx.recv_timeout(left)
            };
            match got {
                Ok(TalkIn::Packet(seq, p)) => buf.push(seq, p),
                Ok(TalkIn::Stop) => stopping = true,
                Ok(TalkIn::Start) => stopping = false,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
        if stopping && buf.is_empty() {
            break Some(());
        }
        let frame: &[i16] = match buf.pop() {
            Playout::Frame(p) => decode(&mut dec, Some(&p), &mut out, gain)?,
            Playout::Lost => decode(&mut dec, None, &mut out, gain)?,
            Playout::Idle => &silence,
        };
        pcm::write(&pcm, device, frame, usize::from(CHANNELS))?;
        stats.played.fetch_add(1, Ordering::Relaxed);
        next += FRAME;
        // Far behind (a stall): start the clock again rather than burst.
        if Instant::now() > next + Duration::from_millis(200) {
            next = Instant::now();
        }
    };
    let _ = pcm.drain();
    // Closed before it is said to be: plugins (a file) flush on close.
    drop(pcm);
    let s = buf.stats();
    tracing::info!(
        device,
        played = s.played,
        lost = s.lost,
        late = s.late,
        underruns = s.underruns,
        "speaker closed"
    );
    Ok(ended)
}

fn decode<'a>(
    dec: &mut OpusDecoder,
    packet: Option<&[u8]>,
    out: &'a mut [i16],
    gain: f64,
) -> Result<&'a [i16], AudioError> {
    let n = dec.decode(packet, out)?;
    let frame = &mut out[..n];
    if (gain - 1.0).abs() > f64::EPSILON {
        for s in frame.iter_mut() {
            *s = (f64::from(*s) * gain).clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
        }
    }
    Ok(frame)
}
