// The dashboard: polls /admin/state with the session cookie and renders it; actions POST with
// the session's CSRF token. Everything is written with textContent (never innerHTML): job
// messages, aliases and ids come from outside.
"use strict";

const POLL_MS = 1500;
const csrf = document.querySelector('meta[name="csrf-token"]').content;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fill(tableId, rows, columns, emptyText) {
  const body = document.querySelector(`#${tableId} tbody`);
  const fresh = document.createElement("tbody");
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", emptyText, "empty");
    td.colSpan = columns;
    tr.append(td);
    fresh.append(tr);
  }
  for (const cells of rows) {
    const tr = el("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
    fresh.append(tr);
  }
  body.replaceWith(fresh);
}

const num = (v, digits = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`);
const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
const clock = (unix) => new Date(unix * 1000).toLocaleTimeString();

function say(text, isError) {
  const node = document.getElementById("message");
  node.textContent = text;
  node.className = isError ? "message error" : "message";
}

async function act(path, body) {
  const answer = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(body),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    say(data.error ? data.error.message : `failed (${answer.status})`, true);
  } else {
    say(`${data.action} ${data.target}: ${data.detail}`, false);
  }
  poll();
}

function button(label, onClick, testId) {
  const b = el("button", label);
  b.type = "button";
  b.dataset.action = testId;
  b.addEventListener("click", onClick);
  const td = el("td");
  td.append(b);
  return td;
}

function render(state) {
  const providers = Object.entries(state.providers);
  fill("providers", providers.map(([name, p]) => [
    name, p.queued, p.running, `${num(p.oldest_queued_s, 1)} s`, num(p.throughput_per_min, 1),
    pct(p.error_rate), ms(p.latency_ms.p50), ms(p.latency_ms.p95), p.workers.length,
  ]), 9, "no providers");
  const workers = providers.flatMap(([name, p]) => p.workers.map((w) => [name, w.id, `${num(w.heartbeat_age_s, 1)} s`, w.running]));
  fill("workers", workers, 4, "no live workers");
  fill("deployments", state.deployments.map((d) => {
    const actions = el("td");
    for (const [label, path, kind] of [["Reset", "/admin/breakers/reset", "reset"], ["Force open", "/admin/breakers/open", "open"]]) {
      const cell = button(label, () => act(path, { deployment: d.id }), `${kind}:${d.id}`);
      actions.append(...cell.childNodes, " ");
    }
    const held = d.forced_by ? ` (held by ${d.forced_by})` : "";
    return [d.id, d.provider, d.model, el("td", d.breaker + held, `breaker-${d.breaker}`),
      d.recent_failures, d.breaker === "open" ? `${num(d.cooldown_left_s, 0)} s` : "–", actions];
  }), 7, "no deployments used yet");
  fill("cache", Object.entries(state.cache).map(([tier, c]) => [tier, c.hits, c.misses, pct(c.hit_ratio)]), 4, "–");
  fill("keys", state.keys.map((k) => {
    const used = k.max_budget ? k.spend / k.max_budget : null;
    return [k.key_id, k.alias || "–", num(k.spend, 4), k.max_budget === null ? "none" : num(k.max_budget, 2),
      el("td", used === null ? "–" : pct(used), used !== null && used >= 1 ? "over" : "")];
  }), 5, "no virtual keys");
  fill("failures", state.recent_failures.map((f) => [clock(f.time), f.request_id, f.model, f.deployment, f.status, f.message]), 6, "no failed jobs");
  fill("actions", state.actions.map((a) => [clock(a.time), a.actor, a.action, a.target, a.detail]), 5, "no actions yet");
}

let timer = null;
async function poll() {
  clearTimeout(timer);
  const status = document.getElementById("status");
  try {
    const answer = await fetch("/admin/state", { credentials: "same-origin", cache: "no-store" });
    if (answer.status === 401) {
      window.location.reload(); // the session expired: back to the sign-in form
      return;
    }
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    render(await answer.json());
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "status";
  } catch (err) {
    status.textContent = `not updating: ${err.message}`;
    status.className = "status stale";
  }
  timer = setTimeout(poll, POLL_MS);
}

document.getElementById("cancel").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("cancel-job");
  act("/admin/jobs/cancel", { job_id: input.value.trim() });
});

poll();
