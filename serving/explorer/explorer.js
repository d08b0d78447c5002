// The keras-vae explorer: samples, a drawn digit's reconstruction, score and latent
// position, and an interpolation between two drawings. Plain ES module, no framework:
// everything comes from the service's public HTTP API (see /openapi.json).

const SIDE = 28; // the model's images are 28 × 28 grey values in [0, 1]
const BOX = 20; // MNIST digits fit a 20 × 20 box, centred by centre of mass in 28 × 28
const STROKE = 22; // pen width on the 280-pixel pad: MNIST strokes are 2–3 of 28 pixels
const FAINT = 0.1; // a sampled digit's pixels below this are background on a pad
const SAMPLES = 16;
const SAMPLE_SCALE = 3; // screen pixels per model pixel in the sample grid
const STRIP_SCALE = 3;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- the service

/** An answer that was not 2xx: its message is the service's own `{"error"}`. */
class ServiceError extends Error {}

/**
 * One request to the service. Resolves to the JSON answer (or a Blob when `blob` is
 * set); rejects with a ServiceError that quotes the service's error message.
 */
async function call(method, path, body, { blob = false } = {}) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ServiceError(`${method} ${path}: the service did not answer (${error.message})`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const payload = await response.json();
      if (payload && typeof payload.error === "string") message = payload.error;
    } catch {
      // not JSON: the status line is all there is
    }
    throw new ServiceError(`${method} ${path} (${response.status}): ${message}`);
  }
  return blob ? response.blob() : response.json();
}

// ---------------------------------------------------------------- status and busy

function showError(error) {
  const status = $("status");
  status.textContent = error instanceof ServiceError ? error.message : `Error: ${error.message}`;
  status.hidden = false;
}

function clearError() {
  const status = $("status");
  status.hidden = true;
  status.textContent = "";
}

/** Runs `work` with `buttons` disabled; any failure is shown, never swallowed. */
async function busy(buttons, work) {
  buttons.forEach((button) => (button.disabled = true));
  try {
    clearError();
    await work();
  } catch (error) {
    showError(error);
  } finally {
    buttons.forEach((button) => (button.disabled = false));
  }
}

// ---------------------------------------------------------------- pictures

/** Draws [28][28][1] (or [28][28]) values in [0, 1] onto a 28 × 28 canvas. */
function paint(canvas, image) {
  const context = canvas.getContext("2d");
  const picture = context.createImageData(SIDE, SIDE);
  for (let row = 0; row < SIDE; row++) {
    for (let column = 0; column < SIDE; column++) {
      const cell = image[row][column];
      const value = Math.round(255 * Math.min(1, Math.max(0, Array.isArray(cell) ? cell[0] : cell)));
      const at = 4 * (row * SIDE + column);
      picture.data.set([value, value, value, 255], at);
    }
  }
  context.putImageData(picture, 0, 0);
}

/** Shows a PNG answer in an <img>, releasing the previous one. */
function showBlob(img, blob) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  img.hidden = false;
}

// ---------------------------------------------------------------- drawing pads

/** A canvas the user draws on with a mouse, a pen or a finger (pointer events). */
class Pad {
  constructor(canvas) {
    this.canvas = canvas;
    this.context = canvas.getContext("2d", { willReadFrequently: true });
    this.last = null;
    this.clear();
    canvas.addEventListener("pointerdown", (event) => this.down(event));
    canvas.addEventListener("pointermove", (event) => this.move(event));
    for (const kind of ["pointerup", "pointercancel", "lostpointercapture"]) {
      canvas.addEventListener(kind, () => (this.last = null));
    }
  }

  clear() {
    this.context.fillStyle = "#000";
    this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.empty = true;
  }

