// The playground: plain JavaScript over hearth's public OpenAI API. The key the user
// types is kept in localStorage and sent as a bearer token; nothing else leaves the page.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "hearth.apiKey";

// ---- API -----------------------------------------------------------------------------

function headers(json) {
  const h = {};
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function failure(response) {
  let message = response.status + " " + response.statusText;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON */ }
  return new Error(message);
}

async function postJson(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// Streams an OpenAI SSE answer, calling onData with each parsed chunk.
async function postStream(path, body, onData, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        onData(chunk);
      }
    }
  }
}

function showError(e) {
  const status = $("status");
  if (!e) { status.hidden = true; status.textContent = ""; return; }
  status.textContent = e.message || String(e);
  status.hidden = false;
}

// Runs an action with its button disabled and errors shown.
async function busy(button, action) {
  showError(null);
  button.disabled = true;
  try { await action(); } catch (e) { if (e.name !== "AbortError") showError(e); } finally { button.disabled = false; }
}

// ---- Models --------------------------------------------------------------------------

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers(false) });
  if (!response.ok) throw await failure(response);
  const ids = (await response.json()).data.map((m) => m.id).sort();
  for (const select of document.querySelectorAll("select[data-kind]")) {
    const previous = select.value;
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
    const wanted = ids.includes(previous) ? previous : select.dataset.default;
    if (ids.includes(wanted)) select.value = wanted;
  }
}

// ---- Tabs (arrow keys move between them, as the WAI-ARIA tabs pattern does) -----------

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", on);
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      select(next);
      next.focus();
      e.preventDefault();
    });
  });
}

// ---- Chat ----------------------------------------------------------------------------

const conversation = [];
let chatAbort = null;

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("span");
  body.className = "content";
  body.textContent = text;
  item.append(label, body);
  $("chat-log").append(item);
  item.scrollIntoView({ block: "end" });
  return body;
}

function number(id) {
  const v = parseFloat($(id).value);
  return Number.isFinite(v) ? v : undefined;
}

async function sendChat() {
  const text = $("chat-input").value.trim();
  if (!text) return;
  $("chat-input").value = "";
  conversation.push({ role: "user", content: text });
  addMessage("user", text);
  const target = addMessage("assistant", "");
  target.parentElement.setAttribute("aria-busy", "true");
  const system = $("chat-system").value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(conversation);
  chatAbort = new AbortController();
  $("chat-stop").disabled = false;
  let answer = "";
  try {
    await postStream("/v1/chat/completions", {
      model: $("chat-model").value, messages, stream: true,
      temperature: number("chat-temperature"), top_p: number("chat-top-p"), max_tokens: number("chat-max-tokens"),
    }, (chunk) => {
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        answer += delta.content;
        target.textContent = answer;
      }
    }, chatAbort.signal);
  } finally {
    target.parentElement.setAttribute("aria-busy", "false");
    conversation.push({ role: "assistant", content: answer });
    $("chat-stop").disabled = true;
    chatAbort = null;
  }
}

// ---- Completions (suffix: fill in the middle) -------------------------------------------

async function complete() {
  const prompt = $("completion-prompt").value;
  const suffix = $("completion-suffix").value;
  const out = $("completion-output");
  const inserted = document.createElement("span");
  inserted.className = "inserted";
  out.replaceChildren(document.createTextNode(prompt), inserted, document.createTextNode(suffix));
  await postStream("/v1/completions", {
    model: $("completion-model").value, prompt, suffix: suffix || undefined, stream: true,
    max_tokens: number("completion-max-tokens"), temperature: number("completion-temperature"),
  }, (chunk) => { inserted.textContent += chunk.choices[0].text; });
}

// ---- Embeddings ----------------------------------------------------------------------

async function compare() {
  const body = await postJson("/v1/embeddings", { model: $("embedding-model").value, input: [$("embedding-a").value, $("embedding-b").value] });
  const [a, b] = body.data.map((d) => d.embedding);
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  const cosine = dot / Math.sqrt(na * nb);
  $("embedding-output").textContent = "Cosine similarity: " + cosine.toFixed(4) + " (" + a.length + " dimensions, " + body.usage.prompt_tokens + " tokens)";
}

