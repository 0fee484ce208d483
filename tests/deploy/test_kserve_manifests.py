#!/usr/bin/python3
"""The KServe manifests in deploy/kserve hang together (no cluster needed):

- the ServingRuntimes (ghostserve: v2 REST on 8080; ghostserve-grpc: grpc-v2
  on 9000 as h2c) run one identical kserve-container and differ only in the
  single port each declares (Knative allows one), its probes and protocol;
- the example InferenceService selects ghostserve by model format, runtime
  name and protocol, and its resources equal the runtime's;
- every GHOSTSERVE_* variable is a real flag of `ghostserve --help` and its
  value parses; the declared ports are the listen addresses; the repository
  is /mnt/models; locked-down security context, Guaranteed resources, the
  image and user of deploy/k8s and the Dockerfile; Knative's rules on port
  names, probe ports and forbidden fields.

Then the real server runs with the runtime container's environment (listen
addresses moved to loopback port 0, /mnt/models to a temporary directory laid
out as deploy/kserve/README.md says, holding the shipped Fashion-MNIST model)
and answers KServe v2 REST and gRPC under the directory's name, and its poll
mode picks up a version moved in."""
import base64
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import yaml

import deploy_testlib as lib

KSERVE = ("deploy", "kserve")
MODEL = "fashion"  # the README's layout: fashion/config.json, fashion/1/model.safetensors
MOUNT = "/mnt/models"  # where KServe puts the storageUri's contents
LISTEN_ENV = {"GHOSTSERVE_LISTEN", "GHOSTSERVE_HTTP_LISTEN", "GHOSTSERVE_METRICS_LISTEN"}


def load_all(*parts):
    return lib.yaml_docs(lib.src(*parts))


