// ComfyUI-OTCache frontend: a schedule strip on every node that outputs OTCACHE_SCHEDULE,
// live Budget Slider previews, and copy / paste of schedules.
//
// - The strip: N cells, computed steps filled, skipped steps empty, with K, N and the
//   predicted speedup above it. It is a canvas widget (not saved with the workflow) at
//   the bottom of the node, so it is drawn in the classic canvas and by the Nodes 2.0
//   legacy-widget renderer alike.
// - After a run, each node's strip shows the schedule it output (the "otcache_schedule"
//   entry of its ui payload, delivered to onExecuted). The compact string is also kept
//   in node.properties.otcache_last_run, so it survives saving and reloading.
// - Before a run (and while its widgets are dragged), the Budget Slider asks the server:
//   POST /api/otcache/preview {reference, anchor, speedup, steps, mapping}, where
//   reference / anchor are taken from the nodes wired into it: {"preset": name} for an
//   OTCache Schedule Preset, {"text": text} for an OTCache Schedule (Text), and for any
//   other source (Load Schedule, a search node, ...) the compact string that node output
//   on its last run. With neither, the slider falls back to the reference and anchor of
//   its own last run. Preset and Text nodes preview themselves the same way
//   (POST /api/otcache/schedule {schedule}). The math is the node's own Python code.
// - Context menu: "Copy schedule" on every schedule node (the compact "N:s0,s1,..."
//   text to the clipboard), "Paste schedule" on OTCache Schedule (Text), and
//   "Schedule -> new Text node", which pins the schedule into the workflow as text.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const SCHEDULE_TYPE = "OTCACHE_SCHEDULE";
const SLIDER = "OTCacheBudgetSlider";
const TEXT = "OTCacheScheduleFromText";
const PRESET = "OTCacheSchedulePreset";
const STRIP_WIDGET = "otcache_strip";
const STRIP_HEIGHT = 50;
const ANCHOR = "OTCacheAnchorSearch";
const CURVE_WIDGET = "otcache_curve";
const CURVE_HEIGHT = 84;
const LAST_RUN_PROPERTY = "otcache_last_run";
const COLORS = {
  computed: "#5fb760",
  skipped: "#2a2a2a",
  skippedEdge: "#5a5a5a",
  text: "#d8d8d8",
  dim: "#9a9a9a",
  error: "#ff7b72",
  curve: "#4fc3f7",
  marker: "#ffb74d",
  axis: "#5a5a5a",
};

const stats = { previewRequests: 0, scheduleRequests: 0, errors: 0, inFlight: 0 };
let pageClipboard = null; // the last copied schedule, for pages without clipboard access

// ------------------------------------------------------------------ schedule state

function compactOf(steps, compute) {
  return `${steps}:${compute.join(",")}`;
}

function maskOf(steps, compute) {
  const mask = new Array(steps).fill(0);
  for (const step of compute) if (step >= 0 && step < steps) mask[step] = 1;
  return mask;
}

function parseCompact(text) {
  // Only for drawing a saved compact string before any request; the server validates.
  const match = /^\s*(\d+)\s*:(.*)$/s.exec(text ?? "");
  if (!match) return null;
  const steps = Number(match[1]);
  const compute = [];
  for (const entry of match[2].split(",")) {
    const range = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(entry);
    if (!range) return null;
    const first = Number(range[1]);
    const last = range[2] === undefined ? first : Number(range[2]);
    for (let s = first; s <= last; s++) compute.push(s);
  }
  return steps >= 2 && steps <= 10000 ? { steps, compute } : null;
}

function stateFromParts(steps, compute, extra = {}) {
  const budget = compute.length;
  return {
    steps,
    compute,
    budget,
    speedup: steps / budget,
    mask: maskOf(steps, compute),
    compact: compactOf(steps, compute),
    error: null,
    ...extra,
  };
}

