// The live viewer: WebRTC video from the server, prompts over the websocket (docs/protocol.md).
"use strict";

const video = document.getElementById("video");
const drag = document.getElementById("drag");
const statusEl = document.getElementById("status");
const messageEl = document.getElementById("message");
const objectsEl = document.getElementById("objects");
const pickerEl = document.getElementById("stream-picker");
const gridEl = document.getElementById("grid");
const gridButton = document.getElementById("grid-toggle");

const viewer = {
  ws: null,
  pc: null,           // the selected stream's peer connection (single view)
  tiles: new Map(),   // grid view: stream name -> {pc, video}
  pending: new Map(), // offer message id -> peer connection awaiting its answer
  streams: [],        // names, in the server's order
  stream: decodeURIComponent(location.hash.replace(/^#stream=/, "")) || null,
  grid: false,
  objects: [],        // ids the server tracks on the selected stream
  selected: 1,
  nextId: 1,
  labels: {},  // obj_id -> {label, origin, pending}
  serverOffsetMs: 0,  // server clock minus ours
  offsets: [],        // the last few (server_time_ms - ours) samples: the largest lost least in transit
  latencyMs: 0,       // server-side capture -> sent
  jitterMs: 0,        // browser jitter buffer
  shownRtp: null,     // RTP timestamp of the frame on screen (requestVideoFrameCallback)
  shownCaptureMs: null, // its capture time (server clock), from the video clock
  clock: null,        // {rtp, capture_ms} of a recent frame of this viewer's video (state's video_clock)
  screen: [],         // [presented at (ms, ours), capture -> screen ms] of the last 2 s of frames
  screenLatency: null, // {p50, p90, frames} of those: capture -> screen, measured here
  videoFps: 0,        // frames presented per second, measured here
  presented: 0,       // frames presented since the page loaded
  retryMs: 500,
  seq: 0,
  acks: [],           // the last MAX_ACKS acks/errors received (tests read them)
  prompts: [],        // the last MAX_ACKS prompts sent (tests read them)
};
const MAX_ACKS = 50;
window.viewer = viewer;

// Same palette as streamer/overlay.py color_for: golden-ratio hue steps.
function colorFor(id) {
  const h = (0.12 + id * 0.618033988749895) % 1.0;
  const i = Math.floor(h * 6), f = h * 6 - i, v = 1, s = 0.85;
  const p = v * (1 - s), q = v * (1 - f * s), t = v * (1 - (1 - f) * s);
  const [r, g, b] = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return `rgb(${Math.floor(r * 255)},${Math.floor(g * 255)},${Math.floor(b * 255)})`;
}

function send(msg) {
  if (!viewer.ws || viewer.ws.readyState !== WebSocket.OPEN) return null;
  msg.id = `c${++viewer.seq}`;
  if (msg.stream === undefined && viewer.stream) msg.stream = viewer.stream;
  viewer.ws.send(JSON.stringify(msg));
  if (msg.type === "add_points" || msg.type === "add_box") {
    viewer.prompts.push(msg);
    if (viewer.prompts.length > MAX_ACKS) viewer.prompts.shift();
  }
  return msg.id;
}

function setStatus(text) {
  statusEl.textContent = text;
  statusEl.classList.toggle("live", !text);
}

const OBJECT_STYLES = ["overlay", "outline", "label", "blur", "plain"];  // a background style is the stream's
let rendered = "";
function renderObjects() {
  const ids = [...new Set([...viewer.objects, viewer.selected])].sort((a, b) => a - b);
  // state arrives twice a second: rebuild only on change, so a click never lands on a replaced node
  const signature = JSON.stringify([ids, viewer.objects, viewer.selected, viewer.labels, viewer.styles]);
  if (signature === rendered) return;
  rendered = signature;
  objectsEl.replaceChildren(...ids.map((id) => {
    const li = document.createElement("li");
    li.dataset.objId = id;
    li.classList.toggle("selected", id === viewer.selected);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorFor(id);
    const name = document.createElement("span");
    name.className = "name";
    const info = viewer.labels[id] || {};
    const what = info.label ? ` ${info.label}` : "";
    const how = info.origin && info.origin !== "click" && info.origin !== "box" ? ` · ${info.origin}` : "";
    name.textContent = `object ${id}${what}${how}` + (info.pending ? " (pending)" : "")
      + (viewer.objects.includes(id) ? "" : " (click to add)");
    li.append(swatch, name);
    if (viewer.objects.includes(id)) {
      const remove = document.createElement("button");
      remove.textContent = "remove";
      remove.className = "remove";
      remove.onclick = (e) => { e.stopPropagation(); send({ type: "remove_object", obj_id: id }); };
      const look = document.createElement("select");
      look.className = "object-style";
      look.title = "how this object looks (default: the stream's style, or its label's)";
      look.append(new Option("style: default", ""), ...OBJECT_STYLES.map((s) => new Option(s, s)));
      look.value = ((viewer.styles || {}).objects || {})[id] || "";
      look.onclick = (e) => e.stopPropagation();
      look.onchange = () => send({ type: "style", stream: viewer.stream, obj_id: id, style: look.value || null });
      li.append(look, remove);
    }
    li.onclick = () => { viewer.selected = id; renderObjects(); };
    return li;
  }));
  document.getElementById("count").textContent = viewer.objects.length;
}

function renderPicker() {
  const names = viewer.streams;
  if (JSON.stringify([...pickerEl.options].map((o) => o.value)) !== JSON.stringify(names)) {
    pickerEl.replaceChildren(...names.map((name) => new Option(name, name)));
  }
  pickerEl.value = viewer.stream;
  pickerEl.hidden = names.length < 2;
  gridButton.hidden = names.length < 2;
}

// Milliseconds since the epoch on this machine's clock, in the timebase of video frame callbacks.
function localNow() {
  return performance.timeOrigin + performance.now();
}

function applyState(msg) {
  // The message left the server some transit time ago: the sample with the least of it is the best.
  viewer.offsets.push(msg.server_time_ms - localNow());
  if (viewer.offsets.length > 20) viewer.offsets.shift();
  viewer.serverOffsetMs = Math.max(...viewer.offsets);
  viewer.clock = (msg.video_clock || []).find((c) => c.stream === viewer.stream) || null;
  const names = msg.streams.map((s) => s.name);
  const changed = JSON.stringify(names) !== JSON.stringify(viewer.streams);
  viewer.streams = names;
  const vanished = viewer.pc && !names.includes(viewer.stream);  // removed at run time
  if (!names.includes(viewer.stream)) viewer.stream = names[0] || null;
  renderPicker();
  if (changed && viewer.grid) showGrid();
  else if (vanished && viewer.stream) showSingle(viewer.stream);
  const state = msg.streams.find((s) => s.name === viewer.stream);
  if (!state) return;
  viewer.objects = state.objects;
  viewer.labels = state.labels || {};
  autoBox.checked = !!state.auto;
  viewer.styles = state.styles || {};
  if (viewer.styles.style && document.activeElement !== styleEl) styleEl.value = viewer.styles.style;
  viewer.nextId = Math.max(viewer.nextId, ...state.objects.map((id) => id + 1), 1);
  viewer.latencyMs = state.latency_ms;
  document.getElementById("mask-fps").textContent = state.mask_fps.toFixed(1);
  document.getElementById("mask-age").textContent = state.mask_age_ms === null ? "–" : state.mask_age_ms.toFixed(0);
  const measured = viewer.screenLatency;
  const latency = measured ? measured.p50 : state.latency_ms + viewer.jitterMs;  // an estimate until measured
  document.getElementById("latency").textContent = latency.toFixed(0);
  document.getElementById("inference").textContent = state.inference_ms.toFixed(0);
  const camera = viewer.browserCamera.includes(viewer.stream);
  // On a cluster: the stream's worker was lost (or it is being rebalanced), or none has room.
  if (state.placement === "moving") setStatus("moving to another worker…");
  else if (state.placement === "waiting") setStatus("waiting for a worker with room…");
  else if (state.reconnecting && camera) setStatus("waiting for the camera…");
  else if (state.reconnecting) setStatus("camera reconnecting…");
  else if (!state.source_alive) setStatus("waiting for the camera…");
  else if (video.readyState >= 2) setStatus("");
  renderObjects();
}

// The capture time (server clock) of the frame on screen: from its RTP timestamp where the browser
// gives it, else now minus what it took to get here.
function shownFrameTs() {
  if (viewer.shownCaptureMs !== null) return viewer.shownCaptureMs;
  return localNow() + viewer.serverOffsetMs - viewer.latencyMs - viewer.jitterMs;
}

// Capture -> screen of one presented frame: RTP timestamps count capture time at 90 kHz, so the
// video clock's (rtp, capture time) pair dates any frame; the screen time is on our clock, moved
// onto the server's by the offset (so a figure too low by at most the websocket's transit time).
function measureScreenLatency(now, metadata) {
  viewer.shownCaptureMs = null;
  if (metadata.rtpTimestamp === undefined || !viewer.clock) return;
  let ticks = (metadata.rtpTimestamp - viewer.clock.rtp) >>> 0;
  if (ticks >= 2 ** 31) ticks -= 2 ** 32;  // a frame before the clock's
  viewer.shownCaptureMs = viewer.clock.capture_ms + ticks / 90;
  const shown = performance.timeOrigin + (metadata.expectedDisplayTime || now) + viewer.serverOffsetMs;
  viewer.screen.push([now, shown - viewer.shownCaptureMs]);
  while (viewer.screen.length > 1 && now - viewer.screen[0][0] > 2000) viewer.screen.shift();
  const sorted = viewer.screen.map((entry) => entry[1]).sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  viewer.screenLatency = { p50: at(0.5), p90: at(0.9), frames: sorted.length };
}

// Which frame is on screen, and how many are shown a second: counted where the user is.
const presentedTimes = [];
function onVideoFrame(now, metadata) {
  viewer.presented += 1;
  if (metadata.rtpTimestamp !== undefined) viewer.shownRtp = metadata.rtpTimestamp;
  measureScreenLatency(now, metadata);
  presentedTimes.push(now);
  while (presentedTimes.length > 1 && now - presentedTimes[0] > 2000) presentedTimes.shift();
  const span = presentedTimes[presentedTimes.length - 1] - presentedTimes[0];
  viewer.videoFps = span > 0 ? (1000 * (presentedTimes.length - 1)) / span : 0;
  video.requestVideoFrameCallback(onVideoFrame);
}
if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) video.requestVideoFrameCallback(onVideoFrame);
setInterval(() => {
  const last = presentedTimes[presentedTimes.length - 1];
  if (last === undefined || performance.now() - last > 2000) {  // stalled
    viewer.videoFps = 0;
    viewer.screenLatency = null;
  }
  document.getElementById("video-fps").textContent = viewer.videoFps.toFixed(1);
}, 500);

// Which frame a prompt is about: exactly (its RTP timestamp) where the browser says, and its
// estimated capture time always (the server falls back on it).
function frameRef() {
  const ref = { frame_ts: shownFrameTs() };
  if (viewer.shownRtp !== null) ref.frame_rtp = viewer.shownRtp;
  return ref;
}

// Where in the frame (0..1) a mouse event is, given object-fit: contain letterboxing.
function framePoint(event) {
  const rect = drag.getBoundingClientRect();
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!vw || !vh) return null;
  const scale = Math.min(rect.width / vw, rect.height / vh);
  const left = rect.left + (rect.width - vw * scale) / 2, top = rect.top + (rect.height - vh * scale) / 2;
  const x = (event.clientX - left) / (vw * scale), y = (event.clientY - top) / (vh * scale);
  if (x < 0 || x > 1 || y < 0 || y > 1) return null;
  return [x, y];
}

