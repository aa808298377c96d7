// tunecraft studio: the pages' own script (no library, no build step). Each part starts when its element is
// on the page: the runs table, the run page (curves, log, stop/resume, try it), the launch form.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const el = (tag, attrs = {}, text = "") => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
};

// this start's token (site_guard.py): every call that changes state sends it
const TOKEN = {"X-Tunecraft-Token": document.querySelector("meta[name='tunecraft-token']")?.content || ""};

async function call(url, body) {
  const res = await fetch(url, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json", ...TOKEN}, body: JSON.stringify(body)});
  let data = null;
  try { data = await res.json(); } catch (e) { data = {detail: res.statusText}; }
  if (!res.ok && !data.error) data.error = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
  return data;
}

// -- the runs table: sort, filter, compare -------------------------------------------------------------------
function runsTable(table) {
  const rows = () => $$("tbody tr", table);
  const filter = () => {
    const text = $("#filter").value.toLowerCase(), task = $("#task-filter").value, status = $("#status-filter").value;
    for (const tr of rows()) {
      tr.hidden = !(tr.textContent.toLowerCase().includes(text) && (!task || tr.dataset.task === task)
                    && (!status || tr.dataset.status === status));
    }
  };
  ["#filter", "#task-filter", "#status-filter"].forEach(s => $(s).addEventListener("input", filter));
  $$("th[data-sort]", table).forEach((th, _, all) => th.addEventListener("click", () => {
    const col = [...th.parentNode.children].indexOf(th);
    const down = th.dataset.dir !== "desc";
    all.forEach(h => delete h.dataset.dir);
    th.dataset.dir = down ? "desc" : "asc";
    const key = tr => {
      const td = tr.children[col];
      if (th.dataset.sort === "number") {
        const v = parseFloat(td.dataset.value);
        return isNaN(v) ? -Infinity : v;
      }
      return td.textContent.trim().toLowerCase();
    };
    const sorted = rows().sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (down ? -1 : 1));
    sorted.forEach(tr => table.tBodies[0].appendChild(tr));
  }));
  const button = $("#compare");
  const picked = () => $$(".pick:checked", table).map(c => c.value);
  table.addEventListener("change", () => { button.disabled = picked().length < 2; });
  button.addEventListener("click", () => {
    location.href = "/compare?" + picked().map(n => "run=" + encodeURIComponent(n)).join("&");
  });
}

// -- line plots in SVG ------------------------------------------------------------------------------------------
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

function drawPlot(svg, series) {
  const W = 480, H = 260, L = 52, R = 10, T = 12, B = 30;
  const points = series.flatMap(s => s.points);
  svg.replaceChildren();
  if (!points.length) {
    svg.appendChild(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"}, "no points yet"));
    return;
  }
  const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.appendChild(node);
    return node;
  };
  add("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"});
  add("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"});
  for (const [v, y] of [[y0, H - B], [y1, T + 8]]) add("text", {x: L - 4, y, "text-anchor": "end", class: "tick"}, v.toPrecision(3));
  for (const [v, x] of [[x0, L], [x1, W - R]]) add("text", {x, y: H - 10, "text-anchor": "middle", class: "tick"}, String(Math.round(v)));
  add("text", {x: (L + W) / 2, y: H - 2, "text-anchor": "middle", class: "tick"}, "optimizer step");
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    if (s.points.length > 1) {
      add("polyline", {points: s.points.map(p => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none", stroke: color,
                       "stroke-width": 1.5});
    }
    const r = s.dots || s.points.length === 1 ? 3 : 1.5;  // a one-point series is a visible dot, not a speck
    for (const p of s.points) add("circle", {cx: sx(p[0]), cy: sy(p[1]), r, fill: color, class: "point"});
    if (!s.points.length) return;
    const ly = T + 12 + 13 * i, lx = W - R - 4 - 7 * s.label.length;  // the colour key: a swatch before the name
    add("line", {x1: lx - 20, y1: ly - 4, x2: lx - 6, y2: ly - 4, stroke: color, "stroke-width": 2.5, class: "swatch"});
    add("text", {x: W - R - 4, y: ly, "text-anchor": "end", fill: color, class: "legend"}, s.label);
  });
}

