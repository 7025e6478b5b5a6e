// Tessera's console: the little a server-rendered page cannot do by itself. Copy buttons, confirmations before
// a delete, a rotation, a disable or a bulk revocation, "3 min ago", live rows from the server's event stream, and the chart. Every page works without it
// (forms post, links navigate); no inline script exists, so the Content-Security-Policy forbids them all.
"use strict";

(function () {
  // ---- Copy buttons: data-copy names the element whose text is copied.
  function copyText(text, button) {
    const done = () => {
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => selectFallback(text, done));
    } else {
      selectFallback(text, done);
    }
  }

  // Over plain HTTP on another host the Clipboard API is withheld: copy through a selection instead.
  function selectFallback(text, done) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); done(); } finally { area.remove(); }
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copy);
    if (!source) return;
    const items = source.querySelectorAll("li");
    const text = items.length ? Array.from(items, (item) => item.textContent.trim()).join("\n") : source.textContent.trim();
    copyText(text, button);
  });

  // ---- Confirmations: a form with data-confirm asks before it posts.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  // ---- Relative times: <time data-relative datetime=…> reads "3 min ago" (or "in 2 days" for an expiry), its
  // title the instant itself.
  function span(seconds) {
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h";
    return Math.floor(seconds / 86400) + " days";
  }

  function ago(ms) {
    const seconds = Math.round((Date.now() - ms) / 1000);
    if (seconds <= -5) return "in " + span(-seconds);
    if (seconds < 5) return "just now";
    return span(seconds) + " ago";
  }

  function refreshTimes(root) {
    (root || document).querySelectorAll("time[data-relative]").forEach((element) => {
      const ms = Date.parse(element.getAttribute("datetime"));
      if (isNaN(ms)) return;
      if (!element.title) element.title = element.textContent;
      element.textContent = ago(ms);
    });
  }

  function timeElement(machine, human) {
    const element = document.createElement("time");
    element.setAttribute("datetime", machine);
    element.dataset.relative = "";
    element.title = human;
    element.textContent = ago(Date.parse(machine));
    return element;
  }

  refreshTimes();
  setInterval(refreshTimes, 15000);

  // ---- Live rows: a table with data-live follows the collection's event stream.
  function followLive(table) {
    const device = table.dataset.liveDevice || "";
    const insertAtTop = table.dataset.liveInsert === "top";
    const source = new EventSource(table.dataset.live);
    // Said on the table, so a test (or a person with the inspector) can tell the stream is following.
    source.addEventListener("open", () => { table.dataset.liveState = "open"; });
    source.addEventListener("error", () => { table.dataset.liveState = "reconnecting"; });
    source.addEventListener("reading", (event) => {
      let reading;
      try { reading = JSON.parse(event.data); } catch (_) { return; }
      if (device) {
        updateVariableRow(table, reading);
        if (reading.device === device) chart.live(reading);
      } else {
        updateDeviceRow(table, reading, insertAtTop);
      }
    });
    // EventSource reconnects by itself; a closed stream (signed out) stays closed.
    window.addEventListener("pagehide", () => source.close());
  }

  function flash(row) {
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
  }

  function updateDeviceRow(table, reading, insertAtTop) {
    const body = table.tBodies[0];
    let row = body.querySelector('tr[data-device="' + CSS.escape(reading.device) + '"]');
    if (!row) {
      // A device not on this page: new only if the page holds every device (it is not full), so a new row is
      // added, and counted, only then; on a full first page it belongs to a later page.
      const pageSize = Number(table.dataset.pageSize || 50);
      if (!insertAtTop || body.rows.length >= pageSize) return;
      row = document.createElement("tr");
      row.dataset.device = reading.device;
      const name = document.createElement("td");
      const link = document.createElement("a");
      link.href = "/console/devices/" + encodeURIComponent(reading.device);
      link.textContent = reading.label;
      name.appendChild(link);
      const seen = document.createElement("td");
      seen.className = "seen";
      const values = document.createElement("td");
      values.className = "values";
      row.append(name, seen, values);
      body.prepend(row);
      const empty = document.getElementById("no-devices");
      if (empty) empty.remove();
      const total = document.getElementById("device-total");
      if (total) total.textContent = String((parseInt(total.textContent, 10) || 0) + 1);
    } else if (insertAtTop && body.firstElementChild !== row) {
      body.prepend(row);
    }
    const seen = row.querySelector("td.seen");
    seen.replaceChildren(timeElement(reading.seen, reading.seen_text));
    const values = row.querySelector("td.values");
    let value = values.querySelector('[data-variable="' + CSS.escape(reading.variable) + '"]');
    if (!value) {
      value = document.createElement("span");
      value.className = "value";
      value.dataset.variable = reading.variable;
      const label = document.createElement("span");
      label.className = "muted";
      label.textContent = reading.variable;
      value.append(label, " ", document.createElement("strong"));
      values.append(value, " ");
    }
    value.querySelector("strong").textContent = reading.value;
    flash(row);
  }

  function updateVariableRow(table, reading) {
    if (reading.device !== table.dataset.liveDevice) return;
    let cell = table.querySelector('td.value[data-variable="' + CSS.escape(reading.variable) + '"]');
    let row;
    if (!cell) {
      row = document.createElement("tr");
      row.dataset.variableRow = reading.variable;
      const label = document.createElement("td");
      label.textContent = reading.variable;
      cell = document.createElement("td");
      cell.className = "value";
      cell.dataset.variable = reading.variable;
      cell.appendChild(document.createElement("strong"));
      const at = document.createElement("td");
      at.className = "at";
      row.append(label, cell, at, document.createElement("td"));
      table.tBodies[0].appendChild(row);
    } else {
      row = cell.closest("tr");
    }
    cell.querySelector("strong").textContent = reading.value;
    row.querySelector("td.at").replaceChildren(timeElement(reading.at, reading.at));
    const seen = document.getElementById("device-seen");
    if (seen) seen.replaceChildren(timeElement(reading.seen, reading.seen_text));
    flash(row);
  }

  // ---- The chart: min–max band and mean line of the buckets the server aggregated.
  const chart = (function () {
    const canvas = document.getElementById("chart");
    const noop = { live() {} };
    if (!canvas) return noop;
    const variableSelect = document.getElementById("chart-variable");
    const rangeSelect = document.getElementById("chart-range");
    const from = document.getElementById("chart-from");
    const to = document.getElementById("chart-to");
    const exportLink = document.getElementById("chart-export");
    const summary = document.getElementById("chart-summary");
    const controls = document.getElementById("chart-controls");
    let data = null;
    let request = 0;

    function range() {
      if (rangeSelect.value === "custom") {
        const start = Date.parse(from.value + "Z");
        const end = Date.parse(to.value + "Z");
        if (isNaN(start) || isNaN(end) || start >= end) return null;
        return { from: start, to: end, rolling: false };
      }
      const end = Date.now();
      return { from: end - Number(rangeSelect.value), to: end, rolling: true };
    }

    function load() {
      if (!variableSelect.value) {
        summary.textContent = "No variable with numbers to chart.";
        return;
      }
      const span = range();
      if (!span) {
        summary.textContent = "Choose a start before the end.";
        return;
      }
      const query = "?from=" + Math.floor(span.from) + "&to=" + Math.ceil(span.to);
      const base = canvas.dataset.series + encodeURIComponent(variableSelect.value);
      exportLink.href = base + "/export.csv" + query;
      const mine = ++request;
      summary.textContent = "Loading…";
      fetch(base + "/series" + query, { headers: { Accept: "application/json" } })
        .then((response) => response.json().then((body) => ({ ok: response.ok, body })))
        .then(({ ok, body }) => {
          if (mine !== request) return;
          if (!ok) { summary.textContent = body.error || "The chart could not be loaded."; data = null; draw(); return; }
          data = {
            from: body.from, to: body.to, origin: body.from, bucket: body.bucket_ms, unit: body.unit,
            points: body.points, rolling: span.rolling,
          };
          draw();
        })
        .catch(() => { if (mine === request) summary.textContent = "The chart could not be loaded."; });
    }

    function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

    function niceTicks(low, high, count) {
      const span = high - low || Math.abs(high) || 1;
      const step0 = span / count;
      const magnitude = Math.pow(10, Math.floor(Math.log10(step0)));
      const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= step0) || step0;
      const first = Math.ceil(low / step) * step;
      const ticks = [];
      // By index, never by adding the step: at magnitudes past 2^53 adding a small step changes nothing, and a
      // loop that adds would never end (a device's values can freeze its viewers' tabs).
      for (let i = 0; i <= count * 3 && ticks.length <= count * 2; i++) {
        const value = first + i * step;
        if (value > high + step / 1e6) break;
        if (ticks.length && value === ticks[ticks.length - 1]) break;
        ticks.push(value);
      }
      return ticks;
    }

    function timeLabel(ms, span) {
      const iso = new Date(ms).toISOString();
      return span <= 86400000 ? iso.slice(11, 16) : iso.slice(5, 10) + " " + iso.slice(11, 16);
    }

    function draw() {
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      const g = canvas.getContext("2d");
      g.setTransform(ratio, 0, 0, ratio, 0, 0);
      g.clearRect(0, 0, width, height);
      if (!data) return;
      const points = data.points;
      const left = 56, right = 12, top = 12, bottom = 28;
      const plotWidth = Math.max(10, width - left - right);
      const plotHeight = Math.max(10, height - top - bottom);
      let low = Infinity, high = -Infinity, count = 0;
      for (const p of points) { low = Math.min(low, p[1]); high = Math.max(high, p[2]); count += p[4]; }
      if (!points.length) { low = 0; high = 1; }
      if (low === high) { low -= 1; high += 1; }
      const pad = (high - low) * 0.05;
      low -= pad; high += pad;
      const x = (ms) => left + ((ms - data.from) / (data.to - data.from)) * plotWidth;
      const y = (value) => top + (1 - (value - low) / (high - low)) * plotHeight;
      g.font = "12px system-ui, sans-serif";
      g.fillStyle = css("--muted");
      g.strokeStyle = css("--chart-grid");
      g.lineWidth = 1;
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (const tick of niceTicks(low, high, 5)) {
        g.beginPath(); g.moveTo(left, y(tick)); g.lineTo(left + plotWidth, y(tick)); g.stroke();
        g.fillText(String(Number(tick.toPrecision(6))), left - 6, y(tick));
      }
      g.textAlign = "center";
      g.textBaseline = "top";
      const span = data.to - data.from;
      const labels = Math.max(2, Math.floor(plotWidth / 110));
      for (let i = 0; i <= labels; i++) {
        const ms = data.from + (span * i) / labels;
        g.fillText(timeLabel(ms, span), Math.min(Math.max(x(ms), left + 20), left + plotWidth - 20), top + plotHeight + 8);
      }
      if (points.length) {
        const center = (p) => x(p[0] + data.bucket / 2);
        // Each bucket's range from min to max: a band where buckets touch, a bar where they stand apart.
        const sparse = points.length < plotWidth / 6;
        g.fillStyle = css("--chart-band");
        if (sparse) {
          const width = Math.max(3, Math.min(12, (plotWidth * data.bucket) / (data.to - data.from)));
          for (const p of points) g.fillRect(center(p) - width / 2, y(p[2]), width, Math.max(2, y(p[1]) - y(p[2])));
        } else {
          g.beginPath();
          points.forEach((p, i) => { i ? g.lineTo(center(p), y(p[2])) : g.moveTo(center(p), y(p[2])); });
          for (let i = points.length - 1; i >= 0; i--) g.lineTo(center(points[i]), y(points[i][1]));
          g.closePath();
          g.fill();
        }
        g.strokeStyle = css("--chart-line");
        g.fillStyle = css("--chart-line");
        g.lineWidth = 2;
        g.beginPath();
        points.forEach((p, i) => { i ? g.lineTo(center(p), y(p[3])) : g.moveTo(center(p), y(p[3])); });
        g.stroke();
        if (sparse) {
          for (const p of points) { g.beginPath(); g.arc(center(p), y(p[3]), 3, 0, 2 * Math.PI); g.fill(); }
        }
      }
      const unit = data.unit ? " " + data.unit : "";
      summary.textContent = points.length
        ? count + " readings from " + new Date(data.from).toISOString().slice(0, 16).replace("T", " ") + " to " +
          new Date(data.to).toISOString().slice(0, 16).replace("T", " ") + " UTC, between " +
          Number(Math.min(...points.map((p) => p[1])).toPrecision(6)) + " and " +
          Number(Math.max(...points.map((p) => p[2])).toPrecision(6)) + unit + "."
        : "No numeric reading in this range.";
      canvas.dataset.points = String(points.length);
    }

    // A live reading of the charted variable joins a rolling chart's last bucket.
    function live(reading) {
      if (!data || !data.rolling) return;
      const option = variableSelect.selectedOptions[0];
      if (!option || option.dataset.label !== reading.variable) return;
      const value = typeof reading.number === "number" ? reading.number : NaN;
      const at = Date.parse(reading.at);
      if (!isFinite(value) || isNaN(at)) return;
      // The view rolls forward; the buckets stay on the server's grid (from the range's first start), so a
      // reading joins the bucket the server would have put it in.
      const shift = Math.max(0, at - data.to);
      data.from += shift; data.to += shift;
      const start = data.origin + Math.floor((at - data.origin) / data.bucket) * data.bucket;
      const last = data.points[data.points.length - 1];
      if (last && last[0] === start) {
        last[3] = (last[3] * last[4] + value) / (last[4] + 1);
        last[1] = Math.min(last[1], value); last[2] = Math.max(last[2], value); last[4] += 1;
      } else if (!last || start > last[0]) {
        data.points.push([start, value, value, value, 1]);
      }
      while (data.points.length && data.points[0][0] + data.bucket < data.from) data.points.shift();
      draw();
    }

    rangeSelect.addEventListener("change", () => {
      const custom = rangeSelect.value === "custom";
      document.querySelectorAll(".custom-range").forEach((element) => { element.hidden = !custom; });
      if (custom && !from.value) {
        const end = new Date();
        to.value = end.toISOString().slice(0, 16);
        from.value = new Date(end.getTime() - 86400000).toISOString().slice(0, 16);
      }
      if (!custom) load();
    });
    variableSelect.addEventListener("change", load);
    controls.addEventListener("submit", (event) => { event.preventDefault(); load(); });
    let resizing = 0;
    window.addEventListener("resize", () => { clearTimeout(resizing); resizing = setTimeout(draw, 100); });
    load();
    return { live };
  })();

  document.querySelectorAll("table[data-live]").forEach(followLive);
})();
