#!/usr/bin/python3
"""Overload on arrival: many callers send one large image each, all at once,
to a server with a small admission budget. How many are refused, how fast the
refusals come back, whether refused images were decoded, and the server's
peak memory.

  /usr/bin/python3 scripts/bench_overload.py --ghostserve build/bin/ghostserve \\
      [--callers 200] [--image tests/testdata/chelsea_16bit.png] [--model ghostnet_130] \\
      [--server-args "--max-queue-size 8 --max-batch-size 8"]

Prints one JSON line: codes, refusal round trip p50/p99 (client side, on
loopback), accepted p50, decodes counted by the server against the calls it
accepted, refusals by reason, and VmHWM (peak RSS) before and after the burst.
Needs python3-grpcio and python3-grpc-tools (stubs are generated like
scripts/soak.py does).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import soak  # noqa: E402  (same directory: Server, load_stubs, health, percentile)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def scrape(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for m in re.finditer(r"^(ghostserve_(?:decodes|refusals)_total\{[^}]*\}|"
                         r"ghostserve_refusal_duration_seconds_bucket\{[^}]*\})\s+(\S+)", text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def refusal_quantile_bound(delta, q):
    """Upper bound (bucket edge, ms) of the q-quantile of the server-side
    refusal times observed during the burst, from the histogram's buckets."""
    buckets = sorted((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), n)
                     for k, n in delta.items()
                     for m in [re.search(r'le="([^"]+)"', k)]
                     if k.startswith("ghostserve_refusal_duration_seconds_bucket"))
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    for le, n in buckets:
        if n >= q * total:
            return round(le * 1000, 3)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ghostserve", default=os.path.join(ROOT, "build", "bin", "ghostserve"))
    ap.add_argument("--callers", type=int, default=200)
    ap.add_argument("--image", default=os.path.join(ROOT, "tests", "testdata", "chelsea_16bit.png"))
    ap.add_argument("--model", default="ghostnet_130")
    ap.add_argument("--server-args", default="--max-queue-size 8 --max-batch-size 8")
    args = ap.parse_args()

    stub_dir = tempfile.mkdtemp(prefix="ghostserve-overload-stubs-")
    try:
        pb, pb_grpc = soak.load_stubs(os.path.join(ROOT, "proto"), stub_dir)
        flags = ["--models", args.model] + shlex.split(args.server_args)
        server = soak.Server(args.ghostserve, flags)
        try:
            channel = grpc.insecure_channel(server.target)
            soak.wait_serving(channel)
            stub = pb_grpc.ClassifierStub(channel)
            with open(args.image, "rb") as f:
                image = f.read()
            req = pb.ClassifyRequest(image=image, model=args.model, top_k=1)
            stub.Classify(req, timeout=60)  # first call: connection and caches
            before = scrape(server.metrics_port)
            hwm_before = vm_hwm_kb(server.pid)
            barrier = threading.Barrier(args.callers)
            results = [None] * args.callers

            def caller(i):
                barrier.wait()
                t = time.perf_counter()
                try:
                    stub.Classify(req, timeout=120)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                results[i] = (code, (time.perf_counter() - t) * 1000)

            threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = scrape(server.metrics_port)
            hwm_after = vm_hwm_kb(server.pid)
            still = soak.health(channel)
            channel.close()
        finally:
            server.stop()
    finally:
        shutil.rmtree(stub_dir, ignore_errors=True)

    codes = {}
    for code, _ in results:
        codes[code] = codes.get(code, 0) + 1
    refused = [ms for code, ms in results if code == "UNAVAILABLE"]
    accepted = [ms for code, ms in results if code == "OK"]
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}

    def pct(v, q):
        p = soak.percentile(v, q)
        return round(p, 2) if p is not None else None

    print(json.dumps({
        "server_flags": " ".join(flags), "callers": args.callers,
        "image": os.path.basename(args.image), "image_bytes": len(image), "codes": codes,
        "refusal_ms": {"p50": pct(refused, 0.5), "p99": pct(refused, 0.99)},
        # Server side, arrival to answer (ghostserve_refusal_duration_seconds):
        # the bucket edge at or above the quantile.
        "server_refusal_ms_at_most": {"p50": refusal_quantile_bound(delta, 0.5),
                                      "p99": refusal_quantile_bound(delta, 0.99)},
        "accepted_ms": {"p50": pct(accepted, 0.5), "max": pct(accepted, 1.0)},
        "server_counters_during_burst": {k: v for k, v in delta.items() if "_bucket" not in k},
        "vm_hwm_kb": {"before": hwm_before, "after": hwm_after},
        "health_after": still}))


if __name__ == "__main__":
    main()
