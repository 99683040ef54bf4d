// superres serve: the page's only script. It talks to this server's /api alone (the server's
// Content-Security-Policy would block anything else): upload, poll, cancel, compare, download.
"use strict";

const $ = (selector) => document.querySelector(selector);
const POLL_MS = 250;
let catalogue = { models: [], scales: [], limits: {}, upload: { accept: "", formats: "" }, output_formats: [] };
let shown = null; // the job in the compare view
let split = 50; // the compare view's divider, in percent of the image's width from the left
let lastInput = null; // {name, width, height} of the last upload: the card's time estimate

// The model menu's groups, in order: a card's `purpose` (from /api/models) names its group.
const GROUPS = [
  ["Recommended", ["default", "fast"]],
  ["Photos with JPEG artefacts or noise", ["real-world"]],
  ["Perceptual: sharper detail, less faithful", ["perceptual"]],
  ["Other trained models", ["other"]],
  ["Seed models (the SRCNN and RED-Net papers)", ["seed"]],
  ["No model", ["interpolation"]],
  ["Model files (superres serve --models-dir)", ["community"]],
];
const GROUPED = new Set(GROUPS.flatMap(([, purposes]) => purposes));

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function notice(message) {
  $("#notice").textContent = message || "";
  $("#notice").hidden = !message;
}

// An error about one file, named once (the server's messages often start with the name already).
function fileError(name, message) {
  return message.startsWith(`${name}:`) ? message : `${name}: ${message}`;
}

// ------------------------------------------------------------------ settings and model card

async function loadModels() {
  catalogue = await api("/api/models");
  if (!$("#scale").options.length) {
    for (const scale of catalogue.scales) $("#scale").add(new Option(`x${scale}`, scale));
    for (const fmt of catalogue.output_formats) $("#format").add(new Option(fmt.label, fmt.value));
    buildModelMenu(); // later loads only refresh the measured speeds: the menu stays as it is
  }
  const mib = Math.round((catalogue.limits.max_upload_bytes / 2 ** 20) * 10) / 10;
  const mp = catalogue.limits.max_pixels / 1e6;
  // The formats come from the server's format table, as the 415 it answers for any other.
  $("#files").accept = catalogue.upload.accept;
  $("#limits").textContent =
    `${catalogue.upload.formats}; up to ${mib} MiB and ${mp.toFixed(1)} MP each. Running on ${catalogue.device}.`;
  renderCard();
}

function psnr(card) {
  const s = card.scores.Set5;
  return s ? `Set5 ${s.psnr.toFixed(2)} dB` : "";
}

// The option's text: what the model is for in plain words, its internal name beside it.
function optionText(model, card, scale) {
  const hasReal = catalogue.models.some((m) => m.scales[scale] && m.scales[scale].purpose === "real-world");
  switch (card.purpose) {
    case "default":
      return `Best quality, automatic (default: ${card.resolves_to}${hasReal ? "; real for JPEGs and noisy photos" : ""})`;
    case "fast": return `Fast (fast: ${card.resolves_to})`;
    case "real-world": return `Real-world photos: JPEG, noise, blur (${model.name})`;
    case "perceptual": return `Perceptual: sharper textures, invented detail (${model.name})`;
    case "interpolation": return `Bicubic interpolation, no model (${model.name})`;
    default: return `${model.name} (${card.architecture}${psnr(card) ? `, ${psnr(card)}` : ""})`;
  }
}

// The menu holds only the models that exist at the chosen scale, grouped by purpose: a job with
// a model the scale lacks cannot be started from the page.
function buildModelMenu() {
  const scale = $("#scale").value;
  const selected = $("#model").value;
  const groups = GROUPS.map(([label, purposes]) => {
    const group = document.createElement("optgroup");
    group.label = label;
    for (const model of catalogue.models) {
      const card = model.scales[scale];
      // A purpose this page does not know goes with the other trained models: never hidden.
      const purpose = card && (GROUPED.has(card.purpose) ? card.purpose : "other");
      if (card && purposes.includes(purpose)) group.append(new Option(optionText(model, card, scale), model.name));
    }
    return group;
  }).filter((group) => group.children.length);
  $("#model").replaceChildren(...groups);
  const names = [...$("#model").options].map((option) => option.value);
  $("#model").value = names.includes(selected) ? selected : names.includes("default") ? "default" : names[0];
}

// "about 12 s", "about 2 min 5 s": a time estimate in words.
function roughly(seconds) {
  if (seconds < 1) return "under a second";
  const whole = Math.round(seconds);
  return whole < 90 ? `about ${whole} s` : `about ${Math.floor(whole / 60)} min ${whole % 60} s`;
}

function score(scores, set) {
  const s = scores[set];
  return s ? `${s.psnr.toFixed(2)} dB / ${s.ssim.toFixed(4)}` : "–";
}

