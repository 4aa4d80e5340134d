// The central dashboard: draws api/summary as inline SVG charts and tables, with no library.
// Every value from the summary reaches the page as text (append, setAttribute), never as
// markup, so a label cannot turn into an element even if one slipped past the feed's checks.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const REFRESH_MS = 60000;
  // Okabe-Ito: told apart by colour-blind readers too
  const SERIES_COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"];
  const SHARE_COLOURS = ["#e3e7ed", "#9ecae1", "#4292c6", "#08519c"];
  const BAR_COLOUR = "#4c78a8";
  const ROW = 20;
  const chosen = new Map(); // series -> the period its reader picked, kept across refreshes

  function build(element, attrs, children) {
    for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
    for (const child of children) {
      if (child !== null && child !== undefined) {
        element.append(child instanceof Node ? child : String(child));
      }
    }
    return element;
  }
  const el = (tag, attrs = {}, ...children) => build(document.createElement(tag), attrs, children);
  const svg = (tag, attrs = {}, ...children) =>
    build(document.createElementNS(SVG_NS, tag), attrs, children);

  const seriesOf = (b) => (b.queue === null ? b.site : `${b.site} · ${b.queue}`);
  const percent = (rate) => (rate === null ? "withheld" : `${(rate * 100).toFixed(1)} %`);
  const count = (value, hidden) =>
    value === null ? "withheld" : hidden > 0 ? `≥ ${value}` : String(value);

  function withheldText(b) {
    const k = b.k ?? "k";
    return b.boxes > 1
      ? `withheld (fewer than ${k} calls at each of its ${b.boxes} boxes)`
      : `withheld (fewer than ${k} calls)`;
  }

  function histogramItems(histogram) {
    if (histogram === null) return [];
    return histogram.labels.map((label, i) => ({
      label,
      count: histogram.counts[i],
      hidden: histogram.hidden[i],
    }));
  }

  function bySeries(buckets) {
    const groups = new Map();
    const keyed = [...buckets].sort(
      (a, b) => a.site.localeCompare(b.site) || (a.queue ?? "").localeCompare(b.queue ?? ""),
    );
    for (const b of keyed) {
      const key = seriesOf(b);
      if (!groups.has(key)) groups.set(key, []);
    }
    // the summary lists buckets oldest period first; each series keeps that order
    for (const b of buckets) groups.get(seriesOf(b)).push(b);
    return groups;
  }

  function renderLiveness(boxes) {
    const known = new Set(["online", "offline"]);
    const rows = boxes.map((b) =>
      el(
        "tr",
        { "data-box": b.box },
        el("td", {}, b.box),
        el("td", {}, b.site ?? "not heard from"),
        el("td", { class: `state state-${known.has(b.state) ? b.state : "unknown"}` }, b.state),
        el("td", {}, b.release ?? "—"),
        el("td", {}, b.alarms.length ? b.alarms.join(", ") : "none"),
      ),
    );
    document.querySelector("#liveness tbody").replaceChildren(...rows);
    const online = boxes.filter((b) => b.state === "online").length;
    document.getElementById("liveness-note").textContent = boxes.length
      ? `${online} of ${boxes.length} boxes online (their last status; no call times).`
      : "No box has reported yet.";
  }

  function tensionChart(buckets) {
    const periods = [...new Set(buckets.map((b) => b.period))];
    const series = bySeries(buckets);
    const W = 760;
    const H = Math.max(240, 40 + series.size * 18);
    const left = 48;
    const right = 170;
    const top = 12;
    const bottom = 36;
    const plotW = W - left - right;
    const plotH = H - top - bottom;
    const rates = buckets.map((b) => b.tension_rate).filter((r) => r !== null);
    const highest = Math.max(0.01, ...rates);
    const yStep = [0.02, 0.05, 0.1, 0.2, 0.25].find((s) => highest / s <= 5) ?? 0.25;
    const yMax = Math.ceil(highest / yStep - 1e-9) * yStep;
    const x = (i) => left + (periods.length === 1 ? plotW / 2 : (i * plotW) / (periods.length - 1));
    const y = (rate) => top + plotH - (rate / yMax) * plotH;
    const chart = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      width: W,
      height: H,
      role: "img",
      "aria-label": "Tension rate per period, one line per site and queue",
    });
    for (let i = 0; i * yStep <= yMax + 1e-9; i++) {
      const rate = i * yStep;
      chart.append(
        svg("line", { class: "grid", x1: left, x2: left + plotW, y1: y(rate), y2: y(rate) }),
        svg("text", { class: "axis", x: left - 6, y: y(rate) + 4, "text-anchor": "end" },
          `${Math.round(rate * 100)} %`),
      );
    }
    const step = Math.ceil(periods.length / 7);
    periods.forEach((period, i) => {
      if ((periods.length - 1 - i) % step === 0) {
        chart.append(svg("text", { class: "axis", x: x(i), y: top + plotH + 18,
          "text-anchor": "middle" }, period));
      }
    });
    const marks = [];
    let n = 0;
    for (const [key, items] of series) {
      const colour = SERIES_COLOURS[n % SERIES_COLOURS.length];
      const at = new Map(items.map((b) => [b.period, b]));
      let run = [];
      const flush = () => {
        if (run.length > 1) {
          chart.append(svg("polyline", { points: run.join(" "), fill: "none", stroke: colour,
            "stroke-width": 2.5, "stroke-linejoin": "round" }));
        }
        run = [];
      };
      periods.forEach((period, i) => {
        const b = at.get(period);
        if (b === undefined || b.tension_rate === null) {
          flush();
          if (b !== undefined) {
            const why = b.withheld ? withheldText(b) : "tension rate withheld";
            marks.push(svg("text", { class: "mark", x: x(i), y: y(0) - 4, fill: colour,
              "text-anchor": "middle", "data-series": key, "data-period": period },
            svg("title", {}, `${key}, ${period}: ${why}`), "×"));
          }
          return;
        }
        run.push(`${x(i)},${y(b.tension_rate)}`);
        marks.push(svg("circle", { cx: x(i), cy: y(b.tension_rate), r: 4, fill: colour },
          svg("title", {}, `${key}, ${period}: ${percent(b.tension_rate)} of `
            + `${count(b.calls_analysed, b.withheld_boxes)} analysed calls`)));
      });
      flush();
      const ly = top + 8 + n * 18;
      chart.append(
        svg("line", { x1: W - right + 14, x2: W - right + 34, y1: ly, y2: ly, stroke: colour,
          "stroke-width": 3 }),
        svg("text", { x: W - right + 40, y: ly + 4, "data-series": key }, key),
      );
      n += 1;
    }
    chart.append(svg("text", { class: "axis", x: W - right + 14, y: top + 12 + n * 18 },
      "× withheld"));
    chart.append(...marks);
    return chart;
  }

  function legend(title, labels, colours) {
    const W = 560;
    const chart = svg("svg", { viewBox: `0 0 ${W} 18`, width: W, height: 18, "aria-hidden": "true" },
      svg("text", { class: "axis", x: 0, y: 13 }, title));
    let x = 8 + title.length * 6;
    labels.forEach((label, i) => {
      chart.append(svg("rect", { x, y: 3, width: 12, height: 12, fill: colours[i] }),
        svg("text", { x: x + 16, y: 13 }, label));
      x += 28 + label.length * 6;
    });
    return chart;
  }

  function emotionChart(emotions) {
    const names = Object.keys(emotions);
    if (!names.length) return el("p", { class: "note" }, "Nothing analysed on this side.");
    const W = 300;
    const labelW = 74;
    const valueW = 70;
    const H = names.length * ROW + 4;
    const known = (h) => h.counts.reduce((sum, c) => sum + (c ?? 0), 0);
    const scale = (W - labelW - valueW) / Math.max(1, ...names.map((name) => known(emotions[name])));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": "calls per share of the side's speech carrying each emotion" });
    names.forEach((name, i) => {
      const h = emotions[name];
      const top = i * ROW + 2;
      const row = svg("g", { "data-label": name },
        svg("text", { x: labelW - 6, y: top + 13, "text-anchor": "end" }, name));
      let x = labelW;
      h.counts.forEach((c, j) => {
        if (c === null) return;
        row.append(svg("rect", { x, y: top + 2, width: c * scale, height: ROW - 6,
          fill: SHARE_COLOURS[j % SHARE_COLOURS.length] },
        svg("title", {}, `${name}, ${h.labels[j]}: ${count(c, h.hidden[j])} calls`)));
        x += c * scale;
      });
      const withheld = h.counts.filter((c) => c === null).length;
      if (withheld) {
        row.append(svg("text", { class: "value withheld", x: x + 4, y: top + 13 },
          svg("title", {}, `${withheld} of ${h.labels.length} classes withheld (fewer than k calls)`),
          `${withheld} withheld`));
      }
      chart.append(row);
    });
    return chart;
  }

  function barChart(items, what) {
    if (!items.length) return el("p", { class: "note" }, "None.");
    const W = 300;
    const labelW = Math.min(160, 12 + 6.3 * Math.max(...items.map((i) => i.label.length)));
    const valueW = 64;
    const H = items.length * ROW + 4;
    const scale = (W - labelW - valueW) / Math.max(1, ...items.map((i) => i.count ?? 0));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": what });
    items.forEach((item, i) => {
      const top = i * ROW + 2;
      const row = svg("g", { "data-label": item.label },
        svg("text", { x: labelW - 6, y: top + 13, "text-anchor": "end" }, item.label));
      if (item.count === null) {
        row.append(svg("text", { class: "value withheld", x: labelW, y: top + 13 }, "withheld"));
      } else {
        const width = item.count * scale;
        row.append(
          svg("rect", { x: labelW, y: top + 2, width, height: ROW - 6, fill: BAR_COLOUR }),
          svg("text", { class: "value", x: labelW + width + 4, y: top + 13 },
            count(item.count, item.hidden)),
        );
      }
      chart.append(row);
    });
    return chart;
  }

  const kpi = (label, value) =>
    el("div", { class: "kpi" },
      el("span", { class: value === "withheld" ? "value withheld" : "value" }, value),
      el("span", { class: "label" }, label));
  const figure = (title, chart) => el("div", {}, el("h4", {}, title), chart);

  function cardBody(b) {
    if (b.withheld) return [el("p", { class: "withheld" }, withheldText(b))];
    const parts = [
      el("div", { class: "kpis" },
        kpi("calls seen", count(b.calls_seen, b.withheld_boxes)),
        kpi("calls analysed", count(b.calls_analysed, b.withheld_boxes)),
        kpi("sampled", percent(b.sampling_rate)),
        kpi("tension rate", percent(b.tension_rate))),
    ];
    if (b.withheld_boxes > 0) {
      parts.push(el("p", { class: "caveat" }, `${b.withheld_boxes} of ${b.boxes} boxes `
        + `withheld this period (fewer than ${b.k} calls each): the counts cover the others.`));
    }
    if (b.noisy_boxes > 0) {
      parts.push(el("p", { class: "caveat" }, `The counts of ${b.noisy_boxes} of ${b.boxes} `
        + "boxes carry differential-privacy noise."));
    }
    const shares = b.emotions.operator.neutral?.labels ?? b.emotions.customer.neutral?.labels;
    if (shares) parts.push(legend("Calls by share of the side's speech:", shares, SHARE_COLOURS));
    const topics = Object.entries(b.topics).map(([label, t]) =>
      ({ label, count: t.calls, hidden: t.hidden }));
    parts.push(el("div", { class: "charts" },
      figure("Operator emotions", emotionChart(b.emotions.operator)),
      figure("Customer emotions", emotionChart(b.emotions.customer)),
      figure("Topics (calls mentioning them)", barChart(topics, "calls per topic")),
      figure("Coverage (share of kept audio analysed)",
        barChart(histogramItems(b.coverage), "calls per analysis coverage")),
      figure("Trend within the call", barChart(histogramItems(b.trend), "calls per trend")),
      figure("Tension", barChart(histogramItems(b.tension), "calls per kind of tension"))));
    return parts;
  }

  function renderSeries(buckets) {
    const cards = [];
    for (const [key, items] of bySeries(buckets)) {
      const newest = [...items].reverse();
      const picked = newest.find((b) => b.period === chosen.get(key))
        ?? newest.find((b) => !b.withheld) ?? newest[0];
      const body = el("div", { class: "card-body" });
      const show = (b) => {
        body.setAttribute("data-period", b.period);
        body.replaceChildren(...cardBody(b));
      };
      const select = el("select", { "aria-label": `period shown for ${key}` });
      for (const b of newest) {
        const option = el("option", { value: b.period }, b.withheld ? `${b.period} (withheld)` : b.period);
        option.selected = b === picked;
        select.append(option);
      }
      select.addEventListener("change", () => {
        chosen.set(key, select.value);
        show(items.find((b) => b.period === select.value));
      });
      show(picked);
      cards.push(el("section", { class: "panel", "data-series": key },
        el("div", { class: "card-head" }, el("h3", {}, key), select), body));
    }
    document.getElementById("series").replaceChildren(...cards);
  }

  function renderTable(buckets) {
    const cell = (text) => el("td", { class: text === "withheld" ? "num withheld" : "num" }, text);
    const rows = [...buckets].reverse().map((b) => {
      const attrs = { "data-series": seriesOf(b), "data-period": b.period };
      const head = [el("td", {}, b.site), el("td", {}, b.queue ?? "—"), el("td", {}, b.period),
        el("td", { class: "num" }, b.boxes)];
      if (b.withheld) {
        return el("tr", attrs, ...head, el("td", { colspan: 7, class: "withheld" }, withheldText(b)));
      }
      const trend = (label) => {
        const i = b.trend === null ? -1 : b.trend.labels.indexOf(label);
        return i < 0 ? "—" : count(b.trend.counts[i], b.trend.hidden[i]);
      };
      return el("tr", attrs, ...head,
        cell(count(b.calls_seen, b.withheld_boxes)), cell(count(b.calls_analysed, b.withheld_boxes)),
        cell(percent(b.sampling_rate)), cell(percent(b.tension_rate)),
        cell(trend("improving")), cell(trend("stable")), cell(trend("worsening")));
    });
    document.querySelector("#periods tbody").replaceChildren(...rows);
  }

  async function load() {
    const status = document.getElementById("status");
    try {
      const response = await fetch("api/summary", { cache: "no-store" });
      const data = await response.json();
      if (!response.ok) throw new Error(data.error ?? `HTTP ${response.status}`);
      renderLiveness(data.boxes);
      document.getElementById("tension-chart").replaceChildren(tensionChart(data.buckets));
      renderSeries(data.buckets);
      renderTable(data.buckets);
      status.className = "";
      status.textContent = `${data.buckets.length} buckets: up to ${data.periods_per_series} `
        + "periods of each site and queue, refreshed every minute.";
      document.documentElement.dataset.state = "ready";
    } catch (error) {
      status.className = "error";
      status.textContent = `The summary could not be loaded (${error.message}); `
        + "the page tries again every minute.";
      document.documentElement.dataset.state = "error";
    }
  }

  load();
  setInterval(load, REFRESH_MS);
})();
