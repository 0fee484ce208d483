#!/usr/bin/python3
"""The Dockerfile and deploy/docker-compose.yaml have the structure the
deployment relies on (no Docker engine needed): a Debian bookworm build stage
that installs through scripts/install-deps.sh, a bookworm-slim runtime stage
running as a non-root user with both ports exposed, a HEALTHCHECK through
ghostserve-client health, the OpenCV pixel cap; a compose file whose
ghostserve/prometheus/grafana services mount files that exist in the repo."""
import os
import re
import subprocess
import unittest

import yaml

import deploy_testlib as lib


def stages(dockerfile):
    """[(FROM line, [instruction lines])], continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"FROM\s", line, re.I):
            out.append((line, []))
        elif out:
            out[-1][1].append(line)
    return out


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(lib.src("Dockerfile")) as f:
            cls.stages = stages(f.read())

    def instructions(self, stage, keyword):
        return [l for l in self.stages[stage][1] if l.split()[0].upper() == keyword]

    def test_build_stage(self):
        self.assertGreaterEqual(len(self.stages), 2, "multi-stage build")
        self.assertRegex(self.stages[0][0], r"^FROM debian:bookworm(\s|$)")
        runs = " ".join(self.instructions(0, "RUN"))
        self.assertIn("scripts/install-deps.sh", runs)
        self.assertIn("cmake", runs)

    def test_runtime_stage(self):
        self.assertRegex(self.stages[-1][0], r"^FROM debian:bookworm-slim(\s|$)")
        users = self.instructions(-1, "USER")
        self.assertTrue(users)
        user = users[-1].split()[1].split(":")[0]
        self.assertNotIn(user, ("root", "0"))
        self.assertEqual(user, "10001")  # deploy/k8s/deployment.yaml runs as 10001
        exposed = {p.split("/")[0] for l in self.instructions(-1, "EXPOSE") for p in l.split()[1:]}
        self.assertLessEqual({"50051", "8000", "9464"}, exposed)
        health = self.instructions(-1, "HEALTHCHECK")
        self.assertEqual(len(health), 1)
        self.assertIn("ghostserve-client", health[0])
        self.assertRegex(health[0], r'"health"|\bhealth\b')
        env = " ".join(self.instructions(-1, "ENV"))
        self.assertRegex(env, r"OPENCV_IO_MAX_IMAGE_PIXELS=\d+")
        self.assertIn("GHOSTSERVE_LISTEN=0.0.0.0:50051", env)
        self.assertIn("GHOSTSERVE_METRICS_LISTEN=0.0.0.0:9464", env)
        self.assertIn("GHOSTSERVE_HTTP_LISTEN=0.0.0.0:8000", env)
        self.assertIn('ENTRYPOINT ["/usr/local/bin/ghostserve"]', self.stages[-1][1])
        self.assertTrue(any("/models" in l for l in self.instructions(-1, "VOLUME")))


class ComposeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = lib.src("deploy")
        with open(os.path.join(cls.dir, "docker-compose.yaml")) as f:
            cls.compose = yaml.safe_load(f)
        cls.services = cls.compose["services"]

    def host_path(self, volume):
        return os.path.normpath(os.path.join(self.dir, volume.split(":")[0]))

    def test_services(self):
        self.assertLessEqual({"ghostserve", "prometheus", "grafana"}, set(self.services))

    def test_ghostserve_built_from_repo_dockerfile(self):
        build = self.services["ghostserve"]["build"]
        context = os.path.normpath(os.path.join(self.dir, build["context"]))
        self.assertEqual(context, os.path.normpath(lib.src()))
        self.assertTrue(os.path.isfile(os.path.join(context, build.get("dockerfile", "Dockerfile"))))
        ports = {p.split(":")[-1] for p in self.services["ghostserve"]["ports"]}
        self.assertLessEqual({"50051", "8000", "9464"}, ports)
        # The drain (20 s) fits in the stop grace period.
        grace = self.services["ghostserve"]["stop_grace_period"]
        self.assertGreater(int(grace.rstrip("s")), 20)
        env = self.services["ghostserve"]["environment"]
        for key in env:
            self.assertTrue(key.startswith("GHOSTSERVE_"), key)
        if lib.ARGS.ghostserve:
            help_flags = set(re.findall(r"\(env: (GHOSTSERVE_[A-Z_]+)\)", subprocess.run(
                [lib.ARGS.ghostserve, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=30).stdout))
            self.assertLessEqual(set(env), help_flags)

    def test_prometheus_mounts_checked_config(self):
        prom = self.services["prometheus"]
        mounts = {v.split(":")[1]: self.host_path(v) for v in prom["volumes"] if v.startswith(".")}
        self.assertEqual(mounts["/etc/prometheus/prometheus.yml"],
                         lib.src("deploy", "prometheus", "prometheus.yml"))
        # prometheus.yml loads alerts.yml relative to itself.
        self.assertEqual(mounts["/etc/prometheus/alerts.yml"], lib.src("deploy", "prometheus", "alerts.yml"))
        self.assertIn("--config.file=/etc/prometheus/prometheus.yml", prom["command"])
        with open(lib.src("deploy", "prometheus", "prometheus.yml")) as f:
            config = yaml.safe_load(f)
        self.assertEqual(config["rule_files"], ["alerts.yml"])
        targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
        self.assertEqual(targets, ["ghostserve:9464"])  # the compose service name and port
        self.assertEqual(config["scrape_configs"][0]["job_name"], "ghostserve")

    def test_grafana_provisioning_paths_exist(self):
        grafana = self.services["grafana"]
        mounts = {v.split(":")[1]: self.host_path(v) for v in grafana["volumes"] if v.startswith(".")}
        for target, host in mounts.items():
            self.assertTrue(os.path.exists(host), f"{host} (mounted at {target})")
        ds_dir = mounts["/etc/grafana/provisioning/datasources"]
        dash_dir = mounts["/etc/grafana/provisioning/dashboards"]
        datasources = []
        for name in os.listdir(ds_dir):
            with open(os.path.join(ds_dir, name)) as f:
                datasources += yaml.safe_load(f)["datasources"]
        self.assertTrue(any(d["type"] == "prometheus" and d["url"] == "http://prometheus:9090"
                            for d in datasources))
        providers = []
        for name in os.listdir(dash_dir):
            with open(os.path.join(dash_dir, name)) as f:
                providers += yaml.safe_load(f)["providers"]
        # The provider's path is where the dashboards directory is mounted,
        # and the dashboard is there.
        for p in providers:
            self.assertIn(p["options"]["path"], mounts)
            self.assertTrue(os.path.isfile(os.path.join(mounts[p["options"]["path"]], "ghostserve.json")))
        home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        if home:
            mount = next(t for t in mounts if home.startswith(t + "/"))
            self.assertTrue(os.path.isfile(os.path.join(mounts[mount], os.path.relpath(home, mount))))

    def test_ghostserve_models_mount_exists(self):
        for v in self.services["ghostserve"].get("volumes", []):
            if v.startswith("."):
                self.assertTrue(os.path.isdir(self.host_path(v)), v)


if __name__ == "__main__":
    lib.main()
