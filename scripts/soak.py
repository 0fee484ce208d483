#!/usr/bin/python3
"""Soak test of a ghostserve server: mixed and hostile load for a bounded
time, then one JSON line with what happened to the calls and to the server.

  /usr/bin/python3 scripts/soak.py --ghostserve build/bin/ghostserve --duration 60
  /usr/bin/python3 scripts/soak.py --server localhost:50051 --pid 1234 \\
      --metrics-port 9464 --max-message-bytes 16777216 --duration 600

It starts a small server on loopback (port 0; one executor) unless --server
attaches to a running one (--pid gives the /proc figures). N client threads
send Classify calls across the served models with the JPEG/PNG photographs in
tests/testdata; about --hostile-fraction of them are hostile (random bytes,
truncated JPEG, 20 KB JPEG and PNG headers claiming 30000x30000, a JPEG with a
decoy frame header, wrong model name, a message over --max-message-bytes,
empty image, huge top_k), some are cancelled mid-flight, some carry deadlines
too short to be met, and client processes that stream requests are killed
with SIGKILL at random times. Every hostile kind has the codes it may get;
anything else (and INTERNAL/UNKNOWN anywhere) is "unexpected".

Reported: calls and codes per kind, unexpected codes with examples, VmRSS,
Threads and open fds from /proc/PID and process_resident_memory_bytes from
the metrics endpoint before and after the load (after a warm-up, with the
load's channels closed), and whether the server still answers SERVING.

  --refusal N     time N refusals of the 30000x30000 JPEG and PNG through
                  gRPC (median / p99 ms) and the RSS growth they cause
  --overload S    also start a second server with --max-queue-size 4 and
                  overload it for S seconds: shed rate (UNAVAILABLE fraction)
                  and the latency of the accepted calls
  --quick-checks  exit 1 unless: still SERVING, no unexpected code, every
                  hostile kind got an expected code, RSS growth under
                  --max-rss-growth-mb, threads and fds back near the start
Needs python3-grpcio and python3-grpc-tools (stubs are generated from proto/
into a temporary directory at start).
"""
import argparse
import concurrent.futures
import importlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = ["ghostserve/v1/classifier.proto"]
LISTENING_RE = re.compile(r"listening on \S+ \(port (\d+)\)(?:, HTTP on \S+ \(port \d+\))?, "
                          r"metrics on \S+ \(port (\d+)\)")
SERVER_FLAGS = ["--executors", "1", "--inference-threads", "1", "--preprocess-threads", "1"]

# What each kind of call may legitimately get. A normal call may also be
# CANCELLED (we cancelled it) or DEADLINE_EXCEEDED (its deadline was short);
# those are separate kinds.
EXPECTED = {
    "normal": {"OK"},
    "short_deadline": {"OK", "DEADLINE_EXCEEDED"},
    "cancelled": {"OK", "CANCELLED"},
    "random_bytes": {"INVALID_ARGUMENT"},
    # libjpeg decodes a JPEG cut after its headers with a warning (grey fill).
    "truncated_jpeg": {"OK", "INVALID_ARGUMENT"},
    "jpeg_30000x30000": {"INVALID_ARGUMENT"},
    "png_30000x30000": {"INVALID_ARGUMENT"},
    "jpeg_decoy_header": {"INVALID_ARGUMENT"},
    "wrong_model": {"NOT_FOUND"},
    "oversize_message": {"RESOURCE_EXHAUSTED"},
    "empty_image": {"INVALID_ARGUMENT"},
    "huge_top_k": {"INVALID_ARGUMENT"},
    "extreme_aspect_png": {"OK"},
}
HOSTILE_KINDS = [k for k in EXPECTED if k not in ("normal", "short_deadline", "cancelled")]
NEVER = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNIMPLEMENTED"}


# --------------------------------------------------------------------------
# Inputs

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, colour=0, rows=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def jpeg_with_size(jpeg, width, height):
    i = 2
    while i + 4 <= len(jpeg):
        marker = jpeg[i + 1]
        length = struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]
        i += 2 + length
    raise ValueError("no JPEG frame header")


