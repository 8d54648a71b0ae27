// The metrics panel: reads the Prometheus text format from /metrics and shows the server's own figures.

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?/gy;

function unescapeLabel(value) {
  return value.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
}

function parseNumber(text) {
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text); // NaN stays NaN
}

/** Samples of a Prometheus text exposition: [{name, labels, value}], comments skipped. */
export function parsePrometheus(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      LABEL.lastIndex = 0;
      let l;
      while (LABEL.lastIndex < m[2].length && (l = LABEL.exec(m[2])) !== null) {
        labels[l[1]] = unescapeLabel(l[2]);
      }
    }
    samples.push({ name: m[1], labels, value: parseNumber(m[3]) });
  }
  return samples;
}

function matches(sample, name, labels) {
  return sample.name === name && Object.entries(labels).every(([k, v]) => sample.labels[k] === v);
}

/** Sum of the samples named `name` whose labels include `labels` (null when there is none). */
export function sum(samples, name, labels = {}) {
  let total = null;
  for (const s of samples) if (matches(s, name, labels)) total = (total ?? 0) + s.value;
  return total;
}

/** Cumulative buckets of a histogram, summed over its other labels: [[le, count], ...] by le. */
export function buckets(samples, histogram, labels = {}) {
  const byLe = new Map();
  for (const s of samples) {
    if (!matches(s, `${histogram}_bucket`, labels)) continue;
    const le = parseNumber(s.labels.le);
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

/** The buckets of `now` less those of `before` (counts over the interval between two readings). */
export function bucketDelta(now, before) {
  const old = new Map(before);
  return now.map(([le, count]) => [le, count - (old.get(le) ?? 0)]);
}

/**
 * The q-quantile of cumulative buckets, as Prometheus' histogram_quantile computes it: linear
 * interpolation inside the bucket that holds the rank; the upper bound of the highest finite bucket
 * when the rank falls in +Inf. null when there are no observations.
 */
export function histogramQuantile(q, cumulative) {
  if (cumulative.length < 2 || cumulative[cumulative.length - 1][0] !== Infinity) return null;
  const total = cumulative[cumulative.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let i = cumulative.findIndex(([, count]) => count >= rank);
  if (i === cumulative.length - 1) return cumulative[cumulative.length - 2][0];
  const [upper, count] = cumulative[i];
  const [lower, below] = i === 0 ? [0, 0] : cumulative[i - 1];
  if (i === 0 && upper <= 0) return upper;
  return lower + ((upper - lower) * (rank - below)) / (count - below);
}

function formatSeconds(seconds) {
  if (seconds === null) return "— (no requests)";
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}

function formatCount(value) {
  return value === null ? "0" : Math.round(value).toLocaleString("en");
}

/** The panel's figures for `model` from one reading, and the histogram buckets for later deltas. */
export function figures(samples, model) {
  const m = { model };
  const requests = sum(samples, "classifier_requests_total", m) ?? 0;
  let errors = 0;
  for (const s of samples) {
    if (matches(s, "classifier_requests_total", m) && Number(s.labels.code) >= 400) errors += s.value;
  }
  const cumulative = buckets(samples, "classifier_request_duration_seconds", m);
  return {
    requests,
    errors,
    images: sum(samples, "classifier_images_total", m) ?? 0,
    queueDepth: sum(samples, "classifier_queue_depth", m) ?? 0,
    queueCapacity: sum(samples, "classifier_queue_capacity", m),
    inflight: sum(samples, "classifier_inflight_requests", m) ?? 0,
    p95: histogramQuantile(0.95, cumulative),
    cumulative,
  };
}

const WINDOW_MS = 60_000;

/** Reads /metrics every `refreshSeconds` (and on demand) and fills the panel's fields. */
export class MetricsPanel {
  constructor(root, refreshSeconds = 5) {
    this.root = root;
    this.refreshMs = refreshSeconds * 1000;
    this.model = null;
    this.history = []; // [{at, cumulative}] of the last minute, oldest first
    this.timer = null;
    this.running = null;
  }

  field(id) {
    return this.root.querySelector(`#${id}`);
  }

  start(model) {
    this.model = model;
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.refresh();
    });
    this.refresh();
  }

  /** Read now (coalesced with a reading already under way), then again after the refresh interval. */
  refresh() {
    if (this.model === null) return Promise.resolve(); // not started: the model's name is not known yet
    if (this.running) return this.running;
    clearTimeout(this.timer);
    this.running = this.read().finally(() => {
      this.running = null;
      if (!document.hidden) this.timer = setTimeout(() => this.refresh(), this.refreshMs);
    });
    return this.running;
  }

  async read() {
    let text;
    try {
      const response = await fetch("metrics", { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      text = await response.text();
    } catch (error) {
      this.field("m-updated").textContent = `could not read /metrics: ${error.message}`;
      this.root.dataset.state = "error";
      return;
    }
    this.show(figures(parsePrometheus(text), this.model), Date.now());
  }

  show(f, now) {
    this.history = this.history.filter((h) => now - h.at <= WINDOW_MS);
    let oldest = this.history[0];
    const delta = oldest ? bucketDelta(f.cumulative, oldest.cumulative) : [];
    if (delta.some(([, count]) => count < 0)) {
      this.history = []; // the counters went back: the server restarted
      oldest = undefined;
    }
    this.history.push({ at: now, cumulative: f.cumulative });
    const recent = oldest ? histogramQuantile(0.95, delta) : null;
    this.field("m-requests").textContent = formatCount(f.requests);
    this.field("m-errors").textContent = formatCount(f.errors);
    this.field("m-images").textContent = formatCount(f.images);
    const capacity = f.queueCapacity === null ? "" : ` of ${formatCount(f.queueCapacity)}`;
    this.field("m-queue").textContent = `${formatCount(f.queueDepth)}${capacity} images`;
    this.field("m-inflight").textContent = formatCount(f.inflight);
    this.field("m-p95").textContent = formatSeconds(f.p95);
    this.field("m-p95-recent").textContent = oldest ? formatSeconds(recent) : "— (needs two readings)";
    const p95 = this.field("m-p95");
    p95.dataset.seconds = f.p95 === null ? "" : String(f.p95);
    this.field("m-updated").textContent = `updated ${new Date(now).toLocaleTimeString()}`;
    this.root.dataset.state = "ok";
    this.root.dataset.readings = String(Number(this.root.dataset.readings ?? 0) + 1);
  }
}
