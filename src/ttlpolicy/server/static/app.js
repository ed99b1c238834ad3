// ttlpolicy playground: plain JavaScript, no build step, no dependencies, nothing fetched but this
// service's own /v1/playground/* API. Colours, scales and labels come from the API, so this page
// and `ttlpolicy heatmap` draw the same picture.

const $ = (id) => document.getElementById(id);
const REFERENCE_NOW = "2025-01-08T12:30"; // a Wednesday, as the CLI uses: reproducible pictures
const LINT_DELAY_MS = 300;

const state = {
  set: null,            // GET /v1/playground/policies
  files: {},            // served file -> text
  draft: {},            // edited file -> text (only files that differ from what is served)
  draftPolicies: null,  // describe() of the draft from its last clean lint
  draftOk: true,
  draftDigest: null,
  policy: null,
  credential: sessionStorage.getItem("ttlpolicy.credential") || "",
  values: {},           // attribute -> raw form value, kept across form rebuilds
  lint: null,           // AbortController of the lint request in flight
  lintTimer: 0,
  selectedCell: null,
};

// -- small helpers --------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const UNITS = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "none";
  if (seconds <= 0) return "0s";
  let rest = Math.round(seconds), out = "";
  for (const [unit, size] of UNITS) {
    const count = Math.floor(rest / size);
    if (count) { out += count + unit; rest -= count * size; }
  }
  return out;
}
function shortDuration(seconds, width = 5) {
  const text = duration(seconds);
  if (text.length <= width) return text;
  const match = text.match(/^\d+[a-z]/);
  return match ? "~" + match[0] : text;
}
function textColor(hex) {
  const channel = (c) => { const s = c / 255; return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; };
  const [r, g, b] = [1, 3, 5].map((i) => channel(parseInt(hex.slice(i, i + 2), 16)));
  const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) ? "#000000" : "#ffffff";
}
const pad = (n) => String(n).padStart(2, "0");

