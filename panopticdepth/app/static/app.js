// The page of `panopticdepth serve`: upload -> poll the job -> draw the pictures, the segment
// table and the 3D point cloud. Binary layouts are documented in panopticdepth/app/views.py.
import * as THREE from 'three';
import { OrbitControls } from '/static/vendor/three/OrbitControls.js';

const $ = (id) => document.getElementById(id);
const POLL_MS = 80;
const VOID_RGB = [90, 90, 90];

const app = {
  info: null,
  run: 0,              // id of the latest submission; older polls stop when it changes
  result: null,        // result JSON of the job shown
  segMap: null,        // Uint16Array (h*w) segment index per display pixel
  depthMap: null,      // Uint16Array (h*w) depth * 256
  overlayBase: null,   // ImageData of the overlay without highlight
  hovered: 0,
  selected: 0,
  cloud: null,         // {pos, seg, rgb, n} in three.js axes
};
window.pdTiming = null;

function setState(s) { document.body.dataset.state = s; }

function showMessage(text) {
  const box = $('message');
  box.textContent = text || '';
  box.hidden = !text;
}

function setProgress(fraction, text) {
  $('progress').hidden = fraction === null;
  if (fraction !== null) $('progress-fill').style.width = `${Math.round(fraction * 100)}%`;
  $('stage').textContent = text || '';
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nextFrame = () => new Promise((r) => requestAnimationFrame(() => r()));

// ---------------------------------------------------------------- start-up
async function init() {
  try {
    const resp = await fetch('/api/info');
    app.info = await resp.json();
  } catch (err) {
    showMessage(`cannot reach the server: ${err}`);
    setState('error');
    return;
  }
  window.pdInfo = app.info.classes;
  $('model-name').textContent = `model: ${app.info.model}`;
  if (app.info.default_intrinsics) {
    $('intrinsics').placeholder = app.info.default_intrinsics;
    $('intrinsics-hint').textContent = `pixels of the uploaded image; empty: the server's --intrinsics ` +
      `(${app.info.default_intrinsics})`;
  }
  const ex = $('examples');
  for (const name of app.info.examples) {
    const img = document.createElement('img');
    img.src = `/api/examples/${encodeURIComponent(name)}`;
    img.alt = img.title = name;
    img.addEventListener('click', async () => {
      const blob = await (await fetch(img.src)).blob();
      submit(blob, name);
    });
    ex.appendChild(img);
  }
  $('examples-box').hidden = app.info.examples.length === 0;
  setupInputs();
  setupViewer();
  setState('idle');
}

function setupInputs() {
  const zone = $('drop-zone');
  $('file-input').addEventListener('change', (ev) => {
    const file = ev.target.files[0];
    if (file) submit(file, file.name);
    ev.target.value = '';
  });
  for (const name of ['dragenter', 'dragover']) {
    zone.addEventListener(name, (ev) => { ev.preventDefault(); zone.classList.add('over'); });
  }
  for (const name of ['dragleave', 'drop']) {
    zone.addEventListener(name, () => zone.classList.remove('over'));
  }
  zone.addEventListener('drop', (ev) => {
    ev.preventDefault();
    const file = ev.dataTransfer.files[0];
    if (file) submit(file, file.name);
  });
  for (const el of document.querySelectorAll('#color-mode input')) el.addEventListener('change', updateCloudColors);
  $('hide-sky').addEventListener('change', rebuildCloud);
  $('max-depth').addEventListener('change', rebuildCloud);
  $('point-size').addEventListener('input', () => { viewer.material.size = Number($('point-size').value); render(); });
  $('view-oblique').addEventListener('click', () => setView('oblique'));
  $('view-camera').addEventListener('click', () => setView('camera'));
  $('view-top').addEventListener('click', () => setView('top'));
}

// ---------------------------------------------------------------- upload and polling
async function submit(blob, name) {
  const run = ++app.run;
  const limit = app.info ? app.info.max_upload_mb * 1e6 : Infinity;
  showMessage('');
  if (blob.size > limit) {
    showMessage(`${name}: ${(blob.size / 1e6).toFixed(1)} MB is more than this server accepts ` +
      `(${app.info.max_upload_mb} MB).`);
    setState('error');
    return;
  }
  setState('busy');
  const t0 = performance.now();
  setProgress(0.05, `uploading ${name}`);
  const params = new URLSearchParams({ name });
  const intr = $('intrinsics').value.trim();
  if (intr) params.set('intrinsics', intr);
  let body;
  try {
    const resp = await fetch(`/api/predict?${params}`, {
      method: 'POST', body: blob, headers: { 'Content-Type': 'application/octet-stream' },
    });
    body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
    if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  } catch (err) {
    return fail(run, `${name}: ${err.message || err}`);
  }
  const jobId = body.job;
  const tUploaded = performance.now();
  let status;
  for (;;) {
    if (run !== app.run) return;  // a newer upload took over
    try {
      status = await (await fetch(`/api/jobs/${jobId}`)).json();
    } catch (err) {
      return fail(run, `lost the server: ${err}`);
    }
    if (status.state === 'done' || status.state === 'error') break;
    if (status.state === 'queued') {
      setProgress(0.15, status.ahead > 0 ? `waiting in the queue: ${status.ahead} image(s) ahead` : 'starting');
    } else {
      setProgress(status.stage.startsWith('preparing') ? 0.6 : 0.35, `${status.stage} (${status.elapsed.toFixed(1)} s)`);
    }
    await sleep(POLL_MS);
  }
  if (status.state === 'error') return fail(run, `${name}: ${status.error}`);
  setProgress(0.85, 'drawing');
  const tFinished = performance.now();
  let phases;
  try {
    phases = await showResult(status.result, run);
  } catch (err) {
    return fail(run, `drawing failed: ${err.message || err}`);
  }
  if (run !== app.run) return;
  await nextFrame();
  await nextFrame();
  finishDrawing();
  const total = performance.now() - t0;
  window.pdTiming = {
    upload_to_drawn_ms: total,
    upload_ms: tUploaded - t0,
    queue_and_inference_ms: tFinished - tUploaded,
    fetch_ms: phases.fetch_ms,
    draw_ms: performance.now() - tFinished - phases.fetch_ms,
    server_s: status.elapsed,
    predict_s: status.result.seconds.predict,
    views_s: status.result.seconds.views,
    size: status.result.size,
  };
  $('timing').textContent = `${name}: ${(total / 1000).toFixed(2)} s from upload to drawn ` +
    `(network ${status.result.seconds.predict.toFixed(2)} s)`;
  setProgress(1, 'done');
  setTimeout(() => { if (run === app.run) setProgress(null); }, 600);
  setState('done');
}

function fail(run, text) {
  if (run !== app.run) return;
  setProgress(null);
  showMessage(text);
  setState('error');
}

async function loadImage(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  return img;
}

async function fetchBuffer(url) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
  return resp.arrayBuffer();
}