// -- the run page: live curves, progress, log, stop / resume ------------------------------------------------------
function runPage(root) {
  const name = root.dataset.name;
  let headline = root.dataset.headline.split(",").filter(Boolean);
  const records = [];
  let next = 0, logNext = 0, status = root.dataset.status;
  const redraw = () => {
    const train = records.filter(r => r.type === "train"), evals = records.filter(r => r.type === "eval");
    drawPlot($("#loss-plot"), [
      {label: "train loss", points: train.filter(r => r.loss !== undefined).map(r => [r.step, r.loss])},
      {label: "validation loss", points: evals.filter(r => r.loss !== undefined).map(r => [r.step, r.loss]), dots: true}]);
    drawPlot($("#metric-plot"), headline.map(k => ({label: "validation " + k, dots: true,
      points: evals.filter(r => typeof r[k] === "number").map(r => [r.step, r[k]])})));
    const last = records[records.length - 1];
    $("#progress").textContent = last ? `step ${last.step}` + (last.total_steps ? ` of ${last.total_steps}` : "")
      + (last.loss !== undefined ? ` · loss ${last.loss.toFixed(4)}` : "") + ` · ${status}` : status;
  };
  const setStatus = value => {
    status = value;
    $("#status").textContent = status;
    $("#status").className = "status " + status.replace(" ", "-");
    if ($("#stop")) $("#stop").hidden = status !== "running";
    if ($("#resume")) $("#resume").hidden = !["stopped", "failed"].includes(status);
  };
  const poll = async () => {
    const data = await call(`/api/runs/${encodeURIComponent(name)}/metrics?after=${next}`);
    if (data.records) {
      if (!headline.length && data.headline.length) {  // a run launched before its folder existed
        headline = data.headline;
        $("#metric-caption").textContent = "validation " + headline.join(", ");
        $("#about").textContent = data.about;
      }
      records.push(...data.records);
      next = data.next;
      if (data.status !== status) setStatus(data.status);
      redraw();
    }
    if ($("#log")) {
      const log = await call(`/api/runs/${encodeURIComponent(name)}/log?after=${logNext}`);
      if (log.text) {
        const pre = $("#log");
        pre.textContent = (pre.textContent + log.text).slice(-20000);
        pre.scrollTop = pre.scrollHeight;
      }
      logNext = log.next ?? logNext;
    }
    if (status === "running") setTimeout(poll, 1000);
  };
  poll();
  for (const action of ["stop", "resume"]) {
    const button = $("#" + action);
    if (!button) continue;
    button.addEventListener("click", async () => {
      const data = await call(`/api/runs/${encodeURIComponent(name)}/${action}`, {});
      $("#action-message").textContent = data.error || (action === "stop" ? "stopping (SIGINT)…" : "resumed");
      if (action === "resume" && !data.error) {
        // a resume drops the records logged after the checkpoint it starts from: read the history again
        records.length = 0;
        next = 0;
        setStatus("running");
        setTimeout(poll, 500);
      }
    });
  }
  if ($("#try")) tryPanel(name);
  if ($("#feedback")) feedbackQueue($("#feedback"), name);
  if ($("#chat-feedback")) chatQueue($("#chat-feedback"), name);
  $$("button.feedback-run").forEach(b => feedbackRun(b, name));
}

