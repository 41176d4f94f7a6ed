// Capture-to-display latency from the test pattern's block code
// (docs/blockcode.md): on every frame the browser presents
// (requestVideoFrameCallback), the code in the top-left corner is read back
// from the pixels and its capture time (ms since the UNIX epoch, stamped by
// the camera's clock) is subtracted from the frame's display time. Only
// meaningful when both clocks agree (same machine, or NTP). Frames without
// a readable code (a real camera) are skipped.
(function () {
  "use strict";
  const COLS = 12;
  const ROWS = 9;
  const MIN_CONTRAST = 60;
  const KEEP = 600;

  const L = {
    samples: [], // [display epoch ms, latency ms] of the newest frames
    presented: 0,
    decoded: 0,
    firstFrameMs: null, // offer sent -> first presented frame
    offerAt: null,
  };

  function blockSize(w, h) {
    return Math.min(32, Math.max(8, Math.floor(Math.floor(Math.min(w, h) / 30) / 8) * 8));
  }

  // CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), as the agent draws it.
  function crc16(bytes) {
    let crc = 0xffff;
    for (const b of bytes) {
      crc ^= b << 8;
      for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
  }

  // Mean luma of the central half of block (row, col) in RGBA `px` (`w` wide).
  function cellMean(px, w, b, row, col) {
    const q = Math.floor(b / 4);
    const n = b - 2 * q;
    let sum = 0;
    for (let y = row * b + q; y < row * b + q + n; y++) {
      for (let x = col * b + q; x < col * b + q + n; x++) {
        const i = (y * w + x) * 4;
        sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      }
    }
    return sum / (n * n);
  }

  // {seq, tsMs} from the code area's pixels, or null.
  function decode(px, w, b) {
    const sync = [];
    for (let c = 0; c < COLS; c++) sync.push(cellMean(px, w, b, 0, c));
    const whites = sync.filter((_, i) => i % 2 === 0);
    const blacks = sync.filter((_, i) => i % 2 === 1);
    const whiteMin = Math.min(...whites);
    const blackMax = Math.max(...blacks);
    if (whiteMin < blackMax + MIN_CONTRAST) return null;
    const threshold = (whiteMin + blackMax) / 2;
    const payload = new Uint8Array(12);
    for (let bit = 0; bit < COLS * (ROWS - 1); bit++) {
      if (cellMean(px, w, b, 1 + Math.floor(bit / COLS), bit % COLS) > threshold) {
        payload[bit >> 3] |= 0x80 >> (bit & 7);
      }
    }
    if (crc16(payload.subarray(0, 10)) !== ((payload[10] << 8) | payload[11])) return null;
    const seq = ((payload[0] << 24) >>> 0) + (payload[1] << 16) + (payload[2] << 8) + payload[3];
    let tsMs = 0;
    for (let i = 4; i < 10; i++) tsMs = tsMs * 256 + payload[i];
    return { seq, tsMs };
  }

  function quantile(sorted, q) {
    return sorted.length ? sorted[Math.round((sorted.length - 1) * q)] : null;
  }

  function attach(video) {
    if (!video.requestVideoFrameCallback) return; // not in this browser
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = (now, meta) => {
      L.presented += 1;
      const displayAt = performance.timeOrigin + (meta.expectedDisplayTime || now);
      if (L.firstFrameMs === null && L.offerAt !== null) L.firstFrameMs = displayAt - L.offerAt;
      const w = meta.width || video.videoWidth;
      const h = meta.height || video.videoHeight;
      const b = blockSize(w, h);
      if (w >= COLS * b && h >= ROWS * b) {
        canvas.width = COLS * b;
        canvas.height = ROWS * b;
        ctx.drawImage(video, 0, 0, COLS * b, ROWS * b, 0, 0, COLS * b, ROWS * b);
        const code = decode(ctx.getImageData(0, 0, COLS * b, ROWS * b).data, COLS * b, b);
        if (code) {
          L.decoded += 1;
          L.samples.push([displayAt, displayAt - code.tsMs]);
          if (L.samples.length > KEEP) L.samples.shift();
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  window.rtcamLatency = {
    attach,
    // A new session: the next presented frame is its first.
    offerSent() {
      L.offerAt = performance.timeOrigin + performance.now();
      L.firstFrameMs = null;
    },
    // p50/p95/max of the frames shown in the last `ms` (all kept: undefined).
    summary(ms) {
      const since = performance.timeOrigin + performance.now() - (ms || Infinity);
      const v = L.samples.filter(([t]) => t >= since).map(([, d]) => d).sort((a, c) => a - c);
      return {
        count: v.length,
        p50: quantile(v, 0.5),
        p95: quantile(v, 0.95),
        max: v.length ? v[v.length - 1] : null,
        presented: L.presented,
        decoded: L.decoded,
        firstFrameMs: L.firstFrameMs,
      };
    },
    // Display times (epoch ms) of the frames kept, oldest first.
    times() {
      return L.samples.map(([t]) => t);
    },
    clear() {
      L.samples = [];
      L.presented = 0;
      L.decoded = 0;
    },
  };
})();
