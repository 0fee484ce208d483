#!/usr/bin/python3
"""The model repository through the real server, driven by a gRPC client
built from Triton's own protocol (tests/deploy/triton/triton_subset.proto, a
subset of Triton's grpc_service.proto and model_config.proto with their field
numbers; not ghostserve's proto), as tritonclient and perf_analyzer see it:

- hot reload under load: callers run while a new version is loaded every 2 s
  for 20 s, with no failed call, p99 bounded, and each caller's answers moving
  only forward in version;
- unload under load: callers get OK, NOT_FOUND or UNAVAILABLE, never INTERNAL,
  and nothing hangs; RSS does not grow over load/unload cycles;
- a broken version (bad weights) is refused with a reason in RepositoryIndex
  and a failed-load metric, and the old version keeps serving;
- ModelStatistics equal the calls this test made; ModelConfig and the
  classification extension as Triton defines them;
- poll mode picks up a new version and ignores a broken config.
"""
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import unittest

import grpc

import deploy_testlib as lib

MODEL = "fashion"
CALL_TIMEOUT_S = 10


def load_triton_stubs():
    from grpc_tools import protoc
    here = os.path.dirname(os.path.abspath(__file__))
    out = tempfile.mkdtemp(prefix="triton-stubs-")
    proto_dir = os.path.join(here, "triton")
    if protoc.main(["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out}",
                    f"--grpc_python_out={out}", os.path.join(proto_dir, "triton_subset.proto")]) != 0:
        raise RuntimeError("protoc failed on triton_subset.proto")
    sys.path.insert(0, out)
    return importlib.import_module("triton_subset_pb2"), importlib.import_module("triton_subset_pb2_grpc")


pb, pb_grpc = load_triton_stubs()