// -- try it: the run's own server routes ---------------------------------------------------------------------------
const TOP_K = 10;  // the most probable labels shown as bars; the rest are summed in one line
function tryPanel(name) {
  const base = `/try/${encodeURIComponent(name)}`;
  const classify = $("#try-classify");
  if (classify) {
    classify.addEventListener("submit", async ev => {
      ev.preventDefault();
      const out = $("#classify-result");
      out.textContent = "…";
      const data = await call(base + "/v1/classify", {texts: [classify.text.value]});
      if (data.error) { out.textContent = data.error; out.className = "result error"; return; }
      const p = data.predictions[0];
      out.className = "result";
      out.replaceChildren(el("p", {class: "label"}, `${p.label} (${(100 * p.score).toFixed(1)} %)`));
      const ranked = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]);  // most probable first
      for (const [label, prob] of ranked.slice(0, TOP_K)) {
        const row = el("div", {class: "bar"});
        row.append(el("span", {}, label), el("meter", {min: 0, max: 1, value: prob}), el("span", {}, prob.toFixed(3)));
        out.append(row);
      }
      if (ranked.length > TOP_K) {
        const rest = ranked.slice(TOP_K).reduce((sum, [, prob]) => sum + prob, 0);
        out.append(el("p", {class: "bar-more"}, `${ranked.length - TOP_K} more labels, ${rest.toFixed(3)} together`));
      }
    });
    $("#explain").addEventListener("click", async () => {
      const out = $("#explain-result");
      out.textContent = "explaining…";
      const data = await call(`/api/runs/${encodeURIComponent(name)}/explain`, {text: classify.text.value});
      if (data.error) { out.textContent = data.error; return; }
      // the HTML of evaluate/explain.py attribution_html: tokens coloured by attribution, escaped there
      out.innerHTML = data.html;
    });
  }
  const entities = $("#try-entities");
  if (entities) {
    entities.addEventListener("submit", async ev => {
      ev.preventDefault();
      const out = $("#entities-result"), text = entities.text.value;
      const data = await call(base + "/v1/entities", {texts: [text]});
      if (data.error) { out.textContent = data.error; return; }
      const found = data.results[0].entities;
      const p = el("p", {class: "tagged"});
      let at = 0;
      for (const e of found) {
        p.append(document.createTextNode(text.slice(at, e.start)));
        const mark = el("mark", {title: `${e.type} ${e.score.toFixed(3)}`, "data-type": e.type}, text.slice(e.start, e.end));
        mark.append(el("sup", {}, e.type));
        p.append(mark);
        at = e.end;
      }
      p.append(document.createTextNode(text.slice(at)));
      out.replaceChildren(p, el("p", {class: "muted"}, found.length ? "" : "no entities found"));
    });
  }
  const chat = $("#try-chat");
  if (chat) {
    const messages = [];
    const show = (role, text) => {
      const node = el("div", {class: "msg " + role}, text);
      $("#chat-log").append(node);
      return node;
    };
    // a thumbs up or down on an answer: the server's own /v1/feedback, stored in the run's feedback.sqlite
    const rate = (node, asked, answer) => {
      const bar = el("span", {class: "rate-answer"});
      for (const [rating, text] of [[1, "good"], [-1, "bad"]]) {
        const b = el("button", {type: "button", class: "rate", "data-rating": rating, "aria-pressed": "false"}, text);
        b.addEventListener("click", async () => {
          const data = await call(base + "/v1/feedback", {model: name, messages: asked, response: answer, rating});
          if (data.error) { bar.textContent = data.error; return; }
          b.setAttribute("aria-pressed", "true");
          bar.querySelectorAll("button").forEach(x => { x.disabled = true; });
        });
        bar.append(b);
      }
      node.after(bar);
    };
    $("#chat-reset").addEventListener("click", () => { messages.length = 0; $("#chat-log").replaceChildren(); });
    chat.addEventListener("submit", async ev => {
      ev.preventDefault();
      const text = chat.text.value.trim();
      if (!text) return;
      chat.text.value = "";
      messages.push({role: "user", content: text});
      show("user", text);
      const node = show("assistant", "");
      const asked = messages.slice();
      const res = await fetch(base + "/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json", ...TOKEN},
        body: JSON.stringify({model: name, messages, stream: true})});
      if (!res.ok) {
        const data = await res.json();
        node.textContent = data.error?.message || data.detail;
        node.classList.add("error");
        return;
      }
      const reader = res.body.getReader(), decoder = new TextDecoder();
      let buffer = "", answer = "";
      for (;;) {  // server-sent events: "data: {json}" lines, ending with "data: [DONE]"
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        const lines = buffer.split("\n");
        buffer = lines.pop();
        for (const line of lines) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const delta = JSON.parse(line.slice(6)).choices?.[0]?.delta?.content;
          if (delta) { answer += delta; node.textContent = answer; }
        }
      }
      node.classList.add("done");
      messages.push({role: "assistant", content: answer});
      rate(node, asked, answer);
    });
  }
}

