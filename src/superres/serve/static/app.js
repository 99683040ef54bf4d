// superres serve: the page's only script. It talks to this server's /api alone (the server's
// Content-Security-Policy would block anything else): upload, poll, cancel, compare, download.
"use strict";

const $ = (selector) => document.querySelector(selector);
const POLL_MS = 250;
let catalogue = { models: [], scales: [], limits: {}, upload: { accept: "", formats: "" } };
let shown = null; // the job in the compare view

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

// ------------------------------------------------------------------ settings and model card

async function loadModels() {
  const selected = $("#model").value;
  catalogue = await api("/api/models");
  if (!$("#scale").options.length) {
    for (const scale of catalogue.scales) $("#scale").add(new Option(`x${scale}`, scale));
  }
  $("#model").replaceChildren(...catalogue.models.map((m) => new Option(m.name, m.name)));
  if (selected) $("#model").value = selected;
  const mib = Math.round((catalogue.limits.max_upload_bytes / 2 ** 20) * 10) / 10;
  const mp = catalogue.limits.max_pixels / 1e6;
  // The formats come from the server's format table, as the 415 it answers for any other.
  $("#files").accept = catalogue.upload.accept;
  $("#limits").textContent =
    `${catalogue.upload.formats}; up to ${mib} MiB and ${mp.toFixed(1)} MP each. Running on ${catalogue.device}.`;
  renderCard();
}

function score(scores, set) {
  const s = scores[set];
  return s ? `${s.psnr.toFixed(2)} dB / ${s.ssim.toFixed(4)}` : "–";
}

function renderCard() {
  const model = catalogue.models.find((m) => m.name === $("#model").value);
  const card = model && model.scales[$("#scale").value];
  // A real-world model's denoising strength: 0 keeps noise and JPEG artefacts, 1 removes them.
  $("#denoise-control").hidden = !(card && card.denoise);
  $("#denoise-value").textContent = $("#denoise").value;
  if (!card) {
    $("#card").textContent = "This model does not ship for this scale.";
    return;
  }
  const speed = card.speed_mp_s[String($("#self-ensemble").checked)];
  const rows = [
    ["model", card.resolves_to === card.architecture ? card.resolves_to : `${card.resolves_to} (${card.architecture})`],
    ["Set5 PSNR / SSIM", score(card.scores, "Set5")],
    ["Set14 PSNR / SSIM", score(card.scores, "Set14")],
    ["work per output pixel", card.macs_per_pixel ? `${(card.macs_per_pixel / 1000).toFixed(1)}k MACs` : "–"],
    ["speed here", speed ? `${speed.toFixed(2)} output MP/s` : "not measured yet"],
  ];
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

async function upload(file) {
  const row = addRow(file.name);
  setStatus(row, "uploading", "uploading");
  const query = new URLSearchParams({
    model: $("#model").value, scale: $("#scale").value, tile: $("#tile").value,
    self_ensemble: $("#self-ensemble").checked, name: file.name,
  });
  if (!$("#denoise-control").hidden) query.set("denoise", $("#denoise").value);
  try {
    const job = await api(`/api/jobs?${query}`, {
      method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
    });
    row.dataset.id = job.id;
    row.querySelector(".cancel").onclick = () => api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    poll(row, job);
  } catch (error) {
    setStatus(row, error.message, "error");
    row.querySelector(".cancel").hidden = true;
    notice(`${file.name}: ${error.message}`);
  }
}

function describe(job) {
  switch (job.state) {
    case "queued": return `waiting (#${job.queue_position})`;
    case "running": return `${job.model}, x${job.scale}: ${Math.round(job.progress * 100)}%`;
    case "done": return `${job.output.width}x${job.output.height}, ${job.output.mode}, ${job.seconds.toFixed(1)} s`;
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
  if (job.state !== "done") return;
  const link = row.querySelector(".download");
  link.href = `/api/jobs/${job.id}/result`;
  link.download = job.output.download_name;
  link.hidden = false;
  const view = row.querySelector(".view");
  view.hidden = false;
  view.onclick = () => show(job);
  show(job);
  loadModels(); // the card now has a measured speed
}

// ------------------------------------------------------------------ compare view

function show(job) {
  shown = job;
  $("#viewer").hidden = false;
  $("#viewer-name").textContent = `${job.name}: ${job.input.width}x${job.input.height} → ${job.output.width}x${job.output.height}`;
  $("#before").src = `/api/jobs/${job.id}/before`;
  $("#after").src = `/api/jobs/${job.id}/after`;
  applyZoom();
  applySlider();
}

function applyZoom() {
  if (!shown) return;
  const { width, height } = shown.output;
  const zoom = $("#zoom").value;
  const stage = $("#stage");
  // Zoom counts output pixels: 2x shows each upscaled pixel as a 2x2 square (pixelated).
  stage.style.width = zoom === "fit" ? "100%" : `${width * Number(zoom)}px`;
  stage.style.aspectRatio = `${width} / ${height}`;
}

function applySlider() {
  const percent = $("#slider").value;
  $("#after-clip").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("#divider").style.left = `${percent}%`;
}

// ------------------------------------------------------------------ wiring

function uploadAll(files) {
  notice("");
  for (const file of files) upload(file);
}

document.addEventListener("DOMContentLoaded", () => {
  loadModels().catch((error) => notice(`cannot list the models: ${error.message}`));
  for (const id of ["#model", "#scale", "#self-ensemble"]) $(id).addEventListener("change", renderCard);
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
  $("#slider").addEventListener("input", applySlider);
  $("#zoom").addEventListener("change", applyZoom);
});