function ensure(node) {
  if (!node.otcache) {
    node.otcache = { state: null, inflight: false, again: false, seq: 0, lastInputs: null };
  }
  return node.otcache;
}

function setState(node, state) {
  ensure(node).state = state;
  redraw(node);
}

function redraw(node) {
  node.setDirtyCanvas?.(true, true);
  // Nodes 2.0 (Vue) draws canvas widgets into their own small canvas, on request.
  node.widgets?.find((w) => w.name === STRIP_WIDGET)?.triggerDraw?.();
  node.widgets?.find((w) => w.name === CURVE_WIDGET)?.triggerDraw?.();
}

function setError(node, message, origin = "preview") {
  stats.errors += 1;
  setState(node, { error: String(message), origin });
}

// ------------------------------------------------------------------ drawing

function label(state, node) {
  if (!state) {
    return node.comfyClass === SLIDER
      ? "connect reference and anchor (Preset / Text), or run once"
      : "no schedule yet: run the graph";
  }
  if (state.error) return state.error;
  let text = `K ${state.budget} / N ${state.steps}  ·  ${state.speedup.toFixed(2)}× faster`;
  if (state.lambda !== undefined && state.lambda !== null) text += `  ·  λ ${Number(state.lambda).toFixed(2)}`;
  return `${text}  ·  ${state.origin}`;
}

function fitText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let low = 0;
  let high = text.length;
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (ctx.measureText(text.slice(0, mid) + "…").width <= width) low = mid;
    else high = mid - 1;
  }
  return text.slice(0, low) + "…";
}