// Pointer input, mouse and touch alike: click or tap adds to the selected object; shift-click,
// right-click or a long press (touch) excludes; a drag draws a box. The canvas takes every touch
// gesture (CSS touch-action: none), so the page neither scrolls nor zooms under a finger.
const LONG_PRESS_MS = 500;
const DRAG_PX = 8;
let dragStart = null;
drag.addEventListener("contextmenu", (e) => e.preventDefault());
drag.addEventListener("pointerdown", (e) => {
  if (!e.isPrimary) return;
  drag.setPointerCapture(e.pointerId);
  dragStart = { p: framePoint(e), x: e.clientX, y: e.clientY, t: performance.now(), moved: false };
});
drag.addEventListener("pointermove", (e) => {
  if (!dragStart || !e.isPrimary) return;
  if (Math.hypot(e.clientX - dragStart.x, e.clientY - dragStart.y) > DRAG_PX) dragStart.moved = true;
  const ctx = drag.getContext("2d");
  drag.width = drag.clientWidth; drag.height = drag.clientHeight;
  const r = drag.getBoundingClientRect();
  ctx.strokeStyle = colorFor(viewer.selected);
  ctx.lineWidth = 2;
  ctx.strokeRect(dragStart.x - r.left, dragStart.y - r.top, e.clientX - dragStart.x, e.clientY - dragStart.y);
});
drag.addEventListener("pointercancel", () => {
  dragStart = null;
  drag.getContext("2d").clearRect(0, 0, drag.width, drag.height);
});
drag.addEventListener("pointerup", (e) => {
  const start = dragStart;
  dragStart = null;
  drag.getContext("2d").clearRect(0, 0, drag.width, drag.height);
  const end = framePoint(e);
  if (!start || !start.p || !end || !e.isPrimary) return;
  const ref = frameRef();
  if (start.moved) {
    const box = [Math.min(start.p[0], end[0]), Math.min(start.p[1], end[1]),
                 Math.max(start.p[0], end[0]), Math.max(start.p[1], end[1])];
    send({ type: "add_box", obj_id: viewer.selected, box, ...ref });
  } else {
    const longPress = e.pointerType !== "mouse" && performance.now() - start.t >= LONG_PRESS_MS;
    const label = e.shiftKey || e.button === 2 || longPress ? 0 : 1;
    send({ type: "add_points", obj_id: viewer.selected, points: [end], labels: [label], ...ref });
  }
});