function renderCard() {
  const model = catalogue.models.find((m) => m.name === $("#model").value);
  const scale = Number($("#scale").value);
  const card = model && model.scales[scale];
  // A real-world model's denoising strength: 0 keeps noise and JPEG artefacts, 1 removes them.
  $("#denoise-control").hidden = !(card && card.denoise);
  $("#denoise-value").textContent = $("#denoise").value;
  const format = catalogue.output_formats.find((f) => f.value === $("#format").value);
  $("#quality-control").hidden = !(format && format.quality);
  if (!card) {
    $("#card").textContent = "Choose a model.";
    return;
  }
  const speed = card.speed_mp_s[String($("#self-ensemble").checked)];
  const rows = [
    ["model", card.resolves_to === card.architecture ? card.resolves_to : `${card.resolves_to} (${card.architecture})`],
    ["Set5 PSNR / SSIM", score(card.scores, "Set5")],
    ["Set14 PSNR / SSIM", score(card.scores, "Set14")],
    ["work per output pixel", card.macs_per_pixel ? `${(card.macs_per_pixel / 1000).toFixed(1)}k MACs` : "–"],
    ["speed here", speed ? `${speed.toFixed(2)} output MP/s` : "not measured yet (after its first image)"],
  ];
  if (speed && lastInput) {
    const megapixels = (lastInput.width * lastInput.height * scale * scale) / 1e6;
    rows.push([`estimate for ${lastInput.name}`, roughly(megapixels / speed)]);
  }
  const table = document.createElement("table");
  for (const [label, value] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = label;
    tr.insertCell().textContent = value;
  }
  $("#card").replaceChildren(table);
}

// ------------------------------------------------------------------ uploads and jobs

function addRow(name) {
  const row = $("#job-template").content.firstElementChild.cloneNode(true);
  row.querySelector(".name").textContent = name;
  $("#jobs").append(row);
  return row;
}

function setStatus(row, text, state) {
  row.querySelector(".status").textContent = text;
  row.className = `job ${state}`;
}

// `file`: the File (or Blob) picked; kept by its row so that "run again" needs no new pick.
async function upload(file, name = file.name) {
  const row = addRow(name);
  setStatus(row, "uploading", "uploading");
  const query = new URLSearchParams({
    model: $("#model").value, scale: $("#scale").value, tile: $("#tile").value,
    self_ensemble: $("#self-ensemble").checked, name, format: $("#format").value,
  });
  if (!$("#denoise-control").hidden) query.set("denoise", $("#denoise").value);
  if (!$("#quality-control").hidden) query.set("quality", $("#quality").value);
  if ($("#width").value) query.set("width", $("#width").value);
  try {
    const job = await api(`/api/jobs?${query}`, {
      method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
    });
    row.dataset.id = job.id;
    row.querySelector(".cancel").onclick = () => api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    row.querySelector(".again").onclick = () => { notice(""); upload(file, name); };
    lastInput = { name: job.name, width: job.input.width, height: job.input.height };
    renderCard();
    poll(row, job);
  } catch (error) {
    setStatus(row, error.message, "error");
    row.querySelector(".cancel").hidden = true;
    notice(fileError(name, error.message));
  }
}

function describe(job) {
  switch (job.state) {
    case "queued": return `waiting (#${job.queue_position})`;
    case "running": {
      const eta = job.eta_s == null ? "" : `, ${roughly(job.eta_s)} left`;
      return `${job.model}, x${job.scale}: ${Math.round(job.progress * 100)}%${eta}`;
    }
    case "done": {
      const out = job.output;
      const notes = out.notes && out.notes.length ? ` (${out.notes.join("; ")})` : "";
      return `${job.model}, x${job.scale}: ${out.width}x${out.height}, ${out.mode}, ${out.format}, ` +
        `${job.seconds.toFixed(1)} s${notes}`;
    }
    default: return job.error || job.state;
  }
}

async function poll(row, job) {
  while (job.state === "queued" || job.state === "running") {
    setStatus(row, describe(job), job.state);
    row.querySelector("progress").value = job.progress;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try {
      job = await api(`/api/jobs/${job.id}`);
    } catch (error) {
      job = { ...job, state: "error", error: error.message };
    }
  }
  setStatus(row, describe(job), job.state);
  row.querySelector("progress").value = job.state === "done" ? 1 : 0;
  row.querySelector(".cancel").hidden = true;
  row.querySelector(".again").hidden = !(job.state === "done" || job.state === "cancelled");
  // The server decodes an upload only when its job runs: a file damaged past its header fails
  // here, as a job, and is said as an upload refused at once is.
  if (job.state === "error") notice(fileError(job.name, job.error || "failed"));
  if (job.state !== "done") return;
  const link = row.querySelector(".download");
  link.href = `/api/jobs/${job.id}/result`;
  link.download = job.output.download_name;
  link.hidden = false;
  const view = row.querySelector(".view");
  view.hidden = false;
  view.onclick = () => show(job);
  show(job);
  updateDownloadAll();
  loadModels(); // the card now has a measured speed
}