function zoneOffsetMinutes(zone, utcMillis) {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(utcMillis));
  const get = (type) => Number(parts.find((p) => p.type === type).value);
  const asUtc = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour"), get("minute"), get("second"));
  return Math.round((asUtc - utcMillis) / 60000);
}
// "2025-01-08T12:30" on the wall clock of `zone` -> RFC 3339 with that zone's offset at that instant.
function wallToRfc3339(wall, zone) {
  const [date, time] = wall.split("T");
  const [y, mo, d] = date.split("-").map(Number);
  const [h, mi] = time.split(":").map(Number);
  const guess = Date.UTC(y, mo - 1, d, h, mi);
  let offset;
  try {
    offset = zoneOffsetMinutes(zone, guess);
    offset = zoneOffsetMinutes(zone, guess - offset * 60000);
  } catch (e) {
    offset = 0; // an unknown zone: the server names the problem
  }
  const sign = offset >= 0 ? "+" : "-";
  const abs = Math.abs(offset);
  return `${date}T${pad(h)}:${pad(mi)}:00${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
  lines() {
    const out = [];
    for (const e of this.body.errors || []) out.push(`${e.path || "body"}: ${e.message}`);
    for (const p of this.body.problems || []) {
      if (p.severity !== "error") continue;
      const where = p.location ? `${p.location.file}:${p.location.line}:${p.location.column}` : "";
      out.push(`${where} ${p.code}: ${p.message}`);
    }
    return out;
  }
}

async function api(path, body, signal) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.credential) headers.Authorization = "Bearer " + state.credential;
  const response = await fetch(new URL("../v1/playground/" + path, location.href), {
    method: body === undefined ? "GET" : "POST", headers, signal,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function showStatus(error) {
  const box = $("status");
  box.replaceChildren();
  if (!error) return;
  if (error.name === "AbortError") return;
  const lines = error instanceof ApiError ? error.lines() : [];
  box.append(el("strong", { text: error.message }));
  if (lines.length) box.append(el("ul", {}, lines.slice(0, 12).map((l) => el("li", { text: l }))));
}

async function busy(button, work) {
  button.disabled = true;
  try {
    showStatus(null);
    await work();
  } catch (error) {
    showStatus(error);
  } finally {
    button.disabled = false;
  }
}

// -- the policy set, the draft and the chosen policy ----------------------------------------

const usingDraft = () => $("use-draft").checked && Object.keys(state.draft).length > 0 && state.draftOk;
const version = () => (usingDraft() ? { files: { ...state.draft } } : {});
function policies() {
  return (usingDraft() && state.draftPolicies) || state.set.policies;
}
function currentPolicy() {
  const list = policies();
  return list.find((p) => p.name === state.policy) || list.find((p) => p.default) || list[0];
}
function fileText(file) {
  return file in state.draft ? state.draft[file] : state.files[file] || "";
}

// The public OpenAPI document says whether the API wants credentials, so the page can ask for
// them before its first call instead of after a 401.
async function credentialsRequired() {
  try {
    const response = await fetch(new URL("../openapi.json", location.href), { headers: { Accept: "application/json" } });
    const document = await response.json();
    return (document.paths["/v1/playground/policies"].get.security || []).length > 0;
  } catch (error) {
    return false; // let the first call tell
  }
}

function askForCredentials(message) {
  $("credentials").hidden = false;
  $("credentials-message").textContent = message;
  $("credential").focus();
}

async function loadSet() {
  try {
    state.set = await api("policies");
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      askForCredentials(error.status === 401 ? "These credentials were refused: " + error.message
        : "These credentials lack the decide or admin scope.");
      return false;
    }
    showStatus(error);
    return false;
  }
  $("credentials").hidden = true;
  state.files = Object.fromEntries(state.set.files.map((f) => [f.file, f.text]));
  state.policy = state.policy || state.set.default;
  fillPolicySelect();
  fillFileSelects();
  fillRevisions();
  refreshVersionBadge();
  buildForm();
  loadEditor();
  return true;
}

function fillPolicySelect() {
  const select = $("policy");
  select.replaceChildren(...policies().map((p) => el("option", { value: p.name, text: p.name + (p.default ? " (default)" : "") })));
  select.value = currentPolicy().name;
}

function fillFileSelects() {
  const names = Object.keys(state.files).sort();
  const short = (f) => f.split("/").pop();
  for (const id of ["edit-file", "paste-file"]) {
    const select = $(id);
    const keep = select.value;
    select.replaceChildren(...names.map((f) => el("option", { value: f, text: short(f) })));
    const main = currentPolicy().files.slice(-1)[0];
    select.value = names.includes(keep) ? keep : names.includes(main) ? main : names[0];
  }
}

function fillRevisions() {
  const revisions = state.set.git || [];
  for (const [id, draftFirst] of [["diff-base", false], ["diff-head", true]]) {
    const select = $(id);
    const keep = select.value;
    const options = [el("option", { value: "served", text: "served set" })];
    const draft = el("option", { value: "draft", text: "edited draft" });
    if (draftFirst) options.unshift(draft); else options.push(draft);
    if (revisions.length) {
      options.push(el("optgroup", { label: "git revisions of the policy directory" },
        revisions.map((r) => el("option", { value: "git:" + r.rev, text: `${r.rev} ${r.subject}`.slice(0, 60) }))));
    }
    select.replaceChildren(...options);
    if (keep && [...select.querySelectorAll("option")].some((o) => o.value === keep)) select.value = keep;
  }
}

function refreshVersionBadge() {
  const badge = $("version");
  const edited = Object.keys(state.draft).length;
  $("use-draft").disabled = edited === 0 || !state.draftOk;
  if (usingDraft()) {
    badge.textContent = "draft " + (state.draftDigest || "").slice(7, 19);
    badge.className = "badge draft";
  } else {
    badge.textContent = "served " + state.set.digest.slice(7, 19);
    badge.className = "badge";
  }
}

// -- the context form, generated from the chosen policy's declared attributes ----------------

function axisAttributes() {
  const tab = activeTab();
  if (tab === "heatmap") return [$("hm-x").value, $("hm-y").value];
  if (tab === "diff") return [$("diff-x").value, $("diff-y").value];
  return [];
}

function rememberValues() {
  for (const input of $("fields").querySelectorAll("[data-attribute]")) {
    state.values[input.dataset.attribute] = input.type === "checkbox" ? input.checked : input.value;
  }
  if ($("now").value) state.values["@now"] = $("now").value;
}

function buildForm() {
  rememberValues();
  const policy = currentPolicy();
  $("now-zone").textContent = `(wall clock in ${policy.timezone})`;
  $("now").value = state.values["@now"] || REFERENCE_NOW;
  const groups = new Map();
  for (const a of policy.attributes) {
    if (a.derived) continue;
    const group = a.name.includes(".") ? a.name.split(".")[0] : "request";
    if (!groups.has(group)) groups.set(group, []);
    groups.get(group).push(a);
  }
  const fieldsets = [];
  for (const [group, attributes] of groups) {
    fieldsets.push(el("fieldset", {}, el("legend", { text: group }), attributes.map(fieldFor)));
  }
  $("fields").replaceChildren(...fieldsets);
  markAxes();
}

function fieldFor(a) {
  const id = "f-" + a.name.replace(/[^a-z0-9]/gi, "-");
  const label = a.name;
  const kept = state.values[a.name];
  const described = a.description ? id + "-hint" : undefined;
  const hint = a.description ? el("span", { class: "hint", id: id + "-hint", text: a.description }) : null;
  if (a.type === "bool") {
    const input = el("input", { type: "checkbox", id, "data-attribute": a.name, "aria-describedby": described });
    input.checked = kept !== undefined ? kept : a.default === true;
    return el("div", { class: "field toggle" }, input, el("label", { for: id, text: label }), el("span", { class: "axis-note" }));
  }
  let input;
  if (a.values) {
    const unset = a.default !== null && a.default !== undefined ? `(not sent: ${a.default})` : "(not sent)";
    input = el("select", { id, "data-attribute": a.name, "aria-describedby": described },
      a.required ? null : el("option", { value: "", text: unset }),
      a.values.map((v) => el("option", { value: v, text: v })));
  } else if (a.type === "int" || a.type === "double") {
    input = el("input", {
      type: "number", id, "data-attribute": a.name, min: a.min ?? undefined, max: a.max ?? undefined,
      step: a.type === "int" ? "1" : "0.01", placeholder: a.default !== null ? `default ${a.default}` : "",
      "aria-describedby": described,
    });
  } else {
    const placeholder = a.type === "list" ? "comma-separated" : a.type === "timestamp" ? "RFC 3339, e.g. 2025-01-08T09:00:00Z" : "";
    input = el("input", { type: "text", id, "data-attribute": a.name, placeholder, "aria-describedby": described });
  }
  if (kept !== undefined) input.value = kept;
  return el("div", { class: "field" }, el("label", { for: id, text: label }), input, el("span", { class: "axis-note" }), hint);
}

function markAxes() {
  const axes = axisAttributes();
  for (const input of $("fields").querySelectorAll("[data-attribute]")) {
    const field = input.closest(".field");
    const axis = axes.indexOf(input.dataset.attribute);
    field.classList.toggle("axis", axis >= 0);
    input.disabled = axis >= 0;
    field.querySelector(".axis-note").textContent = axis >= 0 ? `varies along ${axis ? "y" : "x"}` : "";
  }
  const timeAxis = axes.some((a) => a === "time.hour" || a === "time.weekday" || a === "time.minute");
  $("now-zone").textContent = `(wall clock in ${currentPolicy().timezone}${timeAxis ? "; the time axis moves it" : ""})`;
}

function readContext(skipAxes) {
  const policy = currentPolicy();
  const context = {};
  const errors = [];
  const axes = skipAxes ? axisAttributes() : [];
  for (const a of policy.attributes) {
    if (a.derived || axes.includes(a.name)) continue;
    const input = $("fields").querySelector(`[data-attribute="${a.name}"]`);
    if (!input) continue;
    let value;
    if (a.type === "bool") value = input.checked;
    else {
      const raw = input.value.trim();
      if (raw === "") continue;
      if (a.type === "int" || a.type === "double") {
        value = Number(raw);
        if (!Number.isFinite(value)) { errors.push(`${a.name}: not a number`); continue; }
      } else if (a.type === "list") value = raw.split(",").map((s) => s.trim()).filter(Boolean);
      else value = raw;
    }
    const [head, ...rest] = a.name.split(".");
    if (rest.length) (context[head] = context[head] || {})[rest.join(".")] = value;
    else context[head] = value;
  }
  const zone = (context.time && context.time.zone) || policy.timezone;
  return { context, now: wallToRfc3339($("now").value || REFERENCE_NOW, zone), errors };
}

// -- tabs -----------------------------------------------------------------------------------

const TABS = ["decide", "heatmap", "diff", "edit"];
function activeTab() {
  return TABS.find((t) => $("tab-" + t).getAttribute("aria-selected") === "true");
}
function selectTab(name, focus = false) {
  for (const t of TABS) {
    const tab = $("tab-" + t);
    const on = t === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $("panel-" + t).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (history.replaceState) history.replaceState(null, "", "#" + name);
  if (state.set) markAxes();
  if (name === "edit") syncGutter();
}
function setUpTabs() {
  for (const t of TABS) {
    $("tab-" + t).addEventListener("click", () => selectTab(t));
    $("tab-" + t).addEventListener("keydown", (event) => {
      const i = TABS.indexOf(t);
      const moves = { ArrowRight: 1, ArrowLeft: -1, Home: -i, End: TABS.length - 1 - i };
      if (event.key in moves) {
        event.preventDefault();
        selectTab(TABS[(i + moves[event.key] + TABS.length) % TABS.length], true);
      }
    });
  }
  const wanted = location.hash.slice(1);
  selectTab(TABS.includes(wanted) ? wanted : "heatmap");
}

// -- Decide: the verdict, the trace as a waterfall, rules linked to their lines ---------------

function ruleLink(name) {
  const rule = currentPolicy().rules.find((r) => r.name === name);
  if (!rule || !rule.line) return el("span", { text: name });
  const short = rule.file.split("/").pop();
  return el("span", {}, el("strong", { text: name }), " ",
    el("a", { class: "source", href: "#edit", "data-file": rule.file, "data-line": rule.line,
      onclick: (event) => { event.preventDefault(); openSource(rule.file, rule.line); } }, `${short}:${rule.line}`));
}

function stepOperand(step) {
  if (step.step === "multiply") return "× " + Number(step.value).toFixed(3).replace(/\.?0+$/, "");
  if (typeof step.value === "number") return duration(step.value);
  return step.value === null || step.value === undefined ? "" : String(step.value);
}

function waterfall(trace, target, title) {
  const steps = trace.filter((s) => s.target === target);
  if (!steps.length) return null;
  const max = Math.max(1, ...steps.map((s) => s.result), ...steps.filter((s) => s.step === "base").map((s) => s.value || 0));
  let previous = null;
  const rows = steps.map((s) => {
    const from = s.step === "base" || previous === null ? 0 : previous;
    const to = s.result;
    const kind = s.step === "base" ? "base" : to < from ? "down" : to > from ? "up" : "same";
    const left = (Math.min(from, to) / max) * 100;
    const width = (Math.abs(to - from) / max) * 100;
    const seg = el("span", { class: "seg " + kind });
    seg.style.setProperty("left", left + "%");
    seg.style.setProperty("width", Math.max(width, 0.6) + "%");
    previous = to;
    const by = s.rule ? ruleLink(s.rule) : el("span", { class: "hint", text: s.source || "" });
    return el("tr", {},
      el("th", { scope: "row", text: s.step.replace("_", " ") }),
      el("td", { text: stepOperand(s) }),
      el("td", { class: "bar" }, el("div", { class: "track", role: "img",
        "aria-label": `${duration(from)} to ${duration(to)}` }, seg)),
      el("td", { class: "num", text: duration(to) }),
      el("td", {}, by));
  });
  return el("table", { class: "waterfall" },
    el("caption", { text: title }),
    el("thead", {}, el("tr", {}, ["step", "operand", "", "result", "rule or source"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows));
}

function decisionView(d, heading) {
  const verdict = el("div", { class: "verdict" },
    el("span", { class: "big " + (d.allow ? "allow" : "deny"), text: d.allow ? "ALLOW" : "DENY" }),
    d.allow ? el("span", { class: "big", "data-testid": "access", text: "access " + duration(d.access_ttl) }) : null,
    d.allow ? el("span", { class: "big", "data-testid": "refresh", text: "refresh " + (d.refresh_ttl ? duration(d.refresh_ttl) : "none") }) : null);
  const facts = el("p", {},
    d.tier ? el("span", { class: "pill", text: "tier " + d.tier }) : null,
    el("span", { class: "pill", text: "rotation " + (d.refresh.rotation ? "on" : "off") }),
    d.refresh.idle_timeout ? el("span", { class: "pill", text: "idle " + duration(d.refresh.idle_timeout) }) : null,
    d.refresh.max_session ? el("span", { class: "pill", text: "session " + duration(d.refresh.max_session) }) : null,
    d.refresh.sender_constrained ? el("span", { class: "pill", text: "sender-constrained" }) : null,
    d.step_up ? el("span", { class: "pill stepup", text: "step-up: " + d.step_up_reasons.join("; ") }) : null,
    d.deny_reason ? el("span", { class: "pill error", text: "deny: " + d.deny_reason }) : null,
    (d.errors || []).map((e) => el("span", { class: "pill error", text: `rule ${e.rule} failed: ${e.message}` })));
  const matched = el("ul", { class: "rules-list", "aria-label": "rule outcomes" },
    (d.rules || d.matched.map((r) => ({ rule: r, outcome: "matched" })))
      .slice().sort((a, b) => (a.outcome === "matched" ? 0 : 1) - (b.outcome === "matched" ? 0 : 1))
      .map((r) => el("li", { class: r.outcome }, el("span", { class: "outcome " + r.outcome, text: r.outcome.replace("_", " ") }), ruleLink(r.rule))));
  return el("div", { class: "decision" },
    heading ? el("h3", { text: heading }) : null, verdict, facts,
    waterfall(d.trace, "access_ttl", "How the access lifetime was derived"),
    waterfall(d.trace, "refresh_ttl", "How the refresh lifetime was derived"),
    el("h4", { text: "Rules" }), matched,
    el("p", { class: "hint", text: `policy ${d.policy.name} ${d.policy.digest.slice(0, 19)}` }));
}

async function decide() {
  const { context, now, errors } = readContext(false);
  if (errors.length) throw new Error(errors.join("; "));
  const d = await api("decide", { version: version(), policy: currentPolicy().name, context, now });
  $("decide-result").replaceChildren(decisionView(d));
}

// -- Heat-map -------------------------------------------------------------------------------

function fillAxisSelects() {
  const dims = currentPolicy().dimensions;
  for (const [id, fallback] of [["hm-x", "time.hour"], ["hm-y", "device.trust"], ["diff-x", "time.hour"], ["diff-y", "device.trust"]]) {
    const select = $(id);
    const keep = select.value || fallback;
    select.replaceChildren(...dims.map((d) => el("option", { value: d, text: d })));
    select.value = dims.includes(keep) ? keep : dims[id.endsWith("x") ? 0 : 1];
  }
}

const lifetimeOf = (name) => document.querySelector(`input[name="${name}"]:checked`).value;

function legendView(legend, lifetime) {
  const bar = el("div", { class: "bar" });
  bar.style.setProperty("background", `linear-gradient(to right, ${legend.stops.map((s) => `${s.color} ${(s.offset * 100).toFixed(1)}%`).join(", ")})`);
  const ticks = el("div", { class: "ticks" }, legend.ticks.map((t) => {
    const tick = el("span", { class: "tick", text: t.label });
    tick.style.setProperty("left", (t.position * 100).toFixed(1) + "%");
    return tick;
  }));
  const swatch = (label, color, cls = "") => {
    const i = el("i", { class: cls });
    if (color) i.style.setProperty("background", color);
    return el("span", { class: "swatch" }, i, label);
  };
  return el("div", { class: "legend", role: "group", "aria-label": "legend" },
    el("div", {}, el("div", { text: `${lifetime} lifetime (log scale)` }), el("div", { class: "scale" }, bar, ticks)),
    swatch("deny", legend.deny), lifetime === "refresh" ? swatch("no refresh token", legend.none) : null,
    swatch("step-up required", null, "tri"), swatch("context refused", legend.refused));
}

// A table of buttons with one tab stop: arrow keys move between cells, Enter shows the decision.
function gridTable(data, caption, cellView) {
  const cols = data.x.labels.length;
  const rows = data.y.labels.length;
  const table = el("table", { class: "heat", role: "grid", "aria-label": caption });
  table.append(el("caption", { text: caption }));
  table.append(el("thead", {},
    el("tr", {}, el("td"), el("th", { colspan: cols, class: "x-title", scope: "colgroup", text: `${data.x.attribute} →` })),
    el("tr", {}, el("th", { scope: "col", class: "y-title", text: `${data.y.attribute} ↓` }),
      data.x.labels.map((l) => el("th", { scope: "col", text: l })))));
  const body = el("tbody");
  for (let y = 0; y < rows; y++) {
    const tr = el("tr", {}, el("th", { scope: "row", text: data.y.labels[y] }));
    for (let x = 0; x < cols; x++) {
      const cell = data.cells[y * cols + x];
      const button = cellView(cell);
      button.dataset.x = x;
      button.dataset.y = y;
      button.tabIndex = x === 0 && y === 0 ? 0 : -1;
      tr.append(el("td", {}, button));
    }
    body.append(tr);
  }
  table.append(body);
  table.addEventListener("keydown", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const moves = { ArrowRight: [1, 0], ArrowLeft: [-1, 0], ArrowDown: [0, 1], ArrowUp: [0, -1] };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const x = Math.min(cols - 1, Math.max(0, Number(button.dataset.x) + moves[event.key][0]));
    const y = Math.min(rows - 1, Math.max(0, Number(button.dataset.y) + moves[event.key][1]));
    const next = table.querySelector(`button[data-x="${x}"][data-y="${y}"]`);
    button.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  });
  return table;
}

function where(data, cell) {
  return `${data.x.attribute} = ${data.x.labels[cell.x]}, ${data.y.attribute} = ${data.y.labels[cell.y]}`;
}

function heatCell(data, lifetime) {
  return (cell) => {
    const d = cell.decision;
    const color = cell.colors[lifetime];
    let label, summary;
    if (!d) {
      label = "—";
      summary = "context refused: " + cell.refused.map((p) => `${p.path}: ${p.message}`).join("; ");
    } else if (!d.allow) {
      label = "deny";
      summary = "DENY: " + d.deny_reason;
    } else {
      const seconds = lifetime === "access" ? d.access_ttl : d.refresh_ttl;
      label = seconds ? shortDuration(seconds) : "0";
      summary = `access ${duration(d.access_ttl)}, refresh ${d.refresh_ttl ? duration(d.refresh_ttl) : "none"}` +
        (d.step_up ? ", step-up required" : "");
    }
    const button = el("button", { type: "button", class: d && d.allow && d.step_up ? "step-up" : "",
      "aria-label": `${where(data, cell)}: ${summary}`, "aria-pressed": "false", "data-testid": "cell", text: label });
    button.style.setProperty("background", color);
    button.style.setProperty("color", textColor(color));
    const tip = () => [el("b", { text: where(data, cell) }), el("br"), summary,
      d && d.matched.length ? el("div", { text: "matched: " + d.matched.join(", ") }) : null];
    attachTooltip(button, tip);
    button.addEventListener("click", () => {
      selectCell(button);
      const detail = $("heatmap-detail");
      if (!d) detail.replaceChildren(el("h3", { text: where(data, cell) }), el("p", { text: summary }));
      else detail.replaceChildren(decisionView(d, `${where(data, cell)} at ${cell.now}`));
    });
    return button;
  };
}

function selectCell(button) {
  if (state.selectedCell) state.selectedCell.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  state.selectedCell = button;
}

function attachTooltip(target, content) {
  const tooltip = $("tooltip");
  const show = () => {
    tooltip.replaceChildren(...content());
    tooltip.hidden = false;
    const box = target.getBoundingClientRect();
    const width = tooltip.offsetWidth;
    const left = Math.min(window.innerWidth - width - 8, Math.max(8, box.left + box.width / 2 - width / 2));
    const top = box.bottom + 6 + tooltip.offsetHeight > window.innerHeight ? box.top - tooltip.offsetHeight - 6 : box.bottom + 6;
    tooltip.style.setProperty("left", left + "px");
    tooltip.style.setProperty("top", top + "px");
  };
  const hide = () => { tooltip.hidden = true; };
  target.addEventListener("mouseenter", show);
  target.addEventListener("focus", show);
  target.addEventListener("mouseleave", hide);
  target.addEventListener("blur", hide);
}

async function drawHeatmap() {
  const { context, now, errors } = readContext(true);
  if (errors.length) throw new Error(errors.join("; "));
  const policy = currentPolicy();
  const data = await api("grid", { version: version(), policy: policy.name, x: $("hm-x").value, y: $("hm-y").value,
    fixed: context, now });
  state.heat = data;
  renderHeatmap();
}

function renderHeatmap() {
  const data = state.heat;
  if (!data) return;
  const lifetime = lifetimeOf("hm-lifetime");
  const caption = `${data.policy.name}: ${lifetime} token lifetime by ${data.x.attribute} and ${data.y.attribute}`;
  $("heatmap").replaceChildren(
    gridTable(data, caption, heatCell(data, lifetime)),
    legendView(data.legend[lifetime], lifetime),
    el("p", { class: "hint", text: `${data.cells.length} decisions in ${(data.seconds * 1000).toFixed(1)} ms · ` +
      "hover or focus a cell for its decision, click or press Enter for the trace" }));
  $("heatmap-detail").replaceChildren();
}

// -- Diff -----------------------------------------------------------------------------------

function versionFor(choice) {
  if (choice === "draft") return { files: { ...state.draft } };
  if (choice.startsWith("git:")) return { git: choice.slice(4) };
  return {};
}

function changeCell(data, lifetime) {
  return (cell) => {
    const before = cell.base, after = cell.head;
    const key = lifetime + "_ttl";
    let label = "";
    if (before.allow !== after.allow) label = after.allow ? "allow" : "deny";
    else if (!after.allow) label = "deny";
    else if (after[key] !== before[key]) label = (after[key] > before[key] ? "+" : "−") + shortDuration(Math.abs(after[key] - before[key]));
    const outcome = (o) => o.refused ? "refused" : !o.allow ? "DENY" : `access ${duration(o.access_ttl)}, refresh ${o.refresh_ttl ? duration(o.refresh_ttl) : "none"}${o.step_up ? " + step-up" : ""}`;
    const summary = `before: ${outcome(before)}; after: ${outcome(after)}; ${cell.kinds.length ? cell.kinds.join(", ") : "unchanged"}`;
    const color = cell.colors[lifetime];
    const button = el("button", { type: "button", class: "wide" + (after.step_up && !before.step_up ? " step-up" : ""),
      "aria-label": `${where(data, cell)}: ${summary}`, "aria-pressed": "false", "data-testid": "change-cell", text: label });
    button.style.setProperty("background", color);
    button.style.setProperty("color", textColor(color));
    attachTooltip(button, () => [el("b", { text: where(data, cell) }), el("br"), `before: ${outcome(before)}`, el("br"),
      `after: ${outcome(after)}`, el("div", { text: cell.kinds.join(", ") || "unchanged" })]);
    button.addEventListener("click", () => {
      selectCell(button);
      $("diff-detail").replaceChildren(el("h3", { text: where(data, cell) }),
        el("p", {}, el("strong", { text: "Before: " }), outcome(before), el("br"), el("strong", { text: "After: " }), outcome(after)),
        el("p", { text: cell.kinds.length ? "Changes: " + cell.kinds.join(", ") : "Unchanged." }),
        el("p", { class: "hint", text: `rules matched before: ${before.matched.join(", ") || "none"}; after: ${after.matched.join(", ") || "none"}` }));
    });
    return button;
  };
}

async function compare() {
  const { context, now, errors } = readContext(true);
  if (errors.length) throw new Error(errors.join("; "));
  const base = $("diff-base").value, head = $("diff-head").value;
  if ((base === "draft" || head === "draft") && !Object.keys(state.draft).length) {
    throw new Error("The edited draft is empty: change a file in the Edit tab, or paste or upload one above.");
  }
  const data = await api("diff", { base: versionFor(base), head: versionFor(head), policy: currentPolicy().name,
    x: $("diff-x").value, y: $("diff-y").value, fixed: context, now });
  state.diff = data;
  renderDiff();
}

function renderDiff() {
  const data = state.diff;
  if (!data) return;
  const lifetime = lifetimeOf("diff-lifetime");
  const map = data.map, report = data.report;
  const caption = `${map.policy.name}: change of the ${lifetime} lifetime by ${map.x.attribute} and ${map.y.attribute}`;
  const legend = el("div", { class: "legend" }, map.legend.map((item) => {
    const i = el("i");
    i.style.setProperty("background", item.color);
    return el("span", { class: "swatch" }, i, item.label);
  }), el("span", { class: "swatch" }, el("i", { class: "tri" }), "step-up added"));
  const summary = report.policies.map((p) => `${p.changed} of ${p.scenarios}${p.grid_size > p.scenarios ? " sampled" : ""} scenarios of policy ${p.policy} decide differently`);
  $("diff-summary").replaceChildren(el("div", { class: "diff-summary" },
    el("span", { "data-testid": "changed-cells", text: `${map.changed} of ${map.cells.length} cells change` }),
    report.loosening ? el("span", { class: "loosen", text: "⚠ some tokens would live longer or be allowed" }) : null,
    el("span", { class: "hint", text: summary.join("; ") })));
  $("diff-map").replaceChildren(gridTable(map, caption, changeCell(map, lifetime)), legend);
  $("diff-detail").replaceChildren();
  const groups = report.groups;
  $("diff-groups").replaceChildren(el("h3", { text: "What changes (as ttlpolicy diff reports it)" }),
    groups.length ? el("table", { class: "groups" },
      el("thead", {}, el("tr", {}, ["change", "scenarios", "rules", "when", "example"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, groups.map((g) => el("tr", {},
        el("td", { class: "kind " + (g.loosening ? "loosen" : "tighten") },
          el("span", { class: "flag", text: g.loosening ? "loosens" : "tightens" }), " ", g.kind),
        el("td", { text: String(g.count) }),
        el("td", { text: g.rules.join(" ") || "—" }),
        el("td", { text: Object.entries(g.when).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("|") : v}`).join(", ") || "—" }),
        el("td", { text: `${g.example.base} → ${g.example.head}` })))))
      : el("p", { class: "empty", text: "No decision changes." }));
}

