/* Mission Control: reads the gateway's JSON API with the key typed in (kept in this tab's
   sessionStorage only) and draws it with the vendored Chart.js. The DOM is built with
   textContent only: nothing from the API is ever parsed as HTML. */
"use strict";
(() => {
  const PREFIX = document.querySelector('meta[name="byok-prefix"]').content;
  const $ = (id) => document.getElementById(id);
  const PALETTE = ["#2563eb", "#c2410c", "#059669", "#7c3aed", "#db2777", "#0891b2", "#ca8a04",
    "#4b5563", "#65a30d", "#dc2626"];
  const ATTRIBUTION_COLORS = { byok: "#2e7d32" };
  const RANGES = {
    "24h": { hours: 24, bucket: "hour" }, "7d": { hours: 24 * 7, bucket: "hour" },
    "30d": { hours: 24 * 30, bucket: "day" }, "90d": { hours: 24 * 90, bucket: "day" },
  };
  const PAGE_SIZE = 25;
  const EXPORT_PAGES = 40; // at most 40 x 500 rows in one CSV
  const charts = {};
  const log = { cursor: null, stack: [], next: null, rows: [] };
  let keyNames = {};

  // ---- formatting: costs keep their precision; a tiny cost never shows as $0.00 ----
  function usd(value) {
    if (value === null || value === undefined || value === "") return "unpriced";
    const n = Number(value);
    if (!Number.isFinite(n)) return "unpriced";
    if (n === 0) return "$0";
    const a = Math.abs(n);
    if (a >= 1000) return "$" + n.toLocaleString("en-US", { maximumFractionDigits: 0 });
    if (a >= 1) return "$" + n.toFixed(2);
    if (a >= 0.01) return "$" + n.toPrecision(3);
    if (a >= 0.0001) return (n * 100).toPrecision(3) + "¢";
    return "$" + n.toExponential(2);
  }
  function count(n) {
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "B";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(n);
  }
  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
  }
  function when(iso) { return iso ? iso.slice(0, 19).replace("T", " ") + "Z" : "–"; }
  function bucketLabel(iso, bucket) {
    return bucket === "day" ? iso.slice(5, 10) : iso.slice(5, 10) + " " + iso.slice(11, 16);
  }
  function short(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

  // ---- DOM helpers ----
  function cell(tr, text, cls, title) {
    const td = document.createElement("td");
    td.textContent = text;
    td.title = title || text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function head(table, columns) {
    table.replaceChildren();
    const thead = table.createTHead().insertRow();
    for (const [name, cls] of columns) {
      const th = document.createElement("th");
      th.textContent = name;
      th.title = name;
      if (cls) th.className = cls;
      thead.appendChild(th);
    }
    return table.createTBody();
  }
  function showError(text) { $("error").textContent = text || ""; }

  // ---- API ----
  function operator() { return $("view").value === "operator"; }
  async function api(path, params, raw) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== "" && v !== undefined) query.set(k, v);
    const qs = query.toString();
    const response = await fetch(PREFIX + path + (qs ? "?" + qs : ""), {
      headers: { Authorization: "Bearer " + $("key").value.trim() },
      cache: "no-store",
    });
    if (!response.ok) {
      let message = "HTTP " + response.status;
      try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return raw ? response : response.json();
  }
  function range() {
    const choice = RANGES[$("range").value] || RANGES["30d"];
    const until = new Date();
    const since = new Date(until.getTime() - choice.hours * 3600 * 1000);
    return { since: since.toISOString(), until: until.toISOString(), bucket: choice.bucket };
  }
  function seriesPath() { return operator() ? "/byok/admin/usage/series" : "/byok/usage/series"; }
  function requestsPath() { return operator() ? "/byok/admin/requests" : "/byok/requests"; }

  // ---- charts ----
  function draw(id, config) {
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { labels: { boxWidth: 12 } } },
    }, config.options || {});
    charts[id] = new Chart($(id), config);
  }
  function color(group, index) {
    return ATTRIBUTION_COLORS[group] || PALETTE[index % PALETTE.length];
  }
  /** series.data as one array per group, aligned with series.buckets (zeros where empty). */
  function byGroup(series, field) {
    const index = new Map(series.buckets.map((b, i) => [b, i]));
    const groups = new Map();
    for (const entry of series.data) {
      const name = entry.group === null ? "all" : entry.group;
      if (!groups.has(name)) groups.set(name, new Array(series.buckets.length).fill(0));
      groups.get(name)[index.get(entry.start)] += entry[field] || 0;
    }
    return groups;
  }
  function column(series, field) {
    const index = new Map(series.buckets.map((b, i) => [b, i]));
    const values = new Array(series.buckets.length).fill(null);
    for (const entry of series.data) values[index.get(entry.start)] = entry[field];
    return values;
  }
  const usdAxis = { ticks: { callback: (v) => usd(v) }, beginAtZero: true, stacked: true };
  const usdTooltip = { callbacks: { label: (c) => c.dataset.label + ": " + usd(c.raw) } };

  function drawTimeCharts(byAttribution, overall) {
    const labels = overall.buckets.map((b) => bucketLabel(b, overall.bucket));
    const spend = [...byGroup(byAttribution, "cost_usd")].map(([name, data], i) => ({
      label: name, data, backgroundColor: color(name, i + 1), stack: "cost",
    }));
    draw("chart-spend", { type: "bar", data: { labels, datasets: spend },
      options: { scales: { x: { stacked: true }, y: usdAxis }, plugins: { tooltip: usdTooltip } } });
    draw("chart-requests", { type: "bar", data: { labels, datasets: [
      { label: "requests", data: column(overall, "requests").map((v) => v || 0), backgroundColor: "#2563eb" },
      { label: "errors", data: column(overall, "errors").map((v) => v || 0), backgroundColor: "#c62828" },
    ] }, options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } } });
    draw("chart-tokens", { type: "bar", data: { labels, datasets: [
      { label: "input", data: column(overall, "prompt_tokens").map((v) => v || 0), backgroundColor: "#0891b2" },
      { label: "output", data: column(overall, "completion_tokens").map((v) => v || 0), backgroundColor: "#7c3aed" },
    ] }, options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { callback: (v) => count(v) } } } } });
    const line = (label, field, colour) => ({ label, data: column(overall, field), borderColor: colour,
      backgroundColor: colour, spanGaps: true, pointRadius: 2, tension: 0.2 });
    draw("chart-latency", { type: "line", data: { labels, datasets: [
      line("latency p50", "latency_p50_ms", "#2563eb"), line("latency p95", "latency_p95_ms", "#c2410c"),
      line("TTFT p50", "ttft_p50_ms", "#059669"),
    ] }, options: { scales: { y: { beginAtZero: true, ticks: { callback: (v) => ms(v) } } },
      plugins: { tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + ms(c.raw) } } } } });
  }

  function totals(series) {
    const out = new Map();
    for (const e of series.data) {
      const name = e.group === null ? "all" : e.group;
      const t = out.get(name) || { requests: 0, cost: 0, tokens: 0, errors: 0 };
      t.requests += e.requests; t.cost += e.cost_usd; t.errors += e.errors;
      t.tokens += e.prompt_tokens + e.completion_tokens;
      out.set(name, t);
    }
    return [...out].sort((a, b) => b[1].cost - a[1].cost || b[1].requests - a[1].requests);
  }
  function drawBreakdown(chartId, tableId, series, nameOf) {
    const rows = totals(series);
    const top = rows.slice(0, 8);
    draw(chartId, { type: "bar", data: {
      labels: top.map(([g]) => nameOf(g)),
      datasets: [{ label: "spend", data: top.map(([, t]) => t.cost), backgroundColor: top.map(([g], i) => color(g, i)) }],
    }, options: { indexAxis: "y", plugins: { legend: { display: false }, tooltip: {
      callbacks: { title: (items) => items[0].label, label: (c) => usd(c.raw) } } },
      scales: { x: { beginAtZero: true, ticks: { callback: (v) => usd(v), maxTicksLimit: 4 } },
        y: { ticks: { callback(value) { return short(this.getLabelForValue(value), 18); } } } } } });
    const body = head($(tableId), [["name"], ["requests", "num"], ["tokens", "num opt"], ["spend", "num"]]);
    for (const [group, t] of rows) {
      const tr = body.insertRow();
      cell(tr, nameOf(group), null, group);
      cell(tr, String(t.requests), "num");
      cell(tr, count(t.tokens), "num opt");
      cell(tr, usd(t.cost), "num", String(t.cost));
    }
  }

  function drawKpis(overall) {
    let cost = 0, requests = 0, errors = 0, input = 0, output = 0, hits = 0, unpriced = 0;
    for (const e of overall.data) {
      cost += e.cost_usd; requests += e.requests; errors += e.errors; input += e.prompt_tokens;
      output += e.completion_tokens; hits += e.cache_hits; unpriced += e.unpriced_requests;
    }
    const p95 = Math.max(0, ...overall.data.map((e) => e.latency_p95_ms || 0));
    const ttfts = overall.data.map((e) => e.ttft_p50_ms).filter((v) => v !== null);
    $("kpi-cost").textContent = usd(cost);
    $("kpi-cost").title = String(cost);
    $("kpi-cost-sub").textContent = unpriced ? unpriced + " unpriced" : "all priced";
    $("kpi-requests").textContent = count(requests);
    $("kpi-errors").textContent = errors + " errors" + (requests ? " (" + (100 * errors / requests).toFixed(1) + "%)" : "");
    $("kpi-tokens").textContent = count(input + output);
    $("kpi-tokens-sub").textContent = count(input) + " in · " + count(output) + " out";
    $("kpi-latency").textContent = requests ? ms(p95) : "–";
    $("kpi-latency").title = "highest hourly/daily p95 in the range";
    $("kpi-ttft").textContent = ttfts.length ? "TTFT p50 " + ms(ttfts.sort((a, b) => a - b)[Math.floor(ttfts.length / 2)]) : "no streams";
    $("kpi-cache").textContent = String(hits);
    $("kpi-cache-sub").textContent = requests ? (100 * hits / requests).toFixed(1) + "% of requests" : "";
  }

  function drawKeys(keys, spendByKey) {
    const body = head($("table-keys"), [["provider"], ["key"], ["status"], ["last error", "opt"],
      ["cooldown until", "opt"], ["limits", "opt"], ["budget / spent in range", "num"]]);
    for (const k of keys) {
      const tr = body.insertRow();
      cell(tr, k.provider);
      cell(tr, keyNames[k.id], null, k.id);
      cell(tr, k.status, "status-" + k.status);
      cell(tr, k.last_error || "–", "opt");
      cell(tr, when(k.cooldown_until), "opt");
      const limits = [k.rpm ? k.rpm + " rpm" : "", k.tpm ? count(k.tpm) + " tpm" : ""].filter(Boolean).join(" · ");
      cell(tr, limits || "none", "opt");
      const spent = spendByKey.get(k.id) || 0;
      const budget = k.monthly_budget_usd;
      const text = budget ? usd(spent) + " of " + usd(budget) + " (" + Math.round(100 * spent / budget) + "%)" : usd(spent);
      cell(tr, text, "num");
    }
    if (!keys.length) cell(body.insertRow(), "no provider keys yet: POST " + PREFIX + "/byok/providers");
  }

  // ---- request log ----
  function filters() {
    return { status: $("f-status").value.trim(), provider: $("f-provider").value.trim(),
      model: $("f-model").value.trim(), tenant_id: operator() ? $("f-tenant").value.trim() : "" };
  }
  async function loadLog() {
    const page = await api(requestsPath(), Object.assign({ limit: PAGE_SIZE, cursor: log.cursor }, filters()));
    log.rows = page.data;
    log.next = page.next_cursor;
    const columns = [["time"], ["tenant", "opt"], ["route", "opt"], ["model"], ["paid by", "opt"],
      ["status", "num"], ["tries", "num opt"], ["tokens", "num opt"], ["cost", "num"], ["latency", "num opt"]];
    if (!operator()) columns.splice(1, 1);
    const body = head($("table-log"), columns);
    page.data.forEach((r, i) => {
      const tr = body.insertRow();
      tr.dataset.index = String(i);
      cell(tr, when(r.created_at).slice(5));
      if (operator()) cell(tr, r.tenant_id, "opt");
      cell(tr, r.route, "opt");
      cell(tr, r.provider + "/" + r.model);
      cell(tr, r.attribution, "opt");
      cell(tr, String(r.status_code), "num " + (r.status_code < 400 ? "status-ok" : "status-bad"));
      cell(tr, String(r.attempts), "num opt");
      cell(tr, count(r.prompt_tokens + r.completion_tokens), "num opt");
      cell(tr, usd(r.cost_usd), "num", r.cost_usd === null ? "unpriced" : "$" + r.cost_usd);
      cell(tr, ms(r.latency_ms), "num opt");
    });
    if (!page.data.length) cell(body.insertRow(), "no requests match");
    $("prev").disabled = log.stack.length === 0;
    $("next").disabled = !log.next;
    $("page-info").textContent = "page " + (log.stack.length + 1) + " · " + page.data.length + " rows";
    $("detail").hidden = true;
  }
  function showDetail(row) {
    $("detail-id").textContent = row.request_id;
    const dl = $("detail-fields");
    dl.replaceChildren();
    for (const [name, value] of Object.entries(row)) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = name === "cost_usd" ? (value === null ? "unpriced" : "$" + value + " (" + usd(value) + ")")
        : value === null ? "–" : String(value);
      dl.append(dt, dd);
    }
    $("detail").hidden = false;
  }
  async function exportCsv() {
    const parts = [];
    let cursor = null;
    for (let page = 0; page < EXPORT_PAGES; page++) {
      const response = await api(requestsPath(), Object.assign({ limit: 500, cursor, format: "csv" }, filters()), true);
      const text = await response.text();
      parts.push(page === 0 ? text : text.slice(text.indexOf("\n") + 1));
      cursor = response.headers.get("x-byok-next-cursor");
      if (!cursor) break;
    }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob(parts, { type: "text/csv" }));
    link.download = "byok-requests.csv";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  // ---- everything ----
  async function load() {
    showError("");
    sessionStorage.setItem("byok-key", $("key").value.trim());
    document.body.classList.toggle("operator", operator());
    const r = range();
    const third = operator() ? "tenant" : "key";
    $("title-third").textContent = operator() ? "Spend by tenant" : "Spend by key";
    const get = (group_by) => api(seriesPath(), Object.assign({ group_by }, r));
    try {
      const keys = operator() ? { data: [] } : await api("/byok/providers");
      keyNames = {};
      for (const k of keys.data) keyNames[k.id] = k.label || k.provider + " #" + k.priority;
      keyNames.platform = "platform key";
      const [byAttribution, overall, byProvider, byModel, byThird] = await Promise.all([
        get("attribution"), get(null), get("provider"), get("model"), get(third)]);
      drawKpis(overall);
      drawTimeCharts(byAttribution, overall);
      drawBreakdown("chart-provider", "table-provider", byProvider, (g) => g);
      drawBreakdown("chart-model", "table-model", byModel, (g) => g);
      drawBreakdown("chart-third", "table-third", byThird, (g) => (third === "key" ? keyNames[g] || g : g));
      if (!operator()) {
        const spent = new Map(totals(byThird).map(([g, t]) => [g, t.cost]));
        drawKeys(keys.data, spent);
      }
      log.cursor = null; log.stack = [];
      await loadLog();
      $("board").classList.remove("empty");
      document.body.dataset.loaded = operator() ? "operator" : "tenant";
    } catch (error) {
      document.body.dataset.loaded = "error";
      showError(error.status === 401 && operator()
        ? "The operator view needs the operator key (BYOK_ADMIN_KEY): " + error.message
        : error.message);
    }
  }

  $("controls").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault(); log.cursor = null; log.stack = [];
    loadLog().catch((err) => showError(err.message));
  });
  $("next").addEventListener("click", () => {
    log.stack.push(log.cursor); log.cursor = log.next; loadLog().catch((err) => showError(err.message));
  });
  $("prev").addEventListener("click", () => {
    log.cursor = log.stack.pop() || null; loadLog().catch((err) => showError(err.message));
  });
  $("export").addEventListener("click", () => exportCsv().catch((err) => showError(err.message)));
  $("table-log").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-index]");
    if (!tr) return;
    for (const s of $("table-log").querySelectorAll("tr.selected")) s.classList.remove("selected");
    tr.classList.add("selected");
    showDetail(log.rows[Number(tr.dataset.index)]);
  });
  Chart.defaults.font.size = 11;
  const saved = sessionStorage.getItem("byok-key");
  if (saved) { $("key").value = saved; load(); }
})();
