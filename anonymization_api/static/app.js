// The anonymisation page: choose what to hide, drop images or a video, review and correct each
// image, download. It talks to the API with relative URLs, so it also works behind a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const EXTENSIONS = { "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp" };
const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi|mpe?g|wmv|flv|3gp|ts|mts)$/i;
// Where each field of a refused configuration is shown: next to the control that set it.
const PROBLEM_PLACES = {
  sensitive_info: "classes-error", class_name: "classes-error", inference_type: "classes-error",
  model_name: "classes-error", url: "classes-error", anonymization_technique: "technique-error",
  anonymization_degree: "degree-error", shape: "shape-error", keep: "review-error", hide: "hide-error",
};
const PROBLEM_IDS = [...new Set([...Object.values(PROBLEM_PLACES), "config-error"])];

const state = {
  options: [],     // the classes offered: {key, class_name, inference_type, model_name, label}
  techniques: [],
  images: [],      // {name, file, url, keep: [{key, box}], hide: [box], result, error, renderedKey, busy}
  selected: null,
  video: null,     // {xhr, job, active, labels}
  split: 50,
  renders: 0,
  lastId: 0,
  firstLoad: true,
};

// --- answers and errors ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, problems = [], status = 0) {
    super(message);
    this.problems = problems;
    this.status = status;
  }
}

// The API answers JSON {data, error, success}; an error names what is wrong in `error`, and a refused
// configuration lists each problem in data.problems.
function parseAnswer(status, statusText, text) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: a proxy's error page, or a cut connection
  }
  if (status >= 200 && status < 300) {
    if (body === null) throw new ApiError(`The service answered something unexpected (HTTP ${status}).`, [], status);
    return body;
  }
  const message = (body && typeof body.error === "string" && body.error) || `HTTP ${status} ${statusText}`.trim();
  throw new ApiError(message, (body && body.data && body.data.problems) || [], status);
}

// The API key, where the service asks for one: kept for this tab only, sent as X-API-Key.
function apiKey() {
  return $("api-key").value.trim();
}

function withKey(headers = {}) {
  return apiKey() ? { ...headers, "X-API-Key": apiKey() } : headers;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: withKey(options.headers) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("The service did not answer; check that it is running and reachable.");
  }
  return parseAnswer(response.status, response.statusText, await response.text());
}

function showError(id, message) {
  const place = $(id);
  place.textContent = message || "";
  place.hidden = !message;
}

function clearProblems() {
  PROBLEM_IDS.forEach((id) => showError(id, ""));
}

// A refused configuration: each problem beside its control, with the class it is about in words.
function showProblems(problems, labels) {
  clearProblems();
  const places = {};
  for (const problem of problems) {
    const text = String(problem.message || "").replace(/^entry \d+: /, "");
    const line = problem.entry != null && labels[problem.entry] ? `${labels[problem.entry]}: ${text}` : text;
    (places[PROBLEM_PLACES[problem.field] || "config-error"] ??= []).push(line);
  }
  for (const [id, lines] of Object.entries(places)) {
    showError(id, `The service refused these settings: ${lines.join("\n")}`);
  }
}

function announce(text) {
  $("status").textContent = text;
}

// --- servers, classes and techniques -----------------------------------------------------------

async function loadServers() {
  try {
    const [servers, methods] = await Promise.all([api("servers"), api("available_methods")]);
    showServers(servers.data || []);
    // /available_methods answers BMW's envelope today and BMW's bare dictionary soon: read both.
    setMethods(methods.data ?? methods);
    showError("servers-error", "");
    if (state.firstLoad) announce(state.options.length ? "Ready: drop images or a video." : "No server offers anything to hide yet.");
  } catch (error) {
    showError("servers-error", `Could not read the servers: ${error.message}`);
    if (state.firstLoad) announce("The servers could not be read.");
  }
  state.firstLoad = false;
}

function showServers(servers) {
  const list = $("servers");
  list.replaceChildren();
  if (!servers.length) list.append(element("li", {}, "No inference server is registered (POST /set_url)."));
  for (const server of servers) {
    const models = Object.entries(server.models || {}).map(
      ([name, model]) => `${name} (${model.task}: ${model.labels.join(", ")})`,
    );
    const badge = element("span", { class: server.available ? "badge ok" : "badge bad" },
      server.available ? "available" : "unavailable");
    const item = element("li", {}, element("strong", {}, server.url), " ", badge,
      server.protocol ? ` ${server.protocol}` : "");
    if (!server.available && server.error) item.append(element("div", { class: "error" }, server.error));
    if (models.length) item.append(element("div", { class: "models" }, models.join("; ")));
    list.append(item);
  }
}

