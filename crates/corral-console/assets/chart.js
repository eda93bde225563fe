// A small SVG line chart for time series: time on x, one line per series, axes with ticks.
// Drawn by the console itself (no chart library, nothing fetched).
'use strict';
Corral.chart = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const COLORS = ['#1f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#0a7ea4'];
  const svg = (tag, attrs = {}, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  function ticks(min, max, count) {
    if (min === max) return [min];
    const step0 = (max - min) / count;
    const magnitude = 10 ** Math.floor(Math.log10(step0));
    const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= step0);
    const out = [];
    for (let v = Math.ceil(min / step) * step; v <= max + step / 1e6; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function timeLabel(ms, span) {
    const d = new Date(ms);
    if (span > 2 * 86400e3) return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: span < 600e3 ? '2-digit' : undefined });
  }

  /**
   * Draws `series` ([{name, points: [[timeMs, value], ...]}]) into `container`, replacing what
   * was there. `from`/`to` (ms) fix the x range; otherwise it fits the data.
   */
  function draw(container, series, { from, to } = {}) {
    const width = Math.max(container.clientWidth || 600, 300), height = 260;
    const pad = { left: 56, right: 16, top: 12, bottom: 28 };
    const points = series.flatMap((s) => s.points);
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none' });
    if (!points.length) {
      root.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle' }, 'No data in this range yet.'));
      container.replaceChildren(root);
      return;
    }
    const x0 = from ?? Math.min(...points.map((p) => p[0])), x1 = Math.max(to ?? -Infinity, ...points.map((p) => p[0]));
    let y0 = Math.min(...points.map((p) => p[1])), y1 = Math.max(...points.map((p) => p[1]));
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    const margin = (y1 - y0) * 0.08; y0 -= margin; y1 += margin;
    const sx = (t) => pad.left + ((t - x0) / Math.max(x1 - x0, 1)) * (width - pad.left - pad.right);
    const sy = (v) => height - pad.bottom - ((v - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
    for (const v of ticks(y0, y1, 5)) {
      root.append(svg('line', { class: 'grid', x1: pad.left, x2: width - pad.right, y1: sy(v), y2: sy(v) }));
      root.append(svg('text', { x: pad.left - 6, y: sy(v) + 4, 'text-anchor': 'end' }, Corral.number(v)));
    }
    const span = x1 - x0;
    for (let i = 0; i <= 4; i++) {
      const t = x0 + (span * i) / 4;
      root.append(svg('text', { x: sx(t), y: height - 8, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, timeLabel(t, span)));
    }
    root.append(svg('line', { class: 'axis', x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }));
    root.append(svg('line', { class: 'axis', x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }));
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
      const d = sorted.map((p, j) => `${j ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
      root.append(svg('path', { class: 'line', d, stroke: color, 'data-series': s.name, 'data-points': sorted.length }));
      const last = sorted[sorted.length - 1];
      root.append(svg('circle', { class: 'dot', cx: sx(last[0]), cy: sy(last[1]), r: 4, fill: color }));
      if (series.length > 1) root.append(svg('text', { x: pad.left + 8 + i * 120, y: pad.top + 10, fill: color }, s.name));
    });
    container.replaceChildren(root);
  }

  return { draw };
})();
