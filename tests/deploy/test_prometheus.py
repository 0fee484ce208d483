#!/usr/bin/python3
"""A real Prometheus server scrapes a real ghostserve and evaluates our rules.

One ghostserve (ghostnet_050) and one /usr/bin/prometheus (scrape and rule
evaluation every 1 s, deploy/prometheus/alerts.yml loaded) on loopback. The
test sends a known number of Classify calls plus a few for an unknown model,
then asks Prometheus's HTTP API:
  - the OK and NOT_FOUND counts equal what was sent, and rate() is positive;
  - histogram quantiles of ghostserve_request_duration_seconds lie in the
    buckets of the server-side totals the client saw in the responses;
  - every alert rule loaded with health "ok" and none fires while healthy;
  - every query of the Grafana dashboard parses and the core ones return data;
  - after ghostserve is killed, GhostserveReplicaDown goes pending.
"""
import bisect
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import deploy_testlib as lib

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PHOTOS = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"]
ROUNDS = 4  # Classify calls: ROUNDS x PHOTOS
UNKNOWN_MODEL_CALLS = 2
ALERTS = {"GhostserveHighP99Latency", "GhostserveHighErrorRatio", "GhostserveQueueSaturation",
          "GhostserveReplicaDown"}


def latency_buckets_s():
    # server/metrics/metrics.cc ServerMetrics::LatencyBuckets(); read from the
    # live exposition below and compared with this list there.
    return [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035,
            0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


def bucket_bounds(value_s, buckets):
    """(lower, upper] bounds of the histogram bucket holding value_s."""
    i = bisect.bisect_left(buckets, value_s)
    lower = buckets[i - 1] if i > 0 else 0.0
    upper = buckets[i] if i < len(buckets) else math.inf
    return lower, upper


class PrometheusTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ghostserve-prom-test-")
        cls.server = lib.GhostServe(log_path=os.path.join(cls.tmp, "ghostserve.log"))
        cls.prom = None
        try:
            cls.server.start().wait_listening()
            config = os.path.join(cls.tmp, "prometheus.yml")
            with open(config, "w") as f:
                f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {lib.src("deploy", "prometheus", "alerts.yml")}
scrape_configs:
  - job_name: ghostserve
    static_configs:
      - targets: ["127.0.0.1:{cls.server.metrics_port}"]
""")
            cls._start_prometheus(config)
            cls.server.wait_serving()
            cls.sent_ok, cls.totals_s = cls._send_requests()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _start_prometheus(cls, config, attempts=3):
        """Prometheus cannot report a port it picked, so pick one free and
        try again should another process take it first."""
        for attempt in range(attempts):
            cls.prom_port = lib.free_port()
            log_path = os.path.join(cls.tmp, f"prometheus{attempt}.log")
            with open(log_path, "wb") as log:
                cls.prom = subprocess.Popen(
                    [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={cls.tmp}/data",
                     f"--web.listen-address=127.0.0.1:{cls.prom_port}"], stdout=log, stderr=log)
            deadline = time.time() + 60
            while cls.prom.poll() is None and time.time() < deadline:
                try:
                    lib.http_get(f"{cls.base()}/-/ready", timeout=2)
                    return
                except OSError:
                    time.sleep(0.25)
            lib.stop(cls.prom)
            with open(log_path, errors="replace") as f:
                log_text = f.read()
            if "address already in use" not in log_text:
                raise RuntimeError(f"Prometheus did not become ready:\n{log_text[-3000:]}")
        raise RuntimeError(f"Prometheus found no free port in {attempts} attempts")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        lib.stop(cls.prom)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def base(cls):
        return f"http://127.0.0.1:{cls.prom_port}"

    @classmethod
    def _wait(cls, ok, what, timeout=60):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                if ok():
                    return
            except Exception as e:  # not up yet
                last = e
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what} ({last})")

    @classmethod
    def _send_requests(cls):
        """Sends the calls in two phases, the first scraped before the second,
        so the counters' series exist before they grow and rate() sees the
        growth; returns (OK calls, sorted server-side totals in seconds)."""
        files = [lib.src("tests", "testdata", p) for p in PHOTOS] * ROUNDS
        cls._wait(lambda: cls.scalar('up{job="ghostserve"}') == 1, "first scrape")
        totals = []
        for phase in (files[:len(PHOTOS)], files[len(PHOTOS):]):
            rc, results, err = lib.classify_json(["--server", cls.server.target, "--model", "ghostnet_050",
                                                  "--top-k", "1", *phase])
            assert rc == 0 and len(results) == len(phase), f"classify failed: {rc} {err}"
            totals += [r["timing_us"]["total"] / 1e6 for r in results]
            cls._wait(lambda: cls.scalar('sum(ghostserve_requests_total{code="OK"})') == len(totals),
                      "the calls scraped")
        rc, _, err = lib.classify_json(["--server", cls.server.target, "--model", "no_such_model",
                                        *files[:UNKNOWN_MODEL_CALLS]])
        assert rc == 1 and err.count("NOT_FOUND") == UNKNOWN_MODEL_CALLS, err
        cls._wait(lambda: cls.scalar('sum(ghostserve_requests_total{code="NOT_FOUND"})') ==
                  UNKNOWN_MODEL_CALLS, "the failed calls scraped")
        # Two samples of the newest series, so rate() over it is defined.
        cls._wait(lambda: (cls.scalar('sum(count_over_time(ghostserve_requests_total{code="NOT_FOUND"}[1m]))')
                           or 0) >= 2, "a second scrape of the failed calls")
        return len(totals), sorted(totals)

    @classmethod
    def query(cls, promql):
        url = f"{cls.base()}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = json.loads(lib.http_get(url))
        assert body["status"] == "success", body
        return body["data"]["result"]

    @classmethod
    def scalar(cls, promql):
        result = cls.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql, want, timeout=30):
        self._wait(lambda: self.scalar(promql) == want, f"{promql} == {want}", timeout)

    def test_request_counts_match_what_was_sent(self):
        self.wait_value('sum(ghostserve_requests_total{code="OK", model="ghostnet_050"})', self.sent_ok)
        self.wait_value('sum(ghostserve_requests_total{code="NOT_FOUND", model="unknown"})',
                        UNKNOWN_MODEL_CALLS)
        self.assertEqual(self.scalar('sum(ghostserve_requests_total{code!~"OK|NOT_FOUND"})'), None)
        self.assertEqual(self.scalar('sum(ghostserve_request_duration_seconds_count{model="ghostnet_050"})'),
                         self.sent_ok)
        rate = self.scalar('sum(rate(ghostserve_requests_total{code="OK"}[1m]))')
        self.assertIsNotNone(rate)
        self.assertGreater(rate, 0)
        self.assertEqual(self.scalar('up{job="ghostserve"}'), 1)

    def test_latency_quantiles_match_client_observed_server_times(self):
        self.wait_value('sum(ghostserve_request_duration_seconds_count{model="ghostnet_050"})', self.sent_ok)
        # The bucket bounds Prometheus sees are the ones this test assumes.
        les = sorted(float(r["metric"]["le"]) for r in self.query(
            'ghostserve_request_duration_seconds_bucket{model="ghostnet_050",protocol="grpc"}')
            if r["metric"]["le"] != "+Inf")
        self.assertEqual(les, latency_buckets_s())
        buckets = latency_buckets_s()
        n = len(self.totals_s)
        for q in (0.5, 0.9, 0.99):
            # Over all observations so far (cumulative counts, no rate()):
            # deterministic given what was observed.
            got = self.scalar(f'histogram_quantile({q}, sum by (le) '
                              f'(ghostserve_request_duration_seconds_bucket{{model="ghostnet_050"}}))')
            # histogram_quantile interpolates inside the bucket holding the
            # observation of rank q*n. The server measures its histogram a
            # moment after it fills in timing.total_us, so allow the
            # neighbouring order statistics and 5% (plus 50 us) of slack.
            k = max(0, math.ceil(q * n) - 1)
            lo, _ = bucket_bounds(self.totals_s[max(0, k - 1)] * 0.95, buckets)
            _, hi = bucket_bounds(min(self.totals_s[min(n - 1, k + 1)] * 1.05 + 50e-6, buckets[-1]), buckets)
            self.assertIsNotNone(got, q)
            self.assertGreaterEqual(got, lo, f"p{q * 100:g}={got}, observed {self.totals_s}")
            self.assertLessEqual(got, hi, f"p{q * 100:g}={got}, observed {self.totals_s}")
        # The dashboard's form, over a rate window.
        p99 = self.scalar('histogram_quantile(0.99, sum by (le) '
                          '(rate(ghostserve_request_duration_seconds_bucket{model="ghostnet_050"}[1m])))')
        self.assertIsNotNone(p99)
        self.assertGreater(p99, bucket_bounds(self.totals_s[0] * 0.95, buckets)[0])
        self.assertLessEqual(p99, bucket_bounds(self.totals_s[-1] * 1.05 + 50e-6, buckets)[1])

    def test_alert_rules_loaded_healthy_and_quiet(self):
        def rules():
            groups = json.loads(lib.http_get(f"{self.base()}/api/v1/rules"))["data"]["groups"]
            return {r["name"]: r for g in groups for r in g["rules"]}

        # Each rule has been evaluated at least once (health "ok" or "err").
        self._wait(lambda: set(rules()) == ALERTS and all(
            r.get("health") in ("ok", "err") for r in rules().values()), "rules evaluated")
        for name, rule in rules().items():
            self.assertEqual(rule["type"], "alerting", name)
            self.assertEqual(rule["health"], "ok", f"{name}: {rule.get('lastError')}")
            self.assertEqual(rule["state"], "inactive", name)

    def test_dashboard_queries_parse_and_core_panels_have_data(self):
        self.wait_value('sum(ghostserve_requests_total{code="OK"})', self.sent_ok)
        with open(lib.src("deploy", "grafana", "dashboards", "ghostserve.json")) as f:
            dash = json.load(f)
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        self.assertGreater(len(exprs), 10)
        empty = []
        for e in exprs:
            q = (e.replace("$__rate_interval", "1m").replace("$model", ".+").replace("$job", ".+"))
            with self.subTest(expr=e):
                if not self.query(q):  # asserts status success: the query parses
                    empty.append(e)
        # With OK and NOT_FOUND calls scraped, every panel has something to
        # draw (the error ratio through model="unknown").
        self.assertEqual(empty, [], "dashboard queries that returned no series")

    def test_zz_replica_down_alert_goes_pending_when_server_dies(self):
        # Runs last (alphabetical order): stops the server.
        self.wait_value('up{job="ghostserve"}', 1)
        self.server.proc.kill()
        self.server.proc.wait()

        def pending():
            alerts = json.loads(lib.http_get(f"{self.base()}/api/v1/alerts"))["data"]["alerts"]
            return any(a["labels"]["alertname"] == "GhostserveReplicaDown" and a["state"] == "pending"
                       for a in alerts)

        self._wait(pending, "GhostserveReplicaDown pending", timeout=30)
        self.assertEqual(self.scalar('up{job="ghostserve"}'), 0)


if __name__ == "__main__":
    lib.main()
