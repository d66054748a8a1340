"""The HTML report as a reader sees it: rendered by headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium), from real records of real runs.

Checks: the table rows and every plot are displayed (non-zero size, inside the viewport once scrolled
to, not covered), plots are decoded images, a header click sorts the rows, a failed and an
unavailable backend show their status and reason, nothing is fetched from the network (every
resource is a data: URI; no request leaves the page; no console error, so no CSP violation), a
`<script>` in a record is shown as text and never runs, and a full-page screenshot has content
(saved to the test's tmp dir and to $CONVBENCH_ARTIFACTS when set).
"""
import base64
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import needs
from bench.inject import ENV_VAR
from bench.paths import REPO

REPO_PATH = pathlib.Path(REPO)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install chromium chromium-driver"
SMALL = ["--limit-train", "1024", "--limit-test", "200", "--batch-size", "64", "--threads", "1",
         "--timing-runs", "1",
         "--no-report"]
XSS = "<script>window.__xss=1</script>seed"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000", "--force-device-scale-factor=1"]

pytestmark = pytest.mark.slow


def _browser_or_skip():
    """Chromium, its driver and selenium: a missing one skips with the fix, or fails where the
    browser is required (CI=true, CONVBENCH_REQUIRE=all or chromium; .ci/run installs them)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (shutil.which(p) or os.path.exists(p))]
    if missing:
        needs.missing("chromium", "headless Chromium is needed for the report test: %s not found; "
                      "fix: %s (Debian)" % (", ".join(missing), INSTALL))
    try:
        import selenium  # noqa: F401
    except ImportError:
        needs.missing("chromium", "selenium is needed for the report test; fix: pip install -e "
                      "'.[test]'")


def convbench(*args, inject=None):
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if inject:
        env[ENV_VAR] = inject
    return subprocess.run([sys.executable, "-m", "bench"] + [str(a) for a in args], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    _browser_or_skip()
    d = tmp_path_factory.mktemp("browser")
    results = d / "runs.jsonl"
    # two backends that train ok
    proc = convbench("run", "--backend", "numpy,torch", "--results", results, *SMALL)
    assert proc.returncode == 0, proc.stderr
    # a model whose name holds markup, on which one worker dies (SIGKILL, as the OOM killer does)
    # and one framework cannot be imported (as with a broken install): real failed and unavailable
    # records, made by the real runner
    spec = open(os.path.join(REPO, "models", "seed_convnet.toml")).read()
    xss_spec = d / "xss.toml"
    xss_spec.write_text(spec.replace('name = "seed_convnet"', 'name = "%s"' % XSS.replace('"', '\\"')))
    proc = convbench("run", "--backend", "numpy,torch", "--model", xss_spec, "--results", results,
                     *SMALL, inject="numpy:kill_at_step=2,torch:import_error=1")
    assert proc.returncode == 1, proc.stderr
    recs = [json.loads(l) for l in open(results)]
    assert [(r["model"], r["status"]) for r in recs] == [
        ("seed_convnet", "ok"), ("seed_convnet", "ok"), (XSS, "failed"), (XSS, "unavailable")]
    proc = convbench("report", "--results", results, "--out", d)
    assert proc.returncode == 0, proc.stderr
    return {"html": d / "report.html", "dir": d, "records": recs}


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + ["--user-data-dir=%s" % tmp_path_factory.mktemp("chromium-profile")]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        driver.get(report["html"].as_uri())
        driver.execute_script("return document.readyState")
        yield driver
    finally:
        driver.quit()


def _in_view(driver, element):
    """Scroll the element to the middle of the viewport; its box, and whether it is on top there."""
    return driver.execute_script("""
        var e = arguments[0];
        e.scrollIntoView({block: 'center', inline: 'nearest'});
        var r = e.getBoundingClientRect();
        var x = Math.min(r.left + r.width / 2, innerWidth - 1), y = r.top + r.height / 2;
        var top = document.elementFromPoint(x, y);
        return {w: r.width, h: r.height, top: r.top, bottom: r.bottom, left: r.left,
                right: r.right, vw: innerWidth, vh: innerHeight,
                on_top: top !== null && (top === e || e.contains(top))};
    """, element)


def _assert_visible(driver, element, what):
    box = _in_view(driver, element)
    assert element.is_displayed(), what
    assert box["w"] > 0 and box["h"] > 0, (what, box)
    assert box["top"] >= 0 and box["bottom"] <= box["vh"] and box["left"] >= 0, (what, box)
    assert box["on_top"], ("covered by another element", what, box)
    return box


def _tables(driver):
    from selenium.webdriver.common.by import By

    tables = driver.find_elements(By.CSS_SELECTOR, "table.results")
    out = []
    for t in tables:
        heads = [th.text.strip() for th in t.find_elements(By.CSS_SELECTOR, "thead th")]
        rows = t.find_elements(By.CSS_SELECTOR, "tbody tr")
        out.append((t, heads, rows))
    return out


def _cells(row):
    from selenium.webdriver.common.by import By

    return [td.text.strip() for td in row.find_elements(By.TAG_NAME, "td")]


def _main_table(driver):
    for t, heads, rows in _tables(driver):
        backends = {_cells(r)[heads.index("backend")] for r in rows}
        if backends == {"numpy", "torch"} and all(
                _cells(r)[heads.index("status")].startswith("ok") for r in rows):
            return t, heads, rows
    raise AssertionError("no table with numpy and torch both ok")


def test_table_rows_are_visible(page):
    t, heads, rows = _main_table(page)
    assert {"backend", "status", "median step ms", "test acc"} <= set(heads)
    assert "reason" not in heads  # every row is ok: the reason column is left out
    _assert_visible(page, t, "main table")
    for row in rows:
        _assert_visible(page, row, "row %s" % _cells(row)[:2])
        cells = _cells(row)
        assert float(cells[heads.index("median step ms")]) > 0
        assert 0 <= float(cells[heads.index("test acc")].split()[0]) <= 1


def test_plots_are_loaded_and_visible(page):
    from selenium.webdriver.common.by import By

    imgs = page.find_elements(By.TAG_NAME, "img")
    assert len(imgs) >= 4, "the ok group has 4 plots"
    for img in imgs:
        src = img.get_attribute("src")
        assert src.startswith("data:image/png;base64,"), src[:80]
        state = page.execute_script(
            "var i = arguments[0]; return [i.complete, i.naturalWidth, i.naturalHeight];", img)
        assert state[0] and state[1] > 100 and state[2] > 50, (img.get_attribute("alt"), state)
        box = _assert_visible(page, img, "plot %s" % img.get_attribute("alt"))
        assert box["w"] > 200, box


def test_clicking_a_header_sorts_the_rows(page):
    from selenium.webdriver.common.by import By

    t, heads, _ = _main_table(page)
    col = heads.index("backend")
    th = t.find_elements(By.CSS_SELECTOR, "thead th")[col]

    def column():
        return [_cells(r)[col] for r in t.find_elements(By.CSS_SELECTOR, "tbody tr")]

    _in_view(page, th)
    th.click()
    first = column()
    th.click()
    second = column()
    assert first == sorted(first) and second == sorted(second, reverse=True), (first, second)
    assert first != second
    # numbers sort as numbers, not as text
    col = heads.index("median step ms")
    th = t.find_elements(By.CSS_SELECTOR, "thead th")[col]
    th.click()
    values = [float(_cells(r)[col]) for r in t.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert values == sorted(values)


def test_failed_and_unavailable_backends_show_status_and_reason(page):
    found = {}
    for t, heads, rows in _tables(page):
        for row in rows:
            cells = _cells(row)
            status = cells[heads.index("status")]
            if not status.startswith("ok"):
                _assert_visible(page, row, "row of %s" % cells[heads.index("backend")])
                found[cells[heads.index("backend")]] = (status, cells[heads.index("reason")])
    assert found["numpy"][0].startswith("FAILED") and "SIGKILL" in found["numpy"][1], found
    assert found["torch"][0].startswith("UNAVAILABLE"), found
    assert "cannot import PyTorch" in found["torch"][1] and "fix:" in found["torch"][1], found


def test_markup_in_a_record_is_text_and_never_runs(page):
    from selenium.webdriver.common.by import By

    assert page.execute_script("return window.__xss") is None
    headings = [h.text for h in page.find_elements(By.TAG_NAME, "h2")]
    assert any(XSS in h for h in headings), headings
    source = page.page_source
    assert "<script>window.__xss" not in source and "&lt;script&gt;window.__xss" in source
    # no script element came from the record
    scripts = [e.get_attribute("textContent") for e in page.find_elements(By.TAG_NAME, "script")]
    assert scripts and not [t for t in scripts if "__xss" in t], scripts


def test_nothing_is_fetched_from_the_network(page, report):
    html = report["html"].read_text()
    for attr in ("src=", "href="):
        for chunk in html.split(attr)[1:]:
            value = chunk[1:].split(chunk[0], 1)[0] if chunk[:1] in "'\"" else chunk.split()[0]
            # data: URIs, anchors, and links to files kept beside the report (never fetched)
            assert value.startswith("data:") or value.startswith("#") or ":" not in value, (
                attr, value[:80])
    entries = page.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    assert all(e.startswith("data:") for e in entries), entries
    # every request the browser made (its own new-tab page included): none leaves the machine; and
    # the report's document asked for nothing but itself and data: URIs
    events = [json.loads(e["message"])["message"] for e in page.get_log("performance")]
    sent = [m["params"] for m in events if m["method"] == "Network.requestWillBeSent"]
    urls = [p["request"]["url"] for p in sent]
    assert not [u for u in urls if u.split(":")[0] in ("http", "https", "ws", "wss", "ftp")], urls
    ours = [p["request"]["url"] for p in sent if p.get("documentURL") == report["html"].as_uri()]
    assert ours and ours[0] == report["html"].as_uri(), urls
    assert all(u == ours[0] or u.startswith("data:") for u in ours), ours
    errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # a CSP violation or a script error would be here


def test_full_page_screenshot_has_the_table_and_plots(page, report):
    from PIL import Image
    from selenium.webdriver.common.by import By

    page.execute_script("window.scrollTo(0, 0)")
    size = page.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width, height = int(size["width"]), int(size["height"])
    shot = page.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    png = base64.b64decode(shot["data"])
    path = report["dir"] / "report-screenshot.png"
    path.write_bytes(png)
    if os.environ.get("CONVBENCH_ARTIFACTS"):
        os.makedirs(os.environ["CONVBENCH_ARTIFACTS"], exist_ok=True)
        shutil.copy(str(path), os.path.join(os.environ["CONVBENCH_ARTIFACTS"], path.name))
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    assert image.shape[0] >= 1000 and image.shape[1] >= 800, image.shape
    assert image.std() > 10 and (image.min(axis=2) < 200).mean() > 0.01  # not a blank page

    def region(element):
        r = page.execute_script(
            "var r = arguments[0].getBoundingClientRect();"
            "return [r.left + scrollX, r.top + scrollY, r.width, r.height];", element)
        x, y, w, h = (int(round(v)) for v in r)
        return image[y:y + h, x:x + w]

    # every plot's area has drawn content: not white, several colours (lines, boxes, bars)
    for img in page.find_elements(By.TAG_NAME, "img"):
        area = region(img)
        assert area.size and (area.min(axis=2) < 128).mean() > 0.005, img.get_attribute("alt")
        assert len(np.unique(area.reshape(-1, 3) // 32, axis=0)) >= 4, img.get_attribute("alt")
        coloured = (area.max(axis=2) - area.min(axis=2)) > 60  # medians, lines, bars in colour
        assert coloured.sum() >= 10, img.get_attribute("alt")
    # the main table's rows are there as dark text on the screenshot
    _, _, rows = _main_table(page)
    for row in rows:
        area = region(row)
        assert area.size and (area.min(axis=2) < 100).mean() > 0.01


def _shot(page):
    shot = page.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    return base64.b64decode(shot["data"])


@pytest.mark.parametrize("which", ["this run", "reference"])
def test_the_first_screen_shows_the_summary_and_the_chart(page, report, which):
    """At 1400x900 the first screen holds the summary's verdict and the speed-at-a-glance chart,
    for this test's report and for the kept reference report (the screenshots are kept beside the
    test's report, and in $CONVBENCH_ARTIFACTS)."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    if which == "reference":
        page.get((REPO_PATH / "results" / "reference" / "report.html").as_uri())
    page.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # a 1400x900 viewport
        "width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    page.execute_script("window.scrollTo(0, 0)")
    height = page.execute_script("return innerHeight")
    summary = page.find_element(By.ID, "summary")
    verdict = summary.find_element(By.CSS_SELECTOR, "p.verdict")
    chart = summary.find_element(By.CSS_SELECTOR, "img")
    assert chart.get_attribute("alt").startswith("speed at a glance")
    assert "Fastest:" in verdict.text
    for element in (verdict, chart):
        r = page.execute_script("var r = arguments[0].getBoundingClientRect();"
                                "return [r.top, r.bottom, r.width];", element)
        assert r[0] >= 0 and r[1] <= height and r[2] > 300, (element.tag_name, r, height)
    png = _shot(page)
    path = report["dir"] / ("report-first-screen%s.png" % ("-reference" if which == "reference" else ""))
    path.write_bytes(png)
    if os.environ.get("CONVBENCH_ARTIFACTS"):
        os.makedirs(os.environ["CONVBENCH_ARTIFACTS"], exist_ok=True)
        shutil.copy(str(path), os.path.join(os.environ["CONVBENCH_ARTIFACTS"], path.name))
    assert Image.open(io.BytesIO(png)).size == (1400, height) and height == 900
    page.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    if which == "reference":
        page.get(report["html"].as_uri())  # the next tests read this run's report


def test_each_backend_has_one_colour_on_the_page_and_in_the_plots(page):
    """The palette the page shows is bench.palette's, one colour per backend, and that colour is
    drawn in each plot that shows the backend (its legend marker or line)."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    from bench import palette

    swatches = {s.get_attribute("data-backend"): s.get_attribute("data-colour")
                for s in page.find_elements(By.CSS_SELECTOR, "span.swatch")}
    assert {"numpy", "torch"} <= set(swatches), swatches
    assert all(swatches[b] == palette.colour(b) for b in swatches), swatches
    assert len(set(swatches.values())) == len(swatches)
    rgb = {b: tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for b, c in swatches.items()}
    checked = 0
    for img in page.find_elements(By.TAG_NAME, "img"):
        alt = img.get_attribute("alt")
        if alt not in ("accuracy", "throughput", "first_step", "speed at a glance") and \
                not alt.startswith("speed at a glance"):
            continue
        data = base64.b64decode(img.get_attribute("src").split(",", 1)[1])
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).reshape(-1, 3)
        present = {tuple(p) for p in np.unique(pixels, axis=0)}
        for backend in ("numpy", "torch"):
            assert rgb[backend] in present, (alt, backend, swatches[backend])
        checked += 1
    assert checked >= 3, checked