  point(event) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.canvas.height) / rect.height,
    };
  }

  down(event) {
    event.preventDefault();
    this.canvas.setPointerCapture(event.pointerId);
    this.last = this.point(event);
    this.line(this.last, this.last);
  }

  move(event) {
    if (this.last === null) return;
    const next = this.point(event);
    this.line(this.last, next);
    this.last = next;
  }

  line(from, to) {
    const context = this.context;
    context.strokeStyle = "#fff";
    context.lineWidth = STROKE;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(from.x, from.y);
    context.lineTo(to.x, to.y);
    context.stroke();
    this.empty = false;
  }

  /**
   * Shows a [28][28][1] image as if drawn, each model pixel a square of the pad. Values
   * below FAINT are left black, so that the ink's bounding box is the digit's, not the
   * whole picture (a decoder's background is small, not zero).
   */
  show(image) {
    this.clear();
    const cell = this.canvas.width / SIDE;
    for (let row = 0; row < SIDE; row++) {
      for (let column = 0; column < SIDE; column++) {
        const value = image[row][column][0];
        if (value < FAINT) continue;
        const grey = Math.round(255 * Math.min(1, value));
        this.context.fillStyle = `rgb(${grey}, ${grey}, ${grey})`;
        this.context.fillRect(column * cell, row * cell, cell, cell);
        this.empty = false;
      }
    }
  }

  /** The drawing as the model's input, [28][28][1] in [0, 1]; null when blank. */
  image() {
    if (this.empty) return null;
    const { width, height } = this.canvas;
    return toMnist(this.context.getImageData(0, 0, width, height));
  }
}

/**
 * MNIST's own preprocessing: the ink's bounding box scaled (aspect kept) into a
 * 20 × 20 box by area averaging, then placed so that its centre of mass is the
 * centre of the 28 × 28 image. Returns null when there is no ink.
 */
function toMnist(picture) {
  const { width, height, data } = picture;
  const ink = new Float32Array(width * height);
  let top = height, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const value = data[4 * (y * width + x)] / 255;
      if (value > 0) {
        ink[y * width + x] = value;
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
        left = Math.min(left, x);
        right = Math.max(right, x);
      }
    }
  }
  if (bottom < 0) return null;
  const scale = BOX / Math.max(bottom - top + 1, right - left + 1);
  const area = scale * scale; // each source pixel covers this much of a target pixel
  let mass = 0, massX = 0, massY = 0;
  for (let y = top; y <= bottom; y++) {
    for (let x = left; x <= right; x++) {
      const value = ink[y * width + x];
      mass += value;
      massX += value * (x - left + 0.5) * scale;
      massY += value * (y - top + 0.5) * scale;
    }
  }
  const shiftX = SIDE / 2 - massX / mass;
  const shiftY = SIDE / 2 - massY / mass;
  const out = new Float32Array(SIDE * SIDE);
  for (let y = top; y <= bottom; y++) {
    const row = Math.floor((y - top + 0.5) * scale + shiftY);
    if (row < 0 || row >= SIDE) continue;
    for (let x = left; x <= right; x++) {
      const column = Math.floor((x - left + 0.5) * scale + shiftX);
      if (column >= 0 && column < SIDE) out[row * SIDE + column] += ink[y * width + x] * area;
    }
  }
  const image = [];
  for (let row = 0; row < SIDE; row++) {
    const line = [];
    for (let column = 0; column < SIDE; column++) {
      line.push([Math.round(Math.min(1, out[row * SIDE + column]) * 1000) / 1000]);
    }
    image.push(line);
  }
  return image;
}

// ---------------------------------------------------------------- samples

async function sample() {
  const temperature = Number($("temperature").value);
  const seed = Number($("seed").value);
  const path = `/v1/sample?format=png&scale=${SAMPLE_SCALE}`;
  const blob = await call("POST", path, { n: SAMPLES, temperature, seed }, { blob: true });
  const img = $("samples");
  img.alt = `${SAMPLES} digits sampled at temperature ${temperature}, seed ${seed}`;
  showBlob(img, blob);
}

/** One digit from the model onto a pad: the way to fill a pad without a pointer. */
async function fill(pad) {
  const seed = Math.floor(Math.random() * 1_000_000);
  const answer = await call("POST", "/v1/sample", { n: 1, seed });
  pad.show(answer.images[0]);
}

// ---------------------------------------------------------------- analysis

let reference; // the test-set histogram: undefined until asked, null when there is none
let referenceNote = "";

async function loadReference() {
  if (reference !== undefined) return reference;
  try {
    reference = await call("GET", "/v1/score/reference");
  } catch (error) {
    // A version exported without a reference still scores; say why there is no histogram.
    reference = null;
    referenceNote = error.message;
  }
  return reference;
}

const latents = { A: null, B: null }; // posterior means of the drawings analysed