function wrapText(ctx, text, width, maxLines) {
  const words = text.split(/\s+/);
  const lines = [];
  let line = "";
  for (const word of words) {
    const candidate = line ? `${line} ${word}` : word;
    if (ctx.measureText(candidate).width <= width || !line) line = candidate;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  if (lines.length > maxLines) {
    lines.length = maxLines;
    lines[maxLines - 1] = fitText(ctx, lines[maxLines - 1] + " …", width);
  }
  return lines.map((l) => fitText(ctx, l, width));
}

function drawStrip(ctx, node, width, y) {
  const state = node.otcache?.state ?? null;
  const margin = 12;
  const inner = Math.max(10, width - 2 * margin);
  ctx.save();
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  if (state?.error) {
    ctx.fillStyle = COLORS.error;
    wrapText(ctx, state.error, inner, 3).forEach((line, i) => ctx.fillText(line, margin, y + 3 + 14 * i));
    ctx.restore();
    return;
  }
  ctx.fillStyle = state ? COLORS.text : COLORS.dim;
  ctx.fillText(fitText(ctx, label(state, node), inner), margin, y + 3);
  const top = y + 20;
  const height = STRIP_HEIGHT - 26;
  if (state?.mask?.length) {
    const n = state.mask.length;
    const cell = inner / n;
    const gap = cell >= 4 ? 1 : 0;
    for (let i = 0; i < n; i++) {
      const x = margin + i * cell;
      const w = Math.max(cell - gap, 0.5);
      if (state.mask[i]) {
        ctx.fillStyle = COLORS.computed;
        ctx.fillRect(x, top, w, height);
      } else {
        ctx.fillStyle = COLORS.skipped;
        ctx.fillRect(x, top, w, height);
        if (cell >= 4) {
          ctx.strokeStyle = COLORS.skippedEdge;
          ctx.lineWidth = 1;
          ctx.strokeRect(x + 0.5, top + 0.5, Math.max(w - 1, 0.5), height - 1);
        }
      }
    }
  } else {
    ctx.strokeStyle = COLORS.skippedEdge;
    ctx.setLineDash([3, 3]);
    ctx.strokeRect(margin + 0.5, top + 0.5, inner - 1, height - 1);
  }
  ctx.restore();
}

function addStripWidget(node) {
  if (node.widgets?.some((w) => w.name === STRIP_WIDGET)) return;
  const widget = node.addCustomWidget({
    name: STRIP_WIDGET,
    type: STRIP_WIDGET,
    value: "",
    serialize: false,
    options: { serialize: false },
    draw(ctx, drawNode, width, y) {
      drawStrip(ctx, drawNode, width, y);
    },
    computeSize(width) {
      return [width ?? 200, STRIP_HEIGHT];
    },
  });
  if (widget) {
    widget.serialize = false;
    widget.options = { ...(widget.options ?? {}), serialize: false };
  }
  // Make room for the strip without shrinking a node the user made bigger.
  const size = node.computeSize?.();
  if (size && node.size && node.size[1] < size[1]) node.setSize([Math.max(node.size[0], size[0]), size[1]]);
}

// The measured quality-versus-speed curve of a budget path (Anchor Search and Budget Slider):
// the objective at every knot against its speedup N/K, and where the slider is.
function curveFromSchedule(schedule) {
  const path = schedule?.params?.path;
  if (!path || !Array.isArray(path.knots) || !path.knots.length) return null;
  return {
    metric: path.metric,
    steps: schedule.steps,
    budget: null,
    points: path.knots.map(([budget, , objective, origin]) => ({ budget, speedup: schedule.steps / budget, objective, origin })),
  };
}

function drawCurve(ctx, node, width, y) {
  const curve = node.otcache?.curve ?? null;
  const margin = 12;
  const inner = Math.max(10, width - 2 * margin);
  ctx.save();
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  if (!curve?.points?.length) {
    ctx.fillStyle = COLORS.dim;
    const hint = node.comfyClass === SLIDER
      ? "no measured curve: plain OT (run Anchor Search with budget_path = measure)"
      : "no measured curve yet: run the search";
    ctx.fillText(fitText(ctx, hint, inner), margin, y + 4);
    ctx.restore();
    return;
  }
  const pts = [...curve.points].sort((a, b) => a.speedup - b.speedup);
  const top = y + 16;
  const height = CURVE_HEIGHT - 30;
  const xs = pts.map((p) => p.speedup);
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const ymax = Math.max(...pts.map((p) => p.objective), 1e-12);
  const px = (speedup) => margin + (hi > lo ? ((speedup - lo) / (hi - lo)) * inner : inner / 2);
  const py = (value) => top + height - (value / ymax) * height;
  const current = curve.budget ? pts.find((p) => p.budget === curve.budget) : null;
  ctx.fillStyle = COLORS.text;
  const label = `${curve.metric || "objective"} vs speedup, measured at ${pts.length} budgets` +
    (current ? `  ·  here ${current.objective.toPrecision(3)}` : "");
  ctx.fillText(fitText(ctx, label, inner), margin, y + 2);
  ctx.strokeStyle = COLORS.axis;
  ctx.lineWidth = 1;
  ctx.strokeRect(margin + 0.5, top + 0.5, inner - 1, height);
  ctx.strokeStyle = COLORS.curve;
  ctx.lineWidth = 2;
  ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(px(p.speedup), py(p.objective)) : ctx.moveTo(px(p.speedup), py(p.objective))));
  ctx.stroke();
  ctx.fillStyle = COLORS.curve;
  for (const p of pts) ctx.fillRect(px(p.speedup) - 2, py(p.objective) - 2, 4, 4);
  if (curve.budget) {
    const speedup = curve.steps / curve.budget;
    if (speedup >= lo - 1e-9 && speedup <= hi + 1e-9) {
      ctx.strokeStyle = COLORS.marker;
      ctx.beginPath();
      ctx.moveTo(px(speedup) + 0.5, top);
      ctx.lineTo(px(speedup) + 0.5, top + height);
      ctx.stroke();
    }
  }
  ctx.fillStyle = COLORS.dim;
  ctx.fillText(`${lo.toFixed(2)}×`, margin + 2, top + height + 2);
  ctx.textAlign = "right";
  ctx.fillText(`${hi.toFixed(2)}×`, margin + inner - 2, top + height + 2);
  ctx.restore();
}

