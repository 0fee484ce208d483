#!/usr/bin/python3
"""The HTTP front-end of a live ghostserve, driven by Debian's curl (and raw
sockets for what curl will not send):

* every endpoint: the page, /metrics, /v1/models, classify (raw body and a
  multipart form), KServe v2 REST health, metadata, readiness and infer (JSON
  and the binary tensor data extension);
* REST answers equal gRPC's: the same logits, bit for bit, for the same
  inputs through KServe REST (JSON and binary) and KServe gRPC, and the same
  predictions from classify as from gRPC Classify;
* every row of the status mapping (400 404 405 413 414 429 431 401 503 504,
  with Retry-After and WWW-Authenticate), each with a JSON error message;
* hostile input: a huge Content-Length refused before the body is sent, a
  truncated binary part, bad JSON, oversized headers, garbage, slow clients
  (slowloris) cut off with 408, and the connection bound; the server keeps
  serving after all of it;
* the `protocol` label on the request metrics, keep-alive, TLS and the
  bearer token.

Flags as tests/deploy/deploy_testlib.py (--ghostserve, --client, --source-dir).
"""
import base64
import concurrent.futures
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import deploy_testlib as lib

MODEL = "ghostnet_050"
PHOTOS = ["chelsea.jpg", "coffee.jpg", "chelsea.png"]


def read(name):
    with open(lib.src("tests", "testdata", name), "rb") as f:
        return f.read()


def curl(url, *args, timeout=60):
    """Runs curl; returns (status, headers {lower-case name: value}, body bytes)."""
    with tempfile.TemporaryDirectory() as d:
        hdr, body = os.path.join(d, "h"), os.path.join(d, "b")
        r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), "-D", hdr, "-o", body,
                            "-w", "%{http_code}", *args, url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout + 10)
        if r.returncode != 0:
            raise AssertionError(f"curl {url} {args} failed ({r.returncode}): {r.stderr}")
        headers = {}
        with open(hdr, "rb") as f:
            # The last response's headers (curl also records "100 Continue").
            blocks = [b for b in f.read().decode(errors="replace").split("\r\n\r\n") if b.strip()]
            for line in (blocks[-1] if blocks else "").split("\r\n"):
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
        with open(body, "rb") as f:
            return int(r.stdout), headers, f.read()


