#!/usr/bin/python3
"""The browser try-it page (server/http/www/index.html, served at GET /) in a
real headless Chromium, against a real ghostserve (issue 13).

A ghostserve with ghostnet_050_fashion (trained) and ghostnet_050 is started
on loopback with its HTTP listener; Chromium (Debian's chromium +
chromium-driver, driven by python3-selenium) loads http://127.0.0.1:H/ and:

* the model picker and the models table list exactly the models of
  GET /v1/models;
* a non-image text file chosen through the file input shows the server's
  JSON error message and HTTP status in #error;
* Fashion-MNIST test images (decoded from the dataset's IDX files and written
  as PNG files here) chosen through the file input are classified: #top1 is
  the label the server gives the same bytes over plain HTTP and the image's
  true label, and the timing breakdown and batch size are shown;
* the live panel shows a request rate and a mean latency computed from
  /metrics after a request, and the page's Prometheus parser copes with
  comments, escaped label values, timestamps and scientific notation;
* the page loads nothing but from the server, and logs no script errors;
* with --auth-token-file, the page shows the 401 until the token is typed
  into its token field, then lists and classifies; the token survives a reload.

A screenshot is written to ARTIFACTS/page.png.

  /usr/bin/python3 tests/http/test_page.py --ghostserve build/bin/ghostserve \
      [--artifacts DIR] [--fashion DIR] [unittest args]
"""
import argparse
import base64
import gzip
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
PAGE_SOURCE = os.path.join(SOURCE_DIR, "server", "http", "www", "index.html")

ARGS = argparse.Namespace(ghostserve=None, artifacts=None, fashion=None)

FASHION_MODEL = "ghostnet_050_fashion"
SERVED_MODELS = [FASHION_MODEL, "ghostnet_050"]
# The dataset's class names, by label index (Fashion-MNIST's README).
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
CANDIDATE_IMAGES = 20  # the first test images, searched for ones the model gets right
START_TIMEOUT_S = 180
UI_TIMEOUT_S = 60
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--ghostserve", default=os.environ.get("GHOSTSERVE_BIN"))
    ap.add_argument("--artifacts", default=os.getcwd())
    ap.add_argument("--fashion", default="/usr/share/datasets/fashion-mnist")
    known, rest = ap.parse_known_args()
    ARGS.ghostserve = known.ghostserve
    ARGS.artifacts = os.path.abspath(known.artifacts)
    ARGS.fashion = known.fashion
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


# ---- helpers ---------------------------------------------------------------

