//! An interceptor that lets the viewer's keyframe requests (RTCP PLI and
//! FIR) reach the application, and takes the figures congestion control
//! needs from its receiver reports (the stack's statistics give loss but
//! no round trip). The WebRTC stack ends its interceptor chain with a
//! terminus that drops inbound RTCP unless it is marked for delivery; this
//! one marks PLI/FIR and drops the rest (the stack's own interceptors
//! before it have already consumed reports and NACKs).

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Slot in the interceptor chain: after every built-in one (they end at 13 000).
pub const SLOT: u16 = 14_000;

/// Marks PLI/FIR for delivery to the application and notes receiver reports.
#[derive(Default)]
pub struct KeyframeRequestForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    reports: Arc<ReceiverReports>,
}

/// What the viewer's receiver reports said, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReportFigures {
    /// Reports received (a counter: a new one means fresh feedback).
    pub count: u64,
    /// Share of our packets lost since the report before (0..=1).
    pub fraction_lost: f64,
    /// The round trip the newest report gave, if it echoed a sender report.
    pub rtt: Option<Duration>,
    /// The send-side estimate (GCC on the viewer's transport-wide
    /// feedback) in bit/s, once feedback came; `None` without it.
    pub transport_estimate_bps: Option<f64>,
}

/// The receiver-report figures, shared between the interceptor and the peer.
#[derive(Debug, Default)]
pub struct ReceiverReports(Mutex<ReportFigures>);

impl ReceiverReports {
    /// The figures so far.
    pub fn figures(&self) -> ReportFigures {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note_estimate(&self, bits_per_second: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .transport_estimate_bps = Some(bits_per_second);
    }

    fn note(&self, r: &ReceptionReport, now_ntp_mid: u32) {
        let mut f = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.count += 1;
        f.fraction_lost = f64::from(r.fraction_lost) / 256.0;
        // A report without a round trip keeps the last one: it still holds.
        if let Some(rtt) = report_rtt(now_ntp_mid, r.last_sender_report, r.delay) {
            f.rtt = Some(rtt);
        }
    }
}

/// The middle 32 bits of the NTP time now: the clock the stack's sender
/// reports are stamped with, and so the one their echoes are measured on.
pub fn ntp_mid32(now: SystemTime) -> u32 {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs().wrapping_add(0x83AA_7E80);
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    ((secs << 16) as u32) | ((frac >> 16) as u32)
}

/// RFC 3550 §6.4.1: the round trip is the arrival time minus the echoed
/// sender report's time minus the receiver's delay, in 1/65536 s. None
/// when the report echoes no sender report yet, or the figure is absurd.
pub fn report_rtt(arrival_mid: u32, last_sr: u32, delay: u32) -> Option<Duration> {
    if last_sr == 0 {
        return None;
    }
    let units = arrival_mid.wrapping_sub(last_sr).wrapping_sub(delay);
    // Over a minute is a wrapped negative (a report from the future): no figure.
    (units < 60 << 16).then(|| Duration::from_nanos(u64::from(units) * 1_000_000_000 / 65_536))
}

impl KeyframeRequestForwarder {
    /// A forwarder noting receiver reports in `reports`.
    pub fn new(reports: Arc<ReceiverReports>) -> Self {
        Self {
            reports,
            ..Self::default()
        }
    }
}

/// True for RTCP packets that ask the sender for a keyframe.
pub fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        // The congestion-control interceptor, wire-ward of here, attaches
        // its new estimate to the feedback that changed it.
        for a in &msg.message.attributes {
            if let Attribute::TargetBitrateChanged { bits_per_second } = a {
                self.reports.note_estimate(*bits_per_second);
            }
        }
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let now = ntp_mid32(SystemTime::now());
            for rr in packets
                .iter()
                .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
            {
                // The viewer sends no media: its one stream is what it reports on.
                if let Some(r) = rr.reports.first() {
                    self.reports.note(r, now);
                }
            }
            let wanted: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            if wanted.is_empty() {
                // Reports and NACKs were handled by earlier interceptors; the
                // terminus would drop them anyway.
                return Ok(());
            }
            // Delivery routes by the first packet's media SSRC: make it the request.
            msg.message.packet = Packet::Rtcp(wanted);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_from_an_echoed_sender_report() {
        let now = SystemTime::now();
        let arrival = ntp_mid32(now);
        let sent = ntp_mid32(now - Duration::from_millis(250));
        // The viewer held the sender report 100 ms before reporting.
        let delay = 65_536 / 10;
        let rtt = report_rtt(arrival, sent, delay).expect("a round trip");
        assert!(
            (149..=151).contains(&rtt.as_millis()),
            "250 ms since the report, 100 of them at the viewer: {rtt:?}"
        );
        assert_eq!(
            report_rtt(arrival, 0, 0),
            None,
            "no sender report echoed yet"
        );
        assert_eq!(
            report_rtt(sent, arrival, 0),
            None,
            "a report from the future is no figure"
        );
    }

    #[test]
    fn reports_are_counted_with_their_loss() {
        let log = ReceiverReports::default();
        let r = ReceptionReport {
            fraction_lost: 64,
            ..ReceptionReport::default()
        };
        log.note(&r, 1000);
        log.note(&r, 2000);
        let f = log.figures();
        assert_eq!(f.count, 2);
        assert_eq!(f.fraction_lost, 0.25);
        assert_eq!(f.rtt, None);
    }

    #[test]
    fn recognises_pli_and_fir_only() {
        let pli = PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 2,
        };
        let fir = FullIntraRequest::default();
        let rr = ReceiverReport::default();
        assert!(is_keyframe_request(&pli));
        assert!(is_keyframe_request(&fir));
        assert!(!is_keyframe_request(&rr));
    }
}