def raw_exchange(port, data, wait_s=10, send_delay=None):
    """Sends `data` on a fresh connection and reads until the server closes
    it or `wait_s` passes; returns what came back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=wait_s)
    try:
        s.sendall(data)
        out = b""
        deadline = time.time() + wait_s
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status_of(raw):
    line = raw.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = line.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class GrpcStubs:
    """KServe and Classifier stubs generated from proto/ (as client/python does)."""

    def __init__(self):
        sys.path.insert(0, lib.src("client", "python"))
        import classify  # noqa: E402  client/python/classify.py
        self.tmp = tempfile.TemporaryDirectory()
        self.pb, self.pb_grpc, self.kpb, self.kpb_grpc = classify.load_stubs(
            lib.src("proto"), self.tmp.name)


class HttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = lib.GhostServe([
            "--models", f"{MODEL},ghostnet_050_fashion", "--max-images-per-request", "4",
            "--max-message-bytes", str(4 << 20), "--max-input-bytes", str(64 << 20),
            "--http-header-timeout-ms", "1500", "--http-body-timeout-ms", "1500",
            "--http-max-connections", "24", "--http-max-buffered-bytes", str(4 << 20)]).start()
        cls.server.wait_serving()
        cls.base = f"http://127.0.0.1:{cls.server.http_port}"
        import grpc
        cls.stubs = GrpcStubs()
        cls.channel = grpc.insecure_channel(cls.server.target)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()

    def get_json(self, path, expect=200):
        code, headers, body = curl(self.base + path)
        self.assertEqual(code, expect, body)
        self.assertTrue(headers["content-type"].startswith("application/json"), headers)
        return json.loads(body)

    def assert_error(self, code, headers, body, want, text=None):
        self.assertEqual(code, want, body[:300])
        self.assertTrue(headers.get("content-type", "").startswith("application/json"), headers)
        message = json.loads(body)["error"]
        self.assertTrue(message)
        if text:
            self.assertIn(text, message)
        return message

    def grpc_infer(self, images=None, tensor=None):
        k = self.stubs.kpb
        req = k.ModelInferRequest(model_name=MODEL)
        if images is not None:
            t = req.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
            t.contents.bytes_contents.extend(images)
        else:
            data, shape = tensor
            req.inputs.add(name="input", datatype="FP32", shape=shape)
            req.raw_input_contents.append(struct.pack(f"<{len(data)}f", *data))
        req.outputs.add(name="logits")
        res = self.stubs.kpb_grpc.GRPCInferenceServiceStub(self.channel).ModelInfer(req, timeout=60)
        raw = res.raw_output_contents[0]
        return list(res.outputs[0].shape), list(struct.unpack(f"<{len(raw) // 4}f", raw))

    # --- endpoints -------------------------------------------------------

    def test_page_metrics_and_health(self):
        code, headers, body = curl(self.base + "/")
        self.assertEqual(code, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        self.assertIn(b"<html", body.lower())
        self.assertIn("default-src 'self'", headers["content-security-policy"])
        code, _, body = curl(self.base + "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"ghostserve_requests_total", body)
        self.assertIn(b"process_resident_memory_bytes", body)
        # The plaintext metrics port serves the same and nothing else.
        metrics = f"http://127.0.0.1:{self.server.metrics_port}"
        self.assertEqual(curl(metrics + "/metrics")[0], 200)
        self.assert_error(*curl(metrics + "/v1/models"), 404)
        for path in ["/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready",
                     f"/v2/models/{MODEL}/versions/1/ready"]:
            self.assertEqual(curl(self.base + path)[0], 200, path)
        # As Triton: an unknown model or version is not ready (400), not 404.
        for path in ["/v2/models/nope/ready", f"/v2/models/{MODEL}/versions/2/ready"]:
            self.assertEqual(curl(self.base + path)[0], 400, path)
        self.assertEqual(curl(self.base + "/healthz")[2], b"ok\n")

    def test_metadata_and_model_list(self):
        server = self.get_json("/v2")
        self.assertEqual(server["name"], "ghostserve")
        for extension in ("binary_tensor_data", "classification", "model_repository", "statistics"):
            self.assertIn(extension, server["extensions"])
        for path in [f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"]:
            meta = self.get_json(path)
            self.assertEqual(meta["name"], MODEL)
            self.assertEqual(meta["versions"], ["1"])
            self.assertEqual({i["name"]: i["datatype"] for i in meta["inputs"]},
                             {"images": "BYTES", "input": "FP32"})
            self.assertEqual({o["name"]: o["shape"] for o in meta["outputs"]},
                             {"logits": [-1, 1000], "probabilities": [-1, 1000]})
        models = {m["name"]: m for m in self.get_json("/v1/models")["models"]}
        self.assertEqual(set(models), {MODEL, "ghostnet_050_fashion"})
        listed = self.stubs.pb_grpc.ClassifierStub(self.channel).ListModels(
            self.stubs.pb.ListModelsRequest(), timeout=30)
        for m in listed.models:
            with self.subTest(model=m.name):
                rest = models[m.name]
                self.assertEqual((rest["parameters"], rest["macs"], rest["num_classes"],
                                  rest["trained"], rest["precision"], rest["ready"]),
                                 (m.parameters, m.macs, m.num_classes, m.trained, m.precision, m.ready))
        self.assertTrue(models["ghostnet_050_fashion"]["trained"])
        self.assertEqual(models[MODEL]["precision"], "fp32")
        self.assertEqual(models[MODEL]["preprocess"]["mean"], [0.485, 0.456, 0.406])

    def test_classify_equals_grpc_classify(self):
        stub = self.stubs.pb_grpc.ClassifierStub(self.channel)
        for name in PHOTOS:
            with self.subTest(photo=name):
                path = lib.src("tests", "testdata", name)
                code, headers, body = curl(f"{self.base}/v1/models/{MODEL}:classify?top_k=3",
                                           "--data-binary", "@" + path, "-H", "X-Request-Id: r-42")
                self.assertEqual(code, 200, body)
                rest = json.loads(body)
                ref = stub.Classify(self.stubs.pb.ClassifyRequest(image=read(name), model=MODEL, top_k=3),
                                    timeout=60)
                self.assertEqual(rest["model"], MODEL)
                self.assertEqual(rest["request_id"], "r-42")
                self.assertEqual([(p["class_index"], p["label"]) for p in rest["predictions"]],
                                 [(p.class_index, p.label) for p in ref.predictions])
                # The same float32 (JSON prints its shortest form).
                self.assertEqual([struct.pack("<f", p["score"]) for p in rest["predictions"]],
                                 [struct.pack("<f", p.score) for p in ref.predictions])
                t = rest["timing"]
                self.assertGreater(t["total_us"], 0)
                self.assertLessEqual(t["preprocess_us"] + t["queue_us"], t["total_us"])
        # A browser-style form upload (curl -F) and the default top_k (5).
        code, _, body = curl(f"{self.base}/v1/models/{MODEL}:classify", "-F",
                             "image=@" + lib.src("tests", "testdata", "coffee.jpg") + ";type=image/jpeg",
                             "-F", "note=ignored")
        self.assertEqual(code, 200, body)
        form = json.loads(body)
        self.assertEqual(len(form["predictions"]), 5)
        direct = json.loads(curl(f"{self.base}/v1/models/{MODEL}:classify", "--data-binary",
                                 "@" + lib.src("tests", "testdata", "coffee.jpg"))[2])
        self.assertEqual(form["predictions"], direct["predictions"])

    def test_kserve_rest_logits_equal_grpc(self):
        images = [read(p) for p in PHOTOS[:2]]
        for image in images:
            shape, grpc_logits = self.grpc_infer(images=[image])
            self.assertEqual(shape, [1, 1000])
            # JSON: the image as base64.
            doc = {"id": "q1", "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                            "data": [base64.b64encode(image).decode()]}],
                   "outputs": [{"name": "logits"}]}
            code, headers, body = curl(f"{self.base}/v2/models/{MODEL}/infer", "-H",
                                       "Content-Type: application/json", "--data-binary", json.dumps(doc))
            self.assertEqual(code, 200, body)
            out = json.loads(body)
            self.assertEqual(out["id"], "q1")
            self.assertEqual(out["model_name"], MODEL)
            self.assertEqual(out["outputs"][0]["shape"], [1, 1000])
            self.assertEqual(out["outputs"][0]["data"], grpc_logits)
            # Binary: the image raw, logits back as raw floats.
            header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                             "parameters": {"binary_data_size": len(image) + 4}}],
                                 "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
            payload = header + struct.pack("<I", len(image)) + image
            with tempfile.NamedTemporaryFile() as f:
                f.write(payload)
                f.flush()
                code, headers, body = curl(f"{self.base}/v2/models/{MODEL}/infer", "-H",
                                           f"Inference-Header-Content-Length: {len(header)}", "-H",
                                           "Content-Type: application/octet-stream", "--data-binary", "@" + f.name)
            self.assertEqual(code, 200, body[:300])
            n = int(headers["inference-header-content-length"])
            head = json.loads(body[:n])
            self.assertEqual(head["outputs"][0]["parameters"]["binary_data_size"], 4000)
            self.assertEqual(list(struct.unpack("<1000f", body[n:])), grpc_logits)
        # An FP32 tensor [2, 3, 224, 224], JSON and binary, against gRPC.
        values = [round(((i * 7919) % 1000) / 500.0 - 1.0, 3) for i in range(2 * 3 * 224 * 224)]
        shape = [2, 3, 224, 224]
        _, grpc_logits = self.grpc_infer(tensor=(values, shape))
        doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": values}],
               "parameters": {"binary_data_output": True}}
        with tempfile.NamedTemporaryFile("w") as f:
            json.dump(doc, f)
            f.flush()
            code, headers, body = curl(f"{self.base}/v2/models/{MODEL}/infer", "--data-binary", "@" + f.name)
        self.assertEqual(code, 200, body[:300])
        n = int(headers["inference-header-content-length"])
        self.assertEqual([o["name"] for o in json.loads(body[:n])["outputs"]], ["logits", "probabilities"])
        self.assertEqual(list(struct.unpack("<2000f", body[n:n + 8000])), grpc_logits)

    def test_classification_extension(self):
        # Triton's classification parameter on an output: "score:index:label"
        # strings for the K best classes, in JSON and as binary data.
        image = read(PHOTOS[0])
        _, grpc_logits = self.grpc_infer(images=[image])
        best = sorted(range(1000), key=lambda i: -grpc_logits[i])[:3]
        doc = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                           "data": [base64.b64encode(image).decode()]}],
               "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}
        code, _, body = curl(f"{self.base}/v2/models/{MODEL}/infer", "--data-binary", json.dumps(doc))
        self.assertEqual(code, 200, body)
        out = json.loads(body)["outputs"][0]
        self.assertEqual((out["datatype"], out["shape"]), ("BYTES", [1, 3]))
        for element, index in zip(out["data"], best):
            score, got_index, label = element.split(":", 2)
            self.assertEqual(int(got_index), index)
            self.assertAlmostEqual(float(score), grpc_logits[index], places=4)
            self.assertTrue(label)
        doc["outputs"][0]["parameters"]["binary_data"] = True
        code, headers, body = curl(f"{self.base}/v2/models/{MODEL}/infer", "--data-binary", json.dumps(doc))
        self.assertEqual(code, 200, body[:300])
        json_length = int(headers["inference-header-content-length"])
        raw, strings = body[json_length:], []
        while raw:
            (n,), raw = struct.unpack("<I", raw[:4]), raw[4:]
            strings.append(raw[:n].decode())
            raw = raw[n:]
        self.assertEqual(strings, out["data"])

    def test_triton_config_stats_and_repository_index(self):
        # The REST forms of Triton's extensions equal the gRPC ones.
        k = self.stubs.kpb
        stub = self.stubs.kpb_grpc.GRPCInferenceServiceStub(self.channel)
        config = self.get_json(f"/v2/models/{MODEL}/config")
        grpc_config = stub.ModelConfig(k.ModelConfigRequest(name=MODEL), timeout=30).config
        self.assertEqual((config["name"], config["platform"], config["backend"], config["max_batch_size"]),
                         (MODEL, "pytorch_libtorch", "pytorch", grpc_config.max_batch_size))
        self.assertEqual([(i["name"], i["data_type"], i["dims"]) for i in config["input"]],
                         [("images", "TYPE_STRING", [1]), ("input", "TYPE_FP32", [3, 224, 224])])
        self.assertEqual([(o["name"], o["dims"]) for o in config["output"]],
                         [("logits", [1000]), ("probabilities", [1000])])
        self.assertEqual(config["instance_group"][0]["kind"], "KIND_CPU")
        self.assertEqual(config["dynamic_batching"]["priority_levels"], 2)
        self.assertEqual(self.get_json(f"/v2/models/{MODEL}/versions/1/config"), config)
        self.assert_error(*curl(f"{self.base}/v2/models/{MODEL}/versions/4/config"), 404)
        # One classify more, then the counts over REST and gRPC agree.
        before = self.get_json(f"/v2/models/{MODEL}/stats")["model_stats"][0]
        code, _, _ = curl(f"{self.base}/v1/models/{MODEL}:classify", "--data-binary",
                          "@" + lib.src("tests", "testdata", "coffee.jpg"))
        self.assertEqual(code, 200)
        after = self.get_json(f"/v2/models/{MODEL}/stats")["model_stats"][0]
        self.assertEqual(after["name"], MODEL)
        self.assertEqual(after["inference_count"], before["inference_count"] + 1)
        self.assertEqual(after["inference_stats"]["success"]["count"],
                         before["inference_stats"]["success"]["count"] + 1)
        self.assertIsInstance(after["inference_stats"]["compute_infer"]["ns"], int)
        grpc_stats = stub.ModelStatistics(k.ModelStatisticsRequest(name=MODEL), timeout=30).model_stats[0]
        self.assertEqual(grpc_stats.inference_count, after["inference_count"])
        everything = self.get_json("/v2/models/stats")["model_stats"]
        self.assertEqual({m["name"] for m in everything}, {MODEL, "ghostnet_050_fashion"})
        code, _, body = curl(f"{self.base}/v2/repository/index", "-X", "POST", "--data-binary",
                             json.dumps({"ready": True}))
        self.assertEqual(code, 200, body)
        self.assertEqual(sorted((m["name"], m["version"], m["state"]) for m in json.loads(body)),
                         sorted([("ghostnet_050_fashion", "1", "READY"), (MODEL, "1", "READY")]))

    def test_python_rest_round_trip_equals_grpc(self):
        """Python's own HTTP client (urllib), JSON and binary, against gRPC."""
        image = read("coffee.jpg")
        _, grpc_logits = self.grpc_infer(images=[image])
        url = f"{self.base}/v2/models/{MODEL}/infer"
        doc = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                           "data": [{"b64": base64.b64encode(image).decode()}]}],
               "outputs": [{"name": "logits"}]}
        req = urllib.request.Request(url, data=json.dumps(doc).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            self.assertEqual(json.loads(r.read())["outputs"][0]["data"], grpc_logits)
        header = json.dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                         "parameters": {"binary_data_size": len(image) + 4}}],
                             "parameters": {"binary_data_output": True}}).encode()
        req = urllib.request.Request(url, data=header + struct.pack("<I", len(image)) + image,
                                     headers={"Inference-Header-Content-Length": str(len(header)),
                                              "Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=60) as r:
            n = int(r.headers["Inference-Header-Content-Length"])
            body = r.read()
        outputs = json.loads(body[:n])["outputs"]
        self.assertEqual([o["name"] for o in outputs], ["logits", "probabilities"])
        self.assertEqual(list(struct.unpack("<1000f", body[n:n + 4000])), grpc_logits)

    def test_client_bench_over_http(self):
        """ghostserve-client bench --http drives this API (bench_service.py's REST row)."""
        r = subprocess.run([lib.ARGS.client, "bench", "--http", f"127.0.0.1:{self.server.http_port}",
                            "--model", MODEL, "--concurrency", "2", "--duration", "2", "--json",
                            lib.src("tests", "testdata", "coffee.jpg"), lib.src("tests", "testdata", "chelsea.png")],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(out["protocol"], "http")
        self.assertGreater(out["images_per_second"], 0)
        self.assertEqual(out.get("errors", 0), 0, out)
        self.assertLessEqual(out["connects"], 4, out)  # kept alive, not one per request

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.server.http_port, timeout=30)
        image = read("chelsea.jpg")
        sock = None
        for _ in range(5):
            conn.request("POST", f"/v1/models/{MODEL}:classify?top_k=1", body=image,
                         headers={"Content-Type": "image/jpeg"})
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            json.loads(r.read())
            sock = sock or conn.sock
            self.assertIs(conn.sock, sock)  # not reconnected
        conn.close()

    # --- the status mapping ---------------------------------------------

    def test_error_rows(self):
        b, cls = self.base, f"{self.base}/v1/models/{MODEL}:classify"
        junk = lib.src("tests", "testdata", "make_testdata.py")
        self.assert_error(*curl(cls, "--data-binary", "@" + junk), 400, "neither JPEG nor PNG")
        self.assert_error(*curl(cls + "?top_k=0", "--data-binary", "@" + junk), 400, "top_k")
        self.assert_error(*curl(cls + "?top_k=5000", "--data-binary",
                                "@" + lib.src("tests", "testdata", "coffee.jpg")), 400, "top_k")
        self.assert_error(*curl(f"{b}/v2/models/{MODEL}/infer", "--data-binary", "{oops"), 400, "JSON")
        self.assert_error(*curl(f"{b}/v2/models/{MODEL}/infer", "--data-binary",
                                json.dumps({"inputs": [{"name": "images", "datatype": "INT8", "shape": [1],
                                                        "data": [1]}]})), 400, "INT8")
        self.assert_error(*curl(f"{b}/v1/models/nope:classify", "--data-binary", "@" + junk), 404, "nope")
        self.assert_error(*curl(f"{b}/v2/models/nope"), 404)
        self.assert_error(*curl(f"{b}/v2/models/{MODEL}/versions/2"), 404, "no version")
        self.assert_error(*curl(f"{b}/v2/models/{MODEL}/infer", "--data-binary", json.dumps(
            {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1],
                         "data": [base64.b64encode(read("coffee.jpg")).decode()]}]})), 400,
            "unexpected inference input")
        self.assert_error(*curl(f"{b}/v2/models/nope/infer", "--data-binary", "{}"), 404)
        self.assert_error(*curl(f"{b}/v2/models/{MODEL}/versions/7/infer", "--data-binary", json.dumps(
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                         "data": [base64.b64encode(read("coffee.jpg")).decode()]}]})), 404, "version")
        self.assert_error(*curl(f"{b}/no/such/path"), 404)
        # Refused from the header while curl is still sending a 900 KB body
        # (below curl's 1 MiB Expect: 100-continue threshold): the answer
        # must reach it (the server drains what it did not read before
        # closing, or the kernel's reset would destroy the answer).
        with tempfile.NamedTemporaryFile() as f:
            f.write(os.urandom(900 << 10))
            f.flush()
            for _ in range(5):
                self.assert_error(*curl(f"{b}/v1/models/nope:classify", "--data-binary", "@" + f.name),
                                  404, "nope")
        code, headers, body = curl(f"{b}/v2/models/{MODEL}/infer")  # GET
        self.assert_error(code, headers, body, 405)
        self.assertEqual(headers["allow"], "POST")
        # 413: larger than --max-message-bytes (4 MiB), refused from the header.
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"\0" * (5 << 20))
            f.flush()
            self.assert_error(*curl(cls, "--data-binary", "@" + f.name), 413, "exceeds")
        # 429: more images than --max-images-per-request.
        self.assert_error(*curl(f"{b}/v2/models/{MODEL}/infer", "--data-binary", json.dumps(
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [5],
                         "data": [base64.b64encode(b"x").decode()] * 5}]})), 429, "limit")
        # 504: Triton's "timeout" parameter (microseconds), here unreachable.
        self.assert_error(*curl(f"{b}/v2/models/{MODEL}/infer", "--data-binary", json.dumps(
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                         "data": [base64.b64encode(read("coffee.jpg")).decode()]}],
             "parameters": {"timeout": 1}})), 504)
        self.assert_error(*curl(cls + "?timeout_ms=0", "--data-binary", "@" + junk), 400, "timeout_ms")
        # 414 and 431 from the transport.
        self.assertEqual(curl(b + "/v1/models?x=" + "a" * 9000)[0], 414)
        self.assert_error(*curl(b + "/v1/models", "-H", "X-Big: " + "b" * 20000), 431)

    def test_hostile_input_then_still_serving(self):
        port = self.server.http_port
        # A huge Content-Length is refused before any of the body is sent.
        raw = raw_exchange(port, b"POST /v1/models/ghostnet_050:classify HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 99999999999\r\n\r\n", wait_s=5)
        self.assertEqual(status_of(raw), 413, raw[:200])
        # A truncated binary part (8 bytes declared, 4 sent).
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224],
                                         "parameters": {"binary_data_size": 8}}]}).encode()
        self.assert_error(*curl(f"{self.base}/v2/models/{MODEL}/infer", "-H",
                                f"Inference-Header-Content-Length: {len(header)}",
                                "--data-binary", header + b"abcd"), 400, "only 4 remain")
        # Deeply nested JSON.
        with tempfile.NamedTemporaryFile("w") as f:
            f.write("[" * 100000 + "]" * 100000)
            f.flush()
            self.assert_error(*curl(f"{self.base}/v2/models/{MODEL}/infer", "--data-binary",
                                    "@" + f.name), 400, "deeply")
        # Garbage instead of HTTP, and a bad header line.
        self.assertEqual(status_of(raw_exchange(port, b"\x16\x03\x01garbage\r\n\r\n", wait_s=5)), 400)
        self.assertEqual(status_of(raw_exchange(port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
                                                wait_s=5)), 400)
        # Slowloris: a header that never ends is cut off after
        # --http-header-timeout-ms (1.5 s) with 408, then closed.
        t0 = time.time()
        raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", wait_s=10)
        self.assertEqual(status_of(raw), 408, raw[:200])
        self.assertLess(time.time() - t0, 6)
        # A body that stops arriving: cut off after --http-body-timeout-ms.
        raw = raw_exchange(port, b"POST /v1/models/ghostnet_050:classify HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 1000\r\n\r\nonly a little", wait_s=10)
        self.assertEqual(status_of(raw), 408, raw[:200])
        # An idle connection that never sends is closed without an answer.
        s = socket.create_connection(("127.0.0.1", port))
        s.close()
        # Still serving.
        code, _, body = curl(f"{self.base}/v1/models/{MODEL}:classify", "--data-binary",
                             "@" + lib.src("tests", "testdata", "chelsea.jpg"))
        self.assertEqual(code, 200, body)

    def test_body_bytes_being_received_are_bounded(self):
        # --http-max-buffered-bytes 4 MiB: one 3 MiB body arriving slowly holds
        # 3 MiB; a second 3 MiB request is refused (503, Retry-After) before
        # its body is sent; once the first connection goes, bodies are taken.
        head = (f"POST /v1/models/{MODEL}:classify HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {3 << 20}\r\n\r\n").encode()
        slow = socket.create_connection(("127.0.0.1", self.server.http_port))
        try:
            slow.sendall(head + b"x" * 1000)
            time.sleep(0.3)
            raw = raw_exchange(self.server.http_port, head, wait_s=5)
            self.assertEqual(status_of(raw), 503, raw[:300])
            self.assertIn(b"Retry-After: 1", raw)
            self.assertIn(b"too many request bodies", raw)
        finally:
            slow.close()
        deadline = time.time() + 10
        while True:
            with tempfile.NamedTemporaryFile() as f:
                f.write(b"\0" * (3 << 20))
                f.flush()
                code = curl(f"{self.base}/v1/models/{MODEL}:classify", "--data-binary", "@" + f.name)[0]
            if code != 503 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(code, 400)  # received and read: not an image

    def test_connection_bound(self):
        # --http-max-connections 24: hold 24 idle connections; the next one
        # is answered 503 and closed; once they go, service resumes.
        held = [socket.create_connection(("127.0.0.1", self.server.http_port)) for _ in range(24)]
        try:
            time.sleep(0.3)
            raw = raw_exchange(self.server.http_port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", wait_s=5)
            self.assertEqual(status_of(raw), 503, raw[:200])
        finally:
            for s in held:
                s.close()
        deadline = time.time() + 10
        while True:
            code = curl(self.base + "/v2/health/live")[0]
            if code == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(code, 200)

    def test_metrics_carry_the_protocol(self):
        curl(f"{self.base}/v1/models/{MODEL}:classify", "--data-binary", "@" + lib.src("tests", "testdata", "coffee.jpg"))
        self.stubs.pb_grpc.ClassifierStub(self.channel).Classify(
            self.stubs.pb.ClassifyRequest(image=read("coffee.jpg"), model=MODEL), timeout=60)
        text = lib.http_get(f"http://127.0.0.1:{self.server.metrics_port}/metrics")
        for protocol in ("http", "grpc"):
            self.assertGreaterEqual(lib.sample_sum(text, "ghostserve_requests_total", model=MODEL,
                                                   protocol=protocol, code="OK"), 1, protocol)
            self.assertGreaterEqual(lib.sample_sum(text, "ghostserve_request_duration_seconds_count",
                                                   model=MODEL, protocol=protocol), 1, protocol)
        self.assertGreaterEqual(lib.sample_sum(text, "ghostserve_requests_total", protocol="http",
                                               code="INVALID_ARGUMENT"), 0)


class HttpOverloadTest(unittest.TestCase):
    """503 with Retry-After when the model's budget is full: one image in a
    batch and one waiting (--max-queue-size 1 --max-batch-size 1)."""

    def test_unavailable_has_retry_after(self):
        server = lib.GhostServe(["--max-queue-size", "1", "--max-batch-size", "1",
                                 "--batch-workers", "1"]).start()
        try:
            server.wait_serving()
            url = f"http://127.0.0.1:{server.http_port}/v1/models/{MODEL}:classify"
            png = lib.src("tests", "testdata", "chelsea.png")
            codes = []
            for _ in range(3):
                with concurrent.futures.ThreadPoolExecutor(24) as pool:
                    results = list(pool.map(lambda _: curl(url, "--data-binary", "@" + png), range(24)))
                codes += [r[0] for r in results]
                refused = [r for r in results if r[0] == 503]
                if refused:
                    break
            self.assertTrue(refused, codes)
            self.assertEqual(set(codes) - {200, 503}, set(), codes)
            code, headers, body = refused[0]
            self.assertEqual(headers["retry-after"], "1")
            self.assertIn("retry later", json.loads(body)["error"])
        finally:
            server.stop()


class HttpDrainTest(unittest.TestCase):
    """SIGTERM while HTTP clients keep sending: every answer is whole (200,
    or 503 once draining began), and the server exits 0."""

    def test_drain_under_http_load(self):
        import http.client
        import threading
        server = lib.GhostServe().start()
        try:
            server.wait_serving()
            image = read("chelsea.jpg")
            stop = threading.Event()
            statuses, broken = [], []

            def client():
                conn = None
                while not stop.is_set():
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
                        conn.request("POST", f"/v1/models/{MODEL}:classify", body=image)
                        r = conn.getresponse()
                        body = r.read()
                        statuses.append(r.status)
                        if r.status == 200:
                            json.loads(body)["predictions"]
                        if r.will_close:
                            conn.close()
                            conn = None
                    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected,
                            BrokenPipeError):
                        # The listener is gone, or a kept-alive connection was
                        # closed between requests: as any HTTP client, retry on
                        # a new connection (until the server is gone).
                        if conn is not None:
                            conn.close()
                        conn = None
                        if server.proc.poll() is not None:
                            return
                        time.sleep(0.01)
                    except http.client.IncompleteRead as e:  # an answer cut short
                        broken.append(repr(e))
                        return

            threads = [threading.Thread(target=client) for _ in range(6)]
            for t in threads:
                t.start()
            time.sleep(1.5)
            server.proc.send_signal(15)
            self.assertEqual(server.proc.wait(timeout=60), 0)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            self.assertEqual(broken, [])
            self.assertIn(200, statuses)
            self.assertEqual(set(statuses) - {200, 503}, set(), statuses)
        finally:
            server.stop()