// ---------------------------------------------------------------- 2D views
async function showResult(res, run) {
  const tStart = performance.now();
  const a = res.assets;
  const [inputImg, overlayImg, depthImg, pixels, points] = await Promise.all([
    loadImage(a.input), loadImage(a.overlay), a.depth ? loadImage(a.depth) : null,
    fetchBuffer(a.pixels), fetchBuffer(a.points),
  ]);
  const fetchMs = performance.now() - tStart;
  if (run !== app.run) return { fetch_ms: fetchMs };
  app.result = res;
  app.hovered = app.selected = 0;
  const [h, w] = res.display_size;
  app.segMap = new Uint16Array(pixels, 0, h * w);
  app.depthMap = new Uint16Array(pixels, 2 * h * w, h * w);

  $('empty-note').hidden = true;
  $('input-img').src = inputImg.src;
  const pan = $('panoptic-canvas');
  pan.width = w; pan.height = h;
  const pctx = pan.getContext('2d', { willReadFrequently: true });
  pctx.drawImage(overlayImg, 0, 0);
  app.overlayBase = pctx.getImageData(0, 0, w, h);
  const dc = $('depth-canvas');
  dc.width = w; dc.height = h;
  const dctx = dc.getContext('2d');
  if (depthImg) dctx.drawImage(depthImg, 0, 0);
  else { dctx.fillStyle = '#ccc'; dctx.fillRect(0, 0, w, h); }

  const [H, W] = res.size;
  const shown = (H !== h || W !== w) ? `; shown at ${w}x${h}, inference and downloads at full size` : '';
  $('result-info').textContent = `${W}x${H} image, ${res.segments.length} segments, ` +
    `${res.points.toLocaleString()} points${shown}; intrinsics fx,fy,cx,cy = ${res.intrinsics.join(', ')}`;
  drawLegend(res);
  drawColorbar(res);
  drawTable(res);
  drawDownloads(res);
  buildCloud(points, res);
  return { fetch_ms: fetchMs };
}