async function analyse(name, pad) {
  const image = pad.image();
  if (image === null) throw new Error(`draw a digit on pad ${name} first`);
  paint($("seen"), image);
  const histogram = await loadReference();
  const scoreBody = { images: [image], seed: 0 };
  if (histogram) scoreBody.k = histogram.k; // the K the reference was measured with
  const [reconstructed, scored] = await Promise.all([
    call("POST", "/v1/reconstruct", { images: [image] }),
    call("POST", "/v1/score", scoreBody),
  ]);
  $("analysis").hidden = false;
  paint($("reconstruction"), reconstructed.images[0]);
  const nats = (value) => `${value.toFixed(1)}`;
  $("log-likelihood").textContent = nats(scored.log_likelihood[0]);
  $("elbo").textContent = nats(scored.elbo[0]);
  $("reconstruction-term").textContent = nats(scored.reconstruction[0]);
  $("kl").textContent = nats(scored.kl[0]);
  drawHistogram($("histogram"), histogram, scored.log_likelihood[0]);
  latents[name] = reconstructed.z[0];
  drawLatent($("latent"), latents, name);
}

/** The share of the reference below `value`, linear within its bin, in [0, 1]. */
function percentile(histogram, value) {
  const { bin_edges: edges, counts } = histogram;
  const total = counts.reduce((sum, count) => sum + count, 0);
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    if (value >= edges[i + 1]) below += counts[i];
    else if (value > edges[i]) below += (counts[i] * (value - edges[i])) / (edges[i + 1] - edges[i]);
  }
  return below / total;
}

function drawHistogram(canvas, histogram, value) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  canvas.hidden = !histogram;
  if (!histogram) {
    $("percentile").textContent = "no reference";
    $("histogram-caption").textContent = `No test-set histogram: ${referenceNote}`;
    return;
  }
  const { bin_edges: edges, counts } = histogram;
  const share = percentile(histogram, value);
  $("percentile").textContent =
    share <= 0 ? "below every test image" : share >= 1 ? "above every test image" : `${(100 * share).toFixed(1)} %`;
  $("histogram-caption").textContent =
    `log p(x) of ${histogram.images.toLocaleString("en")} ${histogram.dataset} test images (K = ${histogram.k}); the line is this drawing`;
  const pad = { left: 8, right: 8, top: 10, bottom: 24 };
  const low = Math.min(edges[0], value);
  const high = Math.max(edges[edges.length - 1], value);
  const x = (v) => pad.left + ((v - low) / (high - low || 1)) * (width - pad.left - pad.right);
  const tallest = Math.max(...counts, 1);
  const y = (count) => height - pad.bottom - (count / tallest) * (height - pad.top - pad.bottom);
  context.fillStyle = "#8fb3de";
  counts.forEach((count, i) => {
    const left = x(edges[i]);
    context.fillRect(left, y(count), Math.max(1, x(edges[i + 1]) - left - 0.5), y(0) - y(count));
  });
  context.strokeStyle = "#57606a";
  context.beginPath();
  context.moveTo(pad.left, y(0) + 0.5);
  context.lineTo(width - pad.right, y(0) + 0.5);
  context.stroke();
  context.fillStyle = "#1b1f24";
  context.font = "11px system-ui, sans-serif";
  context.textAlign = "left";
  context.fillText(low.toFixed(0), pad.left, height - 8);
  context.textAlign = "right";
  context.fillText(`${high.toFixed(0)} nats`, width - pad.right, height - 8);
  context.strokeStyle = "#c62828";
  context.lineWidth = 2;
  context.beginPath();
  context.moveTo(x(value), pad.top - 6);
  context.lineTo(x(value), y(0));
  context.stroke();
}

const COLOURS = { A: "#c62828", B: "#0b62c4" };

