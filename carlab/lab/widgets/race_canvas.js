// The live view's picture, drawn in the browser (carlab/lab/widgets/race_canvas.py says why).
//
// The kernel sends the track's picture once (a PNG, `background`) and then, for every new position
// of the cars, one small binary row per car (`poses`: x, y, speed, angle, five ray distances, as
// float32). This draws the cars with canvas commands, at most drawing.max_fps times a second, and
// glides them from where they are drawn to their newest position over the time between two updates
// ("render interpolation": the picture runs at most one update behind the cars). A car that jumps
// (a crash and a restart, another track) is not glided but put at its new place at once.

const FIELDS = 9; // x, y, speed, angle, 5 rays

function bytesOf(value) {
  // A Bytes trait arrives as a DataView (or an ArrayBuffer): a copy of its bytes, or null if empty.
  if (!value || !value.byteLength) return null;
  const buffer = value.buffer ? value.buffer : value;
  const offset = value.byteOffset || 0;
  return buffer.slice(offset, offset + value.byteLength);
}

function floats(value) {
  const bytes = bytesOf(value);
  return bytes ? new Float32Array(bytes) : new Float32Array(0);
}

function rgb(c, alpha = 1) {
  return `rgba(${c[0]}, ${c[1]}, ${c[2]}, ${alpha})`;
}

function lerpAngle(a, b, t) {
  let d = b - a;
  d = Math.atan2(Math.sin(d), Math.cos(d)); // the short way round
  return a + d * t;
}