document.getElementById("new-object").onclick = () => {
  viewer.selected = Math.max(viewer.nextId, ...viewer.objects.map((id) => id + 1));
  viewer.nextId = viewer.selected + 1;
  renderObjects();
};
document.getElementById("reset").onclick = () => send({ type: "reset" });
const styleEl = document.getElementById("style");
styleEl.onchange = () => send({ type: "style", stream: viewer.stream, style: styleEl.value });
const autoBox = document.getElementById("auto");
autoBox.onchange = () => send({ type: "auto", stream: viewer.stream, enabled: autoBox.checked });
document.getElementById("text-form").onsubmit = (e) => {
  e.preventDefault();
  const input = document.getElementById("text");
  if (input.value.trim()) send({ type: "text", stream: viewer.stream, text: input.value.trim() });
};

// One peer connection per watched stream; the answer comes back on the websocket.
async function openPeer(stream, target, withCamera) {
  const pc = new RTCPeerConnection({ iceServers: viewer.iceServers, iceTransportPolicy: viewer.icePolicy });
  if (withCamera) {
    // the server tracks this browser's own camera and sends the overlaid video back
    const camera = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
    pc.addTransceiver(camera.getVideoTracks()[0], { direction: "sendrecv", streams: [camera] });
  } else {
    pc.addTransceiver("video", { direction: "recvonly" });
  }
  pc.ontrack = (event) => { target.srcObject = event.streams[0] || new MediaStream([event.track]); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed" && viewer.ws) viewer.ws.close();
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
    setTimeout(resolve, 2000);
  });
  const id = send({ type: "offer", stream, sdp: pc.localDescription.sdp });
  if (id) viewer.pending.set(id, pc);
  return pc;
}