def free_port():
    """A TCP port that was free a moment ago (bind port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=60):
    """-> (status, headers, body bytes); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def png_gray(width, height, pixels):
    """An 8-bit grayscale PNG of `pixels` (bytes, row-major)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def fashion_test_images(directory, count, out_dir):
    """The first `count` Fashion-MNIST test images as PNG files, exactly the
    dataset's 28x28 pixels. -> [(path, label index)]."""
    images_path = os.path.join(directory, "t10k-images-idx3-ubyte.gz")
    labels_path = os.path.join(directory, "t10k-labels-idx1-ubyte.gz")
    for p in (images_path, labels_path):
        if not os.path.exists(p):
            raise AssertionError(f"{p} is missing: install Debian's dataset-fashion-mnist "
                                 "(scripts/install-deps.sh) or pass --fashion DIR")
    with gzip.open(images_path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{images_path}: not an IDX image file"
        pixels = f.read(count * rows * cols)
    with gzip.open(labels_path, "rb") as f:
        magic, n_labels = struct.unpack(">II", f.read(8))
        assert magic == 2049, f"{labels_path}: not an IDX label file"
        labels = f.read(count)
    out = []
    for i in range(count):
        path = os.path.join(out_dir, f"fashion_t10k_{i:05d}.png")
        with open(path, "wb") as f:
            f.write(png_gray(cols, rows, pixels[i * rows * cols:(i + 1) * rows * cols]))
        out.append((path, labels[i]))
    return out


class Server:
    """ghostserve on loopback: gRPC and HTTP on ports picked here, no metrics listener."""

    def __init__(self, log_path, models=SERVED_MODELS, extra_flags=()):
        self.log_path = log_path
        self.models = list(models)
        self.extra_flags = list(extra_flags)
        self.proc = None
        self.http_port = None

    def start(self):
        for attempt in range(3):
            grpc_port, self.http_port = free_port(), free_port()
            if grpc_port == self.http_port:
                continue
            cmd = [ARGS.ghostserve, "--listen", f"127.0.0.1:{grpc_port}",
                   "--http-listen", f"127.0.0.1:{self.http_port}", "--metrics-listen", "",
                   "--models", ",".join(self.models), "--executors", "1",
                   "--inference-threads", "1", "--preprocess-threads", "1", *self.extra_flags]
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
            try:
                self._wait_ready()
                return self
            except PortTaken:
                self.stop()  # a port picked above was taken meanwhile: pick again
        raise AssertionError(f"ghostserve could not bind its ports three times{self.log_tail()}")

    @property
    def base(self):
        return f"http://127.0.0.1:{self.http_port}"

    def _wait_ready(self):
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                if re.search(r"address already in use|failed to bind|could not bind", tail, re.I):
                    raise PortTaken()
                raise AssertionError(f"ghostserve exited with {self.proc.returncode} during start-up"
                                     f" (does it have --http-listen?){tail}")
            try:
                status, _, _ = http("GET", self.base + "/v2/health/ready", timeout=2)
                if status == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.time() > deadline:
                raise AssertionError(f"GET {self.base}/v2/health/ready not 200 after "
                                     f"{START_TIMEOUT_S} s{self.log_tail()}")
            time.sleep(0.3)

    def log_tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return ":\n" + f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PortTaken(Exception):
    pass


def start_chromium(profile_dir):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        raise AssertionError(f"{', '.join(missing)} missing: install Debian's chromium and "
                             "chromium-driver (scripts/install-deps.sh)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise AssertionError(f"python3-selenium missing ({e}): install it (scripts/install-deps.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking",
                f"--user-data-dir={profile_dir}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


NUMBER_RE = re.compile(r"^-?\d+(\.\d+)?$")


# ---- the test ----------------------------------------------------------------

class PageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not ARGS.ghostserve or not os.path.exists(ARGS.ghostserve):
            raise AssertionError(f"--ghostserve PATH: the server binary ({ARGS.ghostserve!r}) is missing")
        os.makedirs(ARGS.artifacts, exist_ok=True)
        cls.tmp = tempfile.mkdtemp(prefix="ghostserve-page-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.server = Server(os.path.join(cls.tmp, "ghostserve.log"))
        cls.addClassCleanup(cls.server.stop)
        cls.server.start()
        cls.driver = start_chromium(os.path.join(cls.tmp, "chromium-profile"))
        cls.addClassCleanup(cls.driver.quit)

    # -- page helpers --

    def wait_for(self, what, fn, timeout=UI_TIMEOUT_S, poll=0.1):
        """Polls fn() until it returns something truthy; fails naming `what`."""
        deadline = time.time() + timeout
        last_exc = None
        while time.time() < deadline:
            try:
                got = fn()
                if got:
                    return got
            except Exception as e:  # stale elements while the page re-renders
                last_exc = e
            time.sleep(poll)
        self.fail(f"timed out after {timeout} s waiting for {what}"
                  f"{f' (last error: {last_exc})' if last_exc else ''};\n"
                  f"#error: {self.text('error')!r}; #status: {self.text('status')!r}"
                  f"{self.browser_log_text()}")

    def by_id(self, element_id):
        from selenium.webdriver.common.by import By
        found = self.driver.find_elements(By.ID, element_id)
        if not found:
            self.fail(f"the page has no element with id {element_id!r}")
        return found[0]

    def text(self, element_id):
        """textContent (also of hidden elements), stripped."""
        try:
            return self.driver.execute_script(
                "var e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
                element_id).strip()
        except Exception:
            return None

    def visible_text(self, element_id):
        e = self.by_id(element_id)
        return e.text.strip() if e.is_displayed() else ""

    def choose_file(self, path):
        self.by_id("file").send_keys(path)

    def browser_log(self):
        try:
            return self.driver.get_log("browser")
        except Exception:
            return []

    def browser_log_text(self):
        entries = self.browser_log()
        self._log_seen.extend(entries)
        if not self._log_seen:
            return ""
        return "\nbrowser console:\n" + "\n".join(f"  {e['level']} {e['message']}" for e in self._log_seen)

    _log_seen = []

    def classify_on_page(self, path):
        """Chooses `path` in the file input; waits for its result or error.
        -> (#top1 text, #error text)."""
        name = os.path.basename(path)
        self.choose_file(path)

        # The status line names the file once its answer (or error) arrived;
        # file names differ between calls, so an earlier answer never matches.
        def done():
            status = self.text("status") or ""
            if status.startswith("Classified " + name):
                return (self.visible_text("top1"), self.visible_text("error"))
            if status.startswith("Failed to classify " + name):
                return (self.visible_text("top1"), self.visible_text("error"))
            return None
        return self.wait_for(f"the page's answer for {name}", done)

    # -- the checks --

    def test_page(self):
        d = self.driver
        base = self.server.base

        # GET / is this repository's page.
        status, headers, body = http("GET", base + "/")
        self.assertEqual(status, 200, f"GET / answered {status}: {body[:300]!r}")
        self.assertIn("text/html", headers.get("Content-Type", ""), "GET / Content-Type")
        with open(PAGE_SOURCE, "rb") as f:
            source = f.read()
        self.assertEqual(body, source, "GET / does not serve server/http/www/index.html as it is "
                         "in the source tree (rebuild ghostserve?)")

        # What the server says, over plain HTTP.
        status, _, body = http("GET", base + "/v1/models")
        self.assertEqual(status, 200, f"GET /v1/models answered {status}: {body[:300]!r}")
        models = json.loads(body)["models"]
        names = [m["name"] for m in models]
        self.assertEqual(sorted(names), sorted(SERVED_MODELS), "GET /v1/models")

        images = fashion_test_images(ARGS.fashion, CANDIDATE_IMAGES, self.tmp)
        server_answers = {}
        for path, label in images:
            with open(path, "rb") as f:
                status, _, body = http("POST", f"{base}/v1/models/{FASHION_MODEL}:classify?top_k=5",
                                       f.read(), {"Content-Type": "image/png"})
            self.assertEqual(status, 200, f"POST :classify of {path} answered {status}: {body[:300]!r}")
            server_answers[path] = json.loads(body)
        # Images the model gets right (its test top-1 is ~93%), two of different classes.
        good = []
        for path, label in images:
            top = server_answers[path]["predictions"][0]
            if top["class_index"] == label and top["label"] == FASHION_CLASSES[label] \
                    and all(FASHION_CLASSES[label] != FASHION_CLASSES[l] for _, l in good):
                good.append((path, label))
            if len(good) == 2:
                break
        self.assertEqual(len(good), 2, "the server classified fewer than two of the first "
                         f"{CANDIDATE_IMAGES} Fashion-MNIST test images (of different classes) "
                         "correctly: " + json.dumps({os.path.basename(p): (l, server_answers[p]["predictions"][0])
                                                     for p, l in images}))

        # The page: models.
        d.get(base + "/")
        self.wait_for("the model list (#model[data-loaded])",
                      lambda: self.by_id("model").get_attribute("data-loaded") == "true")
        from selenium.webdriver.support.ui import Select
        picker = Select(self.by_id("model"))
        self.assertEqual(sorted(o.get_attribute("value") for o in picker.options), sorted(names),
                         "the model picker's options")
        rows = d.execute_script(
            "return Array.from(document.querySelectorAll('#models tbody tr'))"
            ".map(function (r) { return Array.from(r.cells).map(function (c) { return c.textContent.trim(); }); });")
        self.assertEqual(sorted(r[0] for r in rows), sorted(names), f"the models table: {rows}")
        by_name = {r[0]: r for r in rows}
        for m in models:
            row = by_name[m["name"]]
            self.assertEqual(len(row), 8, f"models table row {row}")
            self.assertEqual(row[1].replace(",", ""), str(m["parameters"]), f"parameters in {row}")
            self.assertAlmostEqual(float(row[2]), m["macs"] / 1e6, delta=0.051, msg=f"MACs in {row}")
            self.assertTrue(row[3].startswith(f"{m['input_size']}\u00d7{m['input_size']}"), f"input size in {row}")
            self.assertEqual(row[4].replace(",", ""), str(m["num_classes"]), f"classes in {row}")
            self.assertEqual(row[5], "yes" if m["trained"] else "no", f"trained in {row}")
            self.assertEqual(row[6], m["precision"], f"precision in {row}")
            self.assertEqual(row[7], "yes" if m["ready"] else "no", f"ready in {row}")
        picker.select_by_value(FASHION_MODEL)
        self.assertEqual(picker.first_selected_option.get_attribute("value"), FASHION_MODEL)

        # The live panel has its baseline scrape (and shows an idle rate) before any request.
        self.wait_for("a first request rate in #live-rate",
                      lambda: NUMBER_RE.match(self.text("live-rate") or ""), timeout=15)
        # Each interval shows only its own requests, so record every update
        # from now on rather than hoping to look at the right moment.
        d.execute_script("""
            window.__liveSeen = [];
            var rate = document.getElementById('live-rate'), lat = document.getElementById('live-latency');
            new MutationObserver(function () {
              window.__liveSeen.push([rate.textContent.trim(), lat.textContent.trim()]);
            }).observe(document.getElementById('live-panel'),
                       {subtree: true, childList: true, characterData: true});""")

        # An error: a text file is not an image. The page shows the server's message and status.
        notes = os.path.join(self.tmp, "notes.txt")
        with open(notes, "w") as f:
            f.write("this is not an image\n")
        with open(notes, "rb") as f:
            err_status, _, err_body = http("POST", f"{base}/v1/models/{FASHION_MODEL}:classify?top_k=5",
                                           f.read(), {"Content-Type": "text/plain"})
        self.assertGreaterEqual(err_status, 400, f"a text file was classified: {err_body[:300]!r}")
        err_message = json.loads(err_body)["error"]
        top1, error = self.classify_on_page(notes)
        self.assertEqual(top1, "", "a text file gave a top-1 label")
        self.assertIn(str(err_status), error, "#error lacks the HTTP status")
        self.assertIn(err_message, error, "#error lacks the server's message")
        print(f"\nerror case (text file): #error shows {error!r}", flush=True)

        # Fashion-MNIST images through the file input.
        for path, label in good:
            expected = server_answers[path]["predictions"][0]["label"]
            top1, error = self.classify_on_page(path)
            self.assertEqual(error, "", f"{path}: #error")
            self.assertEqual(top1, expected, f"{path}: #top1 is not the server's top-1 over plain HTTP")
            self.assertEqual(top1, FASHION_CLASSES[label], f"{path}: #top1 is not the true label")
            preds = d.execute_script(
                "return Array.from(document.querySelectorAll('#predictions tbody tr'))"
                ".map(function (r) { return Array.from(r.cells).map(function (c) { return c.textContent.trim(); }); });")
            self.assertEqual(len(preds), 5, f"#predictions rows: {preds}")
            self.assertEqual([p[0] for p in preds], ["1", "2", "3", "4", "5"], "ranks")
            self.assertEqual(preds[0][1], expected, "rank 1 label")
            self.assertEqual(preds[0][2], str(label), "rank 1 class index")
            scores = [float(p[3].rstrip("%")) for p in preds]
            self.assertEqual(scores, sorted(scores, reverse=True), f"scores not descending: {preds}")
            self.assertTrue(all(0 <= s <= 100 for s in scores), f"scores: {preds}")
            self.assertAlmostEqual(scores[0], server_answers[path]["predictions"][0]["score"] * 100,
                                   delta=1.0, msg="rank 1 score")
            for field in ("preprocess_wait", "preprocess", "queue", "inference", "total"):
                shown = self.visible_text(f"timing-{field}")
                self.assertRegex(shown, NUMBER_RE, f"#timing-{field}")
            self.assertGreater(float(self.text("timing-total")), 0, "total time")
            self.assertRegex(self.visible_text("batch-size"), r"^[1-9]\d*$", "#batch-size")
            preview = self.by_id("preview")
            self.assertTrue(preview.is_displayed(), "the preview image is not shown")
            self.assertTrue(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                             preview), "the preview image did not load")

        # The live panel: those requests show up as a rate and a latency.
        def live_after_request():
            for rate, latency in self.driver.execute_script("return window.__liveSeen;"):
                if NUMBER_RE.match(rate) and float(rate) > 0 and NUMBER_RE.match(latency):
                    return rate, latency
            return None
        rate, latency = self.wait_for("a non-zero #live-rate with a #live-latency after the requests",
                                      live_after_request, timeout=15)
        self.assertGreater(float(latency), 0, "mean latency")
        print(f"\nlive panel after the requests: {rate} req/s, {latency} ms", flush=True)

        # The page's own Prometheus parser on awkward input.
        exposition = "\n".join([
            "# HELP ghostserve_requests_total Finished requests, by {model, code}.",
            "# TYPE ghostserve_requests_total counter",
            'ghostserve_requests_total{model="a,b",code="OK",protocol="http"} 3',
            'ghostserve_requests_total{model="quote\\"}{,=",code="NOT_FOUND",protocol="grpc"} 1.5e1',
            'ghostserve_requests_total{model="back\\\\slash",code="OK",} 2 1700000000000',
            "ghostserve_requests_total_other 1000",
            "ghostserve_requests_total 1E+2",
            "  ",
            'ghostserve_request_duration_seconds_bucket{model="x",le="+Inf"} 4',
            'ghostserve_request_duration_seconds_sum{model="x"} 2.5e-03',
            'ghostserve_request_duration_seconds_sum{model="y"} NaN',
            'ghostserve_request_duration_seconds_count{model="x"} +Inf',
            "#ghostserve_requests_total 5",
        ])
        got = d.execute_script(
            "var p = window.ghostservePage, s = p.parsePrometheus(arguments[0]);"
            "return [p.sumSeries(s, 'ghostserve_requests_total'),"
            "        p.sumSeries(s, 'ghostserve_request_duration_seconds_sum'),"
            "        s.filter(function (x) { return x.name === 'ghostserve_requests_total'; })"
            "         .map(function (x) { return x.labels.model || ''; })];", exposition)
        self.assertEqual(got[0], 3 + 15 + 2 + 100, f"sum of ghostserve_requests_total: {got}")
        self.assertAlmostEqual(got[1], 0.0025, msg=f"sum of _sum: {got}")
        self.assertEqual(got[2], ["a,b", 'quote"}{,=', "back\\slash", ""], "label values")

        # Nothing came from anywhere but the server, and no script failed.
        origins = d.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; });")
        foreign = [u for u in origins if not (u.startswith(base + "/") or u.startswith("blob:")
                                              or u.startswith("data:"))]
        self.assertEqual(foreign, [], "the page loaded resources from elsewhere")
        self._log_seen.extend(self.browser_log())
        script_errors = [e for e in self._log_seen if e["level"] == "SEVERE"
                         and "Failed to load resource" not in e["message"]]
        self.assertEqual(script_errors, [], "the browser console has errors")

        # Screenshot of the whole page (beyond the window's height).
        size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = d.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        path = os.path.join(ARGS.artifacts, "page.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(f"\nscreenshot: {path}", flush=True)

    def test_token(self):
        """With --auth-token-file the page shows the 401 until a token is
        entered, then lists the models and classifies with it; the token
        survives a reload (sessionStorage)."""
        token = "page-test-token-0123"
        token_file = os.path.join(self.tmp, "token")
        with open(token_file, "w") as f:
            f.write(token + "\n")
        server = Server(os.path.join(self.tmp, "ghostserve-token.log"), models=[FASHION_MODEL],
                        extra_flags=["--auth-token-file", token_file])
        self.addCleanup(server.stop)
        server.start()
        base = server.base
        status, _, body = http("GET", base + "/v1/models")
        self.assertEqual(status, 401, f"GET /v1/models without the token: {body[:300]!r}")
        unauth_message = json.loads(body)["error"]

        d = self.driver
        d.get(base + "/")
        self.wait_for("the 401 in #error", lambda: "401" in self.visible_text("error"))
        self.assertIn(unauth_message, self.visible_text("error"))
        self.assertNotEqual(self.by_id("model").get_attribute("data-loaded"), "true")

        from selenium.webdriver.common.keys import Keys
        self.by_id("token").send_keys(token + Keys.ENTER)
        self.wait_for("the model list after entering the token",
                      lambda: self.by_id("model").get_attribute("data-loaded") == "true")
        self.assertEqual(self.visible_text("error"), "", "#error after entering the token")

        (path, label), = fashion_test_images(ARGS.fashion, 1, self.tmp)
        with open(path, "rb") as f:
            status, _, body = http("POST", f"{base}/v1/models/{FASHION_MODEL}:classify?top_k=5", f.read(),
                                   {"Content-Type": "image/png", "Authorization": "Bearer " + token})
        self.assertEqual(status, 200, f"classify with the token: {body[:300]!r}")
        expected = json.loads(body)["predictions"][0]["label"]
        top1, error = self.classify_on_page(path)
        self.assertEqual(error, "", "#error when classifying with the token")
        self.assertEqual(top1, expected, "#top1 with the token")

        d.refresh()
        self.wait_for("the model list after a reload (token from sessionStorage)",
                      lambda: self.by_id("model").get_attribute("data-loaded") == "true")
        self.assertEqual(self.by_id("token").get_attribute("value"), token)


if __name__ == "__main__":
    main()