// -- Edit: lint as you type -----------------------------------------------------------------

function loadEditor() {
  const file = $("edit-file").value;
  $("editor").value = fileText(file);
  syncGutter();
}

function syncGutter(problems) {
  const editor = $("editor");
  const count = editor.value.split("\n").length;
  const marks = new Map();
  for (const p of problems || state.lastProblems || []) {
    if (!p.location || p.location.file !== $("edit-file").value) continue;
    if (p.severity === "note") continue; // an acknowledged warning: listed, not marked
    if (marks.get(p.location.line) !== "err") marks.set(p.location.line, p.severity === "error" ? "err" : "warn");
  }
  const lines = [];
  for (let i = 1; i <= count; i++) {
    const cls = marks.get(i);
    lines.push(cls ? el("span", { class: cls, text: String(i) }) : String(i), "\n");
  }
  $("gutter").replaceChildren(...lines);
  $("gutter").scrollTop = editor.scrollTop;
}

function onEdit() {
  const file = $("edit-file").value;
  const text = $("editor").value;
  if (text === state.files[file]) delete state.draft[file];
  else state.draft[file] = text;
  syncGutter();
  clearTimeout(state.lintTimer);
  if (state.lint) state.lint.abort(); // a newer text supersedes the request in flight
  setLintState("busy", "linting…");
  state.lintTimer = setTimeout(lintDraft, LINT_DELAY_MS);
}