// ---- Moderation ----------------------------------------------------------------------

async function moderate() {
  const body = await postJson("/v1/moderations", { model: $("moderation-model").value, input: $("moderation-input").value });
  const result = body.results[0];
  $("moderation-flagged").textContent = result.flagged ? "Flagged" : "Not flagged";
  const rows = Object.entries(result.category_scores).sort((x, y) => y[1] - x[1]).map(([name, score]) => {
    const row = document.createElement("tr");
    if (result.categories[name]) row.className = "flagged";
    const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; };
    const scoreCell = cell(score.toFixed(4), "score");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(score * 8) + "rem";
    scoreCell.append(bar);
    row.append(cell(name), scoreCell, cell(result.categories[name] ? "yes" : "no"));
    return row;
  });
  const table = $("moderation-scores");
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = false;
}

// ---- Audio (a file, or a recording from the microphone) --------------------------------

let recorded = null;
let recorder = null;

async function toggleRecording() {
  const button = $("audio-record");
  if (recorder) { recorder.stop(); return; }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const parts = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => parts.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    recorded = new Blob(parts, { type: recorder.mimeType || "audio/webm" });
    recorder = null;
    button.textContent = "Record from microphone";
    button.setAttribute("aria-pressed", "false");
    $("audio-recorded").textContent = "Recorded " + Math.round(recorded.size / 1024) + " KiB; it is sent instead of a file.";
  };
  recorder.start();
  button.textContent = "Stop recording";
  button.setAttribute("aria-pressed", "true");
  $("audio-recorded").textContent = "Recording…";
}

async function transcribe() {
  const file = $("audio-file").files[0];
  const form = new FormData();
  if (recorded) form.append("file", recorded, "recording." + (recorded.type.includes("ogg") ? "ogg" : "webm"));
  else if (file) form.append("file", file, file.name);
  else throw new Error("Choose an audio file or record one first.");
  form.append("model", $("audio-model").value);
  form.append("response_format", "json");
  $("audio-output").textContent = "…";
  const response = await fetch("/v1/audio/" + $("audio-task").value, { method: "POST", headers: headers(false), body: form });
  if (!response.ok) { $("audio-output").textContent = ""; throw await failure(response); }
  $("audio-output").textContent = (await response.json()).text;
}

// ---- Wiring --------------------------------------------------------------------------

function setup() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => {
    localStorage.setItem(KEY_STORE, key.value.trim());
    loadModels().then(() => showError(null), showError);
  });
  setupTabs();
  const form = (id, button, action) => $(id).addEventListener("submit", (e) => { e.preventDefault(); busy(button(), action); });
  form("chat-form", () => $("chat-send"), sendChat);
  form("completion-form", () => $("completion-form").querySelector('button[type="submit"]'), complete);
  form("embedding-form", () => $("embedding-form").querySelector('button[type="submit"]'), compare);
  form("moderation-form", () => $("moderation-form").querySelector('button[type="submit"]'), moderate);
  form("audio-form", () => $("audio-send"), transcribe);
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("chat-stop").addEventListener("click", () => chatAbort && chatAbort.abort());
  $("chat-clear").addEventListener("click", () => { conversation.length = 0; $("chat-log").replaceChildren(); });
  $("audio-file").addEventListener("change", () => { recorded = null; $("audio-recorded").textContent = ""; });
  $("audio-task").addEventListener("change", () => { $("audio-send").textContent = $("audio-task").value === "translations" ? "Translate" : "Transcribe"; });
  const record = $("audio-record");
  if (!(navigator.mediaDevices && window.MediaRecorder)) {
    record.disabled = true;
    record.title = "This browser (or an insecure origin) gives no microphone access.";
  }
  record.addEventListener("click", () => toggleRecording().catch(showError));
  loadModels().catch(showError);
}

document.addEventListener("DOMContentLoaded", setup);
