#!/usr/bin/python3
"""The Kubernetes manifests in deploy/k8s hang together and follow the
deployment rules of issue 5: gRPC probes on the serving port, Guaranteed CPU,
a memory limit, a grace period covering preStop sleep plus drain, a locked-down
non-root container, thread settings from the CPU limit, Services/HPA/PDB that
select the Deployment's pods, scrape annotations on the metrics port, and a
ConfigMap of real GHOSTSERVE_* flags (checked against `ghostserve --help`).

When kubectl is installed, `kubectl kustomize` must also render the default
kustomization and an overlay with both optional components."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

import deploy_testlib as lib

K8S = ("deploy", "k8s")


load_all = lib.yaml_docs
cpu_cores = lib.cpu_cores
mem_bytes = lib.mem_bytes


class ManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(lib.src(*K8S, "kustomization.yaml")) as f:
            cls.kustomization = yaml.safe_load(f)
        cls.docs = []
        for res in cls.kustomization["resources"]:
            cls.docs += load_all(lib.src(*K8S, res))
        cls.by_kind = {}
        for d in cls.docs:
            cls.by_kind.setdefault(d["kind"], []).append(d)
        cls.deploy = cls.by_kind["Deployment"][0]
        cls.pod = cls.deploy["spec"]["template"]
        cls.container = next(c for c in cls.pod["spec"]["containers"] if c["name"] == "ghostserve")
        cls.config = cls.by_kind["ConfigMap"][0]["data"]
        help_text = subprocess.run([lib.ARGS.ghostserve, "--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=30).stdout
        cls.env_flags = set(re.findall(r"\(env: (GHOSTSERVE_[A-Z_]+)\)", help_text))

    def test_kinds_present(self):
        for kind in ("Namespace", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget"):
            self.assertIn(kind, self.by_kind)
        self.assertEqual(len(self.by_kind["Service"]), 2)
        # Operator and custom-metrics pieces stay out of the default set.
        self.assertNotIn("ServiceMonitor", self.by_kind)
        self.assertEqual(self.kustomization.get("namespace"), "ghostserve")

    def test_grpc_probes_on_serving_port(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports["grpc"], 50051)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            with self.subTest(probe=probe):
                self.assertIn("grpc", self.container[probe])
                self.assertEqual(self.container[probe]["grpc"]["port"], 50051)
                self.assertNotIn("exec", self.container[probe])
        # The listen address in the ConfigMap is the probed port.
        self.assertTrue(self.config["GHOSTSERVE_LISTEN"].endswith(":50051"))
        # HTTP (REST, the page) is a named container port the Service exposes.
        self.assertEqual(ports["http"], 8000)
        self.assertTrue(self.config["GHOSTSERVE_HTTP_LISTEN"].endswith(":8000"))
        service = next(d for d in self.by_kind["Service"] if d["metadata"]["name"] == "ghostserve")
        self.assertIn(("http", 8000, "http"),
                      {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]})
        # Liveness must not kill a pod that is only draining (NOT_SERVING).
        live = self.container["livenessProbe"]
        drain_s = int(self.config["GHOSTSERVE_DRAIN_TIMEOUT_MS"]) / 1000
        self.assertGreater(live["periodSeconds"] * live["failureThreshold"], drain_s)

    def test_resources(self):
        res = self.container["resources"]
        self.assertEqual(cpu_cores(res["requests"]["cpu"]), cpu_cores(res["limits"]["cpu"]))
        self.assertGreaterEqual(cpu_cores(res["limits"]["cpu"]), 1)
        self.assertIn("memory", res["limits"])
        # At least the warm RSS of the three models (~400 MiB measured) plus
        # full batch queues (441 MiB); see the comment in deployment.yaml.
        self.assertGreaterEqual(mem_bytes(res["limits"]["memory"]), 1 * 2**30)
        self.assertEqual(mem_bytes(res["requests"]["memory"]), mem_bytes(res["limits"]["memory"]))

    def test_termination_covers_prestop_and_drain(self):
        pre = self.container["lifecycle"]["preStop"]
        if "sleep" in pre:
            sleep_s = int(pre["sleep"]["seconds"])
        else:
            cmd = pre["exec"]["command"]
            self.assertEqual(cmd[0], "/bin/sleep")  # in debian bookworm-slim
            sleep_s = int(cmd[1])
        self.assertGreater(sleep_s, 0)
        drain_s = int(self.config["GHOSTSERVE_DRAIN_TIMEOUT_MS"]) / 1000
        self.assertGreater(self.pod["spec"]["terminationGracePeriodSeconds"], drain_s + sleep_s)

    def test_security(self):
        pod_sc = self.pod["spec"].get("securityContext", {})
        sc = self.container["securityContext"]
        self.assertTrue(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        self.assertEqual(uid, 10001)  # the Dockerfile's user
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertNotIn("add", sc["capabilities"])
        mounts = {m["mountPath"]: m for m in self.container["volumeMounts"]}
        self.assertIn("/tmp", mounts)  # writable scratch with a read-only root
        self.assertIn("/models", mounts)
        self.assertTrue(mounts["/models"].get("readOnly"))

    def test_threads_from_cpu_limit(self):
        env = {e["name"]: e for e in self.container.get("env", [])}
        ref = env["GHOSTSERVE_EXECUTORS"]["valueFrom"]["resourceFieldRef"]
        self.assertEqual(ref["resource"], "limits.cpu")
        self.assertEqual(str(ref.get("divisor", "1")), "1")
        # Nothing may default from the affinity mask (the whole node).
        self.assertEqual(self.config["GHOSTSERVE_INFERENCE_THREADS"], "1")
        self.assertIn("GHOSTSERVE_PREPROCESS_THREADS", self.config)
        self.assertNotIn("GHOSTSERVE_EXECUTORS", self.config)  # env would win anyway; keep one source
        self.assertEqual(self.container["envFrom"][0]["configMapRef"]["name"],
                         self.by_kind["ConfigMap"][0]["metadata"]["name"])

    def test_configmap_keys_are_real_flags(self):
        self.assertGreater(len(self.env_flags), 10, "could not read flags from ghostserve --help")
        for key in self.config:
            self.assertIn(key, self.env_flags)
        for e in self.container.get("env", []):
            if e["name"].startswith("GHOSTSERVE_"):
                self.assertIn(e["name"], self.env_flags)

    def test_configmap_values_parse(self):
        # The server reads the environment before the command line, so an
        # invalid command-line value reported (rather than an environment
        # one) means every ConfigMap value, and the executor count the
        # Downward API gives for the CPU limit, parsed.
        limit = self.container["resources"]["limits"]["cpu"]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("GHOSTSERVE_")},
               **self.config, "GHOSTSERVE_EXECUTORS": str(int(-(-cpu_cores(limit) // 1)))}
        r = subprocess.run([lib.ARGS.ghostserve, "--max-batch-size", "0"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("command line: --max-batch-size", r.stdout)
        self.assertNotIn("GHOSTSERVE_", r.stdout)

    def test_services(self):
        labels = self.pod["metadata"]["labels"]
        self.assertEqual(self.deploy["spec"]["selector"]["matchLabels"].items() - labels.items(), set())
        container_ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        headless = [s for s in self.by_kind["Service"] if s["spec"].get("clusterIP") == "None"]
        cluster = [s for s in self.by_kind["Service"] if s["spec"].get("clusterIP") != "None"]
        self.assertEqual(len(headless), 1)
        self.assertEqual(headless[0]["metadata"]["name"], "ghostserve-headless")
        self.assertEqual(len(cluster), 1)
        for svc in self.by_kind["Service"]:
            with self.subTest(service=svc["metadata"]["name"]):
                sel = svc["spec"]["selector"]
                self.assertEqual(sel.items() - labels.items(), set(), "selector must match the pods")
                for port in svc["spec"]["ports"]:
                    target = port["targetPort"]
                    self.assertIn(target if isinstance(target, int) else container_ports[target],
                                  container_ports.values())
        grpc = next(p for p in headless[0]["spec"]["ports"] if p["name"] == "grpc")
        self.assertEqual(grpc["port"], 50051)

    def test_hpa_and_pdb_target_the_deployment(self):
        hpa = self.by_kind["HorizontalPodAutoscaler"][0]
        ref = hpa["spec"]["scaleTargetRef"]
        self.assertEqual((ref["kind"], ref["name"]), ("Deployment", self.deploy["metadata"]["name"]))
        self.assertTrue(any(m["type"] == "Resource" and m["resource"]["name"] == "cpu"
                            for m in hpa["spec"]["metrics"]))
        self.assertGreaterEqual(hpa["spec"]["minReplicas"], 2)
        pdb = self.by_kind["PodDisruptionBudget"][0]
        labels = self.pod["metadata"]["labels"]
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"].items() - labels.items(), set())
        self.assertTrue(pdb["spec"]["selector"]["matchLabels"])
        # The PDB must allow a voluntary eviction at the HPA's minimum.
        if "maxUnavailable" in pdb["spec"]:
            self.assertGreaterEqual(int(pdb["spec"]["maxUnavailable"]), 1)
        else:
            self.assertLess(int(pdb["spec"]["minAvailable"]), hpa["spec"]["minReplicas"])

    def test_prometheus_annotations_match_metrics_port(self):
        ann = self.pod["metadata"]["annotations"]
        self.assertEqual(ann["prometheus.io/scrape"], "true")
        self.assertEqual(ann["prometheus.io/path"], "/metrics")
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(int(ann["prometheus.io/port"]), ports["metrics"])
        self.assertTrue(self.config["GHOSTSERVE_METRICS_LISTEN"].endswith(f":{ports['metrics']}"))

    def test_queue_saturation_alert_matches_configmap(self):
        with open(lib.src("deploy", "prometheus", "alerts.yml")) as f:
            rules = {r["alert"]: r for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
        expr = rules["GhostserveQueueSaturation"]["expr"]
        self.assertIn(f"* {self.config['GHOSTSERVE_MAX_QUEUE_SIZE']}", expr)

    def test_optional_components(self):
        comp = lib.src(*K8S, "components")
        sm = load_all(os.path.join(comp, "servicemonitor", "servicemonitor.yaml"))[0]
        self.assertEqual(sm["kind"], "ServiceMonitor")
        self.assertEqual(sm["spec"]["endpoints"][0]["port"], "metrics")
        cluster = next(s for s in self.by_kind["Service"] if s["spec"].get("clusterIP") != "None")
        svc_labels = cluster["metadata"]["labels"]
        sel = sm["spec"]["selector"]
        self.assertEqual(sel["matchLabels"].items() - svc_labels.items(), set())
        for expr in sel.get("matchExpressions", []):
            self.assertIn(svc_labels.get(expr["key"]), expr["values"])
        self.assertIn("metrics", [p["name"] for p in cluster["spec"]["ports"]])
        # The job label is the Service name; alerts.yml selects job="ghostserve".
        self.assertEqual(cluster["metadata"]["name"], "ghostserve")

        patch = load_all(os.path.join(comp, "queue-depth-hpa", "hpa-queue-depth.yaml"))[0]
        metric = patch[0]["value"]
        self.assertEqual(metric["type"], "Pods")
        self.assertEqual(metric["pods"]["metric"]["name"], "ghostserve_queue_depth")
        adapter = load_all(os.path.join(comp, "queue-depth-hpa", "prometheus-adapter-rules.yaml"))[0]
        rule = adapter["rules"]["custom"][0]
        self.assertIn("ghostserve_queue_depth", rule["seriesQuery"])
        self.assertEqual(rule["name"]["as"], "ghostserve_queue_depth")

    @unittest.skipUnless(shutil.which("kubectl"), "kubectl not installed")
    def test_kustomize_renders(self):
        r = subprocess.run(["kubectl", "kustomize", lib.src(*K8S)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d]
        self.assertEqual(sorted(kinds), sorted(d["kind"] for d in self.docs))
        for d in yaml.safe_load_all(r.stdout):
            if d and d["kind"] != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), "ghostserve", d["kind"])
        # An overlay with both optional components (kustomize refuses an
        # overlay inside its base, so copy the base next to it).
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(lib.src(*K8S), os.path.join(tmp, "k8s"))
            os.mkdir(os.path.join(tmp, "overlay"))
            with open(os.path.join(tmp, "overlay", "kustomization.yaml"), "w") as f:
                f.write("resources: [../k8s]\ncomponents:\n  - ../k8s/components/servicemonitor\n"
                        "  - ../k8s/components/queue-depth-hpa\n")
            r = subprocess.run(["kubectl", "kustomize", os.path.join(tmp, "overlay")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        self.assertIn("ServiceMonitor", [d["kind"] for d in docs])
        hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
        self.assertEqual(sorted(m["type"] for m in hpa["spec"]["metrics"]), ["Pods", "Resource"])


if __name__ == "__main__":
    lib.main()