class Inputs:
    def __init__(self, source_dir, max_message_bytes):
        testdata = os.path.join(source_dir, "tests", "testdata")
        self.images = []
        for name in sorted(os.listdir(testdata)):
            if name.endswith((".jpg", ".png")):
                with open(os.path.join(testdata, name), "rb") as f:
                    self.images.append(f.read())
        with open(os.path.join(testdata, "chelsea.jpg"), "rb") as f:
            jpg = f.read()
        self.jpg = jpg
        # 20 KB of a real JPEG whose frame header claims 30000x30000.
        self.jpeg_30000 = jpeg_with_size(jpg, 30000, 30000)[:20 * 1024]
        # A PNG claiming 30000x30000 with 20 KB of compressed rows behind it.
        rnd = random.Random(1)
        self.png_30000 = png(30000, 30000, rows=bytes(rnd.getrandbits(8) for _ in range(20 * 1024)))
        decoy = os.path.join(source_dir, "tests", "fuzz", "regressions",
                             "crafted-jpeg-ff00-decoy-sof.jpg")
        with open(decoy, "rb") as f:
            self.jpeg_decoy = f.read()
        self.extreme_png = png(4000, 2, colour=0, rows=(b"\x00" + b"\x80" * 4000) * 2)
        self.oversize = b"\xff\xd8\xff" + b"\x00" * (max_message_bytes + 1024)

    def request(self, pb, kind, rnd, models):
        model = rnd.choice(models)
        image, top_k = rnd.choice(self.images), rnd.randint(0, 5)
        if kind == "random_bytes":
            image = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 4096)))
        elif kind == "truncated_jpeg":
            image = self.jpg[:rnd.randint(3, len(self.jpg) - 1)]
        elif kind == "jpeg_30000x30000":
            image = self.jpeg_30000
        elif kind == "png_30000x30000":
            image = self.png_30000
        elif kind == "jpeg_decoy_header":
            image = self.jpeg_decoy
        elif kind == "wrong_model":
            model = "no_such_model_" + str(rnd.randint(0, 9))
        elif kind == "oversize_message":
            image = self.oversize
        elif kind == "empty_image":
            image = b""
        elif kind == "huge_top_k":
            top_k = rnd.choice([1001, 2**31, 2**32 - 1])
        elif kind == "extreme_aspect_png":
            image = self.extreme_png
        return pb.ClassifyRequest(image=image, model=model, top_k=top_k, request_id=kind)


# --------------------------------------------------------------------------
# Stubs, server, process figures

def load_stubs(proto_dir, out_dir):
    from grpc_tools import protoc
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}"] + [os.path.join(proto_dir, p) for p in PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS}")
    for d in ("ghostserve", "ghostserve/v1"):
        open(os.path.join(out_dir, d, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)
    return (importlib.import_module("ghostserve.v1.classifier_pb2"),
            importlib.import_module("ghostserve.v1.classifier_pb2_grpc"))


def health(channel, timeout=2.0):
    """grpc.health.v1.Health/Check for service "" without generated stubs:
    the request is empty and SERVING is field 1 = 1 (bytes 08 01)."""
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda x: x, response_deserializer=lambda x: x)
    try:
        return "SERVING" if check(b"", timeout=timeout) == b"\x08\x01" else "NOT_SERVING"
    except grpc.RpcError as e:
        return e.code().name


class Server:
    def __init__(self, binary, flags):
        fd, self.log = tempfile.mkstemp(prefix="ghostserve-soak-", suffix=".log")
        os.close(fd)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                 "--http-listen", "127.0.0.1:0", *flags],
                stdout=log, stderr=log)
        self.pid = self.proc.pid
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ghostserve exited with {self.proc.returncode}:\n{self.tail()}")
            with open(self.log, errors="replace") as f:
                m = LISTENING_RE.search(f.read())
            if m:
                self.target = f"127.0.0.1:{m.group(1)}"
                self.metrics_port = int(m.group(2))
                break
            if time.time() > deadline:
                raise RuntimeError("ghostserve did not start:\n" + self.tail())
            time.sleep(0.1)

    def tail(self):
        with open(self.log, errors="replace") as f:
            return f.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.remove(self.log)


