// PathoFlash heatmap viewer: pan/zoom over an embedded slide pyramid with the tumor heatmap on top.
// Vanilla JS, no network: everything comes from the JSON block #pf-data written by pathoflash.export.viewer.
// All drawing happens in level-0 pixel coordinates through the canvas transform.
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("pf-data").textContent);
  var canvas = document.getElementById("pf-canvas");
  var ctx = canvas.getContext("2d");
  var slide = data.slide;            // {width, height, mpp: [x, y]}  (level 0)
  var levels = data.levels;          // finest first: {width, height, px: [x, y], tile, cols, rows, tiles: [uri|null]}
  var hm = data.heatmap;             // {rows, cols, origin: [x, y], px: [x, y], mpp, data (base64 zlib uint8; 255 = none)}
  var lut = data.lut;                // 256 × [r, g, b]
  var NO_DATA = 255, LEVELS = 254;   // heatmap byte q ↔ probability q / 254

  var view = { cx: slide.width / 2, cy: slide.height / 2, zoom: 1 };  // zoom: CSS px per level-0 px
  var state = { opacity: data.opacity, threshold: data.threshold, ready: false };
  var probs = null;                  // Uint8Array rows × cols once decoded
  var overlay = document.createElement("canvas");
  var images = levels.map(function (level) { return new Array(level.tiles.length); });
  var drawPending = false;

  // ---- heatmap -------------------------------------------------------------------------------------
  function base64ToBytes(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  // A small synchronous zlib/DEFLATE decoder (RFC 1950/1951, Adler-32 checked): canonical Huffman codes
  // decoded bit by bit.
  // Synchronous on purpose: the page is complete as soon as its images load (no stream plumbing to await),
  // and it needs no DecompressionStream (older Safari lacks it).
  var LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
  var LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
  var DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
    4097, 6145, 8193, 12289, 16385, 24577];
  var DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
  var CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

  function huffman(lengths) {  // → {counts[len], symbols sorted by (len, symbol)}
    var counts = new Uint16Array(16), offsets = new Uint16Array(16), symbols = new Uint16Array(lengths.length);
    for (var i = 0; i < lengths.length; i++) counts[lengths[i]]++;
    counts[0] = 0;
    for (var len = 1; len < 16; len++) offsets[len] = offsets[len - 1] + counts[len - 1];
    for (var s = 0; s < lengths.length; s++) if (lengths[s]) symbols[offsets[lengths[s]]++] = s;
    return { counts: counts, symbols: symbols };
  }

  function adler32(bytes) {
    var a = 1, b = 0;
    for (var i = 0; i < bytes.length;) {
      for (var end = Math.min(bytes.length, i + 5552); i < end; i++) { a += bytes[i]; b += a; }
      a %= 65521; b %= 65521;
    }
    return ((b << 16) | a) >>> 0;
  }

  function inflate(input, expectedLength) {
    if (input.length < 2 || (input[0] & 15) !== 8 || ((input[0] << 8) | input[1]) % 31 !== 0) {
      throw new Error("heatmap data is not a zlib stream");
    }
    var out = new Uint8Array(expectedLength), op = 0;
    var pos = 2, bitBuf = 0, bitCount = 0;
    function bits(n) {
      while (bitCount < n) {
        if (pos >= input.length) throw new Error("heatmap data is truncated");
        bitBuf |= input[pos++] << bitCount;
        bitCount += 8;
      }
      var value = bitBuf & ((1 << n) - 1);
      bitBuf >>>= n;
      bitCount -= n;
      return value;
    }
    function decode(table) {
      var code = 0, first = 0, index = 0;
      for (var len = 1; len < 16; len++) {
        code |= bits(1);
        var count = table.counts[len];
        if (code < first + count) return table.symbols[index + code - first];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
      }
      throw new Error("heatmap data has an invalid Huffman code");
    }
    function put(byte) {
      if (op >= expectedLength) throw new Error("heatmap data is longer than " + expectedLength + " values");
      out[op++] = byte;
    }
    var fixedLit = null, fixedDist = null, last = 0;
    while (!last) {
      last = bits(1);
      var type = bits(2), lit, dist;
      if (type === 0) {  // stored
        bitBuf = 0; bitCount = 0;
        var n = input[pos] | (input[pos + 1] << 8);
        pos += 4;
        if (pos + n > input.length) throw new Error("heatmap data is truncated");
        for (var k = 0; k < n; k++) put(input[pos++]);
        continue;
      } else if (type === 1) {  // fixed Huffman codes
        if (!fixedLit) {
          var l = new Uint8Array(288);
          l.fill(8, 0, 144); l.fill(9, 144, 256); l.fill(7, 256, 280); l.fill(8, 280, 288);
          fixedLit = huffman(l);
          fixedDist = huffman(new Uint8Array(30).fill(5));
        }
        lit = fixedLit; dist = fixedDist;
      } else if (type === 2) {  // dynamic Huffman codes
        var nlen = bits(5) + 257, ndist = bits(5) + 1, ncode = bits(4) + 4;
        var codeLengths = new Uint8Array(19);
        for (var c = 0; c < ncode; c++) codeLengths[CODE_LENGTH_ORDER[c]] = bits(3);
        var lengthCode = huffman(codeLengths), lengths = new Uint8Array(nlen + ndist);
        for (var i = 0; i < nlen + ndist;) {
          var sym = decode(lengthCode);
          if (sym < 16) { lengths[i++] = sym; continue; }
          var repeat, value = 0;
          if (sym === 16) {
            if (i === 0) throw new Error("heatmap data repeats a missing code length");
            value = lengths[i - 1]; repeat = 3 + bits(2);
          } else if (sym === 17) repeat = 3 + bits(3);
          else repeat = 11 + bits(7);
          if (i + repeat > nlen + ndist) throw new Error("heatmap data has too many code lengths");
          while (repeat--) lengths[i++] = value;
        }
        lit = huffman(lengths.subarray(0, nlen));
        dist = huffman(lengths.subarray(nlen));
      } else {
        throw new Error("heatmap data has an invalid block type");
      }
      for (;;) {
        var symbol = decode(lit);
        if (symbol < 256) { put(symbol); continue; }
        if (symbol === 256) break;
        symbol -= 257;
        if (symbol >= 29) throw new Error("heatmap data has an invalid length code");
        var length = LENGTH_BASE[symbol] + bits(LENGTH_EXTRA[symbol]);
        var dsym = decode(dist);
        if (dsym >= 30) throw new Error("heatmap data has an invalid distance code");
        var back = DIST_BASE[dsym] + bits(DIST_EXTRA[dsym]);
        if (back > op) throw new Error("heatmap data refers before its start");
        for (var m = 0; m < length; m++) put(out[op - back]);
      }
    }
    if (op !== expectedLength) throw new Error("heatmap has " + op + " values, expected " + expectedLength);
    if (pos + 4 > input.length) throw new Error("heatmap data lacks its checksum");
    var stored = ((input[pos] << 24) | (input[pos + 1] << 16) | (input[pos + 2] << 8) | input[pos + 3]) >>> 0;
    if (stored !== adler32(out)) throw new Error("heatmap data is corrupt (checksum mismatch)");
    return out;
  }

  function thresholdByte() { return Math.ceil(state.threshold * LEVELS - 1e-9); }

  function updateOverlay() {
    if (!probs) return;
    overlay.width = hm.cols;
    overlay.height = hm.rows;
    var octx = overlay.getContext("2d");
    var image = octx.createImageData(hm.cols, hm.rows);
    var px = image.data, t = thresholdByte(), tissue = 0, tumor = 0;
    for (var i = 0, n = probs.length; i < n; i++) {
      var q = probs[i];
      if (q === NO_DATA) continue;
      tissue++;
      if (q < t) continue;
      tumor++;
      var c = lut[Math.round(q * 255 / LEVELS)], j = 4 * i;
      px[j] = c[0]; px[j + 1] = c[1]; px[j + 2] = c[2]; px[j + 3] = 255;
    }
    octx.putImageData(image, 0, 0);
    var mm2 = hm.mpp * hm.mpp / 1e6;
    document.getElementById("pf-area").textContent =
      "p \u2265 " + state.threshold.toFixed(2) + ": " + formatArea(tumor * mm2) +
      (tissue ? " \u00b7 " + (100 * tumor / tissue).toFixed(1) + "% of tissue" : "");
  }

  function formatArea(mm2) { return (mm2 >= 10 ? mm2.toFixed(1) : mm2.toFixed(2)) + " mm\u00b2"; }

  function probabilityAt(x, y) {  // level-0 coordinates → {row, col, q} or null
    if (!probs) return null;
    var col = Math.floor((x - hm.origin[0]) / hm.px[0]);
    var row = Math.floor((y - hm.origin[1]) / hm.px[1]);
    if (row < 0 || col < 0 || row >= hm.rows || col >= hm.cols) return null;
    return { row: row, col: col, q: probs[row * hm.cols + col] };
  }

  // ---- slide tiles --------------------------------------------------------------------------------
  function tileImage(levelIndex, index) {
    var uri = levels[levelIndex].tiles[index];
    if (!uri) return null;
    var img = images[levelIndex][index];
    if (!img) {
      img = new Image();
      img.onload = scheduleDraw;
      img.onerror = function () { window.pfReportError("tile " + levelIndex + "/" + index + " failed to decode"); };
      img.src = uri;
      images[levelIndex][index] = img;
    }
    return img.complete && img.naturalWidth > 0 ? img : null;
  }

  function overviewLoaded() {
    var last = levels.length - 1;
    return levels[last].tiles.every(function (uri, i) { return !uri || tileImage(last, i); });
  }

  function drawLevel(levelIndex, x0, y0, x1, y1) {
    var level = levels[levelIndex], t = level.tile;
    var c0 = Math.max(0, Math.floor(x0 / (t * level.px[0]))), c1 = Math.min(level.cols - 1, Math.floor(x1 / (t * level.px[0])));
    var r0 = Math.max(0, Math.floor(y0 / (t * level.px[1]))), r1 = Math.min(level.rows - 1, Math.floor(y1 / (t * level.px[1])));
    for (var r = r0; r <= r1; r++) {
      for (var c = c0; c <= c1; c++) {
        var img = tileImage(levelIndex, r * level.cols + c);
        if (!img) continue;
        // A hair of overlap hides seams between tiles drawn at fractional positions.
        var pad = 0.5 / view.zoom;
        ctx.drawImage(img, c * t * level.px[0], r * t * level.px[1],
          img.naturalWidth * level.px[0] + pad, img.naturalHeight * level.px[1] + pad);
      }
    }
  }

  function chooseLevel(dpr) {  // the coarsest level whose pixels are at most ~1.5 screen pixels
    var best = 0;
    for (var i = 0; i < levels.length; i++) {
      if (view.zoom * dpr * levels[i].px[0] <= 1.5) best = i;
    }
    return best;
  }

  // ---- drawing ------------------------------------------------------------------------------------
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(function () { drawPending = false; draw(); });
  }

  function draw() {
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    var s = view.zoom * dpr;
    ctx.setTransform(s, 0, 0, s, (w / 2 - view.cx * view.zoom) * dpr, (h / 2 - view.cy * view.zoom) * dpr);
    var x0 = view.cx - w / 2 / view.zoom, x1 = view.cx + w / 2 / view.zoom;
    var y0 = view.cy - h / 2 / view.zoom, y1 = view.cy + h / 2 / view.zoom;
    ctx.imageSmoothingEnabled = true;
    var coarsest = levels.length - 1, level = chooseLevel(dpr);
    drawLevel(coarsest, x0, y0, x1, y1);           // always there underneath
    if (level !== coarsest) drawLevel(level, x0, y0, x1, y1);
    if (probs && state.opacity > 0) {
      ctx.imageSmoothingEnabled = false;            // one block per model patch
      ctx.globalAlpha = state.opacity;
      ctx.drawImage(overlay, hm.origin[0], hm.origin[1], hm.cols * hm.px[0], hm.rows * hm.px[1]);
      ctx.globalAlpha = 1;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    updateScaleBar();
    if (!state.ready && probs && overviewLoaded()) {
      state.ready = true;
      document.body.setAttribute("data-pf-level", String(level));
      document.body.setAttribute("data-pf-ready", "1");
      applyProbeFromHash();
    }
  }

  function niceLength(maxUm) {
    var e = Math.pow(10, Math.floor(Math.log10(maxUm)));
    return [5, 2, 1].map(function (m) { return m * e; }).find(function (v) { return v <= maxUm; }) || e / 2;
  }

  function updateScaleBar() {
    var umPerCssPx = slide.mpp[0] / view.zoom;
    var um = niceLength(umPerCssPx * 160);
    document.getElementById("pf-scale-bar").style.width = Math.round(um / umPerCssPx) + "px";
    document.getElementById("pf-scale-label").textContent = um >= 1000 ? (um / 1000) + " mm" : um + " \u00b5m";
  }

  // ---- view changes -------------------------------------------------------------------------------
  function fit() {  // the whole slide in the area below the toolbar
    var bar = document.getElementById("pf-bar").offsetHeight;
    var w = canvas.clientWidth || 1, h = Math.max(1, (canvas.clientHeight || 1) - bar);
    view.zoom = 0.95 * Math.min(w / slide.width, h / slide.height);
    view.cx = slide.width / 2;
    view.cy = slide.height / 2 - bar / 2 / view.zoom;
    scheduleDraw();
  }

  function zoomAt(factor, sx, sy) {  // keep the level-0 point under screen (sx, sy) in place
    var w = canvas.clientWidth, h = canvas.clientHeight;
    var fitZoom = Math.min(w / slide.width, h / slide.height);
    var maxZoom = 8 / levels[0].px[0];
    var zoom = Math.min(maxZoom, Math.max(fitZoom / 4, view.zoom * factor));
    var px = view.cx + (sx - w / 2) / view.zoom, py = view.cy + (sy - h / 2) / view.zoom;
    view.zoom = zoom;
    view.cx = px - (sx - w / 2) / zoom;
    view.cy = py - (sy - h / 2) / zoom;
    scheduleDraw();
  }

  function screenToLevel0(clientX, clientY) {
    var rect = canvas.getBoundingClientRect();
    var sx = clientX - rect.left, sy = clientY - rect.top;
    return [view.cx + (sx - rect.width / 2) / view.zoom, view.cy + (sy - rect.height / 2) / view.zoom];
  }

  function showReadout(x, y) {
    var out = document.getElementById("pf-readout");
    var where = (x * slide.mpp[0] / 1000).toFixed(2) + ", " + (y * slide.mpp[1] / 1000).toFixed(2) + " mm";
    var hit = probabilityAt(x, y);
    var text;
    if (!hit) text = "outside the heatmap";
    else if (hit.q === NO_DATA) text = "no tissue / not computed";
    else text = "p = " + (hit.q / LEVELS).toFixed(2);
    out.textContent = text + "  (" + where + ")";
    out.setAttribute("data-probability", hit && hit.q !== NO_DATA ? (hit.q / LEVELS).toFixed(3) : "");
  }

  // ---- controls -----------------------------------------------------------------------------------
  var opacityInput = document.getElementById("pf-opacity");
  var thresholdInput = document.getElementById("pf-threshold");

  function syncControls() {
    opacityInput.value = Math.round(state.opacity * 100);
    thresholdInput.value = Math.round(state.threshold * 100);
    document.getElementById("pf-opacity-value").textContent = Math.round(state.opacity * 100) + "%";
    document.getElementById("pf-threshold-value").textContent = state.threshold.toFixed(2);
  }

  opacityInput.addEventListener("input", function () {
    state.opacity = opacityInput.value / 100;
    syncControls();
    scheduleDraw();
  });
  thresholdInput.addEventListener("input", function () {
    state.threshold = thresholdInput.value / 100;
    syncControls();
    updateOverlay();
    scheduleDraw();
  });
  document.getElementById("pf-zoom-in").addEventListener("click", function () {
    zoomAt(2, canvas.clientWidth / 2, canvas.clientHeight / 2);
  });
  document.getElementById("pf-zoom-out").addEventListener("click", function () {
    zoomAt(0.5, canvas.clientWidth / 2, canvas.clientHeight / 2);
  });
  document.getElementById("pf-fit").addEventListener("click", fit);

  canvas.addEventListener("wheel", function (e) {
    e.preventDefault();
    var rect = canvas.getBoundingClientRect();
    var delta = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaY;
    zoomAt(Math.exp(-delta * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
  }, { passive: false });

  var drag = null;
  canvas.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy };
    canvas.setPointerCapture(e.pointerId);
    canvas.classList.add("dragging");
  });
  canvas.addEventListener("pointermove", function (e) {
    if (drag) {
      view.cx = drag.cx - (e.clientX - drag.x) / view.zoom;
      view.cy = drag.cy - (e.clientY - drag.y) / view.zoom;
      scheduleDraw();
    }
    var p = screenToLevel0(e.clientX, e.clientY);
    showReadout(p[0], p[1]);
  });
  function endDrag() { drag = null; canvas.classList.remove("dragging"); }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("dblclick", function (e) {
    var rect = canvas.getBoundingClientRect();
    zoomAt(e.shiftKey ? 0.5 : 2, e.clientX - rect.left, e.clientY - rect.top);
  });
  window.addEventListener("keydown", function (e) {
    if (e.target instanceof HTMLInputElement) return;
    var step = 80 / view.zoom;
    var w = canvas.clientWidth / 2, h = canvas.clientHeight / 2;
    if (e.key === "+" || e.key === "=") zoomAt(1.5, w, h);
    else if (e.key === "-" || e.key === "_") zoomAt(1 / 1.5, w, h);
    else if (e.key === "0") fit();
    else if (e.key === "ArrowLeft") { view.cx -= step; scheduleDraw(); }
    else if (e.key === "ArrowRight") { view.cx += step; scheduleDraw(); }
    else if (e.key === "ArrowUp") { view.cy -= step; scheduleDraw(); }
    else if (e.key === "ArrowDown") { view.cy += step; scheduleDraw(); }
  });
  window.addEventListener("resize", scheduleDraw);

  // ---- initial view from the URL hash: #opacity=0.7&threshold=0.3&x=…&y=…&zoom=…&probe=sx,sy|center ------
  var params = new URLSearchParams(location.hash.replace(/^#/, ""));
  function numberParam(name) {
    var v = params.get(name);
    return v === null || v === "" || isNaN(Number(v)) ? null : Number(v);
  }
  function applyHash() {
    var o = numberParam("opacity"), t = numberParam("threshold");
    if (o !== null) state.opacity = Math.min(1, Math.max(0, o));
    if (t !== null) state.threshold = Math.min(1, Math.max(0, t));
    var x = numberParam("x"), y = numberParam("y"), z = numberParam("zoom");
    if (x !== null) view.cx = x;
    if (y !== null) view.cy = y;
    if (z !== null && z > 0) view.zoom = z;
  }
  function applyProbeFromHash() {  // simulate the pointer at screen (sx, sy) or the canvas centre: for tests
    var probe = params.get("probe");
    if (!probe) return;
    var rect = canvas.getBoundingClientRect();
    var xy = probe === "center" ? [rect.width / 2, rect.height / 2] : probe.split(",").map(Number);
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: rect.left + xy[0], clientY: rect.top + xy[1], bubbles: true }));
  }

  // ---- start --------------------------------------------------------------------------------------
  (function colourBar() {
    var bar = document.getElementById("pf-colorbar").getContext("2d");
    var img = bar.createImageData(256, 1);
    for (var i = 0; i < 256; i++) {
      img.data[4 * i] = lut[i][0]; img.data[4 * i + 1] = lut[i][1]; img.data[4 * i + 2] = lut[i][2]; img.data[4 * i + 3] = 255;
    }
    bar.putImageData(img, 0, 0);
  })();
  fit();
  applyHash();
  syncControls();
  for (var i = 0; i < levels[levels.length - 1].tiles.length; i++) tileImage(levels.length - 1, i);
  probs = inflate(base64ToBytes(hm.data), hm.rows * hm.cols);
  updateOverlay();
  scheduleDraw();
})();
