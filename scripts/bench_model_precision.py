#!/usr/bin/python3
"""The model alone in each precision this CPU runs: ghostserve-model-bench
per width, batch size and precision, in interleaved rounds.

    scripts/bench_model_precision.py [--build build] [--models ghostnet_050,...]
        [--batch-sizes 1,8,32] [--seconds 1] [--rounds 3] [--threads 0]
        [--max-isa AVX2]

Per round, for every model, runs `ghostserve-model-bench --json` once per
precision (fp32; bf16 where oneDNN finds AVX512-BF16 or AMX; int8 where it
finds AVX2), alternating precisions within the round. int8 is calibrated in
process on random-normal images (`--calibration synthetic`): the ranges decide
scales and u8/s8 per map, not the work done. --max-isa sets ONEDNN_MAX_CPU_ISA
for the benchmarked processes (AVX2 makes an AVX-512 machine behave like an
AVX2-only one). Prints a table on stderr and one JSON object on stdout with
the medians and the ratios to fp32 in the same rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_precision import cpu  # noqa: E402


def bench(bin_dir, model, precision, batch_sizes, seconds, threads, env):
    cmd = [os.path.join(bin_dir, "ghostserve-model-bench"), "--model", model, "--precision",
           precision, "--batch-sizes", ",".join(map(str, batch_sizes)), "--seconds",
           str(seconds), "--json"]
    if threads > 0:
        cmd += ["--threads", str(threads)]
    if precision == "int8":
        cmd += ["--calibration", "synthetic"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                       timeout=900)
    if r.returncode != 0:
        return None, r.stderr.strip()[-300:]
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--models", default="ghostnet_050,ghostnet_100,ghostnet_130")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0: the CPUs available")
    ap.add_argument("--max-isa", default="")
    args = ap.parse_args()
    bin_dir = os.path.join(args.build, "bin")
    env = dict(os.environ)
    if args.max_isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.max_isa
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    models = args.models.split(",")
    samples = {}  # (model, precision, batch) -> [img/s]
    refused, isa = {}, None
    for _ in range(args.rounds):
        for model in models:
            for precision in ("fp32", "bf16", "int8"):
                if (model, precision) in refused:
                    continue
                out, err = bench(bin_dir, model, precision, batch_sizes, args.seconds,
                                 args.threads, env)
                if out is None:
                    refused[(model, precision)] = err
                    continue
                isa = out["cpu_isa"]
                for r in out["results"]:
                    samples.setdefault((model, precision, r["batch_size"]), []).append(
                        r["images_per_second"])
    result = {"cpu": cpu(), "onednn_isa": isa, "max_isa": args.max_isa or None,
              "threads": args.threads, "rounds": args.rounds, "seconds": args.seconds,
              "models": {}, "refused": {f"{m}/{p}": e for (m, p), e in refused.items()}}
    for model in models:
        rows = {}
        for precision in ("fp32", "bf16", "int8"):
            for b in batch_sizes:
                v = samples.get((model, precision, b))
                if not v:
                    continue
                med = statistics.median(v)
                base = statistics.median(samples[(model, "fp32", b)])
                rows.setdefault(precision, {})[str(b)] = {
                    "images_per_second": round(med, 1), "vs_fp32": round(med / base, 3),
                    "samples": [round(x, 1) for x in v]}
        result["models"][model] = rows
    print(f"oneDNN ISA {isa}; img/s, medians of {args.rounds} rounds (x fp32)", file=sys.stderr)
    for model, rows in result["models"].items():
        for precision, by_batch in rows.items():
            cells = "  ".join(f"b{b}: {r['images_per_second']:7.1f} ({r['vs_fp32']:.2f}x)"
                              for b, r in by_batch.items())
            print(f"{model:13s} {precision:5s} {cells}", file=sys.stderr)
    for k, e in result["refused"].items():
        print(f"{k}: refused: {e}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