def wait_serving(channel, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if health(channel) == "SERVING":
            return
        time.sleep(0.2)
    raise RuntimeError("server not SERVING")


def proc_figures(pid, metrics_port):
    out = {}
    if pid:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["vmrss_kb"] = int(line.split()[1])
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
        out["open_fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    if metrics_port:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                          timeout=10).read().decode()
            m = re.search(r"^process_resident_memory_bytes\s+(\S+)", text, re.M)
            if m:
                out["metrics_resident_memory_bytes"] = int(float(m.group(1)))
        except OSError as e:
            out["metrics_error"] = str(e)
    return out


def percentile(values, q):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# --------------------------------------------------------------------------
# Load

class Tally:
    def __init__(self):
        self.mu = threading.Lock()
        self.by_kind = {}
        self.unexpected = {}
        self.examples = []

    def add(self, kind, code, detail=""):
        with self.mu:
            k = self.by_kind.setdefault(kind, {})
            k[code] = k.get(code, 0) + 1
            if code not in EXPECTED[kind] or code in NEVER:
                key = f"{kind}:{code}"
                self.unexpected[key] = self.unexpected.get(key, 0) + 1
                if len(self.examples) < 10:
                    self.examples.append({"kind": kind, "code": code, "detail": detail[:300]})


def one_call(stub, pb, inputs, tally, rnd, models, hostile_fraction):
    r = rnd.random()
    if r < hostile_fraction:
        kind = rnd.choice(HOSTILE_KINDS)
    elif r < hostile_fraction + 0.05:
        kind = "short_deadline"
    elif r < hostile_fraction + 0.10:
        kind = "cancelled"
    else:
        kind = "normal"
    req = inputs.request(pb, "normal" if kind in ("short_deadline", "cancelled") else kind,
                         rnd, models)
    timeout = rnd.uniform(0.0005, 0.008) if kind == "short_deadline" else 30
    try:
        if kind == "cancelled":
            fut = stub.Classify.future(req, timeout=timeout)
            time.sleep(rnd.uniform(0, 0.01))
            fut.cancel()
            try:
                fut.result()
                tally.add(kind, "OK")
            except grpc.FutureCancelledError:
                tally.add(kind, "CANCELLED")
        else:
            stub.Classify(req, timeout=timeout)
            tally.add(kind, "OK")
    except grpc.RpcError as e:
        tally.add(kind, e.code().name, e.details() or "")


def child_client(target, stub_dir, source_dir, seed):
    """Runs in a subprocess until SIGKILLed: streams Classify requests."""
    sys.path.insert(0, stub_dir)
    pb = importlib.import_module("ghostserve.v1.classifier_pb2")
    pb_grpc = importlib.import_module("ghostserve.v1.classifier_pb2_grpc")
    inputs = Inputs(source_dir, 1 << 20)
    rnd = random.Random(seed)
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.ClassifierStub(channel)
    models = [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models]

    def requests():
        while True:
            yield inputs.request(pb, "normal", rnd, models)
    while True:
        try:
            for _ in stub.ClassifyStream(requests(), timeout=60):
                pass
        except grpc.RpcError:
            time.sleep(0.05)


def run_load(target, pid, pb, pb_grpc, inputs, models, args, stub_dir):
    tally = Tally()
    stop_at = time.time() + args.duration
    channels = []

    def worker(i):
        rnd = random.Random(args.seed * 1000 + i)
        # Separate channels, so one client's connection trouble stays its own.
        channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
        channels.append(channel)
        stub = pb_grpc.ClassifierStub(channel)
        while time.time() < stop_at:
            one_call(stub, pb, inputs, tally, rnd, models, args.hostile_fraction)

    kills = {"killed_clients": 0}

    def killer():
        rnd = random.Random(args.seed)
        while time.time() < stop_at - 1:
            child = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child-client", target,
                 "--stub-dir", stub_dir, "--source-dir", args.source_dir,
                 "--seed", str(rnd.randint(0, 1 << 30))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.8, 2.5))
            child.send_signal(signal.SIGKILL)
            child.wait()
            kills["killed_clients"] += 1
            time.sleep(rnd.uniform(0.1, 1.0))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    if args.kill_clients:
        threads.append(threading.Thread(target=killer))
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    for c in channels:
        c.close()
    return tally, elapsed, kills["killed_clients"]