function addCurveWidget(node) {
  if (node.comfyClass !== SLIDER && node.comfyClass !== ANCHOR) return;
  if (node.widgets?.some((w) => w.name === CURVE_WIDGET)) return;
  const widget = node.addCustomWidget({
    name: CURVE_WIDGET,
    type: CURVE_WIDGET,
    value: "",
    serialize: false,
    options: { serialize: false },
    draw(ctx, drawNode, width, y) {
      drawCurve(ctx, drawNode, width, y);
    },
    computeSize(width) {
      return [width ?? 200, CURVE_HEIGHT];
    },
  });
  if (widget) widget.serialize = false;
  const size = node.computeSize?.();
  if (size && node.size && node.size[1] < size[1]) node.setSize([Math.max(node.size[0], size[0]), size[1]]);
}

// ------------------------------------------------------------------ sources and previews

function widgetOf(node, name) {
  return node?.widgets?.find((w) => w.name === name);
}

function inputLinked(node, name) {
  const input = node?.inputs?.find((i) => i.name === name);
  return input ? input.link !== null && input.link !== undefined : false;
}

function upstreamNode(node, inputName) {
  const slot = node.findInputSlot?.(inputName) ?? -1;
  if (slot < 0) return null;
  let source = node.getInputNode?.(slot) ?? null;
  for (let hops = 0; source && source.type === "Reroute" && hops < 32; hops++) {
    source = source.getInputNode?.(0) ?? null; // legacy Reroute nodes
  }
  return source;
}

function lastRunCompact(node) {
  const state = node?.otcache?.state;
  if (state && !state.error && state.origin === "last run" && state.compact) return state.compact;
  return node?.properties?.[LAST_RUN_PROPERTY]?.schedule ?? null;
}

// What the node will output, as a SOURCE for the routes; null when unknown before a run.
function sourceOf(node) {
  if (!node) return null;
  if (node.comfyClass === PRESET && !inputLinked(node, "preset")) {
    const value = widgetOf(node, "preset")?.value;
    if (typeof value === "string" && value) return { preset: value };
  }
  if (node.comfyClass === TEXT && !inputLinked(node, "text")) {
    const value = widgetOf(node, "text")?.value;
    if (typeof value === "string") return { text: value };
  }
  // An anchor with a measured path: the whole schedule, so the slider's preview follows the path.
  const saved = node?.properties?.[LAST_RUN_PROPERTY]?.json;
  if (saved && saved.format === "otcache.schedule") return saved;
  const compact = lastRunCompact(node);
  return compact ? compact : null;
}

function sliderSources(node) {
  const own = node.otcache?.lastInputs ?? node.properties?.[LAST_RUN_PROPERTY] ?? {};
  const result = {};
  for (const name of ["reference", "anchor"]) {
    const upstream = upstreamNode(node, name);
    const source = upstream ? sourceOf(upstream) : null;
    result[name] = source ?? (upstream ? own[name] ?? null : null);
    result[`${name}Connected`] = !!upstream;
  }
  return result;
}

