#!/usr/bin/python3
"""The Grafana dashboard only names series a live ghostserve exports, and
covers what an operator needs: request rate by model and code, p50/p90/p99,
queue depth, batch sizes, preprocess vs inference time, resident memory.

Metric names are taken from every target expression and template-variable
query: identifiers left after removing strings, label matchers, range
selectors, grouping clauses, Grafana variables, functions and keywords."""
import json
import re
import unittest

import deploy_testlib as lib

# PromQL keywords and aggregation modifiers that look like identifiers.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan", "atan2"}
# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # label lists
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        tail = e[m.end():].lstrip()
        if tail.startswith("("):  # a function or aggregation
            continue
        if m.group(0).lower() in KEYWORDS or re.fullmatch(r"\d.*|e\d*", m.group(0)):
            continue
        names.add(m.group(0))
    return names


class MetricNamesTest(unittest.TestCase):
    def test_extractor(self):
        self.assertEqual(metric_names(
            'histogram_quantile(0.99, sum by (model, le) (rate(a_bucket{job=~"$job", model="x"}[$__rate_interval])))'
            ' / on (model) group_left sum without (code) (b_total) > 1e3'), {"a_bucket", "b_total"})
        self.assertEqual(metric_names("label_values(ghostserve_queue_depth{job=~\"$job\"}, model)"),
                         {"ghostserve_queue_depth", "model"})


class DashboardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(lib.src("deploy", "grafana", "dashboards", "ghostserve.json")) as f:
            cls.dash = json.load(f)
        server = lib.GhostServe().start()
        try:
            server.wait_serving()
            # Counters with labels appear at their first increment.
            rc, _, err = lib.classify_json(["--server", server.target, "--model", "ghostnet_050",
                                            lib.src("tests", "testdata", "chelsea.jpg")])
            assert rc == 0, err
            cls.exported = lib.series_names(server.metrics_text())
        finally:
            server.stop()

    def targets(self):
        for p in self.dash["panels"]:
            for t in p.get("targets", []):
                yield p, t

    def test_every_metric_is_exported(self):
        self.assertIn("ghostserve_requests_total", self.exported)  # the scrape worked
        seen = set()
        for p, t in self.targets():
            for name in metric_names(t["expr"]):
                seen.add(name)
                self.assertIn(name, self.exported | PROMETHEUS_SERIES, f"panel '{p['title']}': {t['expr']}")
        for v in self.dash["templating"]["list"]:
            if v["type"] != "query":
                continue
            # label_values(METRIC{...}, LABEL): the last argument is a label.
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            self.assertIsNotNone(m, q)
            for name in metric_names(m.group(1)):
                self.assertIn(name, self.exported, f"variable {v['name']}: {q}")
        self.assertGreaterEqual(len(seen), 10)

    def test_panels_cover_required_views(self):
        def panel_exprs(pred):
            return [(p["title"], t["expr"]) for p, t in self.targets() if pred(t["expr"])]

        self.assertTrue(panel_exprs(lambda e: "ghostserve_requests_total" in e and
                                    re.search(r"by \(([a-z, ]*)\)", e) and
                                    {"model", "code", "protocol"} <=
                                    set(re.search(r"by \(([a-z, ]*)\)", e).group(1).split(", "))),
                        "request rate by model, protocol and code")
        for q in ("0.5", "0.9", "0.99"):
            self.assertTrue(panel_exprs(lambda e: f"histogram_quantile({q}," in e and
                                        "ghostserve_request_duration_seconds_bucket" in e), f"p{q}")
        self.assertTrue(panel_exprs(lambda e: "ghostserve_queue_depth" in e), "queue depth")
        self.assertTrue(panel_exprs(lambda e: "ghostserve_batch_size_bucket" in e), "batch size distribution")
        self.assertTrue(panel_exprs(lambda e: "ghostserve_preprocess_duration_seconds" in e), "preprocess time")
        self.assertTrue(panel_exprs(lambda e: "ghostserve_inference_duration_seconds" in e), "inference time")
        self.assertTrue(panel_exprs(lambda e: "process_resident_memory_bytes" in e), "resident memory")
        # Preprocess and inference side by side in one panel.
        self.assertTrue(any("ghostserve_preprocess_duration_seconds" in " ".join(t["expr"] for t in p["targets"])
                            and "ghostserve_inference_duration_seconds" in " ".join(t["expr"] for t in p["targets"])
                            for p in self.dash["panels"] if p.get("targets")))

    def test_structure(self):
        ids = [p["id"] for p in self.dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        self.assertEqual(self.dash["uid"], "ghostserve")
        for p, t in self.targets():
            self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])
            self.assertTrue(t["refId"])
        for p in self.dash["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])


if __name__ == "__main__":
    lib.main()