class Repository:
    """A repository holding MODEL (the shipped Fashion-MNIST GhostNet)."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="ghostserve-repo-")
        with open(lib.src("models", "ghostnet_050_fashion.json")) as f:
            config = json.load(f)
        for key in ("name", "weights", "training"):
            config.pop(key, None)
        os.makedirs(os.path.join(self.root, MODEL))
        self.write_config(config)
        self.config = config
        self.weights = lib.src("models", "ghostnet_050_fashion.safetensors")
        self.add_version(1)

    def write_config(self, config_or_text):
        text = config_or_text if isinstance(config_or_text, str) else json.dumps(config_or_text)
        tmp = os.path.join(self.root, ".config.json.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.root, MODEL, "config.json"))

    def add_version(self, version, broken=False):
        """Written beside the repository, then renamed in: a poll never sees
        half a version."""
        tmp = os.path.join(self.root, f".v{version}.tmp")
        os.makedirs(tmp)
        dest = os.path.join(tmp, "model.safetensors")
        if broken:
            with open(dest, "wb") as f:
                f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
        else:
            shutil.copyfile(self.weights, dest)
        os.rename(tmp, os.path.join(self.root, MODEL, str(version)))

    def remove_version(self, version):
        shutil.rmtree(os.path.join(self.root, MODEL, str(version)))

    def versions(self):
        return sorted(int(d) for d in os.listdir(os.path.join(self.root, MODEL)) if d.isdigit())

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def image_bytes():
    with open(lib.src("tests", "testdata", "chelsea.png"), "rb") as f:
        return f.read()


def infer_request(image, version="", outputs=None):
    req = pb.ModelInferRequest(model_name=MODEL, model_version=version)
    tensor = req.inputs.add(name="images", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(image)
    for o in outputs or []:
        req.outputs.append(o)
    return req


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Callers:
    """Threads that call ModelInfer in a loop and record every outcome."""

    def __init__(self, target, threads=4):
        self.target = target
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes = []  # (thread, code name, seconds, version or None)
        self.image = image_bytes()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(CALL_TIMEOUT_S * 2)

    def _run(self, index):
        channel = grpc.insecure_channel(self.target)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = infer_request(self.image)
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                r = stub.ModelInfer(request, timeout=CALL_TIMEOUT_S)
                outcome = ("OK", int(r.model_version))
            except grpc.RpcError as e:
                outcome = (e.code().name, None)
                time.sleep(0.01)  # as a client backs off
            with self.lock:
                self.outcomes.append((index, outcome[0], time.monotonic() - start, outcome[1]))
        channel.close()

    def count(self):
        with self.lock:
            return len(self.outcomes)


class ServerCase(unittest.TestCase):
    EXTRA_FLAGS = []

    @classmethod
    def setUpClass(cls):
        cls.repo = Repository()
        cls.server = lib.GhostServe(extra_flags=[
            "--models", "none", "--model-repository", cls.repo.root, "--max-batch-size", "8",
            *cls.EXTRA_FLAGS]).start()
        try:
            cls.server.wait_serving()
        except Exception:
            cls.server.stop()
            cls.repo.cleanup()
            raise
        cls.channel = grpc.insecure_channel(cls.server.target)
        cls.stub = pb_grpc.GRPCInferenceServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.stop()
        cls.repo.cleanup()

    def index(self):
        r = self.stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=CALL_TIMEOUT_S)
        return [(m.name, m.version, m.state, m.reason) for m in r.models]

    def served_versions(self):
        return [v for n, v, state, _ in self.index() if n == MODEL and state == "READY"]

    def load(self):
        self.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=MODEL), timeout=120)


class ExplicitControlTest(ServerCase):
    EXTRA_FLAGS = ["--model-control-mode", "explicit", "--load-model", MODEL]

    def setUp(self):
        self.load()  # every test starts from the latest good version, served

    def test_hot_reload_under_load_fails_no_call(self):
        first = self.repo.versions()[-1]
        loads = []
        with Callers(self.server.target) as callers:
            time.sleep(1)
            for i in range(10):
                time.sleep(2)
                version = first + i + 1
                self.repo.add_version(version)
                start = time.monotonic()
                self.load()
                loads.append(time.monotonic() - start)
                self.assertEqual(self.served_versions(), [str(version)])
            time.sleep(1)
        outcomes = callers.outcomes
        codes = {}
        for _, code, _, _ in outcomes:
            codes[code] = codes.get(code, 0) + 1
        latencies = sorted(s for _, _, s, _ in outcomes)
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        print(f"hot reload: {len(outcomes)} calls {codes}, p50 {statistics.median(latencies) * 1e3:.1f} ms, "
              f"p99 {p99 * 1e3:.1f} ms, load+warm {statistics.median(loads) * 1e3:.0f} ms median", file=sys.stderr)
        self.assertEqual(codes, {"OK": len(outcomes)})
        self.assertGreater(len(outcomes), 100)
        self.assertLess(p99, 2.0)
        # A caller never goes back to an older version once it saw a newer one.
        for thread in range(4):
            seen = [v for t, _, _, v in outcomes if t == thread]
            self.assertEqual(seen, sorted(seen))
        self.assertEqual({v for *_, v in outcomes}, set(range(first, first + 11)))
        metrics = self.server.metrics_text()
        self.assertGreaterEqual(lib.sample_sum(metrics, "ghostserve_model_loads_total", model=MODEL, outcome="ok"), 11)
        self.assertGreaterEqual(lib.sample_sum(metrics, "ghostserve_model_unloads_total", model=MODEL), 10)

    def test_unload_under_load_never_fails_inside_or_hangs(self):
        pid = self.server.proc.pid
        rss = []
        for cycle in range(4):
            with Callers(self.server.target) as callers:
                time.sleep(1)
                self.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=MODEL), timeout=60)
                self.assertFalse(self.stub.ModelReady(pb.ModelReadyRequest(name=MODEL), timeout=5).ready)
                self.assertEqual(self.served_versions(), [])
                self.assertIn((MODEL, "", "UNAVAILABLE", "unloaded"), self.index())
                self.assertEqual(lib.sample_sum(self.server.metrics_text(), "ghostserve_model_weight_bytes",
                                                model=MODEL), 0)
                time.sleep(0.5)
            codes = {code for _, code, _, _ in callers.outcomes}
            self.assertLessEqual(codes, {"OK", "NOT_FOUND", "UNAVAILABLE"}, codes)
            self.assertIn("OK", codes)
            self.assertIn("NOT_FOUND", codes)
            self.assertLess(max(s for _, _, s, _ in callers.outcomes), CALL_TIMEOUT_S)
            time.sleep(0.5)
            rss.append(rss_kib(pid))
            self.load()
            self.assertGreater(lib.sample_sum(self.server.metrics_text(), "ghostserve_model_weight_bytes",
                                              model=MODEL), 0)
        print(f"RSS after each unload (KiB): {rss}", file=sys.stderr)
        # Memory comes back: repeated cycles do not grow the process.
        self.assertLess(rss[-1] - rss[0], 32 * 1024, rss)
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="nope"), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_broken_version_keeps_the_old_one_serving(self):
        good = self.repo.versions()[-1]
        broken = good + 1
        self.repo.add_version(broken, broken=True)
        try:
            with self.assertRaises(grpc.RpcError) as e:
                self.load()
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("model.safetensors", e.exception.details())
            r = self.stub.ModelInfer(infer_request(image_bytes()), timeout=CALL_TIMEOUT_S)
            self.assertEqual(r.model_version, str(good))
            entries = {(n, v): (s, reason) for n, v, s, reason in self.index()}
            self.assertEqual(entries[(MODEL, str(good))], ("READY", ""))
            state, reason = entries[(MODEL, str(broken))]
            self.assertEqual(state, "UNAVAILABLE")
            self.assertIn("model.safetensors", reason)
            self.assertGreaterEqual(lib.sample_sum(self.server.metrics_text(), "ghostserve_model_loads_total",
                                                   model=MODEL, outcome="failed"), 1)
            with open(self.server.log_path) as f:
                self.assertIn(f"model {MODEL} version {broken}: load failed:", f.read())
        finally:
            self.repo.remove_version(broken)
            self.load()
        self.assertEqual(self.served_versions(), [str(good)])

    def test_statistics_count_this_tests_calls(self):
        version = self.repo.versions()[-1] + 1
        self.repo.add_version(version)
        self.load()
        calls = 7
        image = image_bytes()
        for _ in range(calls):
            self.stub.ModelInfer(infer_request(image, version=str(version)), timeout=CALL_TIMEOUT_S)
        with self.assertRaises(grpc.RpcError):
            self.stub.ModelInfer(infer_request(b"not an image"), timeout=CALL_TIMEOUT_S)
        stats = self.stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL, version=str(version)),
                                          timeout=CALL_TIMEOUT_S).model_stats
        self.assertEqual(len(stats), 1)
        s = stats[0]
        self.assertEqual((s.name, s.version), (MODEL, str(version)))
        self.assertEqual(s.inference_count, calls)
        self.assertEqual(s.inference_stats.success.count, calls)
        self.assertEqual(s.inference_stats.fail.count, 1)
        self.assertGreaterEqual(s.execution_count, 1)
        self.assertLessEqual(s.execution_count, calls)
        for part in ("queue", "compute_input", "compute_infer", "compute_output"):
            d = getattr(s.inference_stats, part)
            self.assertEqual(d.count, calls, part)
            # compute_output is 0: the logits are copied out with the batch (README).
            if part != "compute_output":
                self.assertGreater(d.ns, 0, part)
        self.assertGreater(s.last_inference, 0)
        # The old version is gone with its statistics; unknown versions are NOT_FOUND.
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL, version=str(version - 1)), timeout=5)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_model_config_and_metadata_as_triton(self):
        version = self.repo.versions()[-1]
        config = self.stub.ModelConfig(pb.ModelConfigRequest(name=MODEL), timeout=CALL_TIMEOUT_S).config
        self.assertEqual(config.name, MODEL)
        self.assertEqual(config.max_batch_size, 8)
        self.assertEqual([i.name for i in config.input], ["images", "input"])
        self.assertEqual(config.input[0].data_type, pb.TYPE_STRING)
        self.assertEqual(config.input[1].data_type, pb.TYPE_FP32)
        self.assertEqual(list(config.input[1].dims), [1, 64, 64])
        self.assertEqual(sorted(o.name for o in config.output), ["logits", "probabilities"])
        self.assertEqual(list(config.output[0].dims), [10])
        self.assertTrue(config.HasField("dynamic_batching"))
        metadata = self.stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=CALL_TIMEOUT_S)
        self.assertEqual(list(metadata.versions), [str(version)])
        self.assertTrue(self.stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=str(version)), timeout=5).ready)
        self.assertFalse(self.stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version=str(version + 100)),
                                              timeout=5).ready)

    def test_classification_extension(self):
        out = pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")
        out.parameters["classification"].int64_param = 3
        r = self.stub.ModelInfer(infer_request(image_bytes(), outputs=[out]), timeout=CALL_TIMEOUT_S)
        self.assertEqual(len(r.outputs), 1)
        self.assertEqual(r.outputs[0].datatype, "BYTES")
        self.assertEqual(list(r.outputs[0].shape), [1, 3])
        # Raw output: each element a 4-byte little-endian length, then the bytes.
        raw = r.raw_output_contents[0] if r.raw_output_contents else b""
        entries = []
        while raw:
            n = int.from_bytes(raw[:4], "little")
            entries.append(raw[4:4 + n].decode())
            raw = raw[4 + n:]
        if not entries:
            entries = [b.decode() for b in r.outputs[0].contents.bytes_contents]
        self.assertEqual(len(entries), 3)
        scores = []
        for e in entries:
            score, index, label = e.split(":", 2)
            self.assertIn(label, self.repo.config["labels"])
            self.assertEqual(self.repo.config["labels"][int(index)], label)
            scores.append(float(score))
        self.assertEqual(scores, sorted(scores, reverse=True))

    def test_rest_load_unload_and_index(self):
        import urllib.error
        import urllib.request
        base = f"http://127.0.0.1:{self.server.http_port}"

        def post(path, body=b""):
            req = urllib.request.Request(base + path, data=body, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=120) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        version = str(self.repo.versions()[-1])
        status, body = post("/v2/repository/index")
        self.assertEqual(status, 200)
        self.assertIn({"name": MODEL, "version": version, "state": "READY"}, json.loads(body))
        self.assertEqual(post(f"/v2/repository/models/{MODEL}/unload")[0], 200)
        status, _ = post(f"/v2/models/{MODEL}/infer", b"{}")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(post("/v2/repository/index")[1]),
                         [{"name": MODEL, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}])
        status, body = post(f"/v2/repository/models/{MODEL}/load",
                            json.dumps({"parameters": {"config": "{}"}}).encode())
        self.assertEqual(status, 400, body)
        self.assertEqual(post(f"/v2/repository/models/{MODEL}/load")[0], 200)
        self.assertEqual(self.served_versions(), [version])
        self.assertEqual(post("/v2/repository/models/nope/load")[0], 404)

    def test_load_parameters_and_other_repositories_are_refused(self):
        req = pb.RepositoryModelLoadRequest(model_name=MODEL)
        req.parameters["config"].string_param = "{}"
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.RepositoryModelLoad(req, timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(repository_name="other", model_name=MODEL),
                                          timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="../etc"), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)


class PollControlTest(ServerCase):
    EXTRA_FLAGS = ["--model-control-mode", "poll", "--repository-poll-secs", "1"]

    def wait_for(self, want, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.served_versions() == want:
                return
            time.sleep(0.2)
        self.fail(f"served {self.served_versions()}, want {want}; index {self.index()}")

    def test_a_new_version_is_picked_up_and_a_broken_config_ignored(self):
        self.wait_for(["1"])
        self.repo.add_version(2)
        self.wait_for(["2"])
        r = self.stub.ModelInfer(infer_request(image_bytes()), timeout=CALL_TIMEOUT_S)
        self.assertEqual(r.model_version, "2")
        self.repo.write_config('{"num_classes": 10, "widht": 0.5}')
        time.sleep(3)
        self.assertEqual(self.served_versions(), ["2"])
        self.assertTrue(any(n == MODEL and s == "UNAVAILABLE" and "widht" in reason
                            for n, _, s, reason in self.index()), self.index())
        self.repo.write_config(self.repo.config)
        # Explicit load and unload belong to explicit mode.
        with self.assertRaises(grpc.RpcError) as e:
            self.load()
        self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)


if __name__ == "__main__":
    lib.main()
