// Hand-drawn SVG bar charts with axes, units and a legend. Every bar is a <rect class="mark">.
const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2f6fde", "#1f9d55", "#c47f00", "#d1383d", "#7a4fd6", "#0f9aa8", "#8a6d3b"];
const PAD = { left: 54, right: 10, top: 22, bottom: 40 };

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// A "nice" upper bound and tick step for counts up to max.
function ticks(max) {
  const top = Math.max(1, max);
  const raw = top / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw));
  return { top: Math.ceil(top / step) * step, step };
}

/**
 * Draw bars into svg.
 * categories: x labels; series: [{name, values[]}] (stacked when several);
 * yUnit / xUnit: axis titles.
 */
export function bars(svg, { categories, series, yUnit, xUnit, legend = series.length > 1 }) {
  const width = svg.clientWidth || 480;
  const height = svg.clientHeight || 210;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const totals = categories.map((_, i) => series.reduce((sum, one) => sum + (one.values[i] || 0), 0));
  const { top, step } = ticks(Math.max(0, ...totals));
  const nodes = [];
  for (let v = 0; v <= top; v += step) {
    const y = PAD.top + plotH - (v / top) * plotH;
    nodes.push(s("line", { class: "gridline", x1: PAD.left, x2: width - PAD.right, y1: y, y2: y }));
    nodes.push(s("text", { x: PAD.left - 6, y: y + 3, "text-anchor": "end" }, String(v)));
  }
  nodes.push(s("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: PAD.top + plotH }));
  nodes.push(s("line", { class: "axis", x1: PAD.left, x2: width - PAD.right, y1: PAD.top + plotH, y2: PAD.top + plotH }));
  const middle = PAD.top + plotH / 2;
  nodes.push(s("text", { class: "unit", x: 11, y: middle, transform: `rotate(-90 11 ${middle})`, "text-anchor": "middle" }, yUnit));
  nodes.push(s("text", { class: "unit", x: width - PAD.right, y: height - 4, "text-anchor": "end" }, xUnit));
  const slot = plotW / Math.max(1, categories.length);
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const every = Math.ceil(categories.length / Math.max(1, Math.floor(plotW / 64)));
  categories.forEach((label, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    let base = PAD.top + plotH;
    series.forEach((one, k) => {
      const value = one.values[i] || 0;
      if (value <= 0) return;
      const h = (value / top) * plotH;
      base -= h;
      const mark = s("rect", { class: "mark", x, y: base, width: barW, height: h, fill: one.color || PALETTE[k % PALETTE.length] });
      mark.append(s("title", {}, `${label}${one.name ? ` · ${one.name}` : ""}: ${value}`));
      nodes.push(mark);
    });
    if (i % every === 0) {
      nodes.push(s("text", { x: PAD.left + i * slot + slot / 2, y: PAD.top + plotH + 13, "text-anchor": "middle" }, label));
    }
  });
  if (!totals.some((t) => t > 0)) {
    nodes.push(s("text", { class: "none", x: PAD.left + plotW / 2, y: PAD.top + plotH / 2, "text-anchor": "middle" }, "nothing yet"));
  }
  if (legend) {
    const group = s("g", { class: "legend" });
    let x = PAD.left;
    series.forEach((one, k) => {
      group.append(s("rect", { x, y: 4, width: 9, height: 9, fill: one.color || PALETTE[k % PALETTE.length] }));
      group.append(s("text", { x: x + 13, y: 12 }, one.name));
      x += 22 + one.name.length * 6.2;
    });
    nodes.push(group);
  }
  svg.replaceChildren(...nodes);
}
