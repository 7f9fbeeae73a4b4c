// Small line charts drawn as SVG from the series the console's API returns.

import { el, svg } from "./dom.js";

const WIDTH = 320;
const HEIGHT = 120;
const PAD = { left: 36, right: 8, top: 8, bottom: 18 };
const COLOURS = {
  ok: "#2e7d32", completed: "#2e7d32", p50: "#1565c0", running: "#1565c0",
  error: "#c62828", failed: "#c62828", killed: "#6a1b9a", timeout: "#ef6c00",
  limit: "#f9a825", stopped: "#ef6c00", cancelled: "#757575", p95: "#8e24aa", queued: "#ef6c00",
};
const SPARE = ["#00838f", "#5d4037", "#ad1457", "#455a64"];

function colourOf(name, index) {
  return COLOURS[name] || SPARE[index % SPARE.length];
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** A chart of `series` ({name: [value|null, ...]}) over `times` (Unix seconds). */
export function lineChart(title, times, series, unit) {
  const names = Object.keys(series);
  const values = names.flatMap((name) => series[name]).filter((v) => typeof v === "number");
  const figure = el("figure", { class: "chart" }, el("figcaption", null, title));
  if (times.length < 1 || values.length === 0) {
    figure.append(el("p", { class: "muted small" }, "No data yet: figures come in every five seconds."));
    return figure;
  }
  const top = niceMax(Math.max(...values));
  const innerWidth = WIDTH - PAD.left - PAD.right;
  const innerHeight = HEIGHT - PAD.top - PAD.bottom;
  const first = times[0];
  const span = Math.max(times[times.length - 1] - first, 1);
  const x = (t) => PAD.left + ((t - first) / span) * innerWidth;
  const y = (v) => PAD.top + innerHeight - (v / top) * innerHeight;
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": title,
    class: "plot",
  });
  chart.append(
    svg("line", { x1: PAD.left, y1: y(0), x2: WIDTH - PAD.right, y2: y(0), stroke: "#9e9e9e" }),
    svg("line", { x1: PAD.left, y1: y(top), x2: WIDTH - PAD.right, y2: y(top), stroke: "#e0e0e0" }),
    svg("text", { x: PAD.left - 4, y: y(top) + 4, "text-anchor": "end", class: "axis" }, `${top}`),
    svg("text", { x: PAD.left - 4, y: y(0) + 4, "text-anchor": "end", class: "axis" }, "0"),
    svg("text", { x: PAD.left, y: HEIGHT - 4, class: "axis" }, clock(first)),
    svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 4, "text-anchor": "end", class: "axis" },
      clock(times[times.length - 1])),
  );
  names.forEach((name, index) => {
    const colour = colourOf(name, index);
    let path = "";
    let pen = "M";
    series[name].forEach((value, i) => {
      if (typeof value !== "number") {
        pen = "M";
        return;
      }
      path += `${pen}${x(times[i]).toFixed(1)},${y(value).toFixed(1)} `;
      pen = "L";
      chart.append(svg("circle", { cx: x(times[i]).toFixed(1), cy: y(value).toFixed(1), r: 1.8, fill: colour }));
    });
    if (path) {
      chart.append(svg("path", { d: path.trim(), fill: "none", stroke: colour, "stroke-width": 1.5 }));
    }
  });
  figure.append(chart);
  const legend = el("ul", { class: "legend" });
  names.forEach((name, index) => {
    const latest = [...series[name]].reverse().find((v) => typeof v === "number");
    legend.append(el("li", null,
      svg("svg", { viewBox: "0 0 10 10", class: "swatch" },
        svg("rect", { width: 10, height: 10, fill: colourOf(name, index) })),
      ` ${name}`,
      el("span", { class: "muted" }, latest === undefined ? "" : ` ${latest} ${unit}`)));
  });
  figure.append(legend);
  return figure;
}
