// Draws the analytics dashboard as inline SVG from the JSON embedded in the page.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, anchor) {
    var t = el("text", {x: x, y: y, "text-anchor": anchor || "start"}, parent);
    t.textContent = content;
    return t;
  }
  function svg(id, name, height) {
    var host = document.getElementById(id);
    var s = el("svg", {width: 440, height: height, viewBox: "0 0 440 " + height,
                       "class": "chart", "data-chart": name}, host);
    return s;
  }
  function money(v) { return (v / 100).toFixed(2); }
  function empty(s, h) { text(s, 220, h / 2, "no data in this range", "middle"); }

  function tiles() {
    var k = data.kpis, host = document.getElementById("tiles");
    [["GMV", money(k.gmv) + " " + data.currency], ["Orders", k.orders], ["AOV", money(k.aov)],
     ["Sessions", k.sessions], ["Conversion", (k.conversion_rate * 100).toFixed(2) + "%"],
     ["Repurchase", (k.repurchase_rate * 100).toFixed(2) + "%"],
     ["Refund rate", (k.refund_rate * 100).toFixed(2) + "%"], ["New members", k.new_members],
     ["Active members", k.active_members]].forEach(function (pair) {
      var d = document.createElement("div");
      d.className = "tile";
      d.innerHTML = "<span></span><b></b>";
      d.firstChild.textContent = pair[0];
      d.lastChild.textContent = String(pair[1]);
      host.appendChild(d);
    });
  }

  function lineChart() {
    // GMV as bars (one per day, so a single day still shows), orders as a line with dots.
    var series = data.series, h = 200, s = svg("chart-gmv", "gmv", h);
    if (!series.length) return empty(s, h);
    var maxG = Math.max.apply(null, series.map(function (d) { return d.gmv; }).concat([1]));
    var maxO = Math.max.apply(null, series.map(function (d) { return d.orders; }).concat([1]));
    var slot = 380 / series.length, barW = Math.max(2, Math.min(40, slot * 0.7));
    function x(i) { return 40 + slot * i + slot / 2; }
    function y(v, max) { return 170 - 145 * Math.max(v, 0) / max; }
    series.forEach(function (d, i) {
      el("rect", {x: (x(i) - barW / 2).toFixed(1), y: y(d.gmv, maxG).toFixed(1), width: barW.toFixed(1),
                  height: (170 - y(d.gmv, maxG)).toFixed(1), fill: "#90cdf4", "class": "gmv-bar",
                  "data-series": "gmv"}, s);
    });
    el("path", {d: series.map(function (d, i) {
      return (i ? "L" : "M") + x(i).toFixed(1) + " " + y(d.orders, maxO).toFixed(1);
    }).join(" "), fill: "none", stroke: "#dd6b20", "stroke-width": 2, "data-series": "orders"}, s);
    series.forEach(function (d, i) {
      el("circle", {cx: x(i).toFixed(1), cy: y(d.orders, maxO).toFixed(1), r: 3, fill: "#dd6b20"}, s);
    });
    el("line", {x1: 40, y1: 170, x2: 420, y2: 170, stroke: "#999"}, s);
    text(s, 40, 190, series[0].day);
    if (series.length > 1) text(s, 420, 190, series[series.length - 1].day, "end");
    text(s, 40, 12, "GMV per day, max " + money(maxG) + " (bars) · orders, max " + maxO + " (line)");
  }

  function bars(id, name, rows, label, value, fmt) {
    var h = Math.max(40, rows.length * 24 + 10), s = svg(id, name, h);
    if (!rows.length) return empty(s, h);
    var max = Math.max.apply(null, rows.map(function (r) { return Math.abs(value(r)); }).concat([1e-9]));
    rows.forEach(function (r, i) {
      var w = 220 * Math.abs(value(r)) / max, y = 5 + i * 24;
      text(s, 0, y + 14, String(label(r)).slice(0, 24));
      el("rect", {x: 160, y: y, width: Math.max(w, 1).toFixed(1), height: 18,
                  fill: value(r) < 0 ? "#c53030" : "#38a169", "class": "bar"}, s);
      text(s, 165 + w, y + 14, fmt(r));
    });
  }

  function heatmap() {
    var rows = data.cohorts, maxLen = 0;
    rows.forEach(function (r) { maxLen = Math.max(maxLen, r.retention.length); });
    var h = Math.max(40, rows.length * 22 + 30), s = svg("chart-cohorts", "cohorts", h);
    if (!rows.length) return empty(s, h);
    var cw = Math.min(40, 300 / Math.max(maxLen, 1));
    rows.forEach(function (r, i) {
      var y = 20 + i * 22;
      text(s, 0, y + 14, r.cohort + " (" + r.size + ")");
      r.retention.forEach(function (c, j) {
        var shade = Math.round(255 - 200 * c.share);
        el("rect", {x: 110 + j * cw, y: y, width: cw - 2, height: 20, "class": "cell",
                    fill: "rgb(" + shade + "," + shade + ",255)"}, s);
        text(s, 110 + j * cw + 2, y + 14, Math.round(c.share * 100) + "%");
      });
    });
    text(s, 110, 12, "months after the first purchase →");
  }

  tiles();
  lineChart();
  bars("chart-funnel", "funnel", data.kpis.funnel.steps, function (r) { return r.step; },
       function (r) { return r.sessions; }, function (r) { return r.sessions + " (" + (r.rate_from_start * 100).toFixed(1) + "%)"; });
  bars("chart-top", "top-products", data.top_products, function (r) { return r.title || r.product_id; },
       function (r) { return r.units; }, function (r) { return r.units + " · " + money(r.revenue); });
  heatmap();
  bars("chart-roi", "roi", data.campaign_roi.campaigns, function (r) { return r.campaign_id; },
       function (r) { return r.roi === null ? 0 : r.roi; },
       function (r) { return r.roi === null ? "no cost" : (r.roi * 100).toFixed(0) + "% ROI"; });
  var arms = [];
  data.experiments.forEach(function (e) {
    // The variant first: long experiment keys would otherwise hide which arm a bar is.
    e.variants.forEach(function (v) { arms.push({name: v.variant + " · " + e.experiment_key, v: v}); });
  });
  bars("chart-experiments", "experiments", arms, function (r) { return r.name; },
       function (r) { return r.v.rate; }, function (r) {
         return (r.v.rate * 100).toFixed(1) + "%" + (r.v.p_value === null ? "" : " p=" + r.v.p_value.toFixed(3));
       });
  document.body.setAttribute("data-rendered", "true");
})();