// One zip of every finished result on the page, once there are two or more.
function updateDownloadAll() {
  const ids = [...document.querySelectorAll("#jobs .job.done")].map((row) => row.dataset.id).filter(Boolean);
  $("#jobs-bar").hidden = ids.length < 2;
  $("#download-all").href = `/api/jobs/zip?ids=${ids.join(",")}`;
  $("#download-all").textContent = `download all ${ids.length} (zip)`;
}

// ------------------------------------------------------------------ compare view

function show(job) {
  shown = job;
  $("#viewer").hidden = false;
  $("#viewer-name").textContent = `${job.name}: ${job.input.width}x${job.input.height} → ${job.output.width}x${job.output.height}`;
  $("#before-label").textContent = `bicubic x${job.scale}`;
  $("#after-label").textContent = job.model;
  $("#before").src = `/api/jobs/${job.id}/before`;
  $("#after").src = `/api/jobs/${job.id}/after`;
  applyZoom();
  applySplit(split);
}

// "fit": the whole image in the view, width and height; a number: that many screen pixels per
// output pixel (100%: the image's actual pixels, whatever the display's pixel ratio).
function applyZoom() {
  if (!shown) return;
  const { width, height } = shown.output;
  const zoom = $("#zoom").value;
  const stage = $("#stage");
  const view = $("#stage-scroll");
  let factor; // CSS pixels per output pixel
  if (zoom === "fit") {
    stage.style.width = stage.style.height = "0px"; // the view without scroll bars
    factor = Math.min(view.clientWidth / width, view.clientHeight / height);
  } else {
    factor = Number(zoom) / window.devicePixelRatio;
  }
  stage.style.width = `${Math.max(1, Math.floor(width * factor))}px`;
  stage.style.height = `${Math.max(1, Math.floor(height * factor))}px`;
  // Enlarged pixels stay square (judge the model, not the browser); reduced ones are smoothed.
  stage.classList.toggle("pixelated", factor * window.devicePixelRatio >= 1);
}

function applySplit(percent) {
  split = Math.min(100, Math.max(0, Math.round(percent * 10) / 10));
  $("#after-clip").style.clipPath = `inset(0 0 0 ${split}%)`;
  const divider = $("#divider");
  divider.style.left = `${split}%`;
  divider.setAttribute("aria-valuenow", String(split));
  divider.setAttribute("aria-valuetext", `${split}% before`);
}

function splitAt(event) {
  const box = $("#stage").getBoundingClientRect();
  applySplit(((event.clientX - box.left) / box.width) * 100);
}

function wireSplit() {
  const stage = $("#stage");
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    stage.setPointerCapture(event.pointerId);
    $("#divider").focus({ preventScroll: true });
    splitAt(event);
  });
  stage.addEventListener("pointermove", (event) => {
    if (stage.hasPointerCapture(event.pointerId)) splitAt(event);
  });
  const release = (event) => {
    if (stage.hasPointerCapture(event.pointerId)) stage.releasePointerCapture(event.pointerId);
  };
  stage.addEventListener("pointerup", release);
  stage.addEventListener("pointercancel", release);
  $("#divider").addEventListener("keydown", (event) => {
    const step = event.shiftKey ? 10 : 1;
    const moves = {
      ArrowLeft: split - step, ArrowDown: split - step, ArrowRight: split + step, ArrowUp: split + step,
      PageDown: split - 10, PageUp: split + 10, Home: 0, End: 100,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    applySplit(moves[event.key]);
  });
}

// ------------------------------------------------------------------ wiring

function uploadAll(files) {
  notice("");
  for (const file of files) upload(file);
}

document.addEventListener("DOMContentLoaded", () => {
  loadModels().catch((error) => notice(`cannot list the models: ${error.message}`));
  $("#scale").addEventListener("change", () => { buildModelMenu(); renderCard(); });
  for (const id of ["#model", "#self-ensemble", "#format"]) $(id).addEventListener("change", renderCard);
  $("#denoise").addEventListener("input", renderCard);
  $("#files").addEventListener("change", (event) => {
    uploadAll([...event.target.files]);
    event.target.value = ""; // choosing the same file again uploads it again
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    uploadAll([...event.dataTransfer.files]);
  });
  wireSplit();
  $("#zoom").addEventListener("change", applyZoom);
  window.addEventListener("resize", () => { if ($("#zoom").value === "fit") applyZoom(); });
});