async function lintDraft() {
  const controller = new AbortController();
  state.lint = controller;
  const files = Object.keys(state.draft).length ? { ...state.draft } : { [$("edit-file").value]: $("editor").value };
  try {
    const result = await api("lint", { files }, controller.signal);
    if (controller.signal.aborted) return;
    state.lastProblems = result.problems;
    state.draftOk = result.ok;
    state.draftDigest = result.digest;
    state.draftPolicies = result.ok ? result.policies : state.draftPolicies;
    renderProblems(result.problems);
    const errors = result.problems.filter((p) => p.severity === "error").length;
    const warnings = result.problems.filter((p) => p.severity === "warning").length;
    if (errors) setLintState("bad", `${errors} error${errors > 1 ? "s" : ""}, ${warnings} warning${warnings === 1 ? "" : "s"}: the draft cannot be used`);
    else setLintState("ok", `✓ no errors${warnings ? `, ${warnings} warning${warnings === 1 ? "" : "s"}` : ""}${Object.keys(state.draft).length ? ": the draft can be used" : ""}`);
    if (Object.keys(state.draft).length && result.ok && !$("use-draft").dataset.touched) $("use-draft").checked = true;
    refreshVersionBadge();
    if (usingDraft()) { fillPolicySelect(); buildForm(); fillAxisSelects(); }
  } catch (error) {
    if (error.name === "AbortError") return;
    setLintState("bad", error.message);
    if (error instanceof ApiError) renderProblems(error.body.problems || []);
  } finally {
    if (state.lint === controller) state.lint = null;
  }
}