def measure_refusals(channel, pb, pb_grpc, inputs, models, pid, metrics_port, n):
    stub = pb_grpc.ClassifierStub(channel)
    out = {}
    before = proc_figures(pid, metrics_port)
    for name, image in (("jpeg_30000x30000", inputs.jpeg_30000), ("png_30000x30000", inputs.png_30000)):
        times, codes = [], {}
        for _ in range(n):
            t = time.perf_counter()
            try:
                stub.Classify(pb.ClassifyRequest(image=image, model=models[0]), timeout=30)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            times.append((time.perf_counter() - t) * 1000)
            codes[code] = codes.get(code, 0) + 1
        out[name] = {"bytes": len(image), "calls": n, "codes": codes,
                     "median_ms": round(statistics.median(times), 3),
                     "p99_ms": round(percentile(times, 0.99), 3)}
    # For comparison: a real 451x300 JPEG that is decoded and classified.
    times = []
    for _ in range(n):
        t = time.perf_counter()
        stub.Classify(pb.ClassifyRequest(image=inputs.jpg, model=models[0]), timeout=30)
        times.append((time.perf_counter() - t) * 1000)
    out["served_jpeg_451x300"] = {"median_ms": round(statistics.median(times), 3)}
    after = proc_figures(pid, metrics_port)
    if "vmrss_kb" in before:
        out["rss_growth_kb"] = after["vmrss_kb"] - before["vmrss_kb"]
    return out