function setMethods(methods) {
  const options = [];
  const techniques = new Set();
  for (const label of Object.keys(methods).sort()) {
    const offered = methods[label] || {};
    (offered.technique || []).forEach((name) => techniques.add(name));
    for (const task of ["detection", "segmentation"]) {
      const models = [...new Set(Object.values(offered[task] || {}).flat())].sort();
      for (const model of models) {
        options.push({ key: `${label}|${task}|${model}`, class_name: label, inference_type: task, model_name: model,
          label: `${label} (${task}, ${model})` });
      }
    }
  }
  const sorted = [...techniques].sort();
  const changed = JSON.stringify([options, sorted]) !== JSON.stringify([state.options, state.techniques]);
  if (JSON.stringify(options) !== JSON.stringify(state.options)) {
    // faces to begin with; after that, what the user chose
    const checked = new Set(state.options.length
      ? checkedOptions().map((o) => o.key)
      : options.filter((o) => o.class_name === "face" && o.inference_type === "detection").slice(0, 1).map((o) => o.key));
    state.options = options;
    const list = $("class-list");
    list.replaceChildren();
    if (!options.length) list.append(element("p", { class: "help" }, "No registered server offers a class."));
    options.forEach((option, index) => {
      const box = element("input", { type: "checkbox", id: `class-${index}`, value: option.key });
      box.checked = checked.has(option.key);
      box.addEventListener("change", settingsChanged);
      list.append(element("label", { class: "choice", for: box.id }, box, ` ${option.label}`));
    });
  }
  if (JSON.stringify(sorted) !== JSON.stringify(state.techniques)) {
    const select = $("technique");
    const previous = select.value;
    state.techniques = sorted;
    select.replaceChildren(...sorted.map((name) => element("option", { value: name }, name.replace(/_/g, " "))));
    select.value = sorted.includes(previous) ? previous : sorted.includes("blurring") ? "blurring" : sorted[0] || "";
  }
  if (changed) settingsChanged();
}

function checkedOptions() {
  const keys = new Set([...$("class-list").querySelectorAll("input:checked")].map((box) => box.value));
  return state.options.filter((option) => keys.has(option.key));
}

// The configuration for one image (or for a video: img null), keep and hide boxes included.
function buildEntries(img) {
  const technique = $("technique").value;
  const degree = Number($("degree").value);
  const shape = document.querySelector("input[name=shape]:checked").value;
  return checkedOptions().map((option, index) => {
    const entry = { class_name: option.class_name, inference_type: option.inference_type,
      model_name: option.model_name, anonymization_technique: technique, anonymization_degree: degree };
    if (option.inference_type === "detection") entry.shape = shape;
    if (img) {
      const keep = img.keep.filter((k) => k.key === option.key).map((k) => k.box);
      if (keep.length) entry.keep = keep;
      // The user's own boxes go with the first class, so they are hidden with the chosen technique.
      if (index === 0 && img.hide.length) entry.hide = img.hide;
    }
    return entry;
  });
}

let settingsTimer = 0;

function settingsChanged() {
  clearTimeout(settingsTimer);
  refreshImages();
  pump();
}

// --- rendering: one request at a time, the selected image first, stale answers dropped ----------

let inflight = null;  // {img, key, controller}
let idleWaiters = [];

const configKey = (img) => JSON.stringify(buildEntries(img));
const needsRender = (img) => img.renderedKey !== configKey(img);

function pump() {
  if (inflight) {
    // a request for settings that have changed since, or for an image removed, is of no use
    if (!state.images.includes(inflight.img) || inflight.key !== configKey(inflight.img)) inflight.controller.abort();
    return;  // its end pumps again
  }
  const next = [state.selected, ...state.images].find((img) => img && needsRender(img));
  if (next) {
    render(next);
  } else {
    idleWaiters.splice(0).forEach((resolve) => resolve());
  }
}