function setLintState(kind, text) {
  const box = $("lint-state");
  box.className = "lint-state " + kind;
  box.textContent = text;
}

function renderProblems(problems) {
  const file = $("edit-file").value;
  const list = $("problems");
  const sorted = problems.slice().sort((a, b) => (a.location?.file === file ? 0 : 1) - (b.location?.file === file ? 0 : 1));
  list.replaceChildren(...(sorted.length ? sorted.map((p) => {
    const loc = p.location || { file: "", line: 0, column: 0 };
    const short = loc.file.split("/").pop();
    return el("li", { class: p.severity, "data-line": loc.line, "data-code": p.code },
      el("button", { type: "button", onclick: () => openSource(loc.file, loc.line, loc.column) },
        el("span", { class: "where", text: `${loc.file === file ? "" : short + ":"}${loc.line}:${loc.column}` }),
        el("span", { class: "code", text: p.code }),
        el("span", { class: "message", text: p.message })));
  }) : [el("li", { class: "empty", text: "No problems." })]));
  syncGutter(problems);
}

function openSource(file, line, column = 1) {
  selectTab("edit");
  if (file in state.files && $("edit-file").value !== file) {
    $("edit-file").value = file;
    loadEditor();
  }
  const editor = $("editor");
  const lines = editor.value.split("\n");
  let offset = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length); i++) offset += lines[i].length + 1;
  offset += Math.max(0, column - 1);
  editor.focus();
  editor.setSelectionRange(offset, offset + Math.max(1, (lines[line - 1] || "").length - column + 1));
  const lineHeight = parseFloat(getComputedStyle(editor).lineHeight) || 19;
  editor.scrollTop = Math.max(0, (line - 4) * lineHeight);
  syncGutter();
}

