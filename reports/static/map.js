/* autointerp atlas: the 2-D feature map on a canvas, colored by semantic group. No libraries.
 *
 * Points come from <script type="application/json" id="map-data"> (read with JSON.parse, never
 * executed): [id, x, y, group, title]. Titles are shown with textContent only and links are built
 * from integer feature ids. Hover shows a title, click opens the feature, the wheel zooms around the
 * pointer, dragging pans, a double click resets the view.
 */
(function () {
  "use strict";

  var dataEl = document.getElementById("map-data");
  var canvas = document.getElementById("map");
  if (!dataEl || !canvas) return;

  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#2f4b7c", "#a05195", "#d45087", "#665191", "#ffa600", "#003f5c", "#7a9e00",
                 "#00a3a3", "#c2410c", "#6b7280", "#1d4ed8"];
  var NONE = "#b8c0cc";
  var RADIUS = 2.5, HIT = 8, PAD = 16;

  var data = JSON.parse(dataEl.textContent);
  var groupNames = data.groups || {};
  var groupIds = Object.keys(groupNames).map(Number).filter(Number.isSafeInteger).sort(function (a, b) { return a - b; });
  var colorOf = {};
  groupIds.forEach(function (g, i) { colorOf[g] = PALETTE[i % PALETTE.length]; });

  var points = (data.points || []).filter(function (p) {
    return Number.isSafeInteger(p[0]) && p[0] >= 0 && isFinite(p[1]) && isFinite(p[2]);
  });
  var n = points.length;
  var xs = new Float64Array(n), ys = new Float64Array(n), colors = new Array(n);
  var minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (var i = 0; i < n; i++) {
    xs[i] = Number(points[i][1]);
    ys[i] = Number(points[i][2]);
    colors[i] = colorOf[points[i][3]] || NONE;
    minX = Math.min(minX, xs[i]); maxX = Math.max(maxX, xs[i]);
    minY = Math.min(minY, ys[i]); maxY = Math.max(maxY, ys[i]);
  }
  var byColor = {};
  colors.forEach(function (c, k) { (byColor[c] = byColor[c] || []).push(k); });

  var ctx = canvas.getContext("2d");
  var tip = document.getElementById("tip");
  var width = 0, height = 0, ratio = 1;
  var view = { k: 1, ox: 0, oy: 0 };   // screen = (ox + x * k, oy - y * k), in CSS pixels
  var hovered = -1;

  function fit() {
    var spanX = maxX - minX || 1, spanY = maxY - minY || 1;
    view.k = Math.min((width - 2 * PAD) / spanX, (height - 2 * PAD) / spanY);
    view.ox = (width - spanX * view.k) / 2 - minX * view.k;
    view.oy = (height + spanY * view.k) / 2 + minY * view.k;
  }

  function resize() {
    ratio = window.devicePixelRatio || 1;
    width = canvas.clientWidth || 900;
    height = Math.round(width * 0.62);
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.height = height + "px";
  }

  function sx(k) { return view.ox + xs[k] * view.k; }
  function sy(k) { return view.oy - ys[k] * view.k; }

  function draw() {
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    Object.keys(byColor).forEach(function (color) {
      ctx.fillStyle = color;
      ctx.beginPath();
      byColor[color].forEach(function (k) {
        var x = sx(k), y = sy(k);
        if (x >= -RADIUS && x <= width + RADIUS && y >= -RADIUS && y <= height + RADIUS) ctx.rect(x - RADIUS, y - RADIUS, 2 * RADIUS, 2 * RADIUS);
      });
      ctx.fill();
    });
    if (hovered >= 0) {
      ctx.strokeStyle = "#111";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(sx(hovered) - RADIUS - 2, sy(hovered) - RADIUS - 2, 2 * RADIUS + 4, 2 * RADIUS + 4);
    }
  }

  function nearest(x, y) {
    var best = -1, bestD = HIT * HIT;
    for (var k = 0; k < n; k++) {
      var dx = sx(k) - x, dy = sy(k) - y, d = dx * dx + dy * dy;
      if (d <= bestD) { bestD = d; best = k; }
    }
    return best;
  }

  function local(event) {
    var box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  function showTip(k, at) {
    if (k < 0) { tip.hidden = true; return; }
    tip.textContent = "#" + points[k][0] + " " + String(points[k][4]);
    tip.hidden = false;
    tip.style.left = Math.min(at[0] + 12, width - 40) + "px";
    tip.style.top = (at[1] + 12) + "px";
  }

  var drag = null, frame = 0;
  function redraw() {
    if (!frame) frame = window.requestAnimationFrame(function () { frame = 0; draw(); });
  }

  canvas.addEventListener("mousemove", function (event) {
    var at = local(event);
    if (drag) {
      view.ox += at[0] - drag[0];
      view.oy += at[1] - drag[1];
      drag.moved = drag.moved || Math.abs(at[0] - drag[0]) + Math.abs(at[1] - drag[1]) > 2;
      drag[0] = at[0]; drag[1] = at[1];
      redraw();
      return;
    }
    var k = nearest(at[0], at[1]);
    if (k !== hovered) { hovered = k; redraw(); }
    canvas.style.cursor = k >= 0 ? "pointer" : "default";
    showTip(k, at);
  });
  canvas.addEventListener("mouseleave", function () { hovered = -1; showTip(-1); drag = null; redraw(); });
  canvas.addEventListener("mousedown", function (event) { var at = local(event); drag = [at[0], at[1]]; drag.moved = false; });
  window.addEventListener("mouseup", function () { window.setTimeout(function () { drag = null; }, 0); });
  canvas.addEventListener("click", function (event) {
    if (drag && drag.moved) return;
    var at = local(event), k = nearest(at[0], at[1]);
    if (k >= 0) window.location.href = "features/" + String(points[k][0]) + ".html";
  });
  canvas.addEventListener("wheel", function (event) {
    event.preventDefault();
    var at = local(event), factor = Math.exp(-event.deltaY * 0.0015);
    view.ox = at[0] - (at[0] - view.ox) * factor;
    view.oy = at[1] - (at[1] - view.oy) * factor;
    view.k *= factor;
    redraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () { fit(); redraw(); });
  window.addEventListener("resize", function () { resize(); fit(); draw(); });

  var legend = document.getElementById("legend");
  var counts = {};
  points.forEach(function (p) { var g = colorOf[p[3]] ? p[3] : "none"; counts[g] = (counts[g] || 0) + 1; });
  groupIds.concat(["none"]).forEach(function (g) {
    if (!counts[g]) return;
    var li = document.createElement("li");
    var swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = g === "none" ? NONE : colorOf[g];
    li.appendChild(swatch);
    li.appendChild(document.createTextNode(" " + (g === "none" ? "Ungrouped" : String(groupNames[g])) + " (" + counts[g] + ")"));
    legend.appendChild(li);
  });

  // For tests and scripts: where a feature's point is on the page (client coordinates).
  window.atlasMap = {
    count: n,
    locate: function (id) {
      for (var k = 0; k < n; k++) {
        if (points[k][0] === id) {
          var box = canvas.getBoundingClientRect();
          return [box.left + sx(k), box.top + sy(k)];
        }
      }
      return null;
    }
  };

  resize();
  fit();
  draw();
})();