function whenIdle() {
  return new Promise((resolve) => {
    idleWaiters.push(resolve);
    pump();
  });
}

async function render(img) {
  const entries = buildEntries(img);
  const key = JSON.stringify(entries);
  const options = checkedOptions();
  const controller = new AbortController();
  inflight = { img, key, controller };
  img.busy = true;
  refreshImages();
  if (img === state.selected) showReview();
  announce(`Anonymising ${img.name}…`);
  const form = new FormData();
  form.append("image", img.file, img.name);
  form.append("configuration", JSON.stringify({ sensitive_info: entries }));
  form.append("detections", "include");
  let done = false;
  try {
    const body = await api("anonymize", { method: "POST", body: form, signal: controller.signal });
    setResult(img, body.data, entries, options);
    img.error = null;
    clearProblems();
    done = true;
    announce(`${img.name}: ${summary(img)}.`);
  } catch (error) {
    if (error.name !== "AbortError") {
      setResult(img, null);
      img.error = error.message;
      if (error.problems && error.problems.length) {
        showProblems(error.problems, options.map((o) => o.label));
      }
      done = true;
      announce(`${img.name} could not be anonymised.`);
    }
  } finally {
    inflight = null;
    img.busy = false;
    if (done) {
      img.renderedKey = key;
      if (img === state.selected) state.renders += 1;
    }
    refreshImages();
    if (img === state.selected) showReview();
    pump();
  }
}

