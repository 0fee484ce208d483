#!/usr/bin/python3
"""Measures the service against the raw model, in one run on one machine.

    scripts/bench_service.py [--build build] [--model ghostnet_100]
                             [--duration 20] [--concurrency 16]

1. ghostserve-model-bench: the model's best in-process images/s (batch 1, 8,
   16) and its batch-1 p50 latency.
2. ghostserve started on free loopback ports with its default batching.
3. ghostserve-client bench --concurrency C over real JPEGs: service images/s
   at saturation (client on the same cores).
4. ghostserve-client bench --concurrency 1: one client's p50 at low load.
Prints a summary on stderr and one JSON line on stdout with the ratios the
issue targets: service / raw >= 0.8 and p50 <= batch-1 p50 + max delay + 3 ms.
"""
import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default="ghostnet_100")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-batch-delay-us", type=int, default=2000)
    ap.add_argument("--server-args", default="", help="extra ghostserve flags")
    args = ap.parse_args()
    bin_dir = os.path.join(args.build, "bin")
    images = sorted(glob.glob(os.path.join(ROOT, "tests", "testdata", "*.jpg")))

    raw = run_json([os.path.join(bin_dir, "ghostserve-model-bench"), "--model", args.model,
                    "--batch-sizes", "1,8,16", "--seconds", "5", "--json"])
    best = max(raw["results"], key=lambda r: r["images_per_second"])
    b1 = next(r for r in raw["results"] if r["batch_size"] == 1)
    print(f"raw model: best {best['images_per_second']:.1f} img/s at batch "
          f"{best['batch_size']}, batch-1 p50 {b1['latency_ms_p50']:.2f} ms", file=sys.stderr)

    port, mport = free_port(), free_port()
    server = subprocess.Popen(
        [os.path.join(bin_dir, "ghostserve"), "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{mport}", "--models", args.model,
         "--max-batch-delay-us", str(args.max_batch_delay_us)] + args.server_args.split(),
        stderr=subprocess.PIPE, text=True)
    try:
        client = os.path.join(bin_dir, "ghostserve-client")
        addr = f"127.0.0.1:{port}"
        for _ in range(600):
            if subprocess.run([client, "health", "--server", addr, "--timeout-ms", "500"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("server did not become healthy")
        sat = run_json([client, "bench", "--server", addr, "--model", args.model,
                        "--concurrency", str(args.concurrency), "--duration",
                        str(args.duration), "--warmup", "2", "--json"] + images)
        low = run_json([client, "bench", "--server", addr, "--model", args.model,
                        "--concurrency", "1", "--duration", str(args.duration / 2),
                        "--warmup", "1", "--json"] + images)
    finally:
        server.terminate()
        server.wait(timeout=60)

    ratio = sat["images_per_second"] / best["images_per_second"]
    budget = b1["latency_ms_p50"] + args.max_batch_delay_us / 1000 + 3
    report = {
        "model": args.model,
        "raw_best_images_per_second": round(best["images_per_second"], 1),
        "raw_best_batch_size": best["batch_size"],
        "raw_batch1_p50_ms": round(b1["latency_ms_p50"], 2),
        "service_images_per_second": round(sat["images_per_second"], 1),
        "service_errors": sat["errors"],
        "service_latency_ms": sat["latency_ms"],
        "service_to_raw_ratio": round(ratio, 3),
        "low_load_p50_ms": round(low["latency_ms"]["p50"], 2),
        "low_load_budget_ms": round(budget, 2),
        "concurrency": args.concurrency,
        "max_batch_delay_us": args.max_batch_delay_us,
    }
    print(f"service: {sat['images_per_second']:.1f} img/s at concurrency "
          f"{args.concurrency} ({ratio:.2f}x raw); low-load p50 "
          f"{low['latency_ms']['p50']:.2f} ms (budget {budget:.2f} ms)", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