cpu_cores = lib.cpu_cores
mem_bytes = lib.mem_bytes


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def dockerfile_runtime_stage():
    """The last stage's instructions, continuation lines joined."""
    with open(lib.src("Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stage = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"FROM\s", line, re.I):
            stage = []
        else:
            stage.append(line)
    return stage


def dockerfile_env():
    env = {}
    for line in dockerfile_runtime_stage():
        if line.split()[0].upper() == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(line)[1:])
    return env


def help_flags():
    """(env names, --flag names) of `ghostserve --help`."""
    text = subprocess.run([lib.ARGS.ghostserve, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=30).stdout
    return (set(re.findall(r"\(env: (GHOSTSERVE_[A-Z0-9_]+)\)", text)),
            set(re.findall(r"^  (--[a-z0-9-]+)", text, re.M)))


def container_env(container):
    """name -> value; every entry must be a literal (Knative allows only
    configMap/secret references, and this runtime needs none)."""
    out = {}
    for e in container.get("env", []):
        assert "valueFrom" not in e, e["name"]
        out[e["name"]] = str(e["value"])
    return out


class RuntimeServer:
    """ghostserve as the runtime's container runs it: the image's environment
    (the Dockerfile's ENV), then the container's env and args. Only the
    repository (for /mnt/models) and the listen addresses (loopback, ports
    the kernel picks, read from the start-up log) differ."""

    def __init__(self, container, repo, log_path):
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTSERVE_")}
        self.env.update(dockerfile_env())
        self.env.update(container_env(container))
        self.env["GHOSTSERVE_MODEL_REPOSITORY"] = repo
        for k in LISTEN_ENV:
            self.env[k] = "127.0.0.1:0"
        self.argv = [lib.ARGS.ghostserve, *container.get("args", [])]
        self.log_path = log_path
        self.proc = None
        self.http_port = self.grpc_port = None

    def start(self):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log)
        return self

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def _check_running(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"ghostserve exited with {self.proc.returncode}:\n{self.log()[-2000:]}")

    def wait_listening(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._check_running()
            m = lib.GhostServe.LISTENING_RE.search(self.log())
            if m and m.group("http"):
                self.grpc_port, self.http_port = int(m.group(1)), int(m.group("http"))
                return self
            time.sleep(0.1)
        raise AssertionError(f"ghostserve not listening after {timeout} s:\n{self.log()[-2000:]}")

    def wait_ready(self, timeout):
        deadline = time.time() + timeout
        self.wait_listening(timeout)
        while time.time() < deadline:
            self._check_running()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"ghostserve not ready after {timeout} s:\n{self.log()[-2000:]}")

    def stop(self):
        lib.stop(self.proc)


class ManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.runtime_docs = load_all(*KSERVE, "servingruntime.yaml")
        cls.isvc_docs = load_all(*KSERVE, "inferenceservice.yaml")
        cls.runtimes = {d["metadata"]["name"]: d for d in cls.runtime_docs}
        cls.isvc = cls.isvc_docs[0]
        cls.model = cls.isvc["spec"]["predictor"]["model"]
        cls.env_flags, cls.cli_flags = help_flags()
        deploy = next(d for d in load_all("deploy", "k8s", "deployment.yaml") if d["kind"] == "Deployment")
        cls.k8s_container = next(c for c in deploy["spec"]["template"]["spec"]["containers"]
                                 if c["name"] == "ghostserve")

    def container(self, runtime):
        containers = self.runtimes[runtime]["spec"]["containers"]
        self.assertEqual(len(containers), 1)
        return containers[0]

    def containers(self):
        return [(name, self.container(name)) for name in sorted(self.runtimes)]

    def test_kinds_and_api_versions(self):
        self.assertEqual(len(self.runtime_docs), 2)
        for d in self.runtime_docs:
            self.assertEqual((d["apiVersion"], d["kind"]), ("serving.kserve.io/v1alpha1", "ServingRuntime"))
        self.assertEqual(sorted(self.runtimes), ["ghostserve", "ghostserve-grpc"])
        self.assertEqual(len(self.isvc_docs), 1)
        self.assertEqual((self.isvc["apiVersion"], self.isvc["kind"]),
                         ("serving.kserve.io/v1beta1", "InferenceService"))
        for rt, c in self.containers():
            with self.subTest(runtime=rt):
                self.assertEqual(c["name"], "kserve-container")  # KServe merges the predictor into it

    def test_inference_service_selects_the_runtime(self):
        runtime = self.runtimes[self.model["runtime"]]
        self.assertEqual(self.model["runtime"], "ghostserve")
        formats = runtime["spec"]["supportedModelFormats"]
        fmt = next((f for f in formats if f["name"] == self.model["modelFormat"]["name"]), None)
        self.assertIsNotNone(fmt, f"runtime ghostserve has no format {self.model['modelFormat']['name']}")
        self.assertEqual(fmt["name"], "ghostnet")
        self.assertEqual(str(fmt["version"]), "1")
        self.assertEqual(str(self.model["modelFormat"].get("version", fmt["version"])), str(fmt["version"]))
        self.assertIs(fmt["autoSelect"], True)
        self.assertEqual(self.model["protocolVersion"], "v2")
        self.assertIn(self.model["protocolVersion"], runtime["spec"]["protocolVersions"])
        # Both runtimes serve the format; a protocol picks exactly one of them.
        for proto in ("v2", "grpc-v2"):
            picks = [n for n, r in self.runtimes.items()
                     if proto in r["spec"]["protocolVersions"]
                     and any(f["name"] == "ghostnet" and f.get("autoSelect") for f in r["spec"]["supportedModelFormats"])]
            self.assertEqual(len(picks), 1, proto)

    def test_protocols_and_ports(self):
        union = {p for r in self.runtimes.values() for p in r["spec"]["protocolVersions"]}
        self.assertLessEqual({"v2", "grpc-v2"}, union)
        expected = {"ghostserve": ("v2", "http1", 8080, "GHOSTSERVE_HTTP_LISTEN"),
                    "ghostserve-grpc": ("grpc-v2", "h2c", 9000, "GHOSTSERVE_LISTEN")}
        for name, c in self.containers():
            with self.subTest(runtime=name):
                proto, port_name, port, env_name = expected[name]
                self.assertEqual(self.runtimes[name]["spec"]["protocolVersions"], [proto])
                # Knative: at most one container port, named http1, h2c or nothing.
                self.assertEqual(len(c["ports"]), 1)
                p = c["ports"][0]
                self.assertEqual((p["name"], p["containerPort"], p.get("protocol", "TCP")), (port_name, port, "TCP"))
                env = container_env(c)
                self.assertEqual(env["GHOSTSERVE_HTTP_LISTEN"], "0.0.0.0:8080")
                self.assertEqual(env["GHOSTSERVE_LISTEN"], "0.0.0.0:9000")
                self.assertEqual(port_of(env[env_name]), p["containerPort"])
                # Not on a port Knative's queue-proxy reserves.
                for address in (env[k] for k in LISTEN_ENV):
                    self.assertNotIn(port_of(address), (8012, 8013, 8022, 9090, 9091))

    def test_runtimes_run_the_same_server(self):
        strip = ("ports", "readinessProbe", "livenessProbe")
        a, b = ({k: v for k, v in self.container(n).items() if k not in strip} for n in sorted(self.runtimes))
        self.assertEqual(a, b)
        specs = [{k: v for k, v in r["spec"].items() if k not in ("containers", "protocolVersions")}
                 for r in self.runtimes.values()]
        self.assertEqual(specs[0], specs[1])

    def test_flags_are_real(self):
        self.assertGreater(len(self.env_flags), 10, "could not read flags from ghostserve --help")
        self.assertIn("GHOSTSERVE_MODEL_REPOSITORY", self.env_flags)
        for rt, c in self.containers():
            with self.subTest(runtime=rt):
                for name in container_env(c):
                    if name.startswith("GHOSTSERVE_"):
                        self.assertIn(name, self.env_flags)
                for arg in c.get("args", []):
                    if arg.startswith("--"):
                        self.assertIn(arg.split("=", 1)[0], self.cli_flags)
                # No command: the image's ENTRYPOINT, which is the server.
                self.assertNotIn("command", c)
        self.assertIn('ENTRYPOINT ["/usr/local/bin/ghostserve"]', dockerfile_runtime_stage())

    def test_env_values_parse(self):
        # Each runtime's environment starts the server (on loopback, with an
        # empty repository for /mnt/models): a value that does not parse,
        # whenever the server checks it, makes it exit with status 2.
        for rt, c in self.containers():
            with self.subTest(runtime=rt), tempfile.TemporaryDirectory() as tmp:
                os.mkdir(os.path.join(tmp, "models"))
                server = RuntimeServer(c, os.path.join(tmp, "models"), os.path.join(tmp, "log")).start()
                try:
                    server.wait_listening(timeout=30)
                finally:
                    server.stop()

    def test_model_repository(self):
        for rt, c in self.containers():
            with self.subTest(runtime=rt):
                env = container_env(c)
                self.assertEqual(env["GHOSTSERVE_MODEL_REPOSITORY"], MOUNT)
                self.assertEqual(env.get("GHOSTSERVE_MODELS", "none"), "none")  # only the repository's models
                self.assertIn(env["GHOSTSERVE_MODEL_CONTROL_MODE"], ("poll", "none"))
                self.assertNotIn("GHOSTSERVE_WEIGHTS", env)
                self.assertNotIn("GHOSTSERVE_MODEL_CONFIG", env)
                # KServe mounts /mnt/models itself (storage initializer or PVC).
                for m in c.get("volumeMounts", []):
                    self.assertFalse(m["mountPath"].startswith(MOUNT), m)
        self.assertRegex(self.model["storageUri"], r"^(pvc|gs|s3|https?|hdfs|webhdfs|oci)://\S+")

    def test_security(self):
        uid = next(l.split()[1].split(":")[0] for l in reversed(dockerfile_runtime_stage())
                   if l.split()[0].upper() == "USER")
        for name, c in self.containers():
            with self.subTest(runtime=name):
                sc = c["securityContext"]
                self.assertIs(sc["runAsNonRoot"], True)
                self.assertEqual(sc["runAsUser"], int(uid))  # the Dockerfile's user
                self.assertEqual(sc["runAsUser"], self.k8s_container["securityContext"]["runAsUser"])
                self.assertIs(sc["readOnlyRootFilesystem"], True)
                self.assertIs(sc["allowPrivilegeEscalation"], False)
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                self.assertNotIn("add", sc["capabilities"])
                self.assertNotIn("privileged", sc)
                # Writable scratch with a read-only root.
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                self.assertIn("/tmp", mounts)
                volumes = {v["name"]: v for v in self.runtimes[name]["spec"]["volumes"]}
                self.assertIn("emptyDir", volumes[mounts["/tmp"]])

    def test_resources(self):
        for rt, c in self.containers():
            with self.subTest(runtime=rt):
                res = c["resources"]
                self.assertEqual(cpu_cores(res["requests"]["cpu"]), cpu_cores(res["limits"]["cpu"]))
                self.assertGreaterEqual(cpu_cores(res["limits"]["cpu"]), 1)
                self.assertGreaterEqual(mem_bytes(res["limits"]["memory"]), 1 * 2**30)
                self.assertEqual(mem_bytes(res["requests"]["memory"]), mem_bytes(res["limits"]["memory"]))
                # One single-threaded executor per CPU of the limit, as deploy/k8s.
                env = container_env(c)
                self.assertEqual(int(env["GHOSTSERVE_EXECUTORS"]), math.ceil(cpu_cores(res["limits"]["cpu"])))
                self.assertEqual(env["GHOSTSERVE_INFERENCE_THREADS"], "1")
                self.assertIn("GHOSTSERVE_PREPROCESS_THREADS", env)
                # The InferenceService's resources replace the runtime's: equal.
                self.assertEqual(self.model["resources"], res)

    def test_image_matches_k8s(self):
        for rt, c in self.containers():
            with self.subTest(runtime=rt):
                self.assertEqual(c["image"], self.k8s_container["image"])
                self.assertEqual(c.get("imagePullPolicy"), self.k8s_container.get("imagePullPolicy"))

    def test_probes_and_knative_rules(self):
        for name, c in self.containers():
            with self.subTest(runtime=name):
                # Knative refuses these container fields.
                for field in ("lifecycle", "startupProbe"):
                    self.assertNotIn(field, c)
                port = c["ports"][0]["containerPort"]
                env = container_env(c)
                for probe in ("readinessProbe", "livenessProbe"):
                    p = c[probe]
                    handler = next(k for k in ("httpGet", "grpc", "tcpSocket") if k in p)
                    self.assertEqual(p[handler]["port"], port, "Knative probes only the declared port")
                    if handler == "httpGet":
                        self.assertEqual(port_of(env["GHOSTSERVE_HTTP_LISTEN"]), port)
                        self.assertEqual(p["httpGet"]["path"],
                                         "/v2/health/ready" if probe == "readinessProbe" else "/v2/health/live")
                    elif handler == "grpc":
                        self.assertEqual(probe, "readinessProbe")  # NOT_SERVING while loading would kill it
                        self.assertEqual(port_of(env["GHOSTSERVE_LISTEN"]), port)
                # Liveness must not kill a pod that is only draining.
                live = c["livenessProbe"]
                drain_s = int(env["GHOSTSERVE_DRAIN_TIMEOUT_MS"]) / 1000
                self.assertGreater(live["periodSeconds"] * live["failureThreshold"], drain_s)
                # The drain fits Kubernetes' default grace period (30 s), which a
                # RawDeployment pod gets (Knative's is the revision timeout).
                self.assertLess(drain_s, 30)

    def test_prometheus_annotations_match_metrics_port(self):
        for name, c in self.containers():
            with self.subTest(runtime=name):
                ann = self.runtimes[name]["spec"]["annotations"]
                self.assertEqual(ann["prometheus.kserve.io/path"], "/metrics")
                self.assertEqual(int(ann["prometheus.kserve.io/port"]),
                                 port_of(container_env(c)["GHOSTSERVE_METRICS_LISTEN"]))

    def test_readme(self):
        with open(lib.src(*KSERVE, "README.md")) as f:
            readme = f.read()
        for text in (f"{MODEL}/config.json", f"{MODEL}/1/model.safetensors", "kubectl apply -f",
                     f"/v2/models/{MODEL}/infer", "ghostserve-grpc", "grpc-v2"):
            self.assertIn(text, readme)
        self.assertNotIn(f"/v2/models/{self.isvc['metadata']['name']}/", readme)


class ServesRepositoryTest(unittest.TestCase):
    """The runtime container's environment, on this machine."""

    @classmethod
    def setUpClass(cls):
        runtime = next(d for d in load_all(*KSERVE, "servingruntime.yaml")
                       if d["metadata"]["name"] == "ghostserve")
        container = runtime["spec"]["containers"][0]
        cls.env_spec = container_env(container)
        cls.poll_secs = int(cls.env_spec.get("GHOSTSERVE_REPOSITORY_POLL_SECS", "15"))
        cls.root = tempfile.mkdtemp(prefix="ghostserve-kserve-")
        cls.repo = os.path.join(cls.root, "models")  # stands for /mnt/models
        with open(lib.src("models", "ghostnet_050_fashion.json")) as f:
            config = json.load(f)
        for key in ("name", "weights", "training"):
            config.pop(key, None)
        os.makedirs(os.path.join(cls.repo, MODEL, "1"))
        with open(os.path.join(cls.repo, MODEL, "config.json"), "w") as f:
            json.dump(config, f)
        cls.weights = lib.src("models", "ghostnet_050_fashion.safetensors")
        shutil.copyfile(cls.weights, os.path.join(cls.repo, MODEL, "1", "model.safetensors"))
        os.mkdir(os.path.join(cls.repo, "lost+found"))  # as at a volume's root: not a model
        cls.server = RuntimeServer(container, cls.repo, os.path.join(cls.root, "ghostserve.log")).start()
        try:
            cls.server.wait_ready(timeout=60)
        except BaseException:
            cls.tearDownClass()
            raise
        cls.grpc_port = cls.server.grpc_port
        cls.base = f"http://127.0.0.1:{cls.server.http_port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    def status(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def infer(self, model=MODEL):
        with open(lib.src("tests", "testdata", "chelsea.png"), "rb") as f:
            image = f.read()
        doc = {"id": "kserve-1",
               "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                           "data": [base64.b64encode(image).decode()]}],
               "outputs": [{"name": "probabilities"}]}
        req = urllib.request.Request(f"{self.base}/v2/models/{model}/infer", data=json.dumps(doc).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def test_health_and_infer_over_rest(self):
        self.assertEqual(self.status("/v2/health/live"), 200)
        self.assertEqual(self.status("/v2/health/ready"), 200)
        self.assertEqual(self.status(f"/v2/models/{MODEL}/ready"), 200)
        out = self.infer()
        self.assertEqual((out["id"], out["model_name"]), ("kserve-1", MODEL))
        probs = out["outputs"][0]
        self.assertEqual((probs["name"], probs["datatype"], probs["shape"]), ("probabilities", "FP32", [1, 10]))
        self.assertAlmostEqual(sum(probs["data"]), 1.0, places=4)

    def test_model_name_is_the_directory(self):
        # Not the InferenceService's name, and only the repository's models.
        isvc = load_all(*KSERVE, "inferenceservice.yaml")[0]["metadata"]["name"]
        self.assertNotEqual(isvc, MODEL)
        self.assertEqual(self.status(f"/v2/models/{isvc}"), 404)
        self.assertEqual(self.status(f"/v2/models/{isvc}/ready"), 400)  # not ready, as KServe answers
        with self.assertRaises(urllib.error.HTTPError) as e:
            self.infer(isvc)
        self.assertEqual(e.exception.code, 404)
        self.assertEqual(self.status(f"/v2/models/{MODEL}"), 200)
        req = urllib.request.Request(f"{self.base}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual({m["name"] for m in json.loads(r.read())}, {MODEL})

    def test_grpc_port_answers_kserve_v2(self):
        # The port ghostserve-grpc routes (GHOSTSERVE_LISTEN): the same
        # model through inference.GRPCInferenceService, same top class.
        import grpc
        sys.path.insert(0, lib.src("client", "python"))
        import classify
        with tempfile.TemporaryDirectory() as out:
            _, _, kpb, kpb_grpc = classify.load_stubs(lib.src("proto"), out)
        with open(lib.src("tests", "testdata", "chelsea.png"), "rb") as f:
            image = f.read()
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            got = classify.kserve_infer(channel, kpb, kpb_grpc, ["chelsea.png"], [image], MODEL, 60)
        self.assertEqual((got["model"], got["shape"]), (MODEL, [1, 10]))
        rest = self.infer()["outputs"][0]["data"]
        self.assertEqual(got["results"][0]["class_index"], max(range(10), key=rest.__getitem__))
        self.assertAlmostEqual(got["results"][0]["probability"], max(rest), places=5)

    def test_poll_picks_up_a_new_version(self):
        if self.env_spec["GHOSTSERVE_MODEL_CONTROL_MODE"] != "poll":
            self.skipTest("the runtime does not poll")
        # As one would on the volume: copy beside the model, then move in.
        staging = os.path.join(self.repo, MODEL, ".2.tmp")
        os.makedirs(staging)
        shutil.copyfile(self.weights, os.path.join(staging, "model.safetensors"))
        os.rename(staging, os.path.join(self.repo, MODEL, "2"))
        deadline = time.time() + 2 * self.poll_secs + 15
        while time.time() < deadline:
            if self.infer()["model_version"] == "2":
                break
            time.sleep(0.5)
        else:
            self.fail(f"version 2 not served after {2 * self.poll_secs + 15} s:\n{self.server.log()[-2000:]}")
        self.assertEqual(self.status("/v2/health/ready"), 200)


if __name__ == "__main__":
    lib.main()