function drawLegend(res) {
  const box = $('legend');
  box.replaceChildren();
  const total = res.size[0] * res.size[1];
  for (const e of res.legend) {
    const item = document.createElement('span');
    item.innerHTML = `<span class="swatch" style="background:${e.color}"></span>`;
    item.append(`${e.name} ${(100 * e.area / total).toFixed(0)}%`);
    box.appendChild(item);
  }
}

function drawColorbar(res) {
  $('colorbar-box').hidden = !res.depth_range;
  if (!res.depth_range) return;
  $('colorbar').style.background = `linear-gradient(to right, ${res.colorbar.join(', ')})`;
  const ticks = $('colorbar-ticks');
  ticks.replaceChildren();
  const top = res.depth_range;
  // Round ticks: the smallest of these steps that divides the top into at most 7 intervals.
  const step = [1, 2, 5, 10, 15, 20, 25, 50, 100].find((st) => top / st <= 7 && top % st === 0) || top / 4;
  for (let v = 0; v <= top + 1e-9; v += step) {
    const s = document.createElement('span');
    s.style.left = `${(100 * v) / top}%`;
    s.textContent = `${Number(v.toFixed(1))}`;
    ticks.appendChild(s);
  }
}

function fmtDepth(d) { return d === null || d === undefined ? '–' : d.toFixed(2); }

function drawTable(res) {
  const body = $('segments').tBodies[0];
  body.replaceChildren();
  for (const s of res.segments) {
    const tr = document.createElement('tr');
    tr.dataset.index = s.index;
    tr.innerHTML = `<td><span class="swatch" style="background:${s.color}"></span></td>` +
      `<td>${s.name}</td><td>${s.is_thing ? s.instance : '–'}</td><td>${s.score.toFixed(2)}</td>` +
      `<td>${s.area.toLocaleString()}</td><td>${fmtDepth(s.median_depth)}</td>`;
    tr.addEventListener('mouseenter', () => setHover(s.index));
    tr.addEventListener('mouseleave', () => setHover(0));
    tr.addEventListener('click', () => setSelected(app.selected === s.index ? 0 : s.index));
    body.appendChild(tr);
  }
}

function drawDownloads(res) {
  const list = $('downloads');
  list.replaceChildren();
  for (const d of res.downloads) {
    const li = document.createElement('li');
    const link = document.createElement('a');
    link.href = d.url;
    link.download = d.filename;
    link.textContent = d.label;
    link.dataset.kind = d.kind;
    li.appendChild(link);
    list.appendChild(li);
  }
  $('downloads-box').hidden = false;
}

function segmentLabel(k) {
  const s = app.result.segments[k - 1];
  if (!s) return 'void';
  return s.is_thing ? `${s.name} #${s.instance}` : s.name;
}

function pixelAt(canvas, ev) {
  const r = canvas.getBoundingClientRect();
  const x = Math.floor((ev.clientX - r.left) / r.width * canvas.width);
  const y = Math.floor((ev.clientY - r.top) / r.height * canvas.height);
  if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return -1;
  return y * canvas.width + x;
}

function setupPictureEvents() {
  const pan = $('panoptic-canvas');
  pan.addEventListener('mousemove', (ev) => {
    if (!app.segMap) return;
    const i = pixelAt(pan, ev);
    if (i < 0) return;
    const k = app.segMap[i];
    const d = app.depthMap[i] / 256;
    $('pan-readout').textContent = `${segmentLabel(k)}${d > 0 ? `, ${d.toFixed(1)} m` : ''}`;
    setHover(k);
  });
  pan.addEventListener('mouseleave', () => { $('pan-readout').textContent = ''; setHover(0); });
  pan.addEventListener('click', (ev) => {
    const i = pixelAt(pan, ev);
    if (i >= 0) { const k = app.segMap[i]; setSelected(app.selected === k ? 0 : k); }
  });
  const dc = $('depth-canvas');
  dc.addEventListener('mousemove', (ev) => {
    if (!app.depthMap) return;
    const i = pixelAt(dc, ev);
    if (i < 0) return;
    const d = app.depthMap[i] / 256;
    $('depth-readout').textContent = d > 0 ? `${d.toFixed(2)} m (${segmentLabel(app.segMap[i])})` : 'no depth';
  });
  dc.addEventListener('mouseleave', () => { $('depth-readout').textContent = ''; });
}

function activeSegment() { return app.hovered || app.selected; }

function setHover(k) {
  if (app.hovered === k) return;
  app.hovered = k;
  refreshHighlight();
}