// -- the launch form ------------------------------------------------------------------------------------------------
function launchForm(form) {
  let upload = null;
  $("#recipe").addEventListener("change", ev => { location.href = "/launch?recipe=" + encodeURIComponent(ev.target.value); });
  $("#upload").addEventListener("change", async ev => {
    const file = ev.target.files[0];
    if (file) upload = {filename: file.name, upload: await file.text()};
  });
  const overrides = () => {
    const out = $$("[data-initial]", form).filter(i => i.value !== i.dataset.initial).map(i => `${i.dataset.key}=${i.value}`);
    return out.concat($("#extra").value.split("\n").map(s => s.trim()).filter(Boolean));
  };
  const send = async launch => {
    $$(".field-error", form).forEach(e => { e.hidden = true; e.textContent = ""; });
    $$(".field.invalid", form).forEach(e => e.classList.remove("invalid"));
    const body = {overrides: overrides(), overwrite: $("#overwrite").checked,
                  ...(upload || {recipe: $("#recipe").value})};
    const data = await call(launch ? "/api/launch" : "/api/check", body);
    const box = $("#launch-error");
    if (data.error) {
      box.hidden = false;
      box.textContent = data.error;
      for (const [key, message] of Object.entries(data.fields || {})) {
        const field = $(`.field[data-key="${CSS.escape(key)}"]`, form);
        if (!field) continue;
        field.classList.add("invalid");
        const small = $(".field-error", field);
        small.hidden = false;
        small.textContent = message;
        field.closest("details").open = true;
      }
      return;
    }
    box.hidden = true;
    if (launch) location.href = data.url;
    else $("#command").textContent = data.command;
  };
  $("#check").addEventListener("click", () => send(false));
  form.addEventListener("submit", ev => { ev.preventDefault(); send(true); });
}

// -- the feedback queues: confirm or correct a label, rate or edit an answer; then train on them ----------------
function feedbackQueue(section, name) {
  for (const tr of $$("tr[data-id]", section)) {
    const button = $("button.review", tr);
    $("select", tr).addEventListener("change", () => { button.textContent = "Save"; });
    button.addEventListener("click", async () => {
      const data = await call(`/api/runs/${encodeURIComponent(name)}/feedback/${tr.dataset.id}`, {label: $("select", tr).value});
      button.textContent = data.error || "Saved";
      if (!data.error) {
        tr.classList.add("reviewed");
        $("#reviewed").textContent = $$("tr.reviewed", section).length;
      }
    });
  }
}

function chatQueue(section, name) {
  for (const tr of $$("tr[data-id]", section)) {
    const review = async (body, button) => {  // the store's row, as the server's /v1/feedback limits allow
      const data = await call(`/api/runs/${encodeURIComponent(name)}/chat-feedback/${tr.dataset.id}`, body);
      if (data.error) { button.textContent = data.error; return; }
      if ("rating" in data) {
        $$("button.rate", tr).forEach(b => b.setAttribute("aria-pressed", String(b.dataset.rating === String(data.rating))));
        $(".value", tr).textContent = data.rating;
      }
      if ("correction" in data) button.textContent = "Saved";
      tr.classList.add("reviewed");
    };
    $$("button.rate", tr).forEach(b => b.addEventListener("click", () => review({rating: Number(b.dataset.rating)}, b)));
    const edit = $("button.edit", tr);
    $("textarea", tr).addEventListener("input", () => { edit.textContent = "Save edit"; });
    edit.addEventListener("click", () => review({correction: $("textarea", tr).value}, edit));
  }
}

function feedbackRun(button, name) {
  button.addEventListener("click", async () => {
    const data = await call(`/api/runs/${encodeURIComponent(name)}/feedback-run`, {kind: button.dataset.kind});
    if (data.error) { button.nextElementSibling.textContent = data.error; return; }
    location.href = data.url;
  });
}

// -- predictions filter ------------------------------------------------------------------------------------------------
function predictionsFilter(input) {
  input.addEventListener("input", () => {
    const text = input.value.toLowerCase();
    $$("#predictions tr").slice(1).forEach(tr => { tr.hidden = !tr.textContent.toLowerCase().includes(text); });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if ($("#runs")) runsTable($("#runs"));
  if ($("#run")) runPage($("#run"));
  if ($("#launch")) launchForm($("#launch"));
  if ($("#pred-filter")) predictionsFilter($("#pred-filter"));
});