function setResult(img, data, entries, options) {
  if (img.download) URL.revokeObjectURL(img.download);
  img.download = null;
  img.result = null;
  if (!data) return;
  const bytes = base64Bytes(data.image);
  const stem = img.name.replace(/\.[^.]*$/, "") || "image";
  const outputName = `${stem}_anonymized.${EXTENSIONS[data.media_type] || "img"}`;
  img.result = {
    width: data.width, height: data.height, detections: data.detections, bytes, mediaType: data.media_type,
    dataUrl: `data:${data.media_type};base64,${data.image}`, outputName, keys: options.map((o) => o.key),
    audit: { image: img.name, output: outputName, width: data.width, height: data.height,
      configuration: { sensitive_info: entries }, detections: data.detections },
  };
  img.download = URL.createObjectURL(new Blob([bytes], { type: data.media_type }));
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Every detection of an image's last result; whether it is kept follows the keep boxes at once,
// before the new result arrives, so a click shows its effect immediately.
function detectionsOf(img) {
  if (!img.result) return [];
  const found = [];
  for (const entry of img.result.detections) {
    const key = img.result.keys[entry.entry];
    const regions = [...entry.regions.filter((r) => r.source !== "hide"), ...(entry.kept || [])];
    for (const region of regions) {
      const detection = { key, class_name: entry.class_name, box: region.box, score: region.score };
      detection.kept = img.keep.some((k) => k.key === key && contains(k.box, centre(region.box)));
      found.push(detection);
    }
  }
  return found;
}

function summary(img) {
  const found = detectionsOf(img);
  const kept = found.filter((d) => d.kept).length;
  const parts = [`${found.length - kept} hidden`];
  if (kept) parts.push(`${kept} kept visible`);
  if (img.hide.length) parts.push(`${img.hide.length} of your boxes`);
  return parts.join(", ");
}

const centre = (box) => [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2];
const contains = (box, [x, y]) => box[0] <= x && x <= box[2] && box[1] <= y && y <= box[3];

// A box in whole image pixels inside the image, or null where nothing of it is left.
function clampBox(box, width, height) {
  const [x1, x2] = [Math.min(box[0], box[2]), Math.max(box[0], box[2])].map((v) => Math.round(Math.min(Math.max(v, 0), width)));
  const [y1, y2] = [Math.min(box[1], box[3]), Math.max(box[1], box[3])].map((v) => Math.round(Math.min(Math.max(v, 0), height)));
  return x2 - x1 >= 2 && y2 - y1 >= 2 ? [x1, y1, x2, y2] : null;
}

function toggleKept(img, detection) {
  if (detection.kept) {
    const at = centre(detection.box);
    img.keep = img.keep.filter((k) => !(k.key === detection.key && contains(k.box, at)));
  } else {
    const box = clampBox(detection.box, img.result.width, img.result.height);
    if (box) img.keep.push({ key: detection.key, box });
  }
  showReview();
  refreshImages();
  pump();
}

function addHideBox(img, box) {
  img.hide.push(box);
  showReview();
  refreshImages();
  pump();
}

function removeHideBox(img, index) {
  img.hide.splice(index, 1);
  showReview();
  refreshImages();
  pump();
}

// --- files -------------------------------------------------------------------------------------

const isVideo = (file) => file.type.startsWith("video/") || VIDEO_NAME.test(file.name);

function addFiles(fileList) {
  const files = [...fileList];
  showError("files-error", "");
  const videos = files.filter(isVideo);
  const added = files.filter((file) => !isVideo(file)).map((file) => ({
    id: ++state.lastId, name: file.name, file, url: URL.createObjectURL(file), keep: [], hide: [], result: null, error: null,
    renderedKey: null, busy: false, download: null,
  }));
  state.images.push(...added);
  if (added.length && !state.selected) state.selected = added[0];
  if (videos.length > 1) {
    showError("files-error", `One video at a time: ${videos[0].name} is anonymised, ` +
      `${videos.slice(1).map((f) => f.name).join(", ")} left out.`);
  }
  if (videos.length) startVideo(videos[0]);
  refreshImages();
  showReview();
  pump();
}

function refreshImages() {
  keepingFocus(listImages);
}

function listImages() {
  const list = $("image-list");
  list.replaceChildren();
  for (const img of state.images) {
    const stale = needsRender(img);
    let text = "waiting";
    if (img.busy) text = "anonymising…";
    else if (img.error && !stale) text = `error: ${img.error}`;
    else if (img.result) text = stale ? "updating…" : summary(img);
    const pick = element("button", { type: "button", class: "pick", "data-focus": `pick:${img.id}` }, img.name);
    if (img === state.selected) pick.setAttribute("aria-current", "true");
    pick.addEventListener("click", () => {
      state.selected = img;
      refreshImages();
      showReview();
      pump();
      $("review").focus();
    });
    const remove = element("button", { type: "button", class: "remove", "aria-label": `Remove ${img.name}`,
      "data-focus": `remove:${img.id}` }, "×");
    remove.addEventListener("click", () => removeImage(img));
    list.append(element("li", { class: img.error && !stale ? "failed" : "" }, pick,
      element("span", { class: "state" }, text), remove));
  }
  $("image-actions").hidden = !state.images.length;
}

function removeImage(img) {
  const at = state.images.indexOf(img);
  state.images.splice(at, 1);
  URL.revokeObjectURL(img.url);
  if (img.download) URL.revokeObjectURL(img.download);
  if (state.selected === img) state.selected = state.images[Math.min(at, state.images.length - 1)] || null;
  refreshImages();
  showReview();
  pump();
}

// --- review ------------------------------------------------------------------------------------

function showReview() {
  keepingFocus(drawReview);
}

function drawReview() {
  const img = state.selected;
  const review = $("review");
  review.hidden = !img;
  if (!img) return;
  const stale = needsRender(img);
  review.dataset.state = img.busy || stale ? "rendering" : img.error ? "error" : "ready";
  review.dataset.renders = String(state.renders);
  $("review-name").textContent = img.name;
  const before = $("before");
  if (before.getAttribute("src") !== img.url) {
    before.onload = () => !img.result && state.selected === img && sizeCompare(before.naturalWidth, before.naturalHeight);
    before.src = img.url;
    before.alt = `Original: ${img.name}`;
  }
  const after = $("after");
  const result = img.result;
  after.hidden = !result;
  if (result && after.getAttribute("src") !== result.dataUrl) {
    after.src = result.dataUrl;
    after.alt = `Anonymised: ${img.name}`;
  }
  $("compare").hidden = !result && Boolean(img.error);
  if (result) sizeCompare(result.width, result.height);
  showError("review-error", img.error && !stale ? `Could not anonymise ${img.name}: ${img.error}` : "");
  const link = $("download-one");
  link.hidden = !result;
  if (result) {
    link.href = img.download;
    link.download = result.outputName;
  }
  drawOverlay(img);
  listDetections(img);
}

function sizeCompare(width, height) {
  const compare = $("compare");
  compare.style.aspectRatio = `${width} / ${height}`;
  // tall images fit the screen's height rather than its width
  compare.style.maxWidth = `min(100%, calc(75vh * ${width / height}))`;
}

const boxText = (box) => box.map((v) => Math.round(v)).join(", ");
const focusKey = (prefix, box) => `${prefix}:${box.map((v) => Math.round(v)).join(",")}`;

function drawOverlay(img) {
  const overlay = $("overlay");
  overlay.querySelectorAll(".box").forEach((node) => node.remove());  // not a box being drawn
  const result = img.result;
  if (!result) return;
  overlay.setAttribute("viewBox", `0 0 ${result.width} ${result.height}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  // labels keep a readable size on screen whatever the image's own size
  const scale = result.width / (overlay.clientWidth || result.width);
  for (const detection of detectionsOf(img)) {
    const score = detection.score == null ? "" : ` ${detection.score.toFixed(2)}`;
    const action = detection.kept ? "kept visible; press Enter to hide it" : "hidden; press Enter to keep it visible";
    const group = drawBox(overlay, detection.box, detection.kept ? "kept" : "hidden", `${detection.class_name}${score}`,
      scale, `${detection.class_name}${score} at ${boxText(detection.box)}, ${action}`, focusKey("box", detection.box));
    activate(group, () => toggleKept(img, detection));
  }
  img.hide.forEach((box, index) => {
    const group = drawBox(overlay, box, "user", "your box", scale,
      `your box at ${boxText(box)}, hidden; press Enter to remove it`, focusKey("user", box));
    activate(group, () => removeHideBox(img, index));
  });
}

function drawBox(overlay, box, kind, text, scale, label, focus) {
  const [x1, y1, x2, y2] = box;
  const group = svg("g", { class: `box ${kind}`, tabindex: "0", role: "button", "aria-label": label, "data-focus": focus });
  group.append(svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, "vector-effect": "non-scaling-stroke" }));
  const caption = svg("text", { x: x1 + 2 * scale, y: Math.max(y1 - 4 * scale, 13 * scale),
    "font-size": 13 * scale, "stroke-width": 3 * scale });
  caption.textContent = text;
  group.append(caption);
  overlay.append(group);
  return group;
}

// A box acts on Enter or Space; a click on it reaches it through the drawing code (a press that
// does not drag), so that a drag that starts inside a box still draws.
function activate(target, action) {
  target.action = action;
  target.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      action();
    }
  });
}

// The keyboard and screen-reader path: every detection as a checkbox, every user box with a button.
function listDetections(img) {
  const list = $("detections");
  list.replaceChildren();
  const found = detectionsOf(img);
  for (const detection of found) {
    const score = detection.score == null ? "" : `, score ${detection.score.toFixed(2)}`;
    const box = element("input", { type: "checkbox", "data-focus": focusKey("check", detection.box) });
    box.checked = !detection.kept;
    box.addEventListener("change", () => toggleKept(img, detection));
    list.append(element("li", {}, element("label", { class: "choice" }, box,
      ` hide ${detection.class_name}${score} at ${boxText(detection.box)}`)));
  }
  img.hide.forEach((hidden, index) => {
    const remove = element("button", { type: "button", "data-focus": focusKey("remove", hidden) }, "Remove");
    remove.addEventListener("click", () => removeHideBox(img, index));
    list.append(element("li", {}, `your box at ${boxText(hidden)} `, remove));
  });
  if (img.result && !list.children.length) list.append(element("li", {}, "Nothing found; drag across the image to hide a region."));
}

// Image pixels under a pointer event.
function imagePoint(event) {
  const rect = $("overlay").getBoundingClientRect();
  const { width, height } = state.selected.result;
  return [(event.clientX - rect.left) * width / rect.width, (event.clientY - rect.top) * height / rect.height];
}

function setupDrawing() {
  const overlay = $("overlay");
  let start = null;
  let pressed = null;  // the box the press began on
  let preview = null;
  overlay.addEventListener("pointerdown", (event) => {
    const img = state.selected;
    if (!img || !img.result || event.button !== 0) return;
    event.preventDefault();
    overlay.setPointerCapture(event.pointerId);
    start = imagePoint(event);
    pressed = event.target.closest(".box");
    preview = svg("rect", { class: "drawing", "vector-effect": "non-scaling-stroke" });
    overlay.append(preview);
  });
  overlay.addEventListener("pointermove", (event) => {
    if (!start) return;
    const [x, y] = imagePoint(event);
    Object.entries({ x: Math.min(x, start[0]), y: Math.min(y, start[1]), width: Math.abs(x - start[0]),
      height: Math.abs(y - start[1]) }).forEach(([name, value]) => preview.setAttribute(name, value));
  });
  const finish = (event) => {
    if (!start) return;
    const img = state.selected;
    const box = clampBox([...start, ...imagePoint(event)], img.result.width, img.result.height);
    start = null;
    preview.remove();
    if (box && box[2] - box[0] >= 4 && box[3] - box[1] >= 4) addHideBox(img, box);
    else if (pressed) pressed.action();  // a click, not a drag
  };
  overlay.addEventListener("pointerup", finish);
  overlay.addEventListener("pointercancel", () => {
    start = null;
    if (preview) preview.remove();
  });
  new ResizeObserver(() => state.selected && drawOverlay(state.selected)).observe($("compare"));
}

function setSplit(percent) {
  state.split = Math.min(100, Math.max(0, percent));
  $("after").style.clipPath = `inset(0 0 0 ${state.split}%)`;
  $("handle").style.left = `${state.split}%`;
  $("split").value = String(Math.round(state.split));
}

function setupSplit() {
  const handle = $("handle");
  const move = (event) => {
    const rect = $("compare").getBoundingClientRect();
    setSplit(((event.clientX - rect.left) / rect.width) * 100);
  };
  handle.addEventListener("pointerdown", (event) => {
    handle.setPointerCapture(event.pointerId);
    move(event);
  });
  handle.addEventListener("pointermove", (event) => handle.hasPointerCapture(event.pointerId) && move(event));
  $("split").addEventListener("input", (event) => setSplit(Number(event.target.value)));
  setSplit(50);
}

function setupHideForm() {
  $("hide-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const img = state.selected;
    const form = event.target;
    const values = ["x1", "y1", "x2", "y2"].map((name) => Number(form.elements[name].value));
    if (!img || !img.result) {
      showError("hide-error", "Wait until the image is anonymised, then add boxes.");
      return;
    }
    if (values.some((v) => !Number.isFinite(v)) || ["x1", "y1", "x2", "y2"].some((n) => form.elements[n].value === "")) {
      showError("hide-error", "Give all four edges of the box in pixels.");
      return;
    }
    const box = clampBox(values, img.result.width, img.result.height);
    if (!box) {
      showError("hide-error", `That box has no area inside the image (${img.result.width} × ${img.result.height} pixels).`);
      return;
    }
    showError("hide-error", "");
    addHideBox(img, box);
    form.reset();
  });
}

// --- download all: a ZIP built here, with each image's audit beside it ------------------------

async function downloadAll() {
  const button = $("download-all");
  button.disabled = true;
  showError("files-error", "");
  announce("Preparing the ZIP…");
  try {
    await whenIdle();  // every image anonymised with the settings shown
    const files = [];
    const names = new Set();
    const skipped = [];
    const unique = (name) => {
      let candidate = name;
      for (let n = 2; names.has(candidate); n++) candidate = name.replace(/(\.[^.]*)?$/, `_${n}$1`);
      names.add(candidate);
      return candidate;
    };
    const encoder = new TextEncoder();
    for (const img of state.images) {
      if (!img.result) {
        skipped.push(img.name);
        continue;
      }
      const name = unique(img.result.outputName);
      files.push({ name, data: img.result.bytes });
      const audit = { ...img.result.audit, output: name };
      files.push({ name: unique(name.replace(/\.[^.]*$/, ".json")), data: encoder.encode(JSON.stringify(audit, null, 2)) });
    }
    if (!files.length) {
      showError("files-error", "No image could be anonymised, so there is nothing to download.");
      return;
    }
    save(zip(files), "anonymized.zip");
    const left = skipped.length ? ` Left out, since they failed: ${skipped.join(", ")}.` : "";
    if (skipped.length) showError("files-error", `The ZIP holds ${files.length / 2} images.${left}`);
    announce(`The ZIP holds ${files.length / 2} images and their audits.${left}`);
  } finally {
    button.disabled = false;
  }
}

function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = element("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// A ZIP of stored (uncompressed) files: images are compressed already, so deflate would gain little.
function zip(files) {
  const encoder = new TextEncoder();
  const now = new Date();
  const time = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
  const date = ((now.getFullYear() - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
  const parts = [];
  const directory = [];
  let offset = 0;
  for (const file of files) {
    const name = encoder.encode(file.name);
    const crc = crc32(file.data);
    const size = file.data.length;
    const local = new DataView(new ArrayBuffer(30));
    const central = new DataView(new ArrayBuffer(46));
    local.setUint32(0, 0x04034b50, true);
    central.setUint32(0, 0x02014b50, true);
    central.setUint16(4, 20, true);  // made by: version 2.0
    // the fields both headers share: version needed 2.0, UTF-8 names, stored, time, date, CRC, sizes, name length
    for (const [view, at] of [[local, 4], [central, 6]]) {
      view.setUint16(at, 20, true);
      view.setUint16(at + 2, 0x0800, true);
      view.setUint16(at + 4, 0, true);
      view.setUint16(at + 6, time, true);
      view.setUint16(at + 8, date, true);
      view.setUint32(at + 10, crc, true);
      view.setUint32(at + 14, size, true);
      view.setUint32(at + 18, size, true);
      view.setUint16(at + 22, name.length, true);
    }
    central.setUint32(42, offset, true);
    parts.push(local, name, file.data);
    directory.push(central, name);
    offset += 30 + name.length + size;
  }
  const directorySize = directory.reduce((sum, part) => sum + part.byteLength, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true);
  end.setUint16(10, files.length, true);
  end.setUint32(12, directorySize, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...directory, end], { type: "application/zip" });
}

// --- video -------------------------------------------------------------------------------------

function startVideo(file) {
  if (state.video && state.video.active) {
    showError("files-error", `A video is being anonymised already; cancel it or wait for it before ${file.name}.`);
    return;
  }
  const options = checkedOptions();
  const form = new FormData();
  form.append("video", file, file.name);
  form.append("configuration", JSON.stringify({ sensitive_info: buildEntries(null) }));
  form.append("keep_audio", String($("keep-audio").checked));
  form.append("tracking", String($("tracking").checked));
  form.append("detection_interval", $("detection-interval").value || "1");
  const xhr = new XMLHttpRequest();
  const video = { xhr, job: null, active: true, labels: options.map((o) => o.label) };
  state.video = video;
  $("video").hidden = false;
  $("video-name").textContent = file.name;
  $("upload-progress").value = 0;
  $("upload-text").textContent = "0 %";
  $("job-progress").value = 0;
  $("job-text").textContent = "waiting for the upload";
  $("cancel-video").hidden = false;
  $("result-video").hidden = true;
  $("result-video").removeAttribute("src");
  $("download-video").hidden = true;
  showError("video-error", "");
  announce(`Uploading ${file.name}…`);
  xhr.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.round((event.loaded / event.total) * 100);
    $("upload-progress").value = percent;
    $("upload-text").textContent = `${percent} %`;
  };
  xhr.onload = () => {
    try {
      video.job = parseAnswer(xhr.status, xhr.statusText, xhr.responseText).data;
    } catch (error) {
      failVideo(video, error);
      return;
    }
    $("upload-progress").value = 100;
    $("upload-text").textContent = "done";
    follow(video);
  };
  xhr.onerror = () => failVideo(video, new ApiError("the upload failed: the service did not answer"));
  xhr.onabort = () => failVideo(video, null, "Upload cancelled.");
  xhr.open("POST", "jobs");
  if (apiKey()) xhr.setRequestHeader("X-API-Key", apiKey());
  xhr.send(form);
}

function failVideo(video, error, note) {
  video.active = false;
  if (video !== state.video) return;
  $("cancel-video").hidden = true;
  if (error && error.problems && error.problems.length) {
    showProblems(error.problems, video.labels);
  }
  if (error) {
    showError("video-error", `The video could not be anonymised: ${error.message}`);
    announce("The video could not be anonymised.");
  } else {
    $("job-text").textContent = note;
    announce(note);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function follow(video) {
  while (video.active) {
    showJob(video.job);
    if (!["queued", "running"].includes(video.job.state)) break;
    await sleep(500);
    if (!video.active) break;
    try {
      video.job = (await api(`jobs/${encodeURIComponent(video.job.id)}`)).data;
    } catch (error) {
      failVideo(video, error);
      return;
    }
  }
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

async function showJob(job) {
  const progress = $("job-progress");
  const text = $("job-text");
  if (job.frames_total > 0) progress.value = Math.min(100, Math.round((job.frames_done / job.frames_total) * 100));
  if (job.state === "queued") text.textContent = "waiting for its turn";
  if (job.state === "running") {
    const parts = [`frame ${job.frames_done} of ${job.frames_total || "?"}`];
    if (job.fps) parts.push(`${job.fps.toFixed(1)} fps`);
    if (job.eta_seconds != null) parts.push(`about ${duration(job.eta_seconds)} left`);
    text.textContent = parts.join(" · ");
  }
  if (["queued", "running"].includes(job.state)) return;
  state.video.active = false;
  $("cancel-video").hidden = true;
  if (job.state === "done") {
    progress.value = 100;
    text.textContent = `done: ${job.frames_done} frames`;
    let url = `jobs/${encodeURIComponent(job.id)}/result`;
    if (apiKey()) {
      // a <video> element cannot send the key: fetch the file with it, then play it from memory
      const response = await fetch(url, { headers: withKey() });
      url = URL.createObjectURL(await response.blob());
    }
    const player = $("result-video");
    player.src = url;
    player.hidden = false;
    const link = $("download-video");
    link.href = url;
    link.download = `${job.name.replace(/\.[^.]*$/, "")}_anonymized.mp4`;
    link.hidden = false;
    announce(`${job.name} is anonymised.`);
  } else if (job.state === "failed") {
    showError("video-error", `The video could not be anonymised: ${job.error || "the job failed"}`);
    text.textContent = "failed";
    announce("The video could not be anonymised.");
  } else {
    text.textContent = job.state;
    announce(`The video job was ${job.state}.`);
  }
}

async function cancelVideo() {
  const video = state.video;
  if (!video || !video.active) return;
  if (!video.job) {
    video.xhr.abort();
    return;
  }
  try {
    video.job = (await api(`jobs/${encodeURIComponent(video.job.id)}`, { method: "DELETE" })).data;
    showJob(video.job);
  } catch (error) {
    showError("video-error", `Could not cancel: ${error.message}`);
  }
}

// --- small DOM helpers -------------------------------------------------------------------------

// Lists are rebuilt whenever a result arrives; the control that had the focus gets it back, so a
// keyboard user is not thrown to the top of the page.
function keepingFocus(rebuild) {
  const active = document.activeElement;
  const key = active && active.dataset ? active.dataset.focus : undefined;
  rebuild();
  if (!key) return;
  const again = document.querySelector(`[data-focus="${CSS.escape(key)}"]`);
  if (again && again !== document.activeElement) again.focus();
}

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== "") node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

// --- start -------------------------------------------------------------------------------------

function setup() {
  const input = $("file-input");
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";  // choosing the same file again still counts
  });
  const drop = $("drop");
  // a file dropped beside the zone would otherwise replace the page
  ["dragover", "drop"].forEach((name) => document.addEventListener(name, (event) => event.preventDefault()));
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  $("technique").addEventListener("change", settingsChanged);
  document.querySelectorAll("input[name=shape]").forEach((radio) => radio.addEventListener("change", settingsChanged));
  $("degree").addEventListener("input", () => {
    $("degree-value").textContent = Number($("degree").value).toFixed(2);
    // the preview follows the slider once it rests, not at every step of a drag
    clearTimeout(settingsTimer);
    settingsTimer = setTimeout(settingsChanged, 300);
  });
  $("refresh-servers").addEventListener("click", loadServers);
  $("api-key").value = sessionStorage.getItem("anonymizer-api-key") || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("anonymizer-api-key", apiKey());
    loadServers();
  });
  $("download-all").addEventListener("click", downloadAll);
  $("clear-images").addEventListener("click", () => [...state.images].forEach(removeImage));
  $("cancel-video").addEventListener("click", cancelVideo);
  $("review").setAttribute("tabindex", "-1");
  setupSplit();
  setupDrawing();
  setupHideForm();
  loadServers();
  setInterval(loadServers, 15000);
}

setup();