function setSelected(k) {
  app.selected = k;
  for (const tr of $('segments').tBodies[0].rows) {
    tr.classList.toggle('selected', Number(tr.dataset.index) === k && k > 0);
  }
  const row = document.querySelector(`#segments tr[data-index="${k}"]`);
  if (row) row.scrollIntoView({ block: 'nearest' });
  refreshHighlight();
}

function refreshHighlight() {
  const k = activeSegment();
  for (const tr of $('segments').tBodies[0].rows) tr.classList.toggle('active', Number(tr.dataset.index) === k && k > 0);
  drawOverlayHighlight(k);
  updateCloudColors();
}

function drawOverlayHighlight(k) {
  if (!app.overlayBase) return;
  const ctx = $('panoptic-canvas').getContext('2d', { willReadFrequently: true });
  if (!k) { ctx.putImageData(app.overlayBase, 0, 0); return; }
  const src = app.overlayBase.data;
  const out = new ImageData(new Uint8ClampedArray(src), app.overlayBase.width, app.overlayBase.height);
  const dst = out.data;
  const seg = app.segMap;
  for (let i = 0, n = seg.length; i < n; i++) {
    if (seg[i] !== k) {
      const o = 4 * i;
      dst[o] = src[o] * 0.3; dst[o + 1] = src[o + 1] * 0.3; dst[o + 2] = src[o + 2] * 0.3;
    }
  }
  ctx.putImageData(out, 0, 0);
}

// ---------------------------------------------------------------- 3D view
const viewer = {};

function setupViewer() {
  const canvas = $('cloud');
  viewer.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
  viewer.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  viewer.scene = new THREE.Scene();
  viewer.scene.background = new THREE.Color(0x15171c);
  viewer.camera = new THREE.PerspectiveCamera(50, 1, 0.05, 2000);
  viewer.controls = new OrbitControls(viewer.camera, canvas);
  viewer.controls.screenSpacePanning = true;
  viewer.controls.addEventListener('change', render);
  viewer.geometry = new THREE.BufferGeometry();
  viewer.material = new THREE.PointsMaterial({ size: 2, sizeAttenuation: false, vertexColors: true });
  viewer.points = new THREE.Points(viewer.geometry, viewer.material);
  viewer.points.frustumCulled = false;
  viewer.scene.add(viewer.points);
  new ResizeObserver(resizeViewer).observe(canvas);
  resizeViewer();
  setupPictureEvents();
}

function resizeViewer() {
  const canvas = $('cloud');
  const w = canvas.clientWidth || 640, h = canvas.clientHeight || 480;
  viewer.renderer.setSize(w, h, false);
  viewer.camera.aspect = w / h;
  viewer.camera.updateProjectionMatrix();
  render();
}

// Wait until the GPU (or the software rasteriser) has really drawn the 3D view: reading a pixel
// back blocks until every queued draw is done.
function finishDrawing() {
  const gl = viewer.renderer.getContext();
  gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
}

// Draw at most once per animation frame however many changes asked for it (a software rasteriser
// takes a noticeable time per draw of ~10^5 points).
let renderQueued = false;
function render() {
  if (renderQueued || !viewer.renderer) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    viewer.renderer.render(viewer.scene, viewer.camera);
  });
}

function buildCloud(buffer, res) {
  const n = res.points;
  const xyz = new Float32Array(buffer, 0, 3 * n);
  const seg = new Uint16Array(buffer, 12 * n, n);
  const rgb = new Uint8Array(buffer, 14 * n, 3 * n);
  // OpenCV camera frame (x right, y down, z forward) -> three.js (x right, y up, z backward).
  const pos = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    pos[3 * i] = xyz[3 * i]; pos[3 * i + 1] = -xyz[3 * i + 1]; pos[3 * i + 2] = -xyz[3 * i + 2];
  }
  // Per-segment colour tables (row 0 = void) for the three colour modes.
  const m = res.segments.length + 1;
  const tables = { class: new Uint8Array(3 * m), instance: new Uint8Array(3 * m) };
  tables.class.set(VOID_RGB, 0); tables.instance.set(VOID_RGB, 0);
  const isSky = new Uint8Array(m);
  for (const s of res.segments) {
    tables.class.set(hexRgb(s.class_color), 3 * s.index);
    tables.instance.set(hexRgb(s.instance_color), 3 * s.index);
    isSky[s.index] = s.name === 'sky' ? 1 : 0;
  }
  app.cloud = { n, pos, seg, rgb, tables, isSky };
  const [h] = res.size;
  const fy = res.intrinsics[1];
  viewer.camera.fov = 2 * Math.atan(h / 2 / fy) * 180 / Math.PI;
  viewer.camera.updateProjectionMatrix();
  rebuildCloud();
  setView('oblique');
}

function hexRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

// Keep the points that pass the filters (sky, max depth); colours follow in updateCloudColors.
function rebuildCloud() {
  const c = app.cloud;
  if (!c) return;
  const hideSky = $('hide-sky').checked;
  const maxDepth = Number($('max-depth').value) || Infinity;
  const keep = new Uint32Array(c.n);
  let k = 0;
  for (let i = 0; i < c.n; i++) {
    if (hideSky && c.isSky[c.seg[i]]) continue;
    if (-c.pos[3 * i + 2] > maxDepth) continue;
    keep[k++] = i;
  }
  c.keep = keep.subarray(0, k);
  const pos = new Float32Array(3 * k);
  for (let j = 0; j < k; j++) {
    const i = c.keep[j];
    pos[3 * j] = c.pos[3 * i]; pos[3 * j + 1] = c.pos[3 * i + 1]; pos[3 * j + 2] = c.pos[3 * i + 2];
  }
  // Where to look and how far to stand: the median point and the 85th percentile of the distances
  // to it, from at most ~4000 of the points (it only places the camera).
  const stride = Math.max(1, Math.floor(k / 4000));
  const m = Math.ceil(k / stride);
  const axes = [new Float32Array(m), new Float32Array(m), new Float32Array(m)];
  for (let j = 0, q = 0; j < k; j += stride, q++) {
    for (let a = 0; a < 3; a++) axes[a][q] = pos[3 * j + a];
  }
  const median = (arr) => arr.slice().sort()[Math.floor(arr.length / 2)];
  c.center = k ? new THREE.Vector3(median(axes[0]), median(axes[1]), median(axes[2])) : new THREE.Vector3(0, 0, -10);
  const dist = new Float32Array(m);
  for (let q = 0; q < m; q++) {
    dist[q] = Math.hypot(axes[0][q] - c.center.x, axes[1][q] - c.center.y, axes[2][q] - c.center.z);
  }
  c.radius = k ? Math.max(1, dist.sort()[Math.floor(0.85 * (m - 1))]) : 10;
  viewer.geometry.setAttribute('position', new THREE.BufferAttribute(pos, 3));
  viewer.geometry.setAttribute('color', new THREE.BufferAttribute(new Uint8Array(3 * k), 3, true));
  viewer.geometry.computeBoundingSphere();
  $('cloud-info').textContent = `${k.toLocaleString()} of ${c.n.toLocaleString()} points`;
  updateCloudColors();
}

function updateCloudColors() {
  const c = app.cloud;
  if (!c || !c.keep) return;
  const mode = document.querySelector('#color-mode input:checked').value;
  const attr = viewer.geometry.getAttribute('color');
  const col = attr.array;
  const active = activeSegment();
  const table = c.tables[mode];
  for (let j = 0, k = c.keep.length; j < k; j++) {
    const i = c.keep[j];
    const s = c.seg[i];
    let r, g, b;
    if (mode === 'image') { r = c.rgb[3 * i]; g = c.rgb[3 * i + 1]; b = c.rgb[3 * i + 2]; }
    else { r = table[3 * s]; g = table[3 * s + 1]; b = table[3 * s + 2]; }
    if (active) {
      if (s === active) { r = 0.5 * r + 127; g = 0.5 * g + 127; b = 0.5 * b + 127; }  // lighten
      else { r *= 0.22; g *= 0.22; b *= 0.22; }
    }
    col[3 * j] = r; col[3 * j + 1] = g; col[3 * j + 2] = b;
  }
  attr.needsUpdate = true;
  render();
}

function setView(kind) {
  const c = app.cloud;
  const target = c ? c.center.clone() : new THREE.Vector3(0, 0, -10);
  const radius = c ? c.radius : 10;
  const cam = viewer.camera;
  // Far enough back for the bulk of the cloud to fill the view at the camera's field of view.
  const fit = (0.6 * radius) / Math.tan((cam.fov * Math.PI) / 360);
  if (kind === 'camera') {
    cam.position.set(0, 0, 0);  // the photo's viewpoint
    target.set(0, 0, Math.min(target.z, -1));
  } else if (kind === 'top') {
    cam.position.set(target.x, target.y + fit, target.z + 0.001 * fit);
  } else {
    const dir = new THREE.Vector3(0.25, 0.5, 1).normalize();  // above, behind and beside the camera
    cam.position.copy(target).addScaledVector(dir, fit);
  }
  viewer.controls.target.copy(target);
  cam.lookAt(target);
  viewer.controls.update();
  render();
}

init();
