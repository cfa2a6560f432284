// The demo page: photos (dropped, chosen or taken with the camera) go to POST /predict, a few at a
// time; each comes back drawn with its face boxes and, per face, the seven probabilities as bars.
// Plain browser JavaScript, no build step and nothing loaded from elsewhere.
"use strict";

const PARALLEL_UPLOADS = 4;
const BOX_COLOUR = "#22c55e";
const queue = [];
let running = 0;

function $(id) {
  return document.getElementById(id);
}

function fromTemplate(id) {
  return $(id).content.firstElementChild.cloneNode(true);
}

async function showModel() {
  try {
    const response = await fetch("/model");
    const card = await response.json();
    $("model").textContent = `${card.model} · test-time augmentation: ${card.serving_tta} · ${card.classes.length} classes`;
  } catch (error) {
    $("model").textContent = `The server did not answer (${error}).`;
  }
}

function addPhotos(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    const card = fromTemplate("result-template");
    card.querySelector(".name").textContent = file.name || "camera photo";
    $("results").prepend(card);
    queue.push({ file, card });
  }
  pump();
}

function pump() {
  while (running < PARALLEL_UPLOADS && queue.length > 0) {
    const job = queue.shift();
    running += 1;
    predict(job.file, job.card).finally(() => {
      running -= 1;
      pump();
    });
  }
}

async function predict(file, card) {
  const status = card.querySelector(".status");
  const form = new FormData();
  form.append("file", file, file.name || "camera.jpg");
  form.append("detect", $("detect").checked ? "true" : "false");
  if ($("tta").value) form.append("tta", $("tta").value);
  try {
    const [response, bitmap] = await Promise.all([fetch("/predict", { method: "POST", body: form }), createImageBitmap(file).catch(() => null)]);
    const result = await response.json();
    if (!response.ok) throw new Error(result.error || `HTTP ${response.status}`);
    if (bitmap) draw(card.querySelector(".photo"), bitmap, result);
    const found = result.faces.length;
    status.textContent = found === 0 ? "No face found." : `${found} face${found > 1 ? "s" : ""} · ${result.elapsed_ms} ms on the server`;
    for (const face of result.faces) card.querySelector(".faces").append(faceItem(face));
    card.dataset.state = "done";
  } catch (error) {
    status.textContent = `Not classified: ${error.message}`;
    status.classList.add("error");
    card.dataset.state = "error";
  }
}

function draw(canvas, bitmap, result) {
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const scale = bitmap.width / result.width;
  const line = Math.max(2, Math.round(bitmap.width / 300));
  context.lineWidth = line;
  context.font = `${Math.max(14, Math.round(bitmap.width / 35))}px system-ui, sans-serif`;
  context.textBaseline = "bottom";
  for (const face of result.faces) {
    const [x, y, w, h] = face.box.map((v) => v * scale);
    context.strokeStyle = BOX_COLOUR;
    context.strokeRect(x, y, w, h);
    const text = `${face.face + 1} ${face.emotion} ${Math.round(face.confidence * 100)}%`;
    const textHeight = parseInt(context.font, 10) + 6;
    const top = y > textHeight ? y - textHeight : y + h;
    context.fillStyle = BOX_COLOUR;
    context.fillRect(x - line / 2, top, context.measureText(text).width + 10, textHeight);
    context.fillStyle = "#08130c";
    context.fillText(text, x + 5, top + textHeight - 3);
  }
}

function faceItem(face) {
  const item = fromTemplate("face-template");
  item.querySelector(".index").textContent = `Face ${face.face + 1}:`;
  item.querySelector(".emotion").textContent = face.emotion;
  item.querySelector(".confidence").textContent = `${Math.round(face.confidence * 100)}%`;
  for (const [name, probability] of Object.entries(face.probabilities)) {
    const bar = fromTemplate("bar-template");
    bar.dataset.class = name;
    bar.classList.toggle("top", name === face.emotion);
    bar.querySelector(".label").textContent = name;
    bar.querySelector(".fill").style.width = `${(probability * 100).toFixed(1)}%`;
    bar.querySelector(".value").textContent = `${(probability * 100).toFixed(1)}%`;
    item.querySelector(".bars").append(bar);
  }
  return item;
}

function setUpDrop() {
  const drop = $("drop");
  $("files").addEventListener("change", (event) => {
    addPhotos(event.target.files);
    event.target.value = "";
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addPhotos(event.dataTransfer.files);
  });
}

function setUpCamera() {
  const start = $("camera-start");
  const shot = $("camera-shot");
  const stop = $("camera-stop");
  const view = $("camera-view");
  const note = $("camera-note");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    start.disabled = true;
    note.textContent = "No camera here: this browser has none to offer, or the page is not on localhost or https.";
    return;
  }
  const toggle = (on) => {
    start.hidden = on;
    shot.hidden = !on;
    stop.hidden = !on;
    view.hidden = !on;
  };
  start.addEventListener("click", async () => {
    try {
      view.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
      note.textContent = "";
      toggle(true);
    } catch (error) {
      note.textContent = `The camera is not available (${error.name}): drop or choose photos instead.`;
    }
  });
  stop.addEventListener("click", () => {
    for (const track of view.srcObject.getTracks()) track.stop();
    view.srcObject = null;
    toggle(false);
  });
  shot.addEventListener("click", () => {
    const canvas = document.createElement("canvas");
    canvas.width = view.videoWidth;
    canvas.height = view.videoHeight;
    canvas.getContext("2d").drawImage(view, 0, 0);
    canvas.toBlob((blob) => {
      if (blob) addPhotos([new File([blob], `camera-${new Date().toISOString()}.jpg`, { type: "image/jpeg" })]);
    }, "image/jpeg", 0.92);
  });
}

showModel();
setUpDrop();
setUpCamera();
