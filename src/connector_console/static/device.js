// A device's graph: the samples of one metric over the chosen range, drawn with uPlot
// (served from /static/vendor, fetched from the npm registry at install, never from the
// internet by the page). A long range comes as rollups (5-minute or hourly averages, with
// their minima and maxima drawn as a band); the page says which. The number of points
// drawn is kept in data-points, the resolution in data-resolution.
"use strict";
(function () {
  const graph = document.getElementById("graph");
  const status = document.getElementById("graph-status");
  const resolution = document.getElementById("graph-resolution");
  const form = document.getElementById("graph-form");
  if (!graph) return;

  if (form) {
    const series = document.getElementById("g-series");
    const pick = () => {
      const option = series.selectedOptions[0];
      document.getElementById("g-metric").value = option.dataset.metric;
      document.getElementById("g-index").value = option.dataset.index;
    };
    series.addEventListener("change", () => { pick(); form.submit(); });
    document.getElementById("g-range").addEventListener("change", () => form.submit());
    // The series' own field is not needed in the address: metric and index are.
    form.addEventListener("submit", () => { pick(); series.disabled = true; });
  }

  const d = graph.dataset;
  const query = new URLSearchParams({host: d.host, metric: d.metric, index: d.index,
                                     start: d.start, end: d.end});
  fetch("/api/samples?" + query.toString(), {credentials: "same-origin", cache: "no-store"})
    .then((r) => r.json().then((body) => ({ok: r.ok, body})))
    .then(({ok, body}) => {
      if (!ok) throw new Error(body.error || "the samples cannot be read");
      graph.dataset.points = String(body.ts.length);
      graph.dataset.resolution = body.resolution;
      const label = d.metric + (d.index ? " [" + d.index + "]" : "");
      status.textContent = body.summary + " of " + label + " in this range";
      if (resolution) resolution.textContent = "Resolution: " + body.label;
      if (typeof uPlot === "undefined") {
        status.textContent += " (the graph library is not installed: scripts/vendor-uplot.sh)";
        return;
      }
      const width = Math.max(320, graph.clientWidth || 900);
      const series = [{}, {label: label + (body.min ? " (avg)" : ""), stroke: "#1864ab",
                           width: 2, points: {show: true, size: 4}}];
      const data = [body.ts, body.values];
      const options = {
        width: width, height: 300,
        scales: {x: {time: true, min: Number(d.start), max: Number(d.end)}},
        series: series, axes: [{}, {size: 70}],
      };
      if (body.min) {
        // Rollups: the interval's minimum and maximum, the band between them filled (none
        // for the samples after the last rollup: a gap in the band).
        series.push({label: "min", stroke: "#a5d8ff", width: 1},
                    {label: "max", stroke: "#a5d8ff", width: 1});
        data.push(body.min, body.max);
        options.bands = [{series: [3, 2], fill: "rgba(24, 100, 171, 0.12)"}];
      }
      const plot = new uPlot(options, data, graph);
      graph.dataset.drawn = String(plot.data[0].length);
    })
    .catch((e) => { status.textContent = "No graph: " + e.message; graph.dataset.points = "error"; });
})();