class HttpSecurityTest(unittest.TestCase):
    """The gRPC flags secure HTTP too: TLS from --tls-cert/--tls-key and the
    bearer token from --auth-token-file (health stays open)."""

    def test_tls_and_bearer_token(self):
        with tempfile.TemporaryDirectory() as d:
            cert, key, token = (os.path.join(d, n) for n in ("cert.pem", "key.pem", "token"))
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                            "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                           check=True, capture_output=True)
            with open(token, "w") as f:
                f.write("s3cret-token\n")
            server = lib.GhostServe(["--tls-cert", cert, "--tls-key", key, "--auth-token-file", token]).start()
            try:
                server.wait_listening()
                base = f"https://127.0.0.1:{server.http_port}"
                deadline = time.time() + 120
                while curl(base + "/v2/health/ready", "--cacert", cert)[0] != 200:
                    self.assertLess(time.time(), deadline, "not ready over HTTPS")
                    time.sleep(0.3)
                code, headers, body = curl(base + "/v1/models", "--cacert", cert)
                self.assertEqual(code, 401, body)
                self.assertEqual(headers["www-authenticate"], "Bearer")
                self.assertIn("Authorization: Bearer", json.loads(body)["error"])
                self.assertEqual(curl(base + "/v1/models", "--cacert", cert, "-H",
                                      "Authorization: Bearer wrong")[0], 401)
                # Refused before its 900 KB body is read: the 401 still arrives.
                with tempfile.NamedTemporaryFile() as f:
                    f.write(os.urandom(900 << 10))
                    f.flush()
                    for _ in range(5):
                        self.assertEqual(curl(f"{base}/v1/models/{MODEL}:classify", "--cacert", cert,
                                              "-H", "Authorization: Bearer wrong",
                                              "--data-binary", "@" + f.name)[0], 401)
                code, _, body = curl(f"{base}/v1/models/{MODEL}:classify", "--cacert", cert, "-H",
                                     "Authorization: Bearer s3cret-token", "--data-binary",
                                     "@" + lib.src("tests", "testdata", "coffee.jpg"))
                self.assertEqual(code, 200, body)
                self.assertEqual(len(json.loads(body)["predictions"]), 5)
                # Plain HTTP to the TLS port gets nowhere.
                r = subprocess.run(["curl", "-sS", "--max-time", "5",
                                    f"http://127.0.0.1:{server.http_port}/v2/health/live"],
                                   capture_output=True)
                self.assertNotEqual(r.returncode, 0)
                # Python's own TLS client agrees with curl.
                ctx = ssl.create_default_context(cafile=cert)
                with urllib.request.urlopen(base + "/v2/health/live", context=ctx, timeout=10) as r:
                    self.assertEqual(r.status, 200)
            finally:
                server.stop()


if __name__ == "__main__":
    lib.main()