/** A 2-D latent space as a scatter over the prior's 1σ/2σ/3σ circles; more as bars. */
function drawLatent(canvas, points, current) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const shown = Object.entries(points).filter(([, z]) => z !== null);
  const size = shown.length ? shown[0][1].length : 0;
  const limit = Math.max(4, ...shown.flatMap(([, z]) => z.map((v) => Math.abs(v) * 1.1)));
  context.font = "11px system-ui, sans-serif";
  if (size === 2) {
    const half = width / 2;
    const at = (v) => half + (v / limit) * (half - 8);
    context.strokeStyle = "#d0d7de";
    for (const radius of [1, 2, 3]) {
      context.beginPath();
      context.arc(half, half, (radius / limit) * (half - 8), 0, 2 * Math.PI);
      context.stroke();
    }
    context.beginPath();
    context.moveTo(0, half); context.lineTo(width, half);
    context.moveTo(half, 0); context.lineTo(half, height);
    context.stroke();
    for (const [name, z] of shown) {
      context.fillStyle = COLOURS[name];
      context.beginPath();
      context.arc(at(z[0]), height - at(z[1]), name === current ? 6 : 4, 0, 2 * Math.PI);
      context.fill();
      context.fillText(name, at(z[0]) + 8, height - at(z[1]) - 6);
    }
    $("latent-caption").textContent = `Latent position, z₁ → and z₂ ↑ (circles: 1, 2, 3 σ of the prior)`;
    return;
  }
  // One pair of bars per dimension: A above B, from zero to the posterior mean.
  const rowHeight = Math.max(3, Math.floor((height - 10) / Math.max(size, 1)));
  const middle = width / 2;
  const scale = (middle - 10) / limit;
  context.strokeStyle = "#57606a";
  context.beginPath();
  context.moveTo(middle + 0.5, 0); context.lineTo(middle + 0.5, height);
  context.stroke();
  shown.forEach(([name, z], which) => {
    context.fillStyle = COLOURS[name];
    z.forEach((v, dimension) => {
      const top = 5 + dimension * rowHeight + (which * rowHeight) / 2;
      context.fillRect(Math.min(middle, middle + v * scale), top, Math.abs(v * scale), rowHeight / 2 - 1);
    });
  });
  $("latent-caption").textContent =
    `Latent position: z's ${size} dimensions (±${limit.toFixed(1)}), A red, B blue`;
}

// ---------------------------------------------------------------- interpolation

async function interpolate(pads) {
  const images = pads.map(([name, pad]) => {
    const image = pad.image();
    if (image === null) throw new Error(`draw a digit on pad ${name} first: the path goes from A to B`);
    return image;
  });
  const body = { images, steps: Number($("steps").value), method: $("path").value };
  const blob = await call("POST", `/v1/interpolate?format=png&scale=${STRIP_SCALE}`, body, { blob: true });
  const strip = $("strip");
  strip.alt = `${body.steps} digits decoded along the ${body.method} path from A to B`;
  showBlob(strip, blob);
}

// ---------------------------------------------------------------- wiring

async function describeModel() {
  const ready = await call("GET", "/readyz");
  const decoder = ready.models.vae_decoder;
  const latent = decoder ? decoder.latest.input.shape[1] : "?";
  const version = decoder ? decoder.latest.version : "?";
  $("model").textContent = `Model version ${version}, ${latent}-dimensional latent space.`;
}

function main() {
  const pads = [["A", new Pad($("pad-a"))], ["B", new Pad($("pad-b"))]];
  const form = $("sample-form");
  const sampleButtons = [...form.querySelectorAll("button")];
  const temperature = $("temperature");
  const slider = $("temperature-range");

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(sampleButtons, sample);
  });
  slider.addEventListener("input", () => (temperature.value = slider.value));
  slider.addEventListener("change", () => busy(sampleButtons, sample));
  temperature.addEventListener("input", () => (slider.value = temperature.value));
  $("new-seed").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * 1_000_000);
    busy(sampleButtons, sample);
  });

  const analyseButtons = [$("analyse-a"), $("analyse-b")];
  pads.forEach(([name, pad], index) => {
    $(`clear-${name.toLowerCase()}`).addEventListener("click", () => pad.clear());
    const filler = $(`fill-${name.toLowerCase()}`);
    filler.addEventListener("click", () => busy([filler], () => fill(pad)));
    analyseButtons[index].addEventListener("click", () => busy(analyseButtons, () => analyse(name, pad)));
  });

  const interpolateForm = $("interpolate-form");
  interpolateForm.addEventListener("submit", (event) => {
    event.preventDefault();
    busy([$("interpolate")], () => interpolate(pads));
  });

  busy(sampleButtons, async () => {
    await describeModel();
    await sample();
  });
}

main();
