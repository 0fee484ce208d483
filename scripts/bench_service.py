#!/usr/bin/python3
"""Measures the service against the raw model, in one run on one machine.

    scripts/bench_service.py [--build build] [--model ghostnet_100]
                             [--duration 20] [--concurrency 16] [--rounds 1]

1. ghostserve-model-bench: the model's best in-process images/s (batch 1, 8,
   16) and its batch-1 p50 latency.
2. ghostserve started on free loopback ports (gRPC, HTTP, metrics) with its
   default batching.
3. ghostserve-client bench --concurrency C over real JPEGs: service images/s
   at saturation over gRPC, then the same over the REST API (bench --http,
   POST /v1/models/M:classify, one keep-alive connection per client); with
   --rounds N the two alternate N times (gRPC, REST, gRPC, REST, ...) and
   the medians are reported. The client runs on the same cores.
   The same for each image set (--sets: jpeg = the JPEG photographs in
   tests/testdata, png = the same photographs re-encoded as PNG, mixed = both
   alternating) against ghostserve-pipeline-bench: the serving core in
   process with the same flags and thread plan, fed the same files by the
   same number of closed-loop callers, without RPC (decode + preprocess +
   batching + forward): the service's ceiling. Pipeline and service runs
   alternate within each round.
4. ghostserve-client bench --concurrency 1: one client's p50 at low load.
Prints a summary on stderr and one JSON line on stdout with the ratios the
issues target: service / raw >= 0.8, service / pipeline >= 0.9 per set,
p50 <= batch-1 p50 + max delay + 3 ms, and REST / gRPC images/s
(rest_vs_grpc) >= 0.9 at 16 clients.
"""
import argparse
import glob
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run_json(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... exited {proc.returncode}:\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_serving(client, addr, server, log):
    """Polls gRPC health until `server` (a Popen logging to the file `log`)
    serves at `addr`. Returns None, or the log's tail if the server exited;
    exits the script if it never becomes healthy."""
    for _ in range(600):
        if server.poll() is not None:
            log.seek(0)
            return f"ghostserve exited {server.returncode}:\n{log.read()[-3000:]}"
        if subprocess.run([client, "health", "--server", addr, "--timeout-ms", "500"],
                          capture_output=True).returncode == 0:
            return None
        time.sleep(0.2)
    raise SystemExit("server did not become healthy")


def wait_http_ready(hport, seconds=60):
    url = f"http://127.0.0.1:{hport}/v2/health/ready"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer 200 within {seconds} s")


def image_sets(jpegs, out_dir):
    """jpeg: the photographs; png: the same re-encoded as PNG (Pillow,
    default compression, as most encoders write them); mixed: alternating."""
    from PIL import Image
    pngs = []
    for path in jpegs:
        png = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        Image.open(path).save(png)
        pngs.append(png)
    mixed = [f for pair in zip(jpegs, pngs) for f in pair]
    return {"jpeg": jpegs, "png": pngs, "mixed": mixed}


def median_run(runs):
    """The median over rounds of images/s and of each latency figure."""
    return {
        "images_per_second": statistics.median(r["images_per_second"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "errors_by_code": {c: sum(r["errors_by_code"].get(c, 0) for r in runs)
                           for c in sorted({c for r in runs for c in r["errors_by_code"]})},
        "latency_ms": {k: round(statistics.median(r["latency_ms"][k] for r in runs), 3)
                       for k in runs[0]["latency_ms"]},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default="ghostnet_100")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1,
                    help="saturation runs per protocol, alternating gRPC and REST")
    ap.add_argument("--max-batch-delay-us", type=int, default=2000)
    ap.add_argument("--server-args", default="", help="extra ghostserve flags")
    ap.add_argument("--sets", default="jpeg,png,mixed",
                    help="image sets to compare the service and the in-process pipeline on")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    bin_dir = os.path.join(args.build, "bin")
    images = sorted(glob.glob(os.path.join(ROOT, "tests", "testdata", "*.jpg")))
    sets = [x for x in args.sets.split(",") if x]
    if set(sets) - {"jpeg", "png", "mixed"}:
        ap.error("--sets takes jpeg, png, mixed")
    tmp = tempfile.TemporaryDirectory(prefix="bench-service-")
    files = image_sets(images, tmp.name)

    raw = run_json([os.path.join(bin_dir, "ghostserve-model-bench"), "--model", args.model,
                    "--batch-sizes", "1,8,16", "--seconds", "5", "--json"])
    best = max(raw["results"], key=lambda r: r["images_per_second"])
    b1 = next(r for r in raw["results"] if r["batch_size"] == 1)
    print(f"raw model: best {best['images_per_second']:.1f} img/s at batch "
          f"{best['batch_size']}, batch-1 p50 {b1['latency_ms_p50']:.2f} ms", file=sys.stderr)

    port, hport, mport = free_port(), free_port(), free_port()
    # The server's log goes to a file: a pipe nobody reads would block it.
    server_log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(
        [os.path.join(bin_dir, "ghostserve"), "--listen", f"127.0.0.1:{port}",
         "--http-listen", f"127.0.0.1:{hport}",
         "--metrics-listen", f"127.0.0.1:{mport}", "--models", args.model,
         "--max-batch-delay-us", str(args.max_batch_delay_us)] + args.server_args.split(),
        stderr=server_log, text=True)
    try:
        client = os.path.join(bin_dir, "ghostserve-client")
        addr = f"127.0.0.1:{port}"
        exited = wait_serving(client, addr, server, server_log)
        if exited:
            raise SystemExit(exited)
        wait_http_ready(hport)
        saturation = ["--model", args.model, "--concurrency", str(args.concurrency),
                      "--duration", str(args.duration), "--warmup", "2", "--json"] + images
        grpc_runs, rest_runs = [], []
        pipe_runs = {name: [] for name in sets}
        svc_runs = {name: [] for name in sets}
        load = ["--model", args.model, "--concurrency", str(args.concurrency),
                "--duration", str(args.duration), "--warmup", "2", "--json"]
        for _ in range(args.rounds):
            grpc_runs.append(run_json([client, "bench", "--server", addr] + saturation))
            rest_runs.append(run_json([client, "bench", "--http", f"127.0.0.1:{hport}"]
                                      + saturation))
            for name in sets:
                pipe_runs[name].append(run_json(
                    [os.path.join(bin_dir, "ghostserve-pipeline-bench")] + load + files[name]
                    + ["--", "--max-batch-delay-us", str(args.max_batch_delay_us)]
                    + args.server_args.split()))
                svc_runs[name].append(
                    grpc_runs[-1] if name == "jpeg"
                    else run_json([client, "bench", "--server", addr] + load + files[name]))
        low = run_json([client, "bench", "--server", addr, "--model", args.model,
                        "--concurrency", "1", "--duration", str(args.duration / 2),
                        "--warmup", "1", "--json"] + images)
    finally:
        server.terminate()
        server.wait(timeout=60)

    sat = median_run(grpc_runs)
    rest = median_run(rest_runs)
    ratio = sat["images_per_second"] / best["images_per_second"]
    rest_ratio = rest["images_per_second"] / max(sat["images_per_second"], 1e-9)
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
        "rest_images_per_second": round(rest["images_per_second"], 1),
        "rest_errors": rest["errors"],
        "rest_errors_by_code": rest["errors_by_code"],
        "rest_latency_ms": rest["latency_ms"],
        "rest_vs_grpc": round(rest_ratio, 3),
        "rest_connects": [r["connects"] for r in rest_runs],
        "grpc_rounds_images_per_second": [round(r["images_per_second"], 1) for r in grpc_runs],
        "rest_rounds_images_per_second": [round(r["images_per_second"], 1) for r in rest_runs],
        "sets": {name: {
            "files": len(files[name]),
            "pipeline_images_per_second": round(statistics.median(
                r["images_per_second"] for r in pipe_runs[name]), 1),
            "service_images_per_second": round(statistics.median(
                r["images_per_second"] for r in svc_runs[name]), 1),
            "service_vs_pipeline": round(statistics.median(
                r["images_per_second"] for r in svc_runs[name]) / max(1e-9, statistics.median(
                    r["images_per_second"] for r in pipe_runs[name])), 3),
            "pipeline_mean_batch_size": round(statistics.median(
                r["mean_batch_size"] for r in pipe_runs[name]), 2),
            "pipeline_rounds_images_per_second": [round(r["images_per_second"], 1)
                                                  for r in pipe_runs[name]],
            "service_rounds_images_per_second": [round(r["images_per_second"], 1)
                                                 for r in svc_runs[name]],
        } for name in sets},
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "max_batch_delay_us": args.max_batch_delay_us,
    }
    print(f"service: {sat['images_per_second']:.1f} img/s at concurrency "
          f"{args.concurrency} ({ratio:.2f}x raw); low-load p50 "
          f"{low['latency_ms']['p50']:.2f} ms (budget {budget:.2f} ms)", file=sys.stderr)
    print(f"REST: {rest['images_per_second']:.1f} img/s at concurrency {args.concurrency}, "
          f"{rest_ratio:.2f}x gRPC (target >= 0.9), p50 {rest['latency_ms']['p50']:.2f} ms "
          f"vs gRPC {sat['latency_ms']['p50']:.2f} ms, {rest['errors']} errors", file=sys.stderr)
    for name, r in report["sets"].items():
        print(f"{name}: service {r['service_images_per_second']:.1f} img/s, in-process pipeline "
              f"{r['pipeline_images_per_second']:.1f} img/s: {r['service_vs_pipeline']:.2f}x "
              f"(target >= 0.9)", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
