//! The test process's memory, measured the way a leak shows: glibc's
//! thresholds fixed as the systemd unit fixes them, free pages handed back
//! before RSS is read.

/// Fixes glibc's mmap and trim thresholds. By default both rise after the
/// first large block is freed, and from then on the thread arenas keep what
/// a busy moment freed: RSS at rest wandered between 60 and 130 MB from one
/// soak round to the next while the memory in use stayed near 30 MB. Fixed,
/// RSS at rest follows the memory in use, and a leak shows. The systemd unit
/// sets the same values for the daemon (`GLIBC_TUNABLES`).
pub fn pin_allocator_thresholds() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Resident memory in kB once the allocator has handed its free pages back
/// to the kernel.
pub fn rss_at_rest_kb() -> u64 {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_kb()
}

/// Bytes the allocator has handed out and not got back, in kB (glibc only).
pub fn heap_in_use_kb() -> Option<usize> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) / 1024)
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

/// Resident memory in kB, as the kernel counts it now.
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status is readable on Linux")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
