/* autointerp atlas: the index table (search, sort, filters), keyboard navigation between features, and
 * the playhead that follows each example's player along its activation trace.
 *
 * Data comes from <script type="application/json" id="data"> (never executed, read with JSON.parse).
 * Every string from the database is untrusted: it is inserted with textContent only, and links are
 * built from integer feature ids. Filtering and sorting work on arrays; only the visible slice of
 * rows is turned into DOM (more are appended as the reader scrolls), so 30,000 features stay fast.
 */
(function () {
  "use strict";

  var PAGE = 400;
  var CONF_RANK = { confident: 3, tentative: 2, dead: 1 };

  function isTyping(el) {
    return el && /^(INPUT|SELECT|TEXTAREA|BUTTON|AUDIO|VIDEO)$/.test(el.tagName);
  }

  // Feature pages: left/right arrows go to the previous/next live feature.
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    var search = document.getElementById("q");
    if (event.key === "/" && search && document.activeElement !== search) {
      event.preventDefault();
      search.focus();
      return;
    }
    if (isTyping(event.target)) return;
    var rel = event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : null;
    var link = rel && document.querySelector("a[rel='" + rel + "']");
    if (link) window.location.href = link.href;
  });

  // Feature pages: a playing clip moves a line along the activation trace drawn under its player.
  Array.prototype.forEach.call(document.querySelectorAll("li.example audio"), function (audio) {
    var line = audio.closest("li.example").querySelector("svg.trace line.playhead");
    if (!line) return;
    var width = line.ownerSVGElement.viewBox.baseVal.width;
    var frame = 0;
    function place() {
      var x = audio.duration > 0 ? Math.min(1, audio.currentTime / audio.duration) * width : 0;
      line.setAttribute("x1", x.toFixed(1));
      line.setAttribute("x2", x.toFixed(1));
      line.setAttribute("visibility", audio.currentTime > 0 ? "visible" : "hidden");
      frame = audio.paused ? 0 : window.requestAnimationFrame(place);
    }
    ["play", "seeked", "timeupdate", "pause", "ended"].forEach(function (name) {
      audio.addEventListener(name, function () { if (!frame) place(); });
    });
  });

  var dataEl = document.getElementById("data");
  if (!dataEl) return;

  var data = JSON.parse(dataEl.textContent);
  var col = {};
  data.fields.forEach(function (name, i) { col[name] = i; });
  var rows = data.rows;
  var n = rows.length;
  var groupNames = data.groups || {};
  var binNames = data.bins || {};

  // Precomputed per-row values: search haystacks and display/sort strings.
  var hay = new Array(n), groupText = new Array(n), binText = new Array(n), ids = new Array(n);
  var nDead = 0;
  for (var i = 0; i < n; i++) {
    var r = rows[i];
    ids[i] = Number(r[col.id]);
    hay[i] = (String(r[col.title] || "") + "\n" + String(r[col.description] || "")).toLowerCase();
    var gs = r[col.groups] || [];
    groupText[i] = gs.map(function (g) { return groupNames[g] || ""; }).join(", ");
    binText[i] = r[col.bin] == null ? "" : (binNames[r[col.bin]] || "");
    if (r[col.status] === "dead") nDead++;
  }

  var tbody = document.getElementById("rows");
  var countEl = document.getElementById("count");
  var moreEl = document.getElementById("more");
  var qEl = document.getElementById("q");
  var groupEl = document.getElementById("group");
  var confEl = document.getElementById("confidence");
  var deadEl = document.getElementById("hide-dead");
  var minEl = document.getElementById("score-min");
  var maxEl = document.getElementById("score-max");
  var headers = Array.prototype.slice.call(document.querySelectorAll("#features th[data-key]"));

  var state = { sort: "id", dir: 1 };
  var order = [];   // all row indices, sorted
  var view = [];    // filtered row indices, in sort order
  var shown = 0;

  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  function sortValue(key, i) {
    var r = rows[i];
    switch (key) {
      case "id": return ids[i];
      case "title": return r[col.status] === "dead" || r[col.status] === "unlabeled" ? null : String(r[col.title]);
      case "groups": return groupText[i] || null;
      case "bin": return binText[i] || null;
      case "confidence": return CONF_RANK[r[col.confidence]] || null;
      default: return r[col[key]] == null ? null : Number(r[col[key]]);
    }
  }

  function sortRows() {
    var key = state.sort, dir = state.dir;
    var keys = new Array(n);
    for (var i = 0; i < n; i++) keys[i] = sortValue(key, i);
    order = [];
    for (var j = 0; j < n; j++) order.push(j);
    order.sort(function (a, b) {
      var x = keys[a], y = keys[b];
      if (x === y) return ids[a] - ids[b];
      if (x === null) return 1;      // empty values last, whatever the direction
      if (y === null) return -1;
      var c = typeof x === "string" ? collator.compare(x, y) : x - y;
      return c === 0 ? ids[a] - ids[b] : c * dir;
    });
    headers.forEach(function (th) {
      th.setAttribute("aria-sort", th.dataset.key === key ? (dir > 0 ? "ascending" : "descending") : "none");
    });
  }

  function filterRows() {
    var terms = qEl.value.toLowerCase().split(/\s+/).filter(Boolean);
    var group = groupEl.value, conf = confEl.value, hideDead = deadEl.checked;
    var lo = bound(minEl), hi = bound(maxEl), scored = lo !== null || hi !== null;
    var idTerm = /^#?\d+$/.test(qEl.value.trim()) ? Number(qEl.value.trim().replace("#", "")) : null;
    view = [];
    for (var k = 0; k < n; k++) {
      var i = order[k], r = rows[i];
      if (hideDead && r[col.status] === "dead") continue;
      if (group) {
        var gs = r[col.groups] || [];
        if (group === "none" ? gs.length > 0 : gs.indexOf(Number(group)) < 0) continue;
      }
      if (conf && r[col.confidence] !== conf) continue;
      if (scored) {
        var s = r[col.score];
        if (s == null || (lo !== null && s < lo) || (hi !== null && s > hi)) continue;
      }
      if (terms.length && ids[i] !== idTerm) {
        var h = hay[i], ok = true;
        for (var t = 0; t < terms.length; t++) if (h.indexOf(terms[t]) < 0) { ok = false; break; }
        if (!ok) continue;
      }
      view.push(i);
    }
  }

  function bound(input) {
    var v = input.value.trim() === "" ? NaN : Number(input.value);
    return isFinite(v) ? v : null;
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function fmtRate(d) {
    if (d == null) return "—";
    var p = Number(d) * 100;
    if (p === 0) return "0%";
    return (p < 0.1 ? p.toPrecision(2) : p.toFixed(2)) + "%";
  }

  function fmtNum(x) {
    return x == null ? "—" : String(Number(Number(x).toPrecision(4)));
  }

  function buildRow(i) {
    var r = rows[i], status = r[col.status], id = ids[i];
    var tr = document.createElement("tr");
    tr.className = status;
    cell(tr, String(id), "num fid");
    var title = cell(tr, "", "title");
    if (status !== "dead" && Number.isSafeInteger(id) && id >= 0) {
      var a = document.createElement("a"), text = String(r[col.title]);
      a.href = "features/" + String(id) + ".html";
      // a failed label is no title: "unlabelled" links the page, the reason stands beside it
      var cut = status === "failed" ? text.indexOf(": ") : -1;
      a.textContent = cut >= 0 ? text.slice(0, cut) : text;
      title.appendChild(a);
      if (cut >= 0) {
        var why = document.createElement("span");
        why.className = "muted reason";
        why.textContent = " (" + text.slice(cut + 2) + ")";
        title.appendChild(why);
      }
    } else {
      title.textContent = String(r[col.title]);
    }
    cell(tr, groupText[i], "groups");
    cell(tr, binText[i], "bin");
    var conf = r[col.confidence];
    var ctd = cell(tr, "", "conf-cell");
    if (conf != null) {
      var span = document.createElement("span");
      span.className = "conf" + (CONF_RANK[conf] ? " final-" + conf : "");
      span.textContent = String(conf);
      ctd.appendChild(span);
    }
    var s = r[col.score];
    var std = cell(tr, s == null ? "—" : Number(s).toFixed(2), "num");
    if (s != null) std.classList.add(s >= 0.8 ? "score-good" : s >= 0.65 ? "score-mid" : "score-poor");
    cell(tr, fmtRate(r[col.density]), "num");
    cell(tr, fmtNum(r[col.max_act]), "num");
    return tr;
  }

  function appendMore() {
    var end = Math.min(view.length, shown + PAGE);
    if (end <= shown) return;
    var frag = document.createDocumentFragment();
    for (var k = shown; k < end; k++) frag.appendChild(buildRow(view[k]));
    tbody.appendChild(frag);
    shown = end;
    moreEl.hidden = shown >= view.length;
    moreEl.textContent = "Showing " + shown + " of " + view.length + ": scroll for more";
  }

  function render() {
    tbody.textContent = "";
    shown = 0;
    if (view.length === 0) {
      var tr = document.createElement("tr");
      var td = cell(tr, "No features match.", "empty");
      td.colSpan = headers.length;
      tbody.appendChild(tr);
    }
    appendMore();
    if (view.length === 0) moreEl.hidden = true;
    countEl.textContent = view.length + " of " + n + " features (" + (n - nDead) + " live, " + nDead + " dead)";
    if (window.performance && performance.mark) performance.mark("atlas-render");
  }

  function saveHash() {
    var p = new URLSearchParams();
    if (qEl.value) p.set("q", qEl.value);
    if (groupEl.value) p.set("group", groupEl.value);
    if (confEl.value) p.set("confidence", confEl.value);
    if (deadEl.checked) p.set("hidedead", "1");
    if (bound(minEl) !== null) p.set("min", String(bound(minEl)));
    if (bound(maxEl) !== null) p.set("max", String(bound(maxEl)));
    if (state.sort !== "id" || state.dir !== 1) p.set("sort", (state.dir < 0 ? "-" : "") + state.sort);
    var hash = p.toString();
    history.replaceState(null, "", hash ? "#" + hash : window.location.pathname + window.location.search);
  }

  function loadHash() {
    var p = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    qEl.value = p.get("q") || "";
    var g = p.get("group");
    groupEl.value = g && groupEl.querySelector("option[value='" + (g === "none" ? "none" : String(Number(g))) + "']") ? g : "";
    var c = p.get("confidence");
    confEl.value = c && CONF_RANK[c] ? c : "";
    deadEl.checked = p.get("hidedead") === "1";
    [["min", minEl], ["max", maxEl]].forEach(function (pair) {
      var v = Number(p.get(pair[0]));
      pair[1].value = p.get(pair[0]) !== null && isFinite(v) ? String(v) : "";
    });
    var s = p.get("sort") || "id", key = s.replace(/^-/, "");
    if (!headers.some(function (th) { return th.dataset.key === key; })) { s = "id"; key = "id"; }
    state.sort = key;
    state.dir = s.charAt(0) === "-" ? -1 : 1;
  }

  var pending = 0;
  function update() {
    if (pending) return;
    pending = window.requestAnimationFrame(function () {
      pending = 0;
      filterRows();
      render();
      saveHash();
    });
  }

  headers.forEach(function (th) {
    th.querySelector("button").addEventListener("click", function () {
      var key = th.dataset.key;
      if (state.sort === key) state.dir = -state.dir;
      else { state.sort = key; state.dir = key === "id" || key === "title" || key === "groups" || key === "bin" ? 1 : -1; }
      sortRows();
      update();
    });
  });
  qEl.addEventListener("input", update);
  groupEl.addEventListener("change", update);
  confEl.addEventListener("change", update);
  deadEl.addEventListener("change", update);
  minEl.addEventListener("input", update);
  maxEl.addEventListener("input", update);
  document.getElementById("controls").addEventListener("submit", function (e) { e.preventDefault(); });

  if ("IntersectionObserver" in window) {
    new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) appendMore();
    }, { rootMargin: "600px" }).observe(moreEl);
  }
  moreEl.addEventListener("click", appendMore);

  // The column headers stick just below the sticky controls, whose height depends on the window width.
  var controlsEl = document.getElementById("controls");
  function stickHeaders() {
    var top = controlsEl.offsetHeight + "px";
    headers.forEach(function (th) { th.style.top = top; });
  }
  window.addEventListener("resize", stickHeaders);
  stickHeaders();

  // A link to another view of the index (#group=3&sort=-score) applies it without a reload.
  window.addEventListener("hashchange", function () {
    loadHash();
    sortRows();
    update();
  });

  loadHash();
  sortRows();
  filterRows();
  render();
  if (window.performance && performance.mark) performance.mark("atlas-ready");
})();