function render({ model, el }) {
  const canvas = document.createElement("canvas");
  canvas.className = "carlab-race-canvas";
  canvas.tabIndex = 0; // keyboard driving needs a focusable element
  canvas.style.width = "100%";
  canvas.style.height = "auto";
  canvas.style.display = "block";
  canvas.style.outline = "none";
  el.appendChild(canvas);
  const ctx = canvas.getContext("2d");
  const layer = document.createElement("canvas"); // the track, drawn once per track and size
  const layerCtx = layer.getContext("2d");

  let drawing = model.get("drawing");
  let px = drawing.scale; // canvas px per track px
  let bitmap = null; // the track's picture as sent
  let from = null; // the poses drawn when the newest update arrived
  let to = null; // the newest poses
  let arrived = 0; // when `to` arrived (performance.now(), ms)
  let glide = 40; // ms: a running estimate of the time between updates
  let shown = null; // the poses drawn last
  let nextDraw = 0; // the frame cap: the earliest time of the next drawing
  let dirty = true;
  let alive = true;

  function resize() {
    // Draw at the size the page shows (never above the model's), not at 800x600 scaled down by
    // CSS: fewer pixels to fill and composite per frame, the CPU the trainer shares.
    const width = model.get("width");
    const height = model.get("height");
    const wanted = canvas.clientWidth ? Math.round(canvas.clientWidth * (window.devicePixelRatio || 1)) : width;
    const w = Math.max(1, Math.min(width, wanted));
    const h = Math.max(1, Math.round((w * height) / width));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = layer.width = w;
      canvas.height = layer.height = h;
    }
    px = (drawing.scale * w) / width;
    paintLayer();
  }

  function paintLayer() {
    if (bitmap) layerCtx.drawImage(bitmap, 0, 0, layer.width, layer.height);
    else {
      layerCtx.fillStyle = rgb(drawing.colors.grass);
      layerCtx.fillRect(0, 0, layer.width, layer.height);
    }
    dirty = true;
  }

  async function loadBackground() {
    const bytes = bytesOf(model.get("background"));
    bitmap = bytes ? await createImageBitmap(new Blob([bytes], { type: "image/png" })) : null;
    paintLayer();
  }

  function newPoses() {
    const poses = floats(model.get("poses"));
    const now = performance.now();
    if (to !== null && arrived > 0) {
      // 0.8 old + 0.2 new: steady glides from uneven updates; capped so a pause does not drag.
      glide = Math.min(250, 0.8 * glide + 0.2 * Math.max(5, now - arrived));
    }
    from = shown !== null && shown.length === poses.length ? shown : poses;
    to = poses;
    arrived = now;
    dirty = true;
  }

  function posesAt(now) {
    if (to === null) return null;
    const t = Math.min(1, (now - arrived) / glide);
    if (t >= 1 || from === to) return to;
    const out = new Float32Array(to.length);
    const jump = drawing.jump_px;
    for (let i = 0; i < to.length; i += FIELDS) {
      const dx = to[i] - from[i];
      const dy = to[i + 1] - from[i + 1];
      if (!(dx * dx + dy * dy <= jump * jump)) {
        out.set(to.subarray(i, i + FIELDS), i); // a restart (or a non-finite pose): no glide
        continue;
      }
      for (let k = 0; k < FIELDS; k++) out[i + k] = from[i + k] + (to[i + k] - from[i + k]) * t;
      out[i + 3] = lerpAngle(from[i + 3], to[i + 3], t);
    }
    return out;
  }

  function corners(x, y, angle, length, width) {
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    const s_ = px;
    return [
      [1, 1],
      [1, -1],
      [-1, -1],
      [-1, 1],
    ].map(([u, v]) => {
      const hx = (u * length) / 2;
      const hy = (v * width) / 2;
      return [(x + hx * c - hy * s) * s_, (y + hx * s + hy * c) * s_];
    });
  }

  // Each kind of shape of a set of cars is one path, filled or stroked once: a few canvas calls a
  // frame instead of a few hundred, and overlapping faint cars do not darken each other (as the
  // pygame renderer's translucent layer does not).
  function drawRays(p, cars, color) {
    const dot = Math.max(1.5, 3 * px);
    const lines = new Path2D();
    const dots = new Path2D();
    for (const i of cars) {
      const [x, y, angle] = [p[i], p[i + 1], p[i + 3]];
      drawing.ray_angles_deg.forEach((offset, k) => {
        const dist = p[i + 4 + k];
        if (!Number.isFinite(dist)) return;
        const theta = angle + (offset * Math.PI) / 180;
        const ex = (x + dist * Math.cos(theta)) * px;
        const ey = (y + dist * Math.sin(theta)) * px;
        lines.moveTo(x * px, y * px);
        lines.lineTo(ex, ey);
        dots.moveTo(ex + dot, ey);
        dots.arc(ex, ey, dot, 0, 2 * Math.PI);
      });
    }
    ctx.strokeStyle = ctx.fillStyle = rgb(color);
    ctx.lineWidth = 1;
    ctx.stroke(lines);
    ctx.fill(dots);
  }

  function drawCars(p, cars, color) {
    const bodies = new Path2D();
    const noses = new Path2D();
    for (const i of cars) {
      const [x, y, angle] = [p[i], p[i + 1], p[i + 3]];
      const body = corners(x, y, angle, drawing.car_length, drawing.car_width);
      bodies.moveTo(body[0][0], body[0][1]);
      for (let k = 1; k < 4; k++) bodies.lineTo(body[k][0], body[k][1]);
      bodies.closePath();
      const nose = corners(x, y, angle, drawing.car_length * 0.6, drawing.car_width * 0.8);
      noses.moveTo(nose[0][0], nose[0][1]); // the heading mark across the nose
      noses.lineTo(nose[1][0], nose[1][1]);
    }
    ctx.fillStyle = rgb(color);
    ctx.fill(bodies);
    ctx.strokeStyle = rgb(drawing.colors.car_edge);
    ctx.lineWidth = 1;
    ctx.stroke(bodies);
    ctx.strokeStyle = "rgb(255, 255, 255)";
    ctx.lineWidth = 2;
    ctx.stroke(noses);
  }

  function finite(p, i) {
    for (let k = 0; k < 4; k++) if (!Number.isFinite(p[i + k])) return false;
    return true;
  }

  function drawHud() {
    const lines = model.get("hud");
    if (!lines.length) return;
    ctx.font = "15px sans-serif";
    const width = Math.max(...lines.map((line) => ctx.measureText(line).width)) + 12;
    ctx.fillStyle = "rgba(0, 0, 0, 0.59)";
    ctx.fillRect(4, 4, width, 18 * lines.length + 8);
    ctx.fillStyle = rgb(drawing.colors.hud_text);
    ctx.textBaseline = "top";
    lines.forEach((line, k) => ctx.fillText(line, 10, 9 + 18 * k));
  }

  function draw(now) {
    const p = posesAt(now);
    ctx.drawImage(layer, 0, 0);
    if (p !== null) {
      const highlight = model.get("highlight");
      const cars = p.length / FIELDS;
      const others = [];
      for (let c = 0; c < cars; c++) if (c !== highlight && finite(p, c * FIELDS)) others.push(c * FIELDS);
      ctx.globalAlpha = drawing.others_alpha;
      drawRays(p, others, drawing.colors.ray);
      drawCars(p, others, drawing.colors.other_car);
      ctx.globalAlpha = 1;
      if (highlight >= 0 && highlight < cars && finite(p, highlight * FIELDS)) {
        drawRays(p, [highlight * FIELDS], drawing.colors.ray);
        drawCars(p, [highlight * FIELDS], drawing.colors.car);
      }
    }
    drawHud();
    shown = p;
    return p === to; // settled: nothing moves until the next update
  }

  function tick(now) {
    if (!alive) return;
    // At most drawing.max_fps drawings a second (on average: the next slot counts from the last one,
    // so a 60 Hz page alternates gaps of one and two of its frames rather than always two).
    if ((dirty || (to !== null && shown !== to)) && now >= nextDraw) {
      nextDraw = Math.max(nextDraw + 1000 / drawing.max_fps, now - 1000 / drawing.max_fps);
      dirty = false;
      draw(now);
    }
    requestAnimationFrame(tick);
  }

  resize();
  loadBackground();
  newPoses();
  const observer = new ResizeObserver(resize);
  observer.observe(canvas);
  model.on("change:width", resize);
  model.on("change:height", resize);
  model.on("change:background", loadBackground);
  model.on("change:poses", newPoses);
  model.on("change:hud", () => (dirty = true));
  model.on("change:highlight", () => (dirty = true));
  model.on("change:drawing", () => {
    drawing = model.get("drawing");
    resize();
  });
  requestAnimationFrame(tick);
  return () => {
    alive = false;
    observer.disconnect();
  };
}

export default { render };