async function post(path, body) {
  stats.inFlight += 1;
  try {
    const response = await api.fetchApi(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data;
    try {
      data = await response.json();
    } catch {
      data = { error: `the server answered ${response.status} without JSON` };
    }
    return { ok: response.ok, data };
  } catch (error) {
    return { ok: false, data: { error: `request failed: ${error?.message ?? error}` } };
  } finally {
    stats.inFlight -= 1;
  }
}

async function previewSlider(node) {
  const { reference, anchor, referenceConnected, anchorConnected } = sliderSources(node);
  if (!reference || !anchor) {
    const missing = [];
    if (!reference) missing.push(referenceConnected ? "reference (run once to preview it)" : "reference (not connected)");
    if (!anchor) missing.push(anchorConnected ? "anchor (run once to preview it)" : "anchor (not connected)");
    const lastRun = parseCompact(node.properties?.[LAST_RUN_PROPERTY]?.schedule);
    if (lastRun && referenceConnected && anchorConnected) {
      setState(node, stateFromParts(lastRun.steps, lastRun.compute, { origin: "last run" }));
    } else {
      setState(node, { error: `no preview: ${missing.join(", ")}`, origin: "preview" });
    }
    return;
  }
  const body = {
    reference,
    anchor,
    speedup: Number(widgetOf(node, "speedup")?.value ?? 2),
    steps: Number(widgetOf(node, "steps")?.value ?? 0),
    mapping: widgetOf(node, "mapping")?.value ?? "linear",
  };
  stats.previewRequests += 1;
  const { ok, data } = await post("/otcache/preview", body);
  if (!ok) return setError(node, data.error ?? "preview failed");
  setState(
    node,
    stateFromParts(data.steps, data.mask.flatMap((m, i) => (m ? [i] : [])), {
      origin: "preview",
      lambda: data.lambda,
      requestedSpeedup: data.requested_speedup,
      maxSpeedup: data.max_speedup,
      text: data.text,
    })
  );
  ensure(node).curve = data.curve ?? null;
  redraw(node);
}

async function previewSingle(node) {
  const source = sourceOf(node);
  if (!source || typeof source === "string") return; // not previewable: keep the last run
  stats.scheduleRequests += 1;
  const { ok, data } = await post("/otcache/schedule", { schedule: source });
  if (!ok) return setError(node, data.error ?? "preview failed");
  setState(node, stateFromParts(data.steps, data.mask.flatMap((m, i) => (m ? [i] : [])), { origin: "preview", text: data.text }));
}

// One request in flight per node; changes made meanwhile are sent once it returns, so a
// drag gives a stream of previews that always ends with the final value.
function refresh(node) {
  if (!node || !isScheduleNode(node)) return Promise.resolve();
  const own = ensure(node);
  if (own.inflight) {
    own.again = true;
    return own.inflight;
  }
  const work = node.comfyClass === SLIDER ? previewSlider : previewSingle;
  own.inflight = (async () => {
    try {
      await work(node);
    } catch (error) {
      setError(node, `preview failed: ${error?.message ?? error}`);
    } finally {
      own.inflight = false;
      if (own.again) {
        own.again = false;
        refresh(node);
      }
    }
  })();
  return own.inflight;
}

function downstreamSliders(node) {
  const result = [];
  const graph = node.graph;
  for (const output of node.outputs ?? []) {
    for (const linkId of output.links ?? []) {
      const link = graph?.links?.get ? graph.links.get(linkId) : graph?.links?.[linkId];
      const target = link ? graph.getNodeById(link.target_id) : null;
      if (!target) continue;
      if (target.comfyClass === SLIDER) result.push(target);
      else if (target.type === "Reroute") result.push(...downstreamSliders(target));
    }
  }
  return result;
}

function refreshWithDependents(node) {
  refresh(node);
  for (const slider of downstreamSliders(node)) refresh(slider);
}

let scheduledAll = null;
function refreshAll() {
  // Coalesce the bursts a graph load produces.
  if (scheduledAll) return scheduledAll;
  scheduledAll = new Promise((resolve) => setTimeout(resolve, 0)).then(async () => {
    scheduledAll = null;
    const graph = app.graph;
    const nodes = (graph?._nodes ?? graph?.nodes ?? []).filter(isScheduleNode);
    for (const node of nodes) restoreLastRun(node);
    // Sources first, then sliders (which may use the sources' restored last runs).
    await Promise.all(nodes.filter((n) => n.comfyClass !== SLIDER).map(refresh));
    await Promise.all(nodes.filter((n) => n.comfyClass === SLIDER).map(refresh));
  });
  return scheduledAll;
}

function restoreLastRun(node) {
  const own = ensure(node);
  if (own.state) return;
  const saved = parseCompact(node.properties?.[LAST_RUN_PROPERTY]?.schedule);
  if (saved) {
    own.state = stateFromParts(saved.steps, saved.compute, { origin: "last run" });
    own.curve = own.curve ?? curveFromSchedule(node.properties[LAST_RUN_PROPERTY].json);
    redraw(node);
  }
}

// ------------------------------------------------------------------ after a run

function onScheduleExecuted(node, output) {
  const schedule = output?.otcache_schedule?.[0];
  if (!schedule || !Array.isArray(schedule.compute)) return;
  const params = schedule.params ?? {};
  const extra = { origin: "last run", text: output?.text?.[0] };
  const saved = { schedule: compactOf(schedule.steps, schedule.compute) };
  if (node.comfyClass === SLIDER) {
    extra.lambda = params.lambda;
    if (params.reference && params.anchor) {
      // The interpolation's inputs at its step count (steps widget already applied).
      ensure(node).lastInputs = { reference: params.reference, anchor: params.anchor };
      saved.reference = params.reference;
      saved.anchor = params.anchor;
    }
  }
  const curve = output?.otcache_curve?.[0] ?? curveFromSchedule(schedule);
  if (curveFromSchedule(schedule)) saved.json = schedule; // travels with the workflow, path included
  // Reference and Anchor Search: the result and what it was computed for. Saved with the workflow,
  // so on another machine the node returns it without calibrating (otcache_comfy/saved_results.py).
  const result = output?.otcache_saved?.[0];
  if (result && result.format === "otcache.saved-result") saved.result = result;
  ensure(node).curve = curve ?? null;
  node.properties = node.properties ?? {};
  node.properties[LAST_RUN_PROPERTY] = saved;
  setState(node, stateFromParts(schedule.steps, schedule.compute, extra));
}

// ------------------------------------------------------------------ copy and paste

function toast(severity, summary, detail) {
  const t = app.extensionManager?.toast;
  if (t?.add) t.add({ severity, summary, detail, life: 4000 });
  else if (severity === "error") console.error(`${summary}: ${detail}`);
}

async function writeClipboard(text) {
  pageClipboard = text;
  try {
    if (navigator.clipboard?.writeText) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* fall through to the textarea copy */
  }
  try {
    const area = document.createElement("textarea");
    area.value = text;
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const done = document.execCommand("copy");
    area.remove();
    return done;
  } catch {
    return false;
  }
}

async function readClipboard() {
  try {
    if (navigator.clipboard?.readText) {
      const text = await navigator.clipboard.readText();
      if (text) return text;
    }
  } catch {
    /* no permission, or not a secure context */
  }
  return pageClipboard;
}

function scheduleText(node) {
  const state = node.otcache?.state;
  if (state && !state.error && state.compact) return state.compact;
  return node.properties?.[LAST_RUN_PROPERTY]?.schedule ?? null;
}

async function copySchedule(node) {
  const text = scheduleText(node);
  if (!text) {
    toast("warn", "OTCache", "This node has no schedule yet: run the graph (or connect its inputs) first.");
    return null;
  }
  const copied = await writeClipboard(text);
  toast("success", "OTCache: schedule copied", copied ? text : `${text} (clipboard unavailable; kept for Paste)`);
  return text;
}

async function pasteSchedule(node, given) {
  const text = (given ?? (await readClipboard()) ?? "").trim();
  if (!text) {
    toast("warn", "OTCache", "The clipboard holds no schedule; use Copy schedule on a schedule node first.");
    return false;
  }
  const { ok, data } = await post("/otcache/schedule", { schedule: { text } });
  if (!ok) {
    toast("error", "OTCache: not a schedule", data.error);
    return false;
  }
  const widget = widgetOf(node, "text");
  if (!widget) return false;
  widget.value = data.schedule;
  widget.callback?.(widget.value);
  node.graph?.setDirtyCanvas?.(true, true);
  refreshWithDependents(node);
  return true;
}

function newTextNode(node) {
  const text = scheduleText(node);
  if (!text) {
    toast("warn", "OTCache", "This node has no schedule yet: run the graph first.");
    return null;
  }
  const created = LiteGraph.createNode(TEXT);
  if (!created) return null;
  (node.graph ?? app.graph).add(created);
  created.pos = [node.pos[0], node.pos[1] + node.size[1] + 40];
  const widget = widgetOf(created, "text");
  widget.value = text;
  created.title = `${created.title} (${node.title})`;
  refresh(created);
  return created;
}

// ------------------------------------------------------------------ registration

function isScheduleNode(node) {
  return !!node?.constructor?.nodeData?.output?.includes?.(SCHEDULE_TYPE) || !!node?.__otcacheScheduleNode;
}

function watchWidgets(node) {
  const names = node.comfyClass === SLIDER ? ["speedup", "steps", "mapping"] : node.comfyClass === TEXT ? ["text"] : node.comfyClass === PRESET ? ["preset"] : [];
  for (const name of names) {
    const widget = widgetOf(node, name);
    if (!widget || widget.__otcacheWatched) continue;
    const original = widget.callback;
    widget.callback = function (...args) {
      const result = original?.apply(this, args);
      refreshWithDependents(node);
      return result;
    };
    widget.__otcacheWatched = true;
  }
}

app.registerExtension({
  name: "otcache.schedule_strip",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.output?.includes?.(SCHEDULE_TYPE)) return;
    const proto = nodeType.prototype;

    const onNodeCreated = proto.onNodeCreated;
    proto.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      this.__otcacheScheduleNode = true;
      ensure(this);
      addStripWidget(this);
      addCurveWidget(this);
      watchWidgets(this);
      return result;
    };

    const onExecuted = proto.onExecuted;
    proto.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      onScheduleExecuted(this, output);
      return result;
    };

    const onConnectionsChange = proto.onConnectionsChange;
    proto.onConnectionsChange = function (...args) {
      const result = onConnectionsChange?.apply(this, args);
      if (this.graph && !app.configuringGraph) refreshWithDependents(this);
      return result;
    };

    const onConfigure = proto.onConfigure;
    proto.onConfigure = function (...args) {
      const result = onConfigure?.apply(this, args);
      ensure(this).state = null;
      restoreLastRun(this);
      return result;
    };
  },

  async nodeCreated(node) {
    if (!isScheduleNode(node)) return;
    // A node added by hand; loaded graphs are refreshed in afterConfigureGraph.
    if (!app.configuringGraph) setTimeout(() => refresh(node), 0);
  },

  async afterConfigureGraph() {
    await refreshAll();
  },

  getNodeMenuItems(node) {
    if (!isScheduleNode(node)) return [];
    const items = [
      { content: "Copy schedule", callback: () => copySchedule(node) },
      { content: "Schedule → new Text node", callback: () => newTextNode(node) },
    ];
    if (node.comfyClass === TEXT) items.push({ content: "Paste schedule", callback: () => pasteSchedule(node) });
    return items;
  },
});

// For tests and for other extensions.
window.OTCacheUI = {
  version: 1,
  stats,
  stateOf(nodeOrId) {
    const node = typeof nodeOrId === "object" ? nodeOrId : app.graph.getNodeById(nodeOrId);
    return node?.otcache?.state ?? null;
  },
  curveOf(nodeOrId) {
    const node = typeof nodeOrId === "object" ? nodeOrId : app.graph.getNodeById(nodeOrId);
    return node?.otcache?.curve ?? null;
  },
  busy() {
    return stats.inFlight > 0 || !!scheduledAll;
  },
  refresh,
  refreshAll,
  copySchedule,
  pasteSchedule,
  newTextNode,
  sourceOf,
};
