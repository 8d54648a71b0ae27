// Sending one image to POST /classify: scaled down in the browser first when it is over the limit.

// Multipart framing around the file (boundary, Content-Disposition, Content-Type), generously counted.
export const ENVELOPE_BYTES = 512;
const MAX_ATTEMPTS = 8;

/** An error to show beside an image: the server's own message when there is one. */
export class UploadError extends Error {
  constructor(message, { status = null, retryAfterSeconds = null, retryable = false } = {}) {
    super(message);
    this.status = status;
    this.retryAfterSeconds = retryAfterSeconds;
    this.retryable = retryable;
  }
}

export function formatBytes(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The largest file that fits in one request of `maxRequestBytes` with the multipart framing. */
export function uploadBudget(maxRequestBytes, filename) {
  return maxRequestBytes - ENVELOPE_BYTES - 3 * new TextEncoder().encode(filename).length;
}

async function encodeJpeg(bitmap, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; // transparent pixels become white, not black, in a JPEG
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, width, height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
  if (!blob) throw new Error("the browser could not encode a JPEG");
  return blob;
}

/**
 * `file` as it will be sent: unchanged when it fits `budget` bytes, else decoded and re-encoded as a
 * JPEG, scaled down (EXIF orientation applied) until it fits. Returns {blob, resized} where resized
 * describes the change or is null.
 */
export async function fitToBudget(file, budget, maxRequestBytes) {
  if (file.size <= budget) return { blob: file, resized: null };
  const limit = `this server's limit of ${formatBytes(maxRequestBytes)} per request (max_request_bytes)`;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    throw new UploadError(
      `${formatBytes(file.size)} is over ${limit}, and the browser cannot decode this file to scale it down`,
    );
  }
  try {
    let scale = Math.min(1, Math.sqrt(budget / file.size));
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      const width = Math.max(1, Math.round(bitmap.width * scale));
      const height = Math.max(1, Math.round(bitmap.height * scale));
      const blob = await encodeJpeg(bitmap, width, height);
      if (blob.size <= budget) {
        const from = { width: bitmap.width, height: bitmap.height, bytes: file.size };
        return { blob, resized: { from, to: { width, height, bytes: blob.size } } };
      }
      scale *= Math.min(0.9, 0.95 * Math.sqrt(budget / blob.size));
    }
  } finally {
    bitmap.close();
  }
  throw new UploadError(`${formatBytes(file.size)} is over ${limit}, even scaled down in the browser`);
}

/** Milliseconds of the `total` entry of a Server-Timing header, or null. */
export function serverTimingMs(header) {
  if (!header) return null;
  for (const entry of header.split(",")) {
    const [name, ...params] = entry.trim().split(";");
    if (name.trim() !== "total") continue;
    for (const p of params) {
      const [key, value] = p.trim().split("=");
      if (key === "dur" && value !== undefined && Number.isFinite(Number(value))) return Number(value);
    }
  }
  return null;
}

function errorMessage(response, text, body) {
  if (body && typeof body.error === "string") return body.error;
  const snippet = text.replace(/\s+/g, " ").trim().slice(0, 200);
  return `HTTP ${response.status} ${response.statusText}${snippet ? `: ${snippet}` : ""}`;
}

/**
 * POST one image to /classify (multipart field `image`, the call users make) and return
 * {model, modelVersion, predictions, serverMs, roundTripMs}; throws UploadError with the server's message.
 */
export async function classify(blob, filename, topK) {
  const form = new FormData();
  form.append("image", blob, filename);
  const started = performance.now();
  let response;
  let text;
  try {
    response = await fetch(`classify?top_k=${encodeURIComponent(topK)}`, {
      method: "POST",
      body: form,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    text = await response.text();
  } catch (error) {
    throw new UploadError(`could not reach the server: ${error.message}`, { retryable: true });
  }
  const roundTripMs = performance.now() - started;
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (!response.ok) {
    const retryAfter = Number(response.headers.get("retry-after"));
    throw new UploadError(errorMessage(response, text, body), {
      status: response.status,
      retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
      retryable: response.status === 503 || response.status === 504 || response.status >= 502,
    });
  }
  if (!body || !Array.isArray(body.predictions) || !Array.isArray(body.predictions[0])) {
    throw new UploadError(`unexpected answer from /classify: ${text.slice(0, 200)}`);
  }
  return {
    model: body.model,
    modelVersion: body.model_version,
    predictions: body.predictions[0],
    serverMs: serverTimingMs(response.headers.get("server-timing")),
    roundTripMs,
  };
}
