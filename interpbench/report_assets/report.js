// interpbench report: draws every table and figure from the JSON embedded in the page.
// No network, no libraries. When drawing ends, <body data-rendered="ok" data-figures="N">.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const METRICS = {};
  DATA.metrics.forEach(function (m) { METRICS[m.name] = m; });

  // ---------- helpers ----------
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return String(v);
    if (Array.isArray(v)) return v.join(", ");
    return String(v);
  }
  function short(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function byId(id) { return document.getElementById(id); }
  // A method name that may wrap after its underscores (never inside a word).
  function wrapName(s) { return esc(s).replace(/_/g, "_<wbr>"); }

  // ---------- colour scales ----------
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function lerp(stops, t) {
    t = Math.max(0, Math.min(1, t));
    const x = t * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    const c = stops[i].map(function (a, k) { return Math.round(a + f * (stops[i + 1][k] - a)); });
    return "rgb(" + c.join(",") + ")";
  }
  function luminance(t, stops) {
    t = Math.max(0, Math.min(1, t));
    const x = t * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
    const c = stops[i].map(function (a, k) { return a + f * (stops[i + 1][k] - a); });
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255;
  }
  const BLUES = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const REDS = [[255, 255, 255], [252, 187, 161], [251, 106, 74], [203, 24, 29], [103, 0, 13]];
  function magnitudeColour(v) { return v < 0 ? lerp(REDS, -v) : lerp(BLUES, v); }

  // ---------- tables ----------
  // A sortable table: first click on a header sorts ascending, the next descending;
  // null (NaN) values always sort last; numbers compare as numbers.
  function sortableTable(container, table, state) {
    const cols = table.columns;
    const numeric = cols.map(function (_, j) {
      return table.rows.every(function (r) { return r[j] === null || typeof r[j] === "number"; });
    });
    function draw() {
      let rows = table.rows.slice();
      if (state.col !== null && state.col < cols.length) {
        const j = state.col, sign = state.dir === "ascending" ? 1 : -1;
        rows.sort(function (a, b) {
          const x = a[j], y = b[j];
          if (x === null && y === null) return 0;
          if (x === null) return 1;
          if (y === null) return -1;
          if (numeric[j]) return sign * (x - y);
          return sign * String(x).localeCompare(String(y));
        });
      }
      const head = cols.map(function (c, j) {
        const sort = state.col === j ? ' aria-sort="' + state.dir + '"' : "";
        return '<th class="sortable" data-col="' + j + '"' + sort + ">" + esc(c) + "</th>";
      }).join("");
      const body = rows.map(function (r) {
        return "<tr>" + r.map(function (v, j) {
          if (v === null) return '<td class="nan">–</td>';
          return numeric[j] ? '<td class="num">' + esc(v) + "</td>" : "<td>" + esc(v) + "</td>";
        }).join("") + "</tr>";
      }).join("");
      container.innerHTML = "<table class=\"data\"><thead><tr>" + head + "</tr></thead><tbody>" + body + "</tbody></table>";
      container.querySelectorAll("th.sortable").forEach(function (th) {
        th.addEventListener("click", function () {
          const j = Number(th.dataset.col);
          state.dir = state.col === j && state.dir === "ascending" ? "descending" : "ascending";
          state.col = j;
          draw();
        });
      });
    }
    draw();
  }

  function kvTable(pairs) {
    return '<table class="kv"><tbody>' + pairs.map(function (p) {
      return "<tr><th>" + esc(p[0]) + "</th><td>" + esc(fmt(p[1])) + "</td></tr>";
    }).join("") + "</tbody></table>";
  }

  // ---------- overview ----------
  function drawOverview() {
    const p = DATA.provenance, c = DATA.counts;
    byId("provenance").innerHTML = kvTable([
      ["run created", p.run_created_at], ["rows scored at", p.scored_at], ["seeds", p.seeds],
      ["interpbench", p.interpbench_version], ["tracr", p.tracr_version], ["torch", p.torch_version],
      ["captum", p.captum_version], ["git sha", p.git_sha],
      ["cases × methods", c.cases + " × " + c.methods], ["variants", c.variants],
      ["cells", c.cells_planned + " planned: " + Object.keys(c.cells_by_status).map(function (k) {
        return c.cells_by_status[k] + " " + k;
      }).concat([c.cells_missing + " not run"]).join(", ")],
      ["scored rows", c.rows],
    ]);
    const f = DATA.failures;
    byId("failures").innerHTML = f.length === 0 ? '<p class="muted">No failed cells.</p>' :
      "<h3>" + f.length + " failed cell" + (f.length > 1 ? "s" : "") + '</h3><table class="failed"><thead><tr><th>case</th><th>variant</th><th>method</th><th>seed</th><th>error</th></tr></thead><tbody>' +
      f.map(function (r) {
        return "<tr>" + [r.case, r.variant, r.method, r.seed, r.error].map(function (v) { return "<td>" + esc(fmt(v)) + "</td>"; }).join("") + "</tr>";
      }).join("") + "</tbody></table>";
  }

  // ---------- heatmap ----------
  function drawHeatmap(name) {
    const hm = DATA.heatmaps[name], m = METRICS[name];
    const box = byId("heatmap");
    if (!hm || hm.methods.length === 0) { box.innerHTML = '<p class="muted">No scores.</p>'; return; }
    const cw = 36, ch = 20, left = 190, top = 130;
    const w = left + cw * hm.cases.length + 110, h = top + ch * hm.methods.length + 10;
    const span = (m.high - m.low) || 1;
    let s = '<svg class="fig heatmap" width="' + w + '" height="' + h + '" role="img" aria-label="' + esc(name) + ' by method and case">';
    s += '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f3f3f3"/><line x1="0" y1="0" x2="0" y2="6" stroke="#bbb" stroke-width="2"/></pattern></defs>';
    hm.cases.forEach(function (c, j) {
      const x = left + j * cw + cw / 2;
      s += '<text x="' + x + '" y="' + (top - 6) + '" font-size="11" transform="rotate(-55 ' + x + " " + (top - 6) + ')">' + esc(short(c, 26)) + "<title>" + esc(c) + "</title></text>";
    });
    hm.methods.forEach(function (meth, i) {
      const y = top + i * ch;
      s += '<text x="' + (left - 6) + '" y="' + (y + ch * 0.7) + '" font-size="11" text-anchor="end">' + esc(short(meth, 28)) + "</text>";
      hm.cells[i].forEach(function (cell, j) {
        const x = left + j * cw, v = cell[0];
        const tip = esc(meth + " · " + hm.cases[j] + "\n" + name + " = " + fmt(v) + (v === null ? " (not scored)" : "  95% CI [" + fmt(cell[1]) + ", " + fmt(cell[2]) + "]"));
        if (v === null) {
          s += '<rect x="' + x + '" y="' + y + '" width="' + cw + '" height="' + ch + '" fill="url(#hatch)" stroke="#fff"><title>' + tip + "</title></rect>";
          return;
        }
        let t = (v - m.low) / span;
        if (!m.higher_is_better) t = 1 - t;
        const fill = lerp(VIRIDIS, t), ink = luminance(t, VIRIDIS) > 0.55 ? "#111" : "#fff";
        s += '<g><rect x="' + x + '" y="' + y + '" width="' + cw + '" height="' + ch + '" fill="' + fill + '" stroke="#fff"/>' +
          '<text x="' + (x + cw / 2) + '" y="' + (y + ch * 0.68) + '" font-size="9.5" text-anchor="middle" fill="' + ink + '">' + esc(v.toFixed(2)) + "</text><title>" + tip + "</title></g>";
      });
    });
    s += "</svg>";
    const low = m.higher_is_better ? m.low : m.high, high = m.higher_is_better ? m.high : m.low;
    const legend = '<svg class="legend" width="330" height="30"><defs><linearGradient id="hm-legend">' +
      VIRIDIS.map(function (c, k) { return '<stop offset="' + k / (VIRIDIS.length - 1) + '" stop-color="rgb(' + c.join(",") + ')"/>'; }).join("") +
      '</linearGradient></defs><text x="0" y="14" font-size="11">worse ' + esc(fmt(low)) + '</text><rect x="70" y="4" width="180" height="12" fill="url(#hm-legend)"/><text x="256" y="14" font-size="11">' + esc(fmt(high)) + " better</text></svg>";
    box.innerHTML = legend + s;
  }

  // ---------- scores section ----------
  const lbState = { col: null, dir: "ascending" };
  function drawLeaderboard(filter) {
    const lb = DATA.leaderboard, j = lb.columns.indexOf("metric");
    const rows = filter === "*" ? lb.rows : lb.rows.filter(function (r) { return r[j] === filter; });
    sortableTable(byId("leaderboard"), { columns: lb.columns, rows: rows }, lbState);
  }
  const sumState = { col: null, dir: "ascending" }, twinState = { col: null, dir: "ascending" };
  function drawTwins(name) {
    const t = DATA.twins, j = t.columns.indexOf("metric");
    if (t.rows.length === 0) {
      byId("twins").innerHTML = '<p class="muted">No twins in this run (run with <code>--variant all</code>).</p>';
      return;
    }
    const rows = t.rows.filter(function (r) { return r[j] === name || r[j] === "twin_consistency"; });
    sortableTable(byId("twins"), { columns: t.columns, rows: rows }, twinState);
  }
  function selectMetric(name) {
    const m = METRICS[name];
    byId("metric-desc").textContent = m ? m.level + " level, " + (m.higher_is_better ? "higher" : "lower") + " is better" + (m.description ? ": " + m.description : "") : "";
    sortableTable(byId("summary"), DATA.summaries[name] || { columns: [], rows: [] }, sumState);
    drawHeatmap(name);
    drawTwins(name);
    byId("lb-metric").value = name;
    drawLeaderboard(name);
  }
  function drawScores() {
    const sel = byId("metric"), lbSel = byId("lb-metric");
    if (DATA.metrics.length === 0) {
      byId("summary").innerHTML = byId("heatmap").innerHTML = byId("leaderboard").innerHTML = '<p class="muted">No scored rows.</p>';
      return;
    }
    lbSel.innerHTML = '<option value="*">all metrics</option>';
    DATA.metrics.forEach(function (m) {
      sel.insertAdjacentHTML("beforeend", '<option value="' + esc(m.name) + '">' + esc(m.name) + " (" + esc(m.level) + ")</option>");
      lbSel.insertAdjacentHTML("beforeend", '<option value="' + esc(m.name) + '">' + esc(m.name) + "</option>");
    });
    sel.addEventListener("change", function () { selectMetric(sel.value); });
    lbSel.addEventListener("change", function () { drawLeaderboard(lbSel.value); });
    sel.value = DATA.metrics[0].name;
    selectMetric(sel.value);
  }

  // ---------- small multiples ----------
  // One map as SVG: rows x cols of values in [-1, 1] (already divided by the map's scale).
  function mapSvg(values, rowLabels, colLabels, tip, cell) {
    const left = 8 + 6.5 * Math.max(1, Math.max.apply(null, rowLabels.map(function (l) { return l.length; }))), top = 16;
    const w = left + cell * colLabels.length + 2, h = top + cell * Math.max(rowLabels.length, 1) + 2;
    let s = '<svg class="fig map" width="' + w + '" height="' + h + '">';
    colLabels.forEach(function (l, j) {
      const size = Math.max(6, Math.min(10, (cell - 1) / (0.62 * Math.max(l.length, 1))));  // fit the column
      s += '<text x="' + (left + j * cell + cell / 2) + '" y="11" font-size="' + size.toFixed(1) + '" text-anchor="middle">' + esc(l) + "</text>";
    });
    rowLabels.forEach(function (l, i) {
      s += '<text x="' + (left - 4) + '" y="' + (top + i * cell + cell * 0.72) + '" font-size="10" text-anchor="end">' + esc(l) + "</text>";
    });
    values.forEach(function (row, i) {
      row.forEach(function (v, j) {
        s += '<rect x="' + (left + j * cell) + '" y="' + (top + i * cell) + '" width="' + cell + '" height="' + cell + '" fill="' + magnitudeColour(v) + '" stroke="#e2e5ea" stroke-width="0.5"><title>' + esc(tip(i, j, v)) + "</title></rect>";
      });
    });
    if (rowLabels.length === 0) s += '<text x="' + left + '" y="' + (top + 12) + '" font-size="10">no defined output</text>';
    return s + '<rect x="' + left + '" y="' + top + '" width="' + cell * colLabels.length + '" height="' + cell * rowLabels.length + '" fill="none" stroke="#8c95a3" stroke-width="0.8"/></svg>';
  }
  function figureHtml(svg, caption, cls) {
    return '<figure class="' + cls + '">' + svg + "<figcaption>" + caption + "</figcaption></figure>";
  }
  // The cell's score (its mean over every row the metric scores: all heads, for head metrics).
  function scoreText(scores, preferred) {
    const keys = Object.keys(scores || {});
    if (keys.length === 0) return "";
    const k = keys.indexOf(preferred) >= 0 ? preferred : keys[0];
    const all = keys.map(function (n) { return n + " " + fmt(scores[n]); }).join(", ");
    return ' <span class="score" title="' + esc(all) + '">' + esc(k) + " " + esc(fmt(scores[k])) + "</span>";
  }
  function drawInput(inp) {
    const tok = function (p) { return short(inp.tokens[p], 5); };
    const rows = inp.out_pos.map(function (p) { return short(inp.outputs[p], 5); });
    const cols = inp.in_pos.map(tok);
    let s = '<div class="input-line">input #' + inp.index + ": " + esc(inp.tokens.slice(1).join(" ")) + " → " + esc(inp.outputs.slice(1).join(" ")) + "</div>";
    s += '<div class="figs">' + inp.maps.map(function (m) {
      const tip = function (i, j, v) {
        const p = inp.out_pos[i], q = inp.in_pos[j];
        return m.label + ": output " + p + " (" + inp.outputs[p] + ") ← input " + q + " (" + inp.tokens[q] + ") = " + (m.kind === "truth" ? v : v + " × " + fmt(m.scale));
      };
      const cap = wrapName(m.label) + (m.signed ? " ±" : "") + (m.scale === 0 ? ' <span class="score">all zero</span>' : "") + scoreText(m.scores, "auroc");
      return figureHtml(mapSvg(m.values, rows, cols, tip, 16), cap, m.kind);
    }).join("") + "</div>";
    inp.heads.forEach(function (hd) {
      const qr = hd.q_pos.map(tok), kc = hd.k_pos.map(tok);
      const tip = function (label) {
        return function (i, j, v) { return label + " " + hd.head + ": query " + hd.q_pos[i] + " (" + inp.tokens[hd.q_pos[i]] + ") → key " + hd.k_pos[j] + " (" + inp.tokens[hd.k_pos[j]] + ") = " + v; };
      };
      s += "<h4>" + esc(hd.head) + ' <span class="muted">' + esc(hd.role) + " · " + esc(hd.node) + "</span></h4>";
      s += '<div class="figs">' + figureHtml(mapSvg(hd.true, qr, kc, tip("true"), 16), "true pattern", "truth");
      hd.predicted.forEach(function (pr) {
        const vals = pr.values.map(function (r) { return r.map(function (v) { return v / pr.scale; }); });
        s += figureHtml(mapSvg(vals, qr, kc, tip(pr.label), 16), wrapName(pr.label) + scoreText(pr.scores, "soft_iou"), "method");
      });
      s += "</div>";
    });
    return s;
  }
  function drawCases() {
    const list = byId("case-list");
    let s = "";
    DATA.cases.forEach(function (c) {
      const info = c.info || {};
      s += '<div class="case" id="case-' + esc(c.case.replace(/[^A-Za-z0-9_-]/g, "-")) + '"><h3>' + esc(c.case) +
        '<span class="info">' + esc(fmt(info.n_layers)) + " layers × " + esc(fmt(info.n_heads)) + " heads, d_model " + esc(fmt(info.d_model)) +
        "; showing " + c.inputs.length + " of " + c.n_inputs + " evaluation inputs</span></h3>";
      s += "<details><summary>true program</summary><pre>" + esc(c.program_source) + "</pre></details>";
      c.programs.forEach(function (p) {
        const sc = Object.keys(p.scores).map(function (k) { return k + " " + fmt(p.scores[k]); }).join(", ");
        s += "<details><summary>recovered by " + esc(p.method) + " (seed " + p.seed + ")" + (sc ? ": " + esc(sc) : "") + "</summary><pre>" +
          esc(p.source) + (p.truncated ? "\n… (cut; see the cell's explanation.json)" : "") + "</pre></details>";
      });
      c.inputs.forEach(function (inp) { s += drawInput(inp); });
      s += "</div>";
    });
    list.innerHTML = s || '<p class="muted">No saved cases.</p>';
  }

  // ---------- main ----------
  const start = performance.now();
  try {
    drawOverview();
    drawScores();
    drawCases();
  } catch (e) {
    window.recordReportError("drawing failed: " + (e && e.stack ? e.stack : e));
  }
  document.body.dataset.drawMs = String(Math.round(performance.now() - start));
  document.body.dataset.figures = String(document.querySelectorAll("svg.fig").length);
  document.body.dataset.rendered = window.reportErrors.length === 0 ? "ok" : "error";
})();
