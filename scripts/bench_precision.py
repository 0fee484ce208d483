#!/usr/bin/python3
"""Each precision this CPU runs natively, through the service: one client
(latency) and --concurrency clients (throughput), interleaved rounds.

    scripts/bench_precision.py [--build build] [--model ghostnet_100]
                               [--duration 10] [--concurrency 16] [--rounds 2]

Per round and precision (fp32; bf16 where the CPU has AVX512-BF16 or AMX-BF16
as oneDNN sees it; int8 where it has AVX2; a server asked for a precision the
CPU lacks refuses to start, which the script reports): starts `ghostserve
--model-config CONFIG --precision MODEL=P` on loopback with its defaults,
runs `ghostserve-client bench` over the JPEG photographs in tests/testdata
with 1 client, then with --concurrency clients, and stops the server.
Figures are medians over rounds. Prints a table on stderr and one JSON line
on stdout.

CONFIG is a model config for MODEL's untrained weights (the ones `--models
MODEL` serves) naming an int8 calibration, which the script makes first with
`ghostserve-train calibrate` on the same photographs (an ImageFolder of them):
int8 speed depends on the calibration's ranges only through the scales.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_service import free_port, run_json, wait_serving  # noqa: E402


def cpu():
    model, flags = "unknown", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                model = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")
    return {"model_name": model, "flags": sorted(f for f in wanted if f in flags)}


def make_config(bin_dir, model, images, tmp):
    """A model config for `model`'s untrained weights with an int8
    calibration measured on `images`; returns its path."""
    width = {"ghostnet_050": 0.5, "ghostnet_100": 1.0, "ghostnet_130": 1.3}[model]
    folder = os.path.join(tmp, "data", "train", "photos")
    os.makedirs(folder)
    for i in images:
        shutil.copy(i, folder)
    config = os.path.join(tmp, f"{model}.json")
    with open(config, "w") as f:
        json.dump({"name": model, "architecture": "ghostnet", "width": width,
                   "num_classes": 1000, "labels": "imagenet",
                   "calibration": f"{model}.calibration"}, f)
    run_json([os.path.join(bin_dir, "ghostserve-train"), "calibrate", "--model-config", config,
              "--data", os.path.join(tmp, "data"), "--images", str(len(images))])
    return config


def serve_and_measure(bin_dir, model, config, precision, images, duration, concurrency):
    """Returns the client results, or None (with the log) if the server
    refused to start."""
    port, hport, mport = free_port(), free_port(), free_port()
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(
        [os.path.join(bin_dir, "ghostserve"), "--listen", f"127.0.0.1:{port}",
         "--http-listen", f"127.0.0.1:{hport}", "--metrics-listen", f"127.0.0.1:{mport}",
         "--models", "none", "--model-config", config, "--precision", f"{model}={precision}"],
        stderr=log, stdout=log, text=True)
    client = os.path.join(bin_dir, "ghostserve-client")
    addr = f"127.0.0.1:{port}"
    try:
        exited = wait_serving(client, addr, server, log)
        if exited:
            return None, exited[-600:]
        common = ["bench", "--server", addr, "--model", model, "--duration", str(duration),
                  "--warmup", "2", "--json"]
        one = run_json([client] + common + ["--concurrency", "1"] + images)
        many = run_json([client] + common + ["--concurrency", str(concurrency)] + images)
        return {"one_client": one, "saturation": many}, None
    finally:
        server.terminate()
        server.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default="ghostnet_100")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    bin_dir = os.path.join(args.build, "bin")
    images = sorted(glob.glob(os.path.join(ROOT, "tests", "testdata", "*.jpg")))
    runs = {"fp32": [], "bf16": [], "int8": []}
    refused = {}
    tmp = tempfile.mkdtemp(prefix="bench_precision_")
    config = make_config(bin_dir, args.model, images, tmp)
    for r in range(args.rounds):
        for precision in runs:
            if precision in refused:
                continue
            got, why = serve_and_measure(bin_dir, args.model, config, precision, images,
                                         args.duration, args.concurrency)
            if got is None:
                refused[precision] = why.strip()
                print(f"{precision}: server refused to start: {refused[precision]}",
                      file=sys.stderr)
                continue
            runs[precision].append(got)
            print(f"round {r + 1}/{args.rounds} {precision} done", file=sys.stderr)

    def med(rs, part, key):
        def get(x):
            v = x[part]
            for k in key.split("."):
                v = v[k]
            return v
        return round(statistics.median(get(x) for x in rs), 2)

    out = {"model": args.model, "cpu": cpu(), "rounds": args.rounds, "duration_s": args.duration,
           "concurrency": args.concurrency, "refused": refused, "precisions": {}}
    print(f"| precision | 1 client p50 ms | 1 client p99 ms | 1 client img/s | "
          f"{args.concurrency} clients img/s | {args.concurrency} clients p50 ms |", file=sys.stderr)
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for precision, rs in runs.items():
        if not rs:
            continue
        row = {"one_client_p50_ms": med(rs, "one_client", "latency_ms.p50"),
               "one_client_p99_ms": med(rs, "one_client", "latency_ms.p99"),
               "one_client_images_per_second": med(rs, "one_client", "images_per_second"),
               "saturation_images_per_second": med(rs, "saturation", "images_per_second"),
               "saturation_p50_ms": med(rs, "saturation", "latency_ms.p50"),
               "errors": sum(x["one_client"]["errors"] + x["saturation"]["errors"] for x in rs)}
        out["precisions"][precision] = row
        print(f"| {precision} | {row['one_client_p50_ms']} | {row['one_client_p99_ms']} | "
              f"{row['one_client_images_per_second']} | {row['saturation_images_per_second']} | "
              f"{row['saturation_p50_ms']} |", file=sys.stderr)
    for p in ("bf16", "int8"):
        if "fp32" in out["precisions"] and p in out["precisions"]:
            f, b = out["precisions"]["fp32"], out["precisions"][p]
            out[f"{p}_vs_fp32"] = {
                "saturation": round(b["saturation_images_per_second"]
                                    / f["saturation_images_per_second"], 2),
                "one_client_latency": round(f["one_client_p50_ms"] / b["one_client_p50_ms"], 2)}
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