def measure_overload(binary, models, seconds, concurrency, pb, pb_grpc, inputs):
    """A second server with a tiny queue, overloaded: shed rate and the
    latency of the accepted calls."""
    flags = ["--models", models[0], *SERVER_FLAGS, "--max-queue-size", "4",
             "--max-batch-size", "4"]
    server = Server(binary, flags)
    try:
        channel = grpc.insecure_channel(server.target)
        wait_serving(channel)
        stub = pb_grpc.ClassifierStub(channel)
        req = pb.ClassifyRequest(image=inputs.jpg, model=models[0])
        codes, ok_ms = {}, []
        lock = threading.Lock()
        stop_at = time.time() + seconds

        def worker():
            while time.time() < stop_at:
                t = time.perf_counter()
                try:
                    stub.Classify(req, timeout=30)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == "OK":
                        ok_ms.append(ms)
        pool = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        total = sum(codes.values())
        still = health(channel)
        channel.close()
        return {"flags": " ".join(flags), "seconds": seconds, "client_threads": concurrency,
                "calls": total, "codes": codes,
                "shed_rate": round(codes.get("UNAVAILABLE", 0) / total, 4) if total else None,
                "accepted_per_s": round(codes.get("OK", 0) / seconds, 1),
                "accepted_p50_ms": round(percentile(ok_ms, 0.5), 2) if ok_ms else None,
                "accepted_p99_ms": round(percentile(ok_ms, 0.99), 2) if ok_ms else None,
                "accepted_max_ms": round(max(ok_ms), 2) if ok_ms else None,
                "health_after": still}
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ghostserve", help="server binary to start (default build/bin/ghostserve)")
    ap.add_argument("--server", help="attach to this HOST:PORT instead of starting a server")
    ap.add_argument("--pid", type=int, help="with --server: its pid, for /proc figures")
    ap.add_argument("--metrics-port", type=int, help="with --server: its metrics port")
    ap.add_argument("--source-dir", default=os.path.dirname(HERE))
    ap.add_argument("--models", default="ghostnet_050",
                    help="comma-separated models for the started server")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--hostile-fraction", type=float, default=0.1)
    ap.add_argument("--max-message-bytes", type=int, default=1 << 20,
                    help="the server's limit; the started server gets this value")
    ap.add_argument("--no-kill-clients", dest="kill_clients", action="store_false")
    ap.add_argument("--warmup", type=float, default=5, help="seconds of normal load first")
    ap.add_argument("--refusal", type=int, default=0, metavar="N")
    ap.add_argument("--overload", type=float, default=0, metavar="S")
    ap.add_argument("--overload-concurrency", type=int, default=32)
    ap.add_argument("--quick-checks", action="store_true")
    ap.add_argument("--max-rss-growth-mb", type=float, default=200)
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--child-client", help=argparse.SUPPRESS)
    ap.add_argument("--stub-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_client:
        child_client(args.child_client, args.stub_dir, args.source_dir, args.seed)
        return 0

    stub_dir = tempfile.mkdtemp(prefix="ghostserve-soak-stubs-")
    pb, pb_grpc = load_stubs(os.path.join(args.source_dir, "proto"), stub_dir)
    inputs = Inputs(args.source_dir, args.max_message_bytes)
    binary = args.ghostserve or os.path.join(args.source_dir, "build", "bin", "ghostserve")
    server = None
    if args.server:
        target, pid, metrics_port = args.server, args.pid, args.metrics_port
    else:
        server = Server(binary, ["--models", args.models, *SERVER_FLAGS,
                                 "--max-message-bytes", str(args.max_message_bytes)])
        target, pid, metrics_port = server.target, server.pid, server.metrics_port
    result = {"target": target}
    try:
        channel = grpc.insecure_channel(target)
        wait_serving(channel)
        stub = pb_grpc.ClassifierStub(channel)
        models = [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models]
        result["models"] = models
        # Warm up (thread pools, allocator arenas, OpenMP teams) before the
        # baseline, so the figures compare steady state with steady state.
        warm = argparse.Namespace(**{**vars(args), "duration": args.warmup, "kill_clients": False,
                                     "hostile_fraction": 0.0})
        run_load(target, pid, pb, pb_grpc, inputs, models, warm, stub_dir)
        time.sleep(1)
        start = proc_figures(pid, metrics_port)
        tally, elapsed, killed = run_load(target, pid, pb, pb_grpc, inputs, models, args, stub_dir)
        time.sleep(2)  # let the server notice the closed connections
        end = proc_figures(pid, metrics_port)
        serving = health(channel)
        total = sum(sum(c.values()) for c in tally.by_kind.values())
        codes = {}
        for c in tally.by_kind.values():
            for code, n in c.items():
                codes[code] = codes.get(code, 0) + n
        hostile = sum(sum(tally.by_kind.get(k, {}).values()) for k in HOSTILE_KINDS)
        result.update({
            "duration_s": round(elapsed, 1), "client_threads": args.threads,
            "calls": total, "hostile_calls": hostile,
            "served_ok": codes.get("OK", 0), "served_per_s": round(codes.get("OK", 0) / elapsed, 1),
            "codes": codes, "by_kind": tally.by_kind,
            "unexpected": tally.unexpected, "unexpected_examples": tally.examples,
            "killed_clients": killed,
            "start": start, "end": end,
            "rss_growth_mb": round((end["vmrss_kb"] - start["vmrss_kb"]) / 1024, 1)
            if "vmrss_kb" in start else None,
            "serving_at_end": serving,
        })
        if args.refusal:
            result["refusal"] = measure_refusals(channel, pb, pb_grpc, inputs, models, pid,
                                                 metrics_port, args.refusal)
        channel.close()
        if args.overload:
            result["overload"] = measure_overload(binary, models, args.overload,
                                                  args.overload_concurrency, pb, pb_grpc, inputs)
    finally:
        if server:
            server.stop()
        shutil.rmtree(stub_dir, ignore_errors=True)

    failures = []
    if args.quick_checks:
        if result["serving_at_end"] != "SERVING":
            failures.append(f"not SERVING at the end: {result['serving_at_end']}")
        if result["unexpected"]:
            failures.append(f"unexpected codes: {result['unexpected']}")
        for kind in HOSTILE_KINDS:
            got = tally.by_kind.get(kind)
            if not got:
                failures.append(f"hostile kind {kind} was never sent (duration too short?)")
        if result["rss_growth_mb"] is not None and result["rss_growth_mb"] > args.max_rss_growth_mb:
            failures.append(f"RSS grew {result['rss_growth_mb']} MB")
        if "threads" in start and end["threads"] > start["threads"] + 8:
            failures.append(f"threads {start['threads']} -> {end['threads']}")
        if "open_fds" in start and end["open_fds"] > start["open_fds"] + 4:
            failures.append(f"open fds {start['open_fds']} -> {end['open_fds']}")
        if result["served_ok"] == 0:
            failures.append("no call succeeded")
        result["check_failures"] = failures
    print(json.dumps(result, sort_keys=True))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
