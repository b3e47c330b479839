/* WorkerRMQ dashboard: small SVG line charts, drawn with the DOM (no library, no build step).
 *
 * A chart is a time window (the last 15 minutes) ending now; each series is a list of
 * [time in ms, value] points, and a null value breaks its line (no sample there).
 */
"use strict";

window.WorkerRMQCharts = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 320;
  const HEIGHT = 110;
  const LEFT = 36;
  const RIGHT = 6;
  const TOP = 6;
  const BOTTOM = 16;

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** The smallest of 1, 2, 5 times a power of ten that is at least *value*: a round top for the axis. */
  function niceMax(value) {
    if (!(value > 0) || !isFinite(value)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) if (step * power >= value * 0.999999) return step * power;
    return 10 * power;
  }

  function format(value) {
    if (value >= 100) return String(Math.round(value));
    const text = value.toFixed(value >= 10 ? 0 : value >= 1 ? 1 : 2);
    return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
  }

  /**
   * Draw *series* ([{label, points}]) into *svg*, over *windowMs* ending at *now*.
   * *top* fixes the y axis' top (for percentages); otherwise it is rounded up from the data.
   */
  function draw(svg, series, options) {
    const now = options.now;
    const windowMs = options.windowMs;
    const start = now - windowMs;
    let highest = 0;
    for (const s of series) {
      for (const [t, v] of s.points) if (t >= start && v !== null && v > highest) highest = v;
    }
    const top = options.top !== undefined ? options.top : niceMax(highest);
    const plotW = WIDTH - LEFT - RIGHT;
    const plotH = HEIGHT - TOP - BOTTOM;
    const x = (t) => LEFT + plotW * ((t - start) / windowMs);
    const y = (v) => TOP + plotH * (1 - Math.min(Math.max(v, 0), top) / top);

    svg.replaceChildren();
    svg.setAttribute("viewBox", "0 0 " + WIDTH + " " + HEIGHT);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", options.label);
    svg.append(svgEl("title", {}, options.label));

    for (const fraction of [0, 0.5, 1]) {
      const value = top * fraction;
      const py = y(value);
      svg.append(svgEl("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: py, y2: py, class: fraction ? "grid" : "axis" }));
      svg.append(svgEl("text", { x: LEFT - 4, y: py + 3, "text-anchor": "end", class: "axis-label" },
        format(value) + (options.unit || "")));
    }
    const minutes = Math.round(windowMs / 60000);
    for (const ago of [minutes, Math.round((minutes * 2) / 3), Math.round(minutes / 3), 0]) {
      const px = x(now - ago * 60000);
      svg.append(svgEl("text", {
        x: px, y: HEIGHT - 3, class: "axis-label",
        "text-anchor": ago === minutes ? "start" : ago === 0 ? "end" : "middle",
      }, ago === 0 ? "now" : "−" + ago + " min"));
    }

    series.forEach((s, index) => {
      let d = "";
      let pen = "M";
      for (const [t, v] of s.points) {
        if (t < start) continue;
        if (v === null || !isFinite(v)) {
          pen = "M";
          continue;
        }
        d += pen + x(t).toFixed(1) + " " + y(v).toFixed(1) + " ";
        pen = "L";
      }
      const path = svgEl("path", { d: d.trim() || "M0 0", class: "series series-" + index });
      path.dataset.series = s.label;
      path.dataset.points = String(s.points.filter(([t, v]) => t >= start && v !== null).length);
      svg.append(path);
    });
  }

  /** A legend (a list of swatches and labels) for *labels*, coloured as draw() colours them. */
  function legend(labels) {
    const list = document.createElement("ul");
    list.className = "legend";
    labels.forEach((label, index) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch series-" + index;
      swatch.setAttribute("aria-hidden", "true");
      item.append(swatch, document.createTextNode(label));
      list.append(item);
    });
    return list;
  }

  return { draw, legend, svg: (attrs) => svgEl("svg", attrs) };
})();
