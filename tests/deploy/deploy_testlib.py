"""Shared helpers of the deploy tests (tests/deploy/test_*.py).

Every test script takes the same command-line flags, which CTest passes
(tests/deploy/CMakeLists.txt); anything else goes to unittest:

  --ghostserve PATH   the server binary
  --client PATH       ghostserve-client
  --source-dir DIR    the repository root

Servers are started on loopback on ports the kernel picks (port 0), small
(one model, one executor) and always killed in tearDown / finally.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

ARGS = argparse.Namespace(ghostserve=None, client=None, source_dir=None)

# Small enough for a 2-core machine shared with other tests.
SMALL_SERVER_FLAGS = ["--models", "ghostnet_050", "--executors", "1", "--inference-threads", "1",
                      "--preprocess-threads", "1"]
START_TIMEOUT_S = 120


def main():
    """Parses our flags, then runs the calling module's unittest tests."""
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--ghostserve", default=os.environ.get("GHOSTSERVE_BIN"))
    ap.add_argument("--client", default=os.environ.get("GHOSTSERVE_CLIENT_BIN"))
    ap.add_argument("--source-dir", default=os.path.dirname(os.path.dirname(here)))
    known, rest = ap.parse_known_args()
    ARGS.ghostserve, ARGS.client, ARGS.source_dir = known.ghostserve, known.client, known.source_dir
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


def src(*parts):
    return os.path.join(ARGS.source_dir, *parts)


def free_port():
    """A TCP port that was free a moment ago (bind port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def stop(proc, timeout=30):
    """SIGTERM, then SIGKILL after `timeout` seconds; always reaps."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class GhostServe:
    """A ghostserve process on loopback. It binds port 0 for gRPC and metrics
    and the ports it got are read from its start-up log, so parallel tests
    never race for a port."""

    LISTENING_RE = re.compile(r"listening on \S+ \(port (\d+)\)(?:, HTTP on \S+ \(port (?P<http>\d+)\))?, "
                              r"metrics on \S+ \(port (?P<metrics>\d+)\)")

    def __init__(self, extra_flags=(), log_path=None):
        self.log_path = log_path
        self.flags = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                      "--http-listen", "127.0.0.1:0",
                      *SMALL_SERVER_FLAGS, *extra_flags]
        self.proc = None
        self.grpc_port = self.metrics_port = self.http_port = self.target = None

    def start(self):
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="ghostserve-", suffix=".log")
            os.close(fd)
            self._own_log = True
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([ARGS.ghostserve, *self.flags], stdout=log, stderr=log)
        return self

    def _check_running(self, what):
        if self.proc.poll() is not None:
            raise RuntimeError(f"ghostserve exited with {self.proc.returncode} {what}{self._log_tail()}")

    def wait_listening(self, timeout=START_TIMEOUT_S):
        """Waits for the ports (logged once bound, before warm-up)."""
        deadline = time.time() + timeout
        while self.target is None:
            self._check_running("before listening")
            with open(self.log_path, errors="replace") as f:
                m = self.LISTENING_RE.search(f.read())
            if m:
                self.grpc_port, self.metrics_port = int(m.group(1)), int(m.group("metrics"))
                self.http_port = int(m.group("http")) if m.group("http") else None
                self.target = f"127.0.0.1:{self.grpc_port}"
                break
            if time.time() > deadline:
                raise RuntimeError(f"ghostserve not listening after {timeout} s{self._log_tail()}")
            time.sleep(0.1)
        return self

    def wait_serving(self, timeout=START_TIMEOUT_S):
        deadline = time.time() + timeout
        self.wait_listening(timeout)
        while time.time() < deadline:
            self._check_running("during start-up")
            r = subprocess.run([ARGS.client, "health", "--server", self.target, "--timeout-ms", "1000"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=10)
            if r.stdout.strip() == "SERVING":
                return self
            time.sleep(0.3)
        raise RuntimeError(f"ghostserve not SERVING after {timeout} s{self._log_tail()}")

    def _log_tail(self):
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return ":\n" + f.read()[-2000:]

    def metrics_text(self):
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def stop(self):
        stop(self.proc)
        if getattr(self, "_own_log", False) and os.path.exists(self.log_path):
            os.remove(self.log_path)


SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if m:
            labels = dict(LABEL_RE.findall(m.group(3) or ""))
            out.append((m.group(1), labels, float(m.group(4))))
    return out


def series_names(text):
    """Every sample name in an exposition (histograms give _bucket, _sum and
    _count), plus the family names from # TYPE lines."""
    names = {name for name, _, _ in parse_metrics(text)}
    names |= set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    return names


def yaml_docs(path):
    """Every non-empty YAML document of a file."""
    import yaml
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def cpu_cores(q):
    """A Kubernetes CPU quantity ("500m", "2") in cores."""
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def mem_bytes(q):
    """A Kubernetes memory quantity ("2560Mi", "1G") in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(q))
    return float(m.group(1)) * units.get(m.group(2) or "", 1)


def cpu_has_native_bf16():
    """True when oneDNN will see native bf16 instructions here: the CPU has
    AVX512-BF16 or AMX-BF16 (/proc/cpuinfo flags) and ONEDNN_MAX_CPU_ISA (or
    its old name DNNL_MAX_CPU_ISA) does not cap it below them. Worked out
    independently of the server's own check, which the tests compare with."""
    with open("/proc/cpuinfo") as f:
        flags = set()
        for line in f:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    if not ({"avx512_bf16", "amx_bf16"} & flags):
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL")
    cap = cap.upper()
    if cap in ("ALL", "DEFAULT", "AVX512_CORE_AMX"):
        return True
    return cap == "AVX512_CORE_BF16" and "avx512_bf16" in flags


def cpu_has_int8():
    """True when oneDNN will run int8 natively here: AVX2 or newer in the CPU
    flags and ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) not capping it below
    AVX2."""
    with open("/proc/cpuinfo") as f:
        flags = set()
        for line in f:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    if "avx2" not in flags:
        return False
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL")
    return cap.upper() not in ("SSE41", "AVX")


def sample_sum(text, name, **labels):
    return sum(v for n, l, v in parse_metrics(text)
               if n == name and all(l.get(k) == want for k, want in labels.items()))


def classify_json(client_args, timeout=120):
    """Runs `ghostserve-client classify --json ...`; returns (rc, [dict], stderr)."""
    import json
    r = subprocess.run([ARGS.client, "classify", "--json", *client_args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    return r.returncode, [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")], r.stderr
