// The try-it page: pick, drop or paste images; each goes to POST /classify and shows its top classes.
// Everything from the server or the user (labels, file names, messages) is inserted as text, never HTML.

import { MetricsPanel } from "./metrics.js";
import { UploadError, classify, fitToBudget, formatBytes, uploadBudget } from "./upload.js";

const CONCURRENT_UPLOADS = 3;
const $ = (id) => document.getElementById(id);

const state = {
  info: null, // /ui/info.json: model, version, backend, device, dtype, limits
  queue: [], // functions that start one upload
  running: 0,
  urls: new Set(), // object URLs of thumbnails, revoked on clear
};

function text(el, value) {
  el.textContent = value;
  return el;
}

async function loadInfo() {
  try {
    const response = await fetch("ui/info.json", { cache: "no-store", credentials: "same-origin" });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(body?.error ?? `HTTP ${response.status}`);
    state.info = body;
    showInfo(body);
    $("info-error").hidden = true;
    return body;
  } catch (error) {
    text($("info-error"), `The server is not ready yet (${error.message}); trying again…`).hidden = false;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    return loadInfo();
  }
}

function showInfo(info) {
  text($("info-model"), info.model);
  text($("info-version"), info.model_version);
  text($("info-backend"), info.backend);
  text($("info-device"), info.device);
  text($("info-dtype"), info.dtype);
  text($("limit"), formatBytes(info.max_request_bytes));
  const topK = $("top-k");
  topK.max = String(info.max_top_k);
  if (!topK.dataset.touched) topK.value = String(info.default_top_k);
}

function topK() {
  const raw = $("top-k").value.trim();
  return raw === "" ? String(state.info?.default_top_k ?? 5) : raw;
}

// ---------------------------------------------------------------------------------------- cards

function newCard(file, name) {
  const card = $("card-template").content.firstElementChild.cloneNode(true);
  text(card.querySelector(".name"), name);
  const img = card.querySelector(".thumb");
  const url = URL.createObjectURL(file);
  state.urls.add(url);
  img.alt = `thumbnail of ${name}`;
  img.addEventListener("error", () => card.classList.add("no-thumb"), { once: true });
  img.src = url;
  return card;
}

function setStatus(card, stateName, message) {
  card.dataset.state = stateName;
  text(card.querySelector(".status"), message);
}

function showResult(card, result, resized) {
  const rows = card.querySelector(".top");
  rows.replaceChildren();
  for (const p of result.predictions) {
    const row = $("row-template").content.firstElementChild.cloneNode(true);
    row.dataset.label = p.label;
    row.dataset.score = String(p.score);
    text(row.querySelector(".label"), p.label);
    text(row.querySelector(".pct"), `${(p.score * 100).toFixed(1)} %`);
    row.querySelector(".fill").style.width = `${Math.max(0, Math.min(1, p.score)) * 100}%`; // CSSOM, not markup
    rows.append(row);
  }
  const info = state.info ?? {};
  const parts = [];
  if (result.serverMs !== null) parts.push(`server ${result.serverMs.toFixed(1)} ms`);
  parts.push(`round trip ${result.roundTripMs.toFixed(1)} ms (browser)`);
  parts.push(`${result.model} ${result.modelVersion}`);
  parts.push(`${info.backend ?? "?"} on ${info.device ?? "?"}, ${info.dtype ?? "?"}`);
  text(card.querySelector(".meta"), parts.join(" · "));
  card.dataset.serverMs = result.serverMs === null ? "" : String(result.serverMs);
  const note = resized
    ? `Scaled down in the browser from ${resized.from.width}×${resized.from.height} (${formatBytes(resized.from.bytes)}) ` +
      `to ${resized.to.width}×${resized.to.height} (${formatBytes(resized.to.bytes)}) to fit the request limit.`
    : "";
  card.dataset.resized = resized ? "true" : "false";
  setStatus(card, "done", note);
}

function showError(card, error, retry) {
  const box = card.querySelector(".error");
  const status = error instanceof UploadError && error.status ? ` (HTTP ${error.status})` : "";
  text(box, `${error.message}${status}`).hidden = false;
  card.dataset.status = error instanceof UploadError && error.status ? String(error.status) : "";
  setStatus(card, "error", "Not classified.");
  const button = card.querySelector(".retry");
  if (!(error instanceof UploadError) || !error.retryable) return;
  button.hidden = false;
  button.disabled = Boolean(error.retryAfterSeconds);
  if (error.retryAfterSeconds) setTimeout(() => (button.disabled = false), error.retryAfterSeconds * 1000);
  button.onclick = () => {
    button.hidden = true;
    retry();
  };
}

// ---------------------------------------------------------------------------------------- uploads

async function upload(card, file, name) {
  card.querySelector(".error").hidden = true; // a retry starts clean
  card.dataset.status = "";
  setStatus(card, "pending", "Sending…");
  try {
    const info = state.info ?? (await loadInfo());
    const { blob, resized } = await fitToBudget(file, uploadBudget(info.max_request_bytes, name), info.max_request_bytes);
    const result = await classify(blob, name, topK());
    showResult(card, result, resized);
  } catch (error) {
    showError(card, error instanceof Error ? error : new Error(String(error)), () => enqueue(() => upload(card, file, name)));
  }
}

function enqueue(start) {
  state.queue.push(start);
  pump();
}

function pump() {
  while (state.running < CONCURRENT_UPLOADS && state.queue.length) {
    const start = state.queue.shift();
    state.running++;
    start().finally(() => {
      state.running--;
      if (!state.running && !state.queue.length) metrics.refresh();
      pump();
    });
  }
}

function addFiles(files) {
  const batch = document.createDocumentFragment(); // newest batch first, each batch in the order given
  for (const file of files) {
    const name = file.name || `pasted image.${(file.type.split("/")[1] || "bin").replace(/[^a-z0-9]/gi, "")}`;
    const card = newCard(file, name);
    batch.append(card);
    enqueue(() => upload(card, file, name));
  }
  $("cards").prepend(batch);
  $("empty").hidden = $("cards").children.length > 0;
}

function clearResults() {
  $("cards").replaceChildren();
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls.clear();
  $("empty").hidden = false;
}

// ---------------------------------------------------------------------------------------- wiring

function wirePicker() {
  const input = $("files");
  $("pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = ""; // the same file can be chosen again
  });
  $("clear").addEventListener("click", clearResults);
  $("top-k").addEventListener("input", (e) => (e.target.dataset.touched = "true"));
}

function wireDropAndPaste() {
  const zone = $("dropzone");
  let depth = 0;
  // The whole window takes drops: a file dropped beside the zone must not navigate away from the page.
  window.addEventListener("dragenter", (e) => {
    if (!e.dataTransfer?.types.includes("Files")) return;
    depth++;
    zone.classList.add("dragging");
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove("dragging");
  });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    if (e.dataTransfer?.files.length) addFiles([...e.dataTransfer.files]);
  });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (!files.length) return;
    e.preventDefault();
    addFiles(files);
  });
}

const metrics = new MetricsPanel($("metrics"), Number($("refresh-s").textContent));
wirePicker();
wireDropAndPaste();
loadInfo().then((info) => {
  document.body.dataset.ready = "true";
  metrics.start(info.model);
});
