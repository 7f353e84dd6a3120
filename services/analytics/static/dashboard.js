// The analytics dashboard: draws /dashboard/data (embedded in the page at first)
// and reloads it when the range changes or the refresh timer fires. Numbers and
// times are formatted in the shop's locale, currency and time zone (Intl).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var chart = null, timer = null, loading = 0;

  function $(id) { return document.getElementById(id); }
  function h(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "style") node.style.cssText = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  // --- formatting in the shop's locale ---------------------------------------------
  var fmt = {};
  function setupFormats() {
    var loc = data.locale;
    var cur = new Intl.NumberFormat(loc, {style: "currency", currency: data.currency});
    var digits = cur.resolvedOptions().maximumFractionDigits;
    var whole = new Intl.NumberFormat(loc, {style: "currency", currency: data.currency,
                                            maximumFractionDigits: 0});
    var num = new Intl.NumberFormat(loc);
    var pct = new Intl.NumberFormat(loc, {style: "percent", maximumFractionDigits: 1});
    var when = new Intl.DateTimeFormat(loc, {timeZone: data.timezone, dateStyle: "medium",
                                             timeStyle: "short"});
    var day = new Intl.DateTimeFormat(loc, {timeZone: data.timezone, month: "short", day: "numeric"});
    fmt = {
      money: function (minor) { return cur.format(minor / Math.pow(10, digits)); },
      // whole units when exact (tables stay narrow), cents when they matter
      moneyWhole: function (minor) {
        var unit = Math.pow(10, digits);
        return (minor % unit === 0 ? whole : cur).format(minor / unit);
      },
      num: function (v) { return v === null || v === undefined ? "—" : num.format(v); },
      pct: function (v) { return v === null || v === undefined ? "—" : pct.format(v); },
      when: function (iso) { return when.format(new Date(iso)); },
      day: function (key) { return day.format(new Date(key + "T12:00:00Z")); },
      duration: function (s) {
        if (s === null || s === undefined) return "—";
        if (s < 3600) return num.format(Math.round(s / 60)) + " min";
        if (s < 172800) return num.format(Math.round(s / 360) / 10) + " h";
        return num.format(Math.round(s / 8640) / 10) + " d";
      }
    };
  }

  // --- tiles with the previous period ----------------------------------------------
  var TILES = [
    ["GMV", "gmv", "money"], ["Orders", "orders", "num"], ["AOV", "aov", "money"],
    ["Sessions", "sessions", "num"], ["Conversion", "conversion_rate", "pct"],
    ["Repurchase", "repurchase_rate", "pct"], ["Refund rate", "refund_rate", "pct", true],
    ["New members", "new_members", "num"], ["Active members", "active_members", "num"]
  ];

  function delta(now, before, kind, lowerIsBetter) {
    var node = h("span", {"class": "delta flat", "data-delta": ""});
    var diff = now - before, up = diff > 0;
    if (diff === 0) { node.textContent = "→ 0"; return node; }
    var text;
    if (kind === "pct") {
      text = (Math.round(Math.abs(diff) * 1000) / 10).toLocaleString(data.locale) + " pt";
    } else if (before === 0) {
      text = "new";
    } else {
      text = fmt.pct(Math.abs(diff) / Math.abs(before));
    }
    node.textContent = (up ? "▲ " : "▼ ") + text;
    node.className = "delta " + ((up !== !!lowerIsBetter) ? "good" : "bad");
    node.title = "previous period: " + fmt[kind](before);
    return node;
  }

  function tiles() {
    var host = $("tiles");
    host.textContent = "";
    TILES.forEach(function (t) {
      var now = data.kpis[t[1]], before = data.previous[t[1]];
      host.appendChild(h("div", {"class": "tile", "data-kpi": t[1]}, [
        h("span", {"class": "label", text: t[0]}),
        h("b", {"class": "value", text: fmt[t[2]](now)}),
        delta(now, before, t[2], t[3])
      ]));
    });
  }

  // --- tables ----------------------------------------------------------------------
  function table(host, headers, rows, emptyText) {
    host = $(host);
    host.textContent = "";
    if (!rows.length) {
      host.appendChild(h("p", {"class": "empty", text: emptyText || "No data in this range."}));
      return;
    }
    var head = h("tr", {}, headers.map(function (x) { return h("th", {text: x}); }));
    var body = rows.map(function (cells) {
      return h("tr", {}, cells.map(function (c, i) {
        if (c instanceof Node) return h("td", i === 0 ? {"class": "name"} : {}, [c]);
        return h("td", i === 0 ? {"class": "name", text: String(c)} : {text: String(c)});
      }));
    });
    host.appendChild(h("table", {}, [h("thead", {}, [head]), h("tbody", {}, body)]));
  }

  function withBar(label, share) {
    return h("span", {}, [label, h("span", {"class": "bar",
      style: "width:" + Math.max(2, Math.round(share * 100)) + "%"})]);
  }

  function funnel() {
    var rows = data.funnel_by_source;
    var most = Math.max.apply(null, rows.map(function (r) { return r.sessions; }).concat([1]));
    table("funnel", ["Source", "Sessions", "Viewed", "Cart", "Checkout", "Ordered", "Conv."],
      rows.map(function (r) {
        return [withBar(r.source, r.sessions / most), fmt.num(r.sessions), fmt.num(r.product_viewed),
                fmt.num(r.cart_updated), fmt.num(r.checkout_started), fmt.num(r.ordered),
                fmt.pct(r.conversion_rate)];
      }));
  }

  function roi(value) { return value === null ? "—" : fmt.pct(value); }

  function channels() {
    table("channels", ["Channel", "Orders", "Revenue", "Ad spend", "Messages", "ROI"],
      data.channel_roi.map(function (r) {
        return [r.channel, fmt.num(r.orders), fmt.moneyWhole(r.revenue), fmt.moneyWhole(r.ad_spend),
                fmt.moneyWhole(r.message_cost), roi(r.roi)];
      }));
  }

  function campaigns() {
    table("campaigns", ["Campaign", "Orders", "Revenue", "Cost", "ROI"],
      data.campaign_roi.map(function (r) {
        return [r.campaign_id, fmt.num(r.orders), fmt.moneyWhole(r.revenue), fmt.moneyWhole(r.cost),
                roi(r.roi)];
      }));
  }

  function products(host, rows) {
    table(host, ["Product", "Units", "Revenue", "Views", "On hand", "Available"],
      rows.map(function (r) {
        var name = h("span", {}, [r.title || r.product_id]);
        if (r.low_stock) name.appendChild(h("span", {"class": "badge", text: " low stock"}));
        return [name, fmt.num(r.units), fmt.moneyWhole(r.revenue), fmt.num(r.views),
                fmt.num(r.on_hand), fmt.num(r.stock)];
      }));
  }

  function cohorts() {
    var c = data.cohorts, rows = c.rows;
    $("cohorts-title").textContent = "Retention cohorts (" + (c.period === "week" ? "weekly" : "monthly") +
      ", share buying again)";
    var width = Math.min(6, Math.max.apply(null, rows.map(function (r) { return r.retention.length; })
      .concat([0])));
    var headers = ["Cohort", "Buyers", c.period === "week" ? "W0" : "M0"];
    for (var i = 1; i <= width; i++) headers.push((c.period === "week" ? "W" : "M") + i);
    table("cohorts", headers, rows.map(function (r) {
      var cells = [r.cohort, fmt.num(r.size), fmt.pct(1)];
      for (var i = 0; i < width; i++) {
        var p = r.retention[i];
        cells.push(p ? fmt.pct(p.share) : "");
      }
      return cells;
    }), "No buyers yet.");
    var body = $("cohorts").querySelector("tbody");
    if (!body) return;
    $("cohorts").querySelector("table").className = "heat";
    Array.prototype.forEach.call(body.rows, function (tr, ri) {
      for (var ci = 2; ci < tr.cells.length; ci++) {
        var share = ci === 2 ? 1 : (rows[ri].retention[ci - 3] || {}).share;
        if (share === undefined) continue;
        tr.cells[ci].style.background = "rgba(47,111,219," + (0.08 + share * 0.8).toFixed(2) + ")";
        if (share > 0.55) tr.cells[ci].style.color = "#fff";
      }
    });
  }

  function experiments() {
    var rows = [];
    data.experiments.forEach(function (e) {
      e.variants.forEach(function (v) {
        rows.push([e.experiment_key + " · " + v.variant, fmt.num(v.exposures), fmt.num(v.conversions),
                   fmt.pct(v.rate), v.lift === null ? "—" : fmt.pct(v.lift),
                   h("span", {"class": "verdict", text: v.verdict})]);
      });
    });
    table("experiments", ["Variant", "Exposed", "Converted", "Rate", "Lift", "Verdict"], rows,
          "No experiments yet.");
  }

  function slas() {
    var s = data.slas, k = data.kpis;
    var lead = k.fulfillment_lead_time_seconds, first = k.ticket_first_response_seconds,
        res = k.ticket_resolution_seconds;
    table("slas", ["Measure", "Count", "p50", "p90", "Within SLA"], [
      ["Paid → delivered", fmt.num(lead.count), fmt.duration(lead.p50), fmt.duration(lead.p90),
       s.shipments_created ? fmt.pct(s.on_time_rate) + " shipped on time (" + fmt.num(s.shipments_late) +
       " late)" : "—"],
      ["Ticket first response", fmt.num(first.count), fmt.duration(first.p50), fmt.duration(first.p90),
       s.ticket_first_response.due ? fmt.pct(s.ticket_first_response.met_rate) : "—"],
      ["Ticket resolution", fmt.num(res.count), fmt.duration(res.p50), fmt.duration(res.p90),
       s.ticket_resolution.due ? fmt.pct(s.ticket_resolution.met_rate) : "—"]
    ]);
  }

  // --- the daily chart (Chart.js, vendored) ----------------------------------------
  function series() {
    var s = data.series, canvas = $("chart-gmv");
    if (chart) { chart.destroy(); chart = null; }
    if (typeof Chart === "undefined") return;
    chart = new Chart(canvas, {
      data: {
        labels: s.map(function (d) { return fmt.day(d.day); }),
        datasets: [
          {type: "bar", label: "GMV", yAxisID: "gmv", backgroundColor: "rgba(47,111,219,.75)",
           data: s.map(function (d) { return d.gmv; })},
          {type: "line", label: "Orders", yAxisID: "orders", borderColor: "#e8710a",
           backgroundColor: "#e8710a", data: s.map(function (d) { return d.orders; })}
        ]
      },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          gmv: {position: "left", beginAtZero: true, ticks: {callback: function (v) { return fmt.moneyWhole(v); }}},
          orders: {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                   ticks: {precision: 0}}
        },
        plugins: {tooltip: {callbacks: {label: function (ctx) {
          return ctx.dataset.label + ": " + (ctx.dataset.yAxisID === "gmv" ? fmt.money(ctx.raw) : fmt.num(ctx.raw));
        }}}}
      }
    });
    canvas.setAttribute("data-series", "gmv");
  }

  // --- range controls, reload and refresh ------------------------------------------
  function header() {
    var r = data.range;
    Array.prototype.forEach.call(document.querySelectorAll("[data-preset]"), function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-preset") === r.preset));
    });
    $("custom-range").hidden = r.preset !== "custom" && !$("custom-range").dataset.open;
    $("from").value = r.from;
    $("to").value = r.to;
    $("period").textContent = fmt.when(r.start) + " – " + fmt.when(r.end);
    $("compared").textContent = "vs " + fmt.when(r.previous_start) + " – " + fmt.when(r.previous_end);
    $("updated").textContent = fmt.when(data.generated_at);
    $("updated").setAttribute("datetime", data.generated_at);
  }

  function render() {
    setupFormats();
    header();
    tiles();
    series();
    funnel();
    channels();
    campaigns();
    products("top", data.top_products);
    products("slow", data.slow_products);
    cohorts();
    experiments();
    slas();
    document.body.setAttribute("data-rendered", "true");
    document.body.setAttribute("data-range", data.range.start + "/" + data.range.end);
  }

  function query() {
    var r = data.range, q = new URLSearchParams();
    if (r.preset === "custom") { q.set("from", r.from); q.set("to", r.to); }
    else q.set("preset", r.preset);
    return q;
  }

  function load(q) {
    loading += 1;
    document.body.setAttribute("data-loading", "true");
    $("status").textContent = "loading…";
    return fetch("/dashboard/data?" + q.toString(), {headers: {"Accept": "application/json"}})
      .then(function (reply) {
        return reply.json().then(function (body) {
          if (!reply.ok) throw new Error(body.message || ("HTTP " + reply.status));
          return body;
        });
      })
      .then(function (body) {
        data = body;
        render();
        $("status").textContent = "";
        history.replaceState(null, "", "/dashboard?" + q.toString());
      })
      .catch(function (err) { $("status").textContent = "could not load: " + err.message; })
      .then(function () {
        loading -= 1;
        if (!loading) document.body.removeAttribute("data-loading");
      });
  }

  function schedule() {
    if (timer) clearInterval(timer);
    var seconds = Number($("refresh").value);
    timer = seconds > 0 ? setInterval(function () { load(query()); }, seconds * 1000) : null;
  }

  function wire() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-preset]"), function (b) {
      b.addEventListener("click", function () {
        var preset = b.getAttribute("data-preset");
        if (preset === "custom") {
          $("custom-range").dataset.open = "1";
          $("custom-range").hidden = false;
          $("from").focus();
          return;
        }
        delete $("custom-range").dataset.open;
        load(new URLSearchParams({preset: preset}));
      });
    });
    $("range").addEventListener("submit", function (ev) {
      ev.preventDefault();
      load(new URLSearchParams({from: $("from").value, to: $("to").value}));
    });
    var refresh = $("refresh");
    refresh.value = String(data.refresh_seconds);
    if (refresh.value === "") refresh.value = "0";
    refresh.addEventListener("change", schedule);
    schedule();
  }

  render();
  wire();
})();
