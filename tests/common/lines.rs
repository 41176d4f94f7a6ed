//! The output of a process started by a test (the agent binary, Mosquitto),
//! collected line by line so a test can wait for a line to appear: the
//! waits are bounded and end as soon as the line is there.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines read so far from one or more pipes of a process.
#[derive(Clone, Default)]
pub struct LineLog(Arc<Shared>);

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    /// Pipes still open.
    open: usize,
}

/// `text` without ANSI colour sequences (`ESC [ … letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl LineLog {
    /// An empty log.
    pub fn new() -> LineLog {
        LineLog::default()
    }

    /// Collects `pipe`'s lines (colours removed) on a thread of its own,
    /// until it closes. `echo`: also print each line to stderr with this tag.
    pub fn read_from(&self, pipe: impl Read + Send + 'static, echo: Option<&'static str>) {
        self.lock().open += 1;
        let log = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                        if let Some(tag) = echo {
                            eprintln!("[{tag}] {line}");
                        }
                        log.lock().lines.push(line);
                        log.0.changed.notify_all();
                    }
                }
            }
            log.lock().open -= 1;
            log.0.changed.notify_all();
        });
    }

    /// Like [`Self::read_from`], but the reading can be paused (see
    /// [`LogGate`]): while paused, nothing more is taken out of the pipe, so
    /// the process writing into it finds it full.
    pub fn read_from_gated(
        &self,
        pipe: impl Read + std::os::fd::AsRawFd + Send + 'static,
        echo: Option<&'static str>,
    ) -> LogGate {
        let gate = LogGate {
            paused: Arc::new((Mutex::new(false), Condvar::new())),
            fd: pipe.as_raw_fd(),
        };
        self.lock().open += 1;
        let log = self.clone();
        let paused = gate.paused.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                {
                    let (lock, cv) = &*paused;
                    let mut p = lock.lock().unwrap_or_else(PoisonError::into_inner);
                    while *p {
                        p = cv.wait(p).unwrap_or_else(PoisonError::into_inner);
                    }
                }
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                        if let Some(tag) = echo {
                            eprintln!("[{tag}] {line}");
                        }
                        log.lock().lines.push(line);
                        log.0.changed.notify_all();
                    }
                }
            }
            log.lock().open -= 1;
            log.0.changed.notify_all();
        });
        gate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.lock().lines.join("\n")
    }

    /// How many lines were read so far (a mark for [`Self::since`]).
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// The lines read after the mark `from`.
    pub fn since(&self, from: usize) -> Vec<String> {
        let state = self.lock();
        state.lines.get(from..).unwrap_or_default().to_vec()
    }

    /// How many lines so far satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lock().lines.iter().filter(|l| pred(l)).count()
    }

    /// The last `n` lines, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let state = self.lock();
        let from = state.lines.len().saturating_sub(n);
        state.lines[from..].join("\n")
    }

    /// Blocks until `check` finds what it wants in the lines (or the pipes
    /// close); panics naming `what` after `timeout`.
    fn wait_state<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[String], bool) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let closed = state.open == 0;
            if let Some(found) = check(&state.lines, closed) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if closed || left.is_zero() {
                let why = if closed {
                    "the process closed its output first"
                } else {
                    "timed out"
                };
                let from = state.lines.len().saturating_sub(80);
                panic!(
                    "waiting for {what}: {why} after {timeout:?}; last lines:\n{}",
                    state.lines[from..].join("\n")
                );
            }
            state = self
                .0
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Blocks until some line satisfies `pred` and returns it.
    pub fn wait_line_blocking(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_state(what, timeout, |lines, _| {
            lines.iter().find(|l| pred(l)).cloned()
        })
    }

    /// Blocks until a line after the mark `from` (see [`Self::len`])
    /// satisfies `pred`, and returns it.
    pub fn wait_line_after_blocking(
        &self,
        what: &str,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_state(what, timeout, |lines, _| {
            lines.get(from..)?.iter().find(|l| pred(l)).cloned()
        })
    }

    /// Blocks until `n` lines satisfy `pred`.
    pub fn wait_count_blocking(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        self.wait_state(what, timeout, |lines, _| {
            (lines.iter().filter(|l| pred(l)).count() >= n).then_some(())
        })
    }

    /// Blocks until every pipe has closed (the process has ended).
    pub fn wait_closed_blocking(&self, what: &str, timeout: Duration) {
        self.wait_state(what, timeout, |_, closed| closed.then_some(()))
    }

    /// [`Self::wait_line_blocking`] off the async runtime's threads.
    pub async fn wait_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool + Send + 'static,
    ) -> String {
        let (log, what) = (self.clone(), what.to_string());
        unblock(move || log.wait_line_blocking(&what, timeout, pred)).await
    }

    /// [`Self::wait_line_after_blocking`] off the async runtime's threads.
    pub async fn wait_line_after(
        &self,
        what: &str,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool + Send + 'static,
    ) -> String {
        let (log, what) = (self.clone(), what.to_string());
        unblock(move || log.wait_line_after_blocking(&what, from, timeout, pred)).await
    }

    /// Waits until `pred` holds for the whole log so far.
    pub async fn wait_lines(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool + Send + 'static,
    ) {
        let (log, what) = (self.clone(), what.to_string());
        unblock(move || log.wait_state(&what, timeout, |lines, _| pred(lines).then_some(()))).await
    }

    /// [`Self::wait_count_blocking`] off the async runtime's threads.
    pub async fn wait_count(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool + Send + 'static,
    ) {
        let (log, what) = (self.clone(), what.to_string());
        unblock(move || log.wait_count_blocking(&what, n, timeout, pred)).await
    }

    /// [`Self::wait_closed_blocking`] off the async runtime's threads.
    pub async fn wait_closed(&self, what: &str, timeout: Duration) {
        let (log, what) = (self.clone(), what.to_string());
        unblock(move || log.wait_closed_blocking(&what, timeout)).await
    }
}

/// Runs a blocking wait on tokio's blocking pool; its panic is the caller's.
async fn unblock<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Pauses and resumes the reading of one pipe ([`LineLog::read_from_gated`]),
/// and tells how full the pipe is.
#[derive(Clone)]
pub struct LogGate {
    paused: Arc<(Mutex<bool>, Condvar)>,
    /// The pipe's read end (open as long as its reader thread runs).
    fd: std::os::fd::RawFd,
}

impl LogGate {
    /// Stops taking lines out of the pipe (after the line being read).
    pub fn pause(&self) {
        *self.paused.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// Reads on.
    pub fn resume(&self) {
        *self.paused.0.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.paused.1.notify_all();
    }

    /// Bytes waiting in the pipe (FIONREAD).
    pub fn queued(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; the fd is the pipe's open read end.
        let r = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut n) };
        assert_eq!(r, 0, "FIONREAD on the log pipe");
        usize::try_from(n).unwrap_or(0)
    }

    /// The pipe's capacity (F_GETPIPE_SZ).
    pub fn capacity(&self) -> usize {
        // SAFETY: F_GETPIPE_SZ takes no argument; the fd is open.
        let r = unsafe { libc::fcntl(self.fd, libc::F_GETPIPE_SZ) };
        assert!(r > 0, "F_GETPIPE_SZ on the log pipe");
        r as usize
    }

    /// Whether a writer would block: less than one atomic write
    /// (PIPE_BUF, 4096 bytes) of room is left.
    pub fn is_full(&self) -> bool {
        self.queued() + 4096 > self.capacity()
    }
}