function closePeers() {
  if (viewer.pc) viewer.pc.close();
  viewer.pc = null;
  for (const tile of viewer.tiles.values()) tile.pc.close();
  viewer.tiles.clear();
  viewer.pending.clear();
}

async function startWebRTC() {
  const camera = viewer.browserCamera.includes(viewer.stream);
  viewer.pc = await openPeer(viewer.stream, video, camera);
}

function showSingle(stream) {
  closePeers();
  viewer.grid = false;
  gridButton.textContent = "Grid";
  viewer.stream = stream;
  history.replaceState(null, "", `${location.search}#stream=${encodeURIComponent(stream)}`);
  document.body.classList.remove("grid");
  gridEl.replaceChildren();
  video.srcObject = null;  // never show the previous stream under the new one's prompts
  viewer.shownRtp = viewer.shownCaptureMs = viewer.clock = viewer.screenLatency = null;
  viewer.screen = [];
  viewer.objects = [];
  rendered = "";
  renderPicker();
  renderObjects();
  setStatus("starting video…");
  startWebRTC().catch((err) => { messageEl.textContent = `video: ${err.message}`; });
}

// Every stream at once, small; a click on a tile opens that stream to prompt on it.
function showGrid() {
  closePeers();
  viewer.grid = true;
  gridButton.textContent = "Single";
  document.body.classList.add("grid");
  gridEl.replaceChildren(...viewer.streams.map((name) => {
    const tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.stream = name;
    const tileVideo = document.createElement("video");
    Object.assign(tileVideo, { autoplay: true, playsInline: true, muted: true });
    const caption = document.createElement("figcaption");
    caption.textContent = name;
    tile.append(tileVideo, caption);
    tile.onclick = () => showSingle(name);
    openPeer(name, tileVideo, false)
      .then((pc) => viewer.tiles.set(name, { pc, video: tileVideo }))
      .catch((err) => { messageEl.textContent = `video: ${err.message}`; });
    return tile;
  }));
}

