#!/usr/bin/python3
"""The access log through the real server: one JSON line per inference
request over gRPC (Classify, ClassifyStream, KServe ModelInfer) and HTTP
(classify, KServe infer), with the request id, model, version, protocol,
code, sizes, timing parts and peer; a W3C traceparent the client sent is
logged and returned (gRPC initial metadata, HTTP header); successes are
sampled 1 in N, failures always logged."""
import json
import os
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import grpc

import deploy_testlib as lib

# client/python/classify.py generates stubs from proto/ (the repository's,
# found next to this file: the flags are parsed only in main()).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python"))
import classify as client  # noqa: E402

MODEL = "ghostnet_050_fashion"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def image():
    with open(lib.src("tests", "testdata", "chelsea.png"), "rb") as f:
        return f.read()


class AccessLogTest(unittest.TestCase):
    SAMPLE = 1

    @classmethod
    def setUpClass(cls):
        cls.stub_dir = tempfile.mkdtemp(prefix="stubs-")
        cls.pb, cls.pb_grpc, cls.kpb, cls.kpb_grpc = client.load_stubs(client.DEFAULT_PROTO_DIR,
                                                                       cls.stub_dir)
        fd, cls.log_path = tempfile.mkstemp(prefix="access-", suffix=".log")
        os.close(fd)
        cls.server = lib.GhostServe(extra_flags=["--models", MODEL, "--access-log", cls.log_path,
                                                 "--access-log-sample", str(cls.SAMPLE)]).start()
        cls.server.wait_serving()
        cls.channel = grpc.insecure_channel(cls.server.target)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()
        os.remove(cls.log_path)

    def lines(self, want, timeout=10):
        deadline = time.time() + timeout
        while True:
            with open(self.log_path) as f:
                lines = [json.loads(l) for l in f if l.strip()]
            if len(lines) >= want or time.time() > deadline:
                return lines
            time.sleep(0.05)

    def http(self, path, body, headers):
        req = urllib.request.Request(f"http://127.0.0.1:{self.server.http_port}{path}", data=body,
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


class EveryRequestTest(AccessLogTest):
    def test_one_line_per_request_with_every_field(self):
        before = len(self.lines(0))
        stub = self.pb_grpc.ClassifierStub(self.channel)
        req = self.pb.ClassifyRequest(model=MODEL, image=image(), request_id="grpc-1")
        response, call = stub.Classify.with_call(req, metadata=[("traceparent", TRACEPARENT)], timeout=30)
        self.assertIn(("traceparent", TRACEPARENT), call.initial_metadata())
        # A stream: two requests, one line each, the stream's traceparent on both.
        stream = list(stub.ClassifyStream(iter([
            self.pb.ClassifyRequest(model=MODEL, image=image(), request_id="s-1"),
            self.pb.ClassifyRequest(model=MODEL, image=image(), request_id="s-2")]),
            metadata=[("traceparent", TRACEPARENT)], timeout=30))
        self.assertEqual(len(stream), 2)
        # KServe, failing: an unknown model and a bad image.
        kstub = self.kpb_grpc.GRPCInferenceServiceStub(self.channel)
        bad = self.kpb.ModelInferRequest(model_name=MODEL, id="k-bad")
        t = bad.inputs.add(name="images", datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(b"not an image")
        with self.assertRaises(grpc.RpcError) as e:
            kstub.ModelInfer(bad, timeout=30)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        # HTTP, with and without a traceparent; an invalid one is not echoed.
        status, headers, _ = self.http(f"/v1/models/{MODEL}:classify", image(),
                                       {"traceparent": TRACEPARENT, "X-Request-Id": "http-1"})
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("traceparent"), TRACEPARENT)
        status, headers, _ = self.http("/v1/models/nope:classify", b"x", {"traceparent": "00-zz"})
        self.assertEqual(status, 404)
        self.assertNotIn("traceparent", headers)

        lines = self.lines(before + 6)[before:]
        self.assertEqual(len(lines), 6, lines)
        by_id = {l["request_id"]: l for l in lines}
        g = by_id["grpc-1"]
        self.assertEqual((g["model"], g["version"], g["protocol"], g["api"], g["code"]),
                         (MODEL, 1, "grpc", "classifier.Classify", "OK"))
        self.assertEqual(g["traceparent"], TRACEPARENT)
        self.assertEqual(g["bytes_in"], req.ByteSize())
        self.assertEqual(g["bytes_out"], response.ByteSize())
        self.assertTrue(g["peer"].startswith("ipv"), g["peer"])
        t = g["timing_us"]
        self.assertEqual(t["total"], response.timing.total_us)
        # The parts add up to the total, up to the time to answer (classifier.proto).
        parts = t["preprocess_wait"] + t["preprocess"] + t["queue"] + t["inference"]
        self.assertLessEqual(parts, t["total"])
        self.assertLess(t["total"] - parts, 5000)
        self.assertGreaterEqual(g["duration_us"], t["total"])
        self.assertRegex(g["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        for sid in ("s-1", "s-2"):
            self.assertEqual(by_id[sid]["api"], "classifier.ClassifyStream")
            self.assertEqual(by_id[sid]["traceparent"], TRACEPARENT)
        k = by_id["k-bad"]
        self.assertEqual((k["api"], k["code"], k["protocol"]), ("kserve.ModelInfer", "INVALID_ARGUMENT", "grpc"))
        self.assertNotIn("traceparent", k)
        h = by_id["http-1"]
        self.assertEqual((h["protocol"], h["api"], h["code"], h["traceparent"]),
                         ("http", "http.classify", "OK", TRACEPARENT))
        self.assertEqual(h["bytes_in"], len(image()))
        self.assertTrue(h["peer"].startswith("ipv4:127.0.0.1:"), h["peer"])
        nope = [l for l in lines if l["model"] == "nope"][0]
        self.assertEqual(nope["code"], "NOT_FOUND")
        self.assertNotIn("traceparent", nope)


class SampledTest(AccessLogTest):
    SAMPLE = 4

    def test_successes_are_sampled_failures_kept(self):
        stub = self.pb_grpc.ClassifierStub(self.channel)
        for i in range(8):
            stub.Classify(self.pb.ClassifyRequest(model=MODEL, image=image(), request_id=f"ok-{i}"), timeout=30)
        for i in range(3):
            with self.assertRaises(grpc.RpcError):
                stub.Classify(self.pb.ClassifyRequest(model=MODEL, image=b"junk", request_id=f"bad-{i}"),
                              timeout=30)
        lines = self.lines(5)
        time.sleep(0.3)
        lines = self.lines(5)
        self.assertEqual(sorted(l["request_id"] for l in lines), ["bad-0", "bad-1", "bad-2", "ok-0", "ok-4"])


if __name__ == "__main__":
    lib.main()
