"""The frontend extension (web/otcache.js) in the real ComfyUI frontend, in headless Chromium.

One ComfyUI server (the session's ``comfy_server``) and one browser page for the module:
load the FLUX example workflow (published reference preset -> Anchor Search -> Budget
Slider), check that no node is missing, that the slider waits for the search's first run
and, once the search's result arrives (the server's ``executed`` message, replayed here:
the real models are not available), that the strips are drawn (the extension's state and
the canvas pixels); drag the Budget Slider with the mouse and check that strip and speedup
follow (from the server's preview route), queue the tiny CPU demo from the browser and
check the strips drawn from the run, then copy and paste a schedule through the node
context menu.

Artifacts: ``test-artifacts/browser-budget-slider.png`` on every run, and the README's
``docs/budget-slider.png`` when it is missing or ``OTCACHE_UPDATE_SCREENSHOTS=1``.
"""
from __future__ import annotations

from devtools.host import REPO_ROOT

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.server]

CHROMIUM = Path(os.environ.get("OTCACHE_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACT = REPO_ROOT / "test-artifacts" / "browser-budget-slider.png"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "budget-slider.png"
PACK = "ComfyUI-OTCache"
FLUX = "otcache-flux1-dev-budget-slider"
DEMO = "otcache-tiny-demo-cpu"
REFERENCE_ID, ANCHOR_ID, SLIDER_ID = 20, 21, 22
# The search result replayed into the FLUX workflow: the published lemica-flux1-dev-50-10 (what a
# budget-10 search may return; the workflow searches at budget 0, about N/7, but the frontend
# only shows what the node output), so the slider matches the README's 26/10 example.
FLUX_ANCHOR = "50:0,1,3,7,14,21,28,35,42,49"
SETUP_HINT = "run `python3 scripts/setup_host.py --test-tools` (installs Debian's chromium) or set OTCACHE_CHROMIUM"

# Cell centers of a node's strip in graph coordinates, and the canvas pixel there
# (web/otcache.js draws cells 12 px from the node's sides, 20 px below the widget's y).
SAMPLE_STRIP = """(id) => {
  const node = app.graph.getNodeById(id);
  const widget = node.widgets.find((w) => w.name === 'otcache_strip');
  const state = OTCacheUI.stateOf(node);
  app.canvas.ds.scale = 1.5;  // big cells: every sampled pixel lies well inside one
  app.canvas.centerOnNode(node);
  app.canvas.setDirty(true, true);
  app.canvas.draw(true, true);
  const canvas = app.canvas.canvas;
  const ctx = canvas.getContext('2d');
  const ratio = canvas.width / canvas.getBoundingClientRect().width;
  const n = state.mask.length;
  const inner = node.size[0] - 24;
  const y = node.pos[1] + widget.last_y + 20 + 12;
  const cells = [];
  for (let i = 0; i < n; i++) {
    const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + 12 + (i + 0.5) * inner / n, y]);
    const [r, g, b] = ctx.getImageData(Math.round(cx * ratio), Math.round(cy * ratio), 1, 1).data;
    cells.push(g > 150 && r < 140 ? 1 : r < 80 && g < 80 && b < 80 ? 0 : -1);
  }
  return {cells, mask: state.mask};
}"""

STATE = "(id) => { const s = OTCacheUI.stateOf(id); return s && {...s, mask: s.mask && Array.from(s.mask)}; }"


def wait_idle(page, timeout=20_000):
    page.wait_for_function("() => !OTCacheUI.busy()", timeout=timeout)


def load_template(page, name):
    """Load an example workflow the way the template browser does (fetch from the pack's route)."""
    page.evaluate(
        """async ([pack, name]) => {
          const workflow = await (await fetch(`api/workflow_templates/${pack}/${name}.json`)).json();
          await app.loadGraphData(workflow, true, true, name);
        }""",
        [PACK, name],
    )
    page.wait_for_function("() => app.graph._nodes.length > 0")
    page.wait_for_timeout(300)
    wait_idle(page)


def search_ran(page, node_id, compact):
    """Deliver a search node's result as a run does (the ``executed`` message with its ui payload),
    then let the Budget Slider downstream preview with it."""
    steps, compute = compact.split(":")
    page.evaluate(
        """([id, steps, compute]) => {
          app.api.dispatchCustomEvent('executed', {node: String(id), display_node: String(id), prompt_id: 'otcache-test',
            output: {otcache_schedule: [{steps, compute}], text: ['anchor (replayed result)']}});
          return OTCacheUI.refresh(app.graph.getNodeById(22));
        }""",
        [node_id, int(steps), [int(s) for s in compute.split(",")]],
    )
    wait_idle(page)


def missing_node_messages(page) -> list[str]:
    return page.evaluate(
        """() => [...document.querySelectorAll('body *')]
             .filter((e) => e.children.length === 0 && /missing node|isn't installed/i.test(e.textContent || ''))
             .filter((e) => e.getClientRects().length > 0)
             .map((e) => e.textContent.trim())"""
    )


def slider_screen_box(page, node_id):
    """Page coordinates of the speedup slider widget (left end, right end, middle y)."""
    return page.evaluate(
        """(id) => {
          const node = app.graph.getNodeById(id);
          const w = node.widgets.find((w) => w.name === 'speedup');
          const rect = app.canvas.canvas.getBoundingClientRect();
          const height = w.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT;
          const margin = 15;
          const toPage = (x, y) => { const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([x, y]); return [rect.left + cx, rect.top + cy]; };
          const [x0, y] = toPage(node.pos[0] + margin, node.pos[1] + w.last_y + height / 2);
          const [x1] = toPage(node.pos[0] + node.size[0] - margin, node.pos[1]);
          return {x0, x1, y, min: w.options.min, max: w.options.max, value: w.value};
        }""",
        node_id,
    )


@pytest.fixture(scope="module")
def page(request):
    # Checked before the server starts, so a missing browser fails at once (never skips).
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing ({CHROMIUM} not found): {SETUP_HINT}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: run `python3 scripts/setup_host.py --test-tools`")
    comfy_server = request.getfixturevalue("comfy_server")
    errors: list[str] = []
    with sync_playwright() as playwright:
        # Playwright gives the browser a fresh temporary profile (its own --user-data-dir).
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=comfy_server.url)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{error}") if "otcache" in f"{error} {error.stack}".lower() else None)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "otcache" in m.text.lower() else None)
        page.set_default_timeout(30_000)
        page.goto(comfy_server.url)
        page.wait_for_function("() => window.app && window.app.graph && window.OTCacheUI && window.LiteGraph", timeout=90_000)
        close_templates_dialog(page)
        page.otcache_errors = errors
        yield page
        context.close()
        browser.close()


@pytest.fixture(autouse=True)
def no_extension_errors(page):
    """After every test: the extension logged no error and threw nothing in the page."""
    page.otcache_errors.clear()
    yield
    assert page.otcache_errors == []


def close_templates_dialog(page):
    """On a first visit ComfyUI opens its Templates dialog over the canvas: close it."""
    dialog = page.locator("[role=dialog]")
    try:
        dialog.first.wait_for(state="visible", timeout=8_000)
    except Exception:
        return  # not shown (settings say it was seen)
    for _ in range(3):
        page.keyboard.press("Escape")
        try:
            dialog.first.wait_for(state="hidden", timeout=3_000)
            return
        except Exception:
            continue
    raise AssertionError("the Templates dialog did not close: " + dialog.first.inner_text()[:300])


def test_extension_is_served_and_loaded(page, comfy_server):
    scripts = comfy_server.get("/extensions")
    assert f"/extensions/{PACK}/otcache.js" in scripts
    assert page.evaluate("() => OTCacheUI.version") == 1
    assert page.locator("[role=dialog]").count() == 0 or not page.locator("[role=dialog]").first.is_visible()


def test_flux_example_loads_without_missing_nodes_and_draws_strips(page):
    load_template(page, FLUX)
    unregistered = page.evaluate("() => app.graph._nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type)")
    assert unregistered == []
    assert missing_node_messages(page) == []
    assert page.evaluate("(id) => app.graph.getNodeById(id).type", ANCHOR_ID) == "OTCacheAnchorSearch"
    reference = page.evaluate(STATE, REFERENCE_ID)
    assert (reference["budget"], reference["steps"], reference["origin"]) == (26, 50, "preview")
    # Before the search has run there is no anchor: the slider says so instead of guessing.
    assert page.evaluate(STATE, ANCHOR_ID) is None
    assert page.evaluate(STATE, SLIDER_ID)["error"] == "no preview: anchor (run once to preview it)"
    search_ran(page, ANCHOR_ID, FLUX_ANCHOR)
    anchor, slider = (page.evaluate(STATE, i) for i in (ANCHOR_ID, SLIDER_ID))
    assert (anchor["compact"], anchor["origin"]) == (FLUX_ANCHOR, "last run")
    assert page.evaluate("(id) => app.graph.getNodeById(id).properties.otcache_last_run.schedule", ANCHOR_ID) == FLUX_ANCHOR
    # speedup 2.5 at N = 50: K = 20 computed steps, between reference (26) and anchor (10).
    assert (slider["budget"], slider["steps"], slider["speedup"], slider["error"]) == (20, 50, 2.5, None)
    assert slider["compact"] == "50:0,1,2,3,4,6,7,9,12,15,19,22,28,33,37,41,43,45,47,49"  # the README's example
    assert sum(slider["mask"]) == 20 and slider["mask"][0] == slider["mask"][-1] == 1
    for node_id in (REFERENCE_ID, ANCHOR_ID, SLIDER_ID):
        sampled = page.evaluate(SAMPLE_STRIP, node_id)
        assert sampled["cells"] == sampled["mask"], f"node {node_id}: canvas pixels do not show the strip"


def test_dragging_the_budget_slider_updates_strip_and_speedup_live(page, comfy_server):
    load_template(page, FLUX)  # each test loads what it needs: none depends on another's order
    search_ran(page, ANCHOR_ID, FLUX_ANCHOR)
    wait_idle(page)
    page.evaluate("() => { const n = app.graph.getNodeById(22); app.canvas.ds.scale = 1.2; app.canvas.centerOnNode(n); app.canvas.draw(true, true); }")
    before = page.evaluate(STATE, SLIDER_ID)
    requests_before = page.evaluate("() => OTCacheUI.stats.previewRequests")
    box = slider_screen_box(page, SLIDER_ID)

    def x_for(value):
        return box["x0"] + (value - box["min"]) / (box["max"] - box["min"]) * (box["x1"] - box["x0"])

    # A real drag on the canvas: press on the slider, move in steps, release.
    page.mouse.move(x_for(box["value"]), box["y"])
    page.mouse.down()
    seen = set()
    for i in range(1, 9):
        page.mouse.move(x_for(box["value"] + (4.0 - box["value"]) * i / 8), box["y"], steps=2)
        page.wait_for_timeout(60)
        seen.add(page.evaluate("() => OTCacheUI.stateOf(22)?.budget"))
    page.mouse.up()
    wait_idle(page)
    value = page.evaluate("() => app.graph.getNodeById(22).widgets.find((w) => w.name === 'speedup').value")
    after = page.evaluate(STATE, SLIDER_ID)
    assert 3.5 < value < 4.5, f"the drag set speedup to {value}"
    # Previews arrived during the drag (not only at the end) and the last one is for the final value.
    assert page.evaluate("() => OTCacheUI.stats.previewRequests") - requests_before >= 3
    assert len(seen - {None}) >= 2, f"the strip did not change during the drag: budgets seen {seen}"
    assert after["requestedSpeedup"] == pytest.approx(value)
    assert after["budget"] == max(2, min(50, int(50 / value + 0.5))) and after["budget"] < before["budget"]
    assert after["speedup"] == pytest.approx(50 / after["budget"]) and after["compact"] != before["compact"]
    # The route's answer is the node's own schedule for these inputs.
    expected = comfy_server.post("/otcache/preview", {"reference": {"preset": "lemica-flux1-dev-50-26"},
                                                      "anchor": FLUX_ANCHOR, "speedup": value})
    assert after["compact"] == expected["schedule"] and after["mask"] == expected["mask"]
    sampled = page.evaluate(SAMPLE_STRIP, SLIDER_ID)
    assert sampled["cells"] == sampled["mask"]

    # Past the anchor's speedup (5x here) the strip shows the node's range error instead.
    page.evaluate("() => { const w = app.graph.getNodeById(22).widgets.find((w) => w.name === 'speedup'); w.value = 7; w.callback(7); }")
    wait_idle(page)
    assert "out of range: choose 1.00 .. 5.00" in page.evaluate(STATE, SLIDER_ID)["error"]
    page.evaluate("(v) => { const w = app.graph.getNodeById(22).widgets.find((w) => w.name === 'speedup'); w.value = v; w.callback(v); }", value)
    wait_idle(page)
    assert page.evaluate(STATE, SLIDER_ID)["compact"] == after["compact"]

    # A new search result (budget 15: max speedup 50/15) moves the slider's range with it.
    search_ran(page, ANCHOR_ID, comfy_server.post("/otcache/schedule", {"schedule": {"preset": "lemica-flux1-dev-50-15"}})["schedule"])
    assert "choose 1.00 .. 3.33" in page.evaluate(STATE, SLIDER_ID)["error"]
    search_ran(page, ANCHOR_ID, FLUX_ANCHOR)
    assert page.evaluate(STATE, SLIDER_ID)["compact"] == after["compact"]
    # Changing the reference preset previews the slider again.
    page.evaluate("""() => { const w = app.graph.getNodeById(20).widgets.find((w) => w.name === 'preset');
                              w.value = 'lemica-flux1-dev-50-20'; w.callback(w.value); }""")
    wait_idle(page)
    assert page.evaluate(STATE, SLIDER_ID)["compact"] != after["compact"]
    page.evaluate("""() => { const w = app.graph.getNodeById(20).widgets.find((w) => w.name === 'preset');
                              w.value = 'lemica-flux1-dev-50-26'; w.callback(w.value); }""")
    wait_idle(page)
    assert page.evaluate(STATE, SLIDER_ID)["compact"] == after["compact"]

    take_screenshot(page)


def take_screenshot(page):
    """The OTCache part of the FLUX workflow after the drag, for the README and as an artifact."""
    page.evaluate("""() => { for (const e of document.querySelectorAll('body span, body div'))
        if (e.children.length === 0 && /errors? found/.test(e.textContent || '')) { const box = e.closest('div.pointer-events-auto'); if (box) box.style.visibility = 'hidden'; }
      const ids = [20, 21, 22, 23]; const nodes = ids.map((i) => app.graph.getNodeById(i));
      const x0 = Math.min(...nodes.map((n) => n.pos[0])), x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
      const y0 = Math.min(...nodes.map((n) => n.pos[1] - 30)), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
      const ds = app.canvas.ds; const rect = app.canvas.canvas.getBoundingClientRect();
      ds.scale = Math.min(1.3, (rect.width - 200) / (x1 - x0), (rect.height - 200) / (y1 - y0));
      ds.offset[0] = 110 / ds.scale - x0; ds.offset[1] = 110 / ds.scale - y0;
      app.canvas.setDirty(true, true); app.canvas.draw(true, true); }""")
    page.wait_for_timeout(300)
    clip = page.evaluate("""() => { const ids = [20, 21, 22, 23]; const nodes = ids.map((i) => app.graph.getNodeById(i));
      const rect = app.canvas.canvas.getBoundingClientRect(); const ds = app.canvas.ds;
      const p = (x, y) => { const [cx, cy] = ds.convertOffsetToCanvas([x, y]); return [rect.left + cx, rect.top + cy]; };
      const [x0, y0] = p(Math.min(...nodes.map((n) => n.pos[0])) - 20, Math.min(...nodes.map((n) => n.pos[1])) - 50);
      const [x1, y1] = p(Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 20, Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 20);
      return {x: Math.max(0, x0), y: Math.max(0, y0), width: x1 - Math.max(0, x0), height: y1 - Math.max(0, y0)}; }""")
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACT), clip=clip)
    assert ARTIFACT.stat().st_size > 10_000
    if not DOCS_SCREENSHOT.exists() or os.environ.get("OTCACHE_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACT, DOCS_SCREENSHOT)


def test_queued_demo_draws_the_strips_of_the_run(page, comfy_server):
    load_template(page, DEMO)
    assert missing_node_messages(page) == []
    page.evaluate("() => { const w = app.graph.getNodeById(22).widgets.find((w) => w.name === 'speedup'); w.value = 2.5; w.callback(2.5); }")
    wait_idle(page)
    preview = page.evaluate(STATE, SLIDER_ID)
    assert (preview["budget"], preview["steps"], preview["origin"]) == (4, 10, "preview")
    before = comfy_server.log()
    page.evaluate("() => app.queuePrompt(0, 1)")
    page.wait_for_function("() => OTCacheUI.stateOf(22)?.origin === 'last run'", timeout=120_000)
    run = page.evaluate(STATE, SLIDER_ID)
    # The run gives exactly the schedule the preview promised, and the strip shows it.
    assert run["compact"] == preview["compact"] and run["mask"] == preview["mask"]
    assert run["lambda"] is not None
    assert page.evaluate("() => app.graph.getNodeById(22).properties.otcache_last_run.schedule") == run["compact"]
    for node_id in (REFERENCE_ID, ANCHOR_ID):
        assert page.evaluate(STATE, node_id)["origin"] == "last run"
    sampled = page.evaluate(SAMPLE_STRIP, SLIDER_ID)
    assert sampled["cells"] == sampled["mask"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "OTCache [output] K=4/N=10" not in comfy_server.log()[len(before):]:
        time.sleep(0.25)
    assert re.search(r"OTCache \[output\] K=4/N=10: computed 4/10 evaluations", comfy_server.log()[len(before):])


def menu_item(page, node_id, label):
    return f"""() => {{ const node = app.graph.getNodeById({node_id});
        const item = app.canvas.getNodeMenuOptions(node).find((o) => o && o.content === {json.dumps(label)});
        if (!item) throw new Error('no menu item ' + {json.dumps(label)});
        return item.callback(); }}"""


def test_copy_and_paste_a_schedule_through_the_context_menu(page):
    load_template(page, DEMO)
    wait_idle(page)
    slider = page.evaluate(STATE, SLIDER_ID)["compact"]
    labels = page.evaluate("() => app.canvas.getNodeMenuOptions(app.graph.getNodeById(21)).filter(Boolean).map((o) => o.content)")
    assert {"Copy schedule", "Paste schedule", "Schedule → new Text node"} <= set(labels)
    page.evaluate(menu_item(page, SLIDER_ID, "Copy schedule"))
    assert page.evaluate("() => navigator.clipboard.readText()") == slider
    requests = page.evaluate("() => OTCacheUI.stats.previewRequests")
    page.evaluate(menu_item(page, ANCHOR_ID, "Paste schedule"))
    wait_idle(page)
    assert page.evaluate("() => app.graph.getNodeById(21).widgets.find((w) => w.name === 'text').value") == slider
    anchor = page.evaluate(STATE, ANCHOR_ID)
    assert (anchor["compact"], anchor["origin"]) == (slider, "preview")
    # The slider downstream previewed again with the pasted anchor (10 steps, resampled to 50).
    assert page.evaluate("() => OTCacheUI.stats.previewRequests") > requests
    assert page.evaluate(STATE, SLIDER_ID)["origin"] == "preview"
    # Pasting something that is not a schedule changes nothing.
    page.evaluate("() => navigator.clipboard.writeText('not a schedule')")
    page.evaluate(menu_item(page, ANCHOR_ID, "Paste schedule"))
    assert page.evaluate("() => app.graph.getNodeById(21).widgets.find((w) => w.name === 'text').value") == slider
    # "Schedule -> new Text node" pins a schedule into the workflow as text.
    count = page.evaluate("() => app.graph._nodes.length")
    page.evaluate(menu_item(page, REFERENCE_ID, "Schedule → new Text node"))
    wait_idle(page)
    created = page.evaluate("() => { const n = app.graph._nodes.at(-1); return [n.type, n.widgets.find((w) => w.name === 'text').value]; }")
    assert page.evaluate("() => app.graph._nodes.length") == count + 1
    assert created[0] == "OTCacheScheduleFromText" and created[1].startswith("50:0,1,2,3,4,5,6,7,8,9,10,12")
    # The saved workflow carries the schedules as widget values, never the strip.
    saved = page.evaluate("() => app.graph.serialize()")
    text_node = next(n for n in saved["nodes"] if n["id"] == ANCHOR_ID)
    assert text_node["widgets_values"] == [slider]
    slider_node = next(n for n in saved["nodes"] if n["id"] == SLIDER_ID)
    assert len(slider_node["widgets_values"]) == 3


def test_missing_nodes_are_detected(page):
    # The missing-node detection the other tests rely on: a bogus node is reported.
    page.evaluate("""async () => app.loadGraphData({nodes: [{id: 1, type: 'OTCacheNoSuchNode', pos: [100, 100], size: [200, 80], flags: {},
        order: 0, mode: 0, inputs: [], outputs: [], properties: {}, widgets_values: []}], links: [], groups: [], config: {}, extra: {},
        version: 0.4, last_node_id: 1, last_link_id: 0})""")
    page.wait_for_function("""() => [...document.querySelectorAll('body *')].some((e) => e.children.length === 0 && /missing node/i.test(e.textContent || ''))""",
                           timeout=15_000)


def test_a_measured_path_draws_its_curve_and_steers_the_slider(page, comfy_server):
    """An anchor whose search measured a budget path: the curve is drawn under Anchor Search and the
    Budget Slider, the slider's preview lands on the path's knots, and the workflow carries the path."""
    from comfyui_otcache.otcache_core.presets import load_preset
    from comfyui_otcache.otcache_core.schedule import Schedule

    load_template(page, FLUX)
    reference = load_preset("lemica-flux1-dev-50-26")
    anchor = Schedule.parse(FLUX_ANCHOR, source="anchor")
    knots = [[k, str(anchor if k == 10 else reference if k == 26 else Schedule.uniform(50, k)), 0.05 + 0.01 * (26 - k),
              "graph"] for k in range(10, 27)]
    path = {"format": "otcache.budget_path", "version": 1, "reference": str(reference), "metric": "1-ssim",
            "scored": 40, "knots": knots}
    document = anchor.with_metadata(params={"path": path}).to_dict()
    page.evaluate(
        """([id, schedule]) => {
          app.api.dispatchCustomEvent('executed', {node: String(id), display_node: String(id), prompt_id: 'otcache-test',
            output: {otcache_schedule: [schedule], text: ['anchor with a measured path (replayed result)']}});
          const slider = app.graph.getNodeById(22);
          const w = slider.widgets.find((w) => w.name === 'speedup'); w.value = 2.5;
          return OTCacheUI.refresh(slider);
        }""",
        [ANCHOR_ID, document],
    )
    wait_idle(page)
    anchor_curve = page.evaluate("(id) => OTCacheUI.curveOf(id)", ANCHOR_ID)
    assert [p["budget"] for p in anchor_curve["points"]] == list(range(10, 27)) and anchor_curve["metric"] == "1-ssim"
    slider = page.evaluate(STATE, SLIDER_ID)
    assert slider["compact"] == str(Schedule.uniform(50, 20))  # the knot, not the plain OT schedule
    curve = page.evaluate("(id) => OTCacheUI.curveOf(id)", SLIDER_ID)
    assert curve["budget"] == 20 and len(curve["points"]) == 17
    # The curve is on the canvas: its colour shows inside the curve widget of both nodes.
    for node_id in (ANCHOR_ID, SLIDER_ID):
        blue = page.evaluate("""(id) => {
          const node = app.graph.getNodeById(id); const w = node.widgets.find((w) => w.name === 'otcache_curve');
          app.canvas.ds.scale = 1.5; app.canvas.centerOnNode(node); app.canvas.setDirty(true, true); app.canvas.draw(true, true);
          const canvas = app.canvas.canvas; const ctx = canvas.getContext('2d');
          const ratio = canvas.width / canvas.getBoundingClientRect().width;
          const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] + w.last_y]);
          const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0], node.pos[1] + w.last_y + 84]);
          const data = ctx.getImageData(Math.round(x0 * ratio), Math.round(y0 * ratio), Math.round((x1 - x0) * ratio),
                                        Math.round((y1 - y0) * ratio)).data;
          let n = 0; for (let i = 0; i < data.length; i += 4) if (data[i] < 120 && data[i + 1] > 160 && data[i + 2] > 200) n++;
          return n; }""", node_id)
        assert blue > 20, f"node {node_id}: no curve pixels drawn ({blue})"
    saved = page.evaluate("(id) => app.graph.serialize().nodes.find((n) => n.id === id).properties.otcache_last_run", ANCHOR_ID)
    assert saved["json"]["params"]["path"]["knots"][10][0] == 20  # the path travels with the workflow


FULL_CHAIN = "otcache-tiny-demo-full-chain"
EXECUTED = "Prompt executed in"


def queue_and_wait(page, comfy_server, timeout=400):
    """Queue the canvas's workflow as the Run button does; wait until the server has run it; its log lines."""
    before = len(comfy_server.log())
    page.evaluate("() => app.queuePrompt(0, 1)")
    deadline = time.monotonic() + timeout
    while EXECUTED not in comfy_server.log()[before:]:
        assert time.monotonic() < deadline, f"the workflow did not run in {timeout} s:\n{comfy_server.log()[-3000:]}"
        time.sleep(0.25)
    wait_idle(page)
    return comfy_server.log()[before:]


def test_a_searched_workflow_travels_to_a_machine_without_calibration_files(page, comfy_server, tmp_path):
    """Search, save the workflow, clear the user directory (another machine), reload, queue: no calibration runs
    and the schedules are the same."""
    ids = (REFERENCE_ID, ANCHOR_ID, SLIDER_ID)
    load_template(page, FULL_CHAIN)
    wait_idle(page)
    log = queue_and_wait(page, comfy_server)
    assert "calibration:" in log  # the first machine calibrated
    first = {i: page.evaluate(STATE, i)["compact"] for i in ids}
    saved = page.evaluate("() => app.graph.serialize()")
    results = {n["id"]: n["properties"]["otcache_last_run"].get("result") for n in saved["nodes"] if n["id"] in ids[:2]}
    assert all(r and r["schedule"]["compute"] for r in results.values())
    assert results[REFERENCE_ID]["for"]["steps"] == 8 and results[ANCHOR_ID]["for"]["budget"] == 3

    # The second machine: another ComfyUI with an empty user directory (no calibration files, no studies).
    from devtools.server import start_server

    second = start_server(tmp_path / "second-machine")
    other = page.context.new_page()
    try:
        other.goto(second.url)
        other.wait_for_function("() => window.app && window.app.graph && window.OTCacheUI", timeout=90_000)
        close_templates_dialog(other)
        other.evaluate("async (wf) => { await app.loadGraphData(wf); }", saved)
        wait_idle(other)
        # Before anything is queued, the strips show the saved results.
        assert {i: other.evaluate(STATE, i)["compact"] for i in ids[:2]} == {i: first[i] for i in ids[:2]}
        log = queue_and_wait(other, second)
        assert "calibration:" not in log and log.count("used the saved result") == 2, log[-3000:]
        user = second.workdir / "user"
        assert not any((user / "otcache").rglob("*.*")) if (user / "otcache").exists() else True  # nothing calibrated
        assert {i: other.evaluate(STATE, i)["compact"] for i in ids} == first
    finally:
        other.close()
        second.stop()