// -- wiring ---------------------------------------------------------------------------------

function onPolicyChange() {
  state.policy = $("policy").value;
  buildForm();
  fillAxisSelects();
  markAxes();
}

async function start() {
  setUpTabs();
  $("credentials").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.credential = $("credential").value.trim();
    sessionStorage.setItem("ttlpolicy.credential", state.credential);
    if (await loadSet()) { fillAxisSelects(); await busy($("heatmap-button"), drawHeatmap); }
  });
  $("policy").addEventListener("change", onPolicyChange);
  $("use-draft").addEventListener("change", () => {
    $("use-draft").dataset.touched = "1";
    refreshVersionBadge();
    fillPolicySelect();
    onPolicyChange();
  });
  $("decide-button").addEventListener("click", () => busy($("decide-button"), decide));
  $("context-form").addEventListener("submit", (event) => { event.preventDefault(); });
  $("heatmap-button").addEventListener("click", () => busy($("heatmap-button"), drawHeatmap));
  for (const id of ["hm-x", "hm-y", "diff-x", "diff-y"]) $(id).addEventListener("change", markAxes);
  for (const radio of document.querySelectorAll('input[name="hm-lifetime"]')) radio.addEventListener("change", renderHeatmap);
  for (const radio of document.querySelectorAll('input[name="diff-lifetime"]')) radio.addEventListener("change", renderDiff);
  $("diff-button").addEventListener("click", () => busy($("diff-button"), compare));
  $("edit-file").addEventListener("change", () => { loadEditor(); renderProblems(state.lastProblems || []); });
  $("editor").addEventListener("input", onEdit);
  $("editor").addEventListener("scroll", () => { $("gutter").scrollTop = $("editor").scrollTop; });
  $("editor").addEventListener("keydown", (event) => {
    if (event.key === "Tab" && !event.shiftKey && !event.ctrlKey && !event.altKey && !event.metaKey && event.target.selectionStart === event.target.selectionEnd) {
      event.preventDefault(); // two spaces, as YAML wants; Shift+Tab still leaves the editor
      event.target.setRangeText("  ", event.target.selectionStart, event.target.selectionEnd, "end");
      onEdit();
    }
  });
  $("edit-reset").addEventListener("click", () => {
    delete state.draft[$("edit-file").value];
    loadEditor();
    onEdit();
  });
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (file) $("paste-text").value = await file.text();
  });
  $("paste-button").addEventListener("click", () => busy($("paste-button"), async () => {
    const text = $("paste-text").value;
    if (!text.trim()) throw new Error("Paste a policy file's text or upload one first.");
    const file = $("paste-file").value;
    state.draft[file] = text;
    $("edit-file").value = file;
    loadEditor();
    $("diff-head").value = "draft";
    clearTimeout(state.lintTimer);
    await lintDraft();
    await compare();
  }));
  if (!state.credential && await credentialsRequired()) {
    askForCredentials("This service requires credentials.");
  } else if (await loadSet()) {
    fillAxisSelects();
    markAxes();
    await busy($("heatmap-button"), drawHeatmap);
  }
  document.body.dataset.ready = "true";
}

start();
