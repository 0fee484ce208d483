#!/usr/bin/python3
"""client/python/classify.py works against a live ghostserve: it generates its
stubs from proto/ at run time, its Classify answers carry well-formed top-k
predictions identical to ghostserve-client's for the same files, and its
KServe v2 ModelInfer call returns [N, 1000] probabilities whose argmax is the
same top class."""
import json
import os
import subprocess
import sys
import unittest

import deploy_testlib as lib

PHOTOS = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"]
TOP_K = 3


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = lib.GhostServe().start()
        try:
            cls.server.wait_serving()
            cls.files = [lib.src("tests", "testdata", p) for p in PHOTOS]
            cls.result = subprocess.run(
                [sys.executable, lib.src("client", "python", "classify.py"), "--server", cls.server.target,
                 "--model", "ghostnet_050", "--top-k", str(TOP_K), "--json", "--kserve", *cls.files],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120, cwd=lib.src())
            rc, cls.reference, err = lib.classify_json(
                ["--server", cls.server.target, "--model", "ghostnet_050", "--top-k", str(TOP_K), *cls.files])
            assert rc == 0, err
        finally:
            cls.server.stop()
        lines = [json.loads(l) for l in cls.result.stdout.splitlines() if l.strip()]
        cls.classify = [l for l in lines if "kserve" not in l]
        cls.kserve = [l["kserve"] for l in lines if "kserve" in l]

    def test_exit_status(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr)
        self.assertEqual(self.result.stderr, "")

    def test_classify_results(self):
        self.assertEqual([r["file"] for r in self.classify], self.files)
        for r in self.classify:
            with self.subTest(file=r["file"]):
                self.assertEqual(r["model"], "ghostnet_050")
                self.assertEqual(r["request_id"], os.path.basename(r["file"]))
                self.assertGreaterEqual(r["batch_size"], 1)
                self.assertGreater(r["timing_us"]["total"], 0)
                preds = r["predictions"]
                self.assertEqual(len(preds), TOP_K)
                scores = [p["score"] for p in preds]
                self.assertEqual(scores, sorted(scores, reverse=True))
                for p in preds:
                    self.assertTrue(0 <= p["class_index"] < 1000)
                    self.assertIsInstance(p["label"], str)
                    self.assertTrue(p["label"])
                    self.assertTrue(0.0 <= p["score"] <= 1.0)

    def test_same_answers_as_cpp_client(self):
        # Untrained but seeded weights: the same model answers the same, so
        # the two clients' top classes and labels agree.
        for mine, ref in zip(self.classify, self.reference):
            with self.subTest(file=mine["file"]):
                self.assertEqual([(p["class_index"], p["label"]) for p in mine["predictions"]],
                                 [(p["class_index"], p["label"]) for p in ref["predictions"]])
                for a, b in zip(mine["predictions"], ref["predictions"]):
                    self.assertAlmostEqual(a["score"], b["score"], places=4)

    def test_kserve_model_infer(self):
        self.assertEqual(len(self.kserve), 1)
        k = self.kserve[0]
        self.assertEqual(k["model"], "ghostnet_050")
        self.assertEqual(k["output"], "probabilities")
        self.assertEqual(k["shape"], [len(self.files), 1000])
        for res, ref in zip(k["results"], self.classify):
            self.assertEqual(res["file"], ref["file"])
            self.assertEqual(res["class_index"], ref["predictions"][0]["class_index"])
            self.assertAlmostEqual(res["probability"], ref["predictions"][0]["score"], places=4)

    def test_no_generated_code_left_in_repo(self):
        for d in ("client/python", "proto"):
            for root, _, names in os.walk(lib.src(d)):
                self.assertFalse([n for n in names if n.endswith(("_pb2.py", "_pb2_grpc.py"))], root)


if __name__ == "__main__":
    lib.main()
