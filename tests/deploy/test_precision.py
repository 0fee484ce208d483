#!/usr/bin/python3
"""Precision per model through the real server (issue 11):

* where this CPU has native bf16, --precision NAME=bf16 serves the model in
  bf16 and every report says so: the start-up log, ListModels, KServe
  ModelMetadata (gRPC parameters and REST), and a Classify call answers;
* with oneDNN capped to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, as an AVX2-only CPU),
  bf16 stops start-up with an error naming the missing CPU feature, and
  auto serves fp32. This part runs on every machine;
* int8 serves the built-in fashion model with the calibration compiled in
  beside its config, natively and capped to AVX2, reported as int8 everywhere;
  a model without a calibration (the untrained ghostnet_050) stops start-up
  saying so.
"""
import json
import os
import sys
import tempfile
import time
import unittest
import urllib.request

import grpc

import deploy_testlib as lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python"))
import classify as client  # noqa: E402

MODEL = "ghostnet_050_fashion"


class PrecisionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stub_dir = tempfile.mkdtemp(prefix="stubs-")
        cls.pb, cls.pb_grpc, cls.kpb, cls.kpb_grpc = client.load_stubs(client.DEFAULT_PROTO_DIR,
                                                                       cls.stub_dir)

    def serve(self, precision, env=None, model=MODEL):
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            server = lib.GhostServe(extra_flags=["--models", model, "--precision",
                                                 f"{model}={precision}"]).start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.addCleanup(server.stop)
        return server

    def log(self, server):
        with open(server.log_path, errors="replace") as f:
            return f.read()

    def reported(self, server):
        """The precision as ListModels, KServe ModelMetadata (gRPC and REST)
        and the start-up log give it."""
        with grpc.insecure_channel(server.target) as channel:
            models = self.pb_grpc.ClassifierStub(channel).ListModels(self.pb.ListModelsRequest(),
                                                                     timeout=30)
            metadata = self.kpb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                self.kpb.ModelMetadataRequest(name=MODEL), timeout=30)
        (m,) = [m for m in models.models if m.name == MODEL]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/v2/models/{MODEL}",
                                    timeout=30) as r:
            rest = json.loads(r.read())
        line = [l for l in self.log(server).splitlines() if f"model {MODEL} version 1:" in l]
        self.assertEqual(len(line), 1, self.log(server))
        return {"list_models": m.precision,
                "kserve_grpc": metadata.parameters["precision"].string_param,
                "kserve_rest": rest["parameters"]["precision"],
                "log": line[0].split("precision ")[1].split(",")[0]}

    def classify(self, server):
        with open(lib.src("tests", "testdata", "chelsea_gray.png"), "rb") as f:
            image = f.read()
        with grpc.insecure_channel(server.target) as channel:
            return self.pb_grpc.ClassifierStub(channel).Classify(
                self.pb.ClassifyRequest(model=MODEL, image=image, top_k=10), timeout=30)

    def test_int8_with_the_builtin_calibration(self):
        if not lib.cpu_has_int8():
            print("int8 not served: this CPU has no AVX2 as oneDNN sees it")
            return
        fp32 = self.classify(self.serve("fp32").wait_serving())
        for env in ({}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}):
            with self.subTest(env=env):
                server = self.serve("int8", env=env).wait_serving()
                self.assertEqual(set(self.reported(server).values()), {"int8"},
                                 self.reported(server))
                r = self.classify(server)
                self.assertEqual(len(r.predictions), 10)
                self.assertAlmostEqual(sum(p.score for p in r.predictions), 1.0, places=3)
                # Same ten classes, scores within 0.05 of fp32's.
                want = {p.label: p.score for p in fp32.predictions}
                got = {p.label: p.score for p in r.predictions}
                self.assertEqual(set(got), set(want))
                self.assertNotEqual(got, want, "int8 answered exactly as fp32")
                for label, score in got.items():
                    self.assertLess(abs(score - want[label]), 0.05, (label, got, want))

    def test_int8_without_a_calibration_stops_start_up(self):
        refused = self.serve("int8", model="ghostnet_050")
        deadline = time.time() + lib.START_TIMEOUT_S
        while refused.proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        self.assertIsNotNone(refused.proc.returncode, "int8 without a calibration must stop")
        self.assertNotEqual(refused.proc.returncode, 0)
        self.assertIn("precision int8 needs a calibration", self.log(refused))

    def test_bf16_where_the_cpu_has_it(self):
        if not lib.cpu_has_native_bf16():
            print("bf16 not served: this CPU has no AVX512-BF16/AMX-BF16 (the refusal is "
                  "tested below under ONEDNN_MAX_CPU_ISA=AVX2)")
            return
        server = self.serve("bf16").wait_serving()
        self.assertEqual(set(self.reported(server).values()), {"bf16"}, self.reported(server))
        with open(lib.src("tests", "testdata", "chelsea_gray.png"), "rb") as f:
            image = f.read()
        with grpc.insecure_channel(server.target) as channel:
            r = self.pb_grpc.ClassifierStub(channel).Classify(
                self.pb.ClassifyRequest(model=MODEL, image=image, top_k=3), timeout=30)
        self.assertEqual(len(r.predictions), 3)
        self.assertLessEqual(sum(p.score for p in r.predictions), 1.0001)

    def test_an_avx2_cpu_refuses_bf16_and_auto_means_fp32(self):
        capped = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
        refused = self.serve("bf16", env=capped)
        deadline = time.time() + lib.START_TIMEOUT_S
        while refused.proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        self.assertIsNotNone(refused.proc.returncode, "bf16 on an AVX2 CPU must stop start-up")
        self.assertNotEqual(refused.proc.returncode, 0)
        log = self.log(refused)
        self.assertIn("precision bf16 needs a CPU with AVX512-BF16 or AMX-BF16", log)
        self.assertIn("avx2", log)

        server = self.serve("auto", env=capped).wait_serving()
        self.assertEqual(set(self.reported(server).values()), {"fp32"}, self.reported(server))


if __name__ == "__main__":
    lib.main()