pickerEl.onchange = () => showSingle(pickerEl.value);
gridButton.onclick = () => (viewer.grid ? showSingle(viewer.stream) : showGrid());

async function pollJitter() {
  if (!viewer.pc) return;
  const stats = await viewer.pc.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
      viewer.jitterMs = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
    }
  });
}
setInterval(pollJitter, 1000);

function keepAck(msg) {
  viewer.acks.push(msg);
  if (viewer.acks.length > MAX_ACKS) viewer.acks.shift();
}

function showModel(model) {
  // "EdgeTAM 512 px": the family, its size, and the input size the frames are resized to
  const name = [model.title, model.image_size ? `${model.image_size} px` : ""].filter(Boolean).join(" ");
  document.getElementById("model-name").textContent = name || "–";
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const base = location.pathname.replace(/[^/]*$/, ""); // the page's folder: "/" or a proxy's "/cams/"
  const ws = new WebSocket(`${proto}://${location.host}${base}ws${location.search}`);
  viewer.ws = ws;
  ws.onopen = () => { viewer.retryMs = 500; setStatus("starting video…"); };
  ws.onmessage = async (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "hello") {
      document.getElementById("banner").hidden = !msg.random_weights;
      showModel(msg.model || {});
      viewer.browserCamera = msg.browser_camera;
      viewer.iceServers = msg.ice_servers || [];
      viewer.icePolicy = msg.ice_transport_policy || "all";
      applyState(msg);
      if (viewer.grid) showGrid();
      else startWebRTC().catch((err) => { messageEl.textContent = `video: ${err.message}`; });
    } else if (msg.type === "state") {
      applyState(msg);
    } else if (msg.type === "answer") {
      const pc = viewer.pending.get(msg.id);
      viewer.pending.delete(msg.id);
      if (pc && pc.signalingState !== "closed") await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    } else if (msg.type === "ack") {
      keepAck(msg);
      if (msg.objects && msg.stream === viewer.stream) viewer.objects = msg.objects;
      messageEl.textContent = "";
      renderObjects();
    } else if (msg.type === "error") {
      keepAck(msg);
      messageEl.textContent = msg.stream ? `${msg.stream}: ${msg.message}` : msg.message;
    }
  };
  ws.onclose = () => {
    closePeers();
    setStatus("disconnected, reconnecting…");
    setTimeout(connect, viewer.retryMs);
    viewer.retryMs = Math.min(viewer.retryMs * 2, 5000);
  };
}

video.addEventListener("playing", () => setStatus(""));
viewer.browserCamera = [];
renderObjects();
connect();
