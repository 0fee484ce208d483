#!/usr/bin/python3
"""Compares ghostserve's in-process GhostNet with eager PyTorch, in one run on
one machine, for every width.

    scripts/bench_model.py [--build build] [--seconds 3] [--rounds 3]
                           [--batch-sizes 1,8,32] [--models ghostnet_100,...]

Rounds interleave the contenders (ghostserve, eager PyTorch as installed,
eager PyTorch with OPENBLAS_NUM_THREADS=1) so drift on a shared machine hits
them alike; the figures are medians over rounds. Prints a Markdown table on
stderr and one JSON line on stdout.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTHS = {"ghostnet_050": 0.5, "ghostnet_100": 1.0, "ghostnet_130": 1.3}


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--models", default=",".join(WIDTHS))
    args = ap.parse_args()

    bench = os.path.join(args.build, "bin", "ghostserve-model-bench")
    eager = os.path.join(ROOT, "tests", "reference", "eager_bench.py")
    base_env = dict(os.environ)
    base_env["PYTHONPATH"] = os.path.join(ROOT, "tests", "reference")
    tuned_env = dict(base_env, OPENBLAS_NUM_THREADS="1")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    report = {"threads": args.threads, "seconds": args.seconds,
              "rounds": args.rounds, "models": []}
    for name in args.models.split(","):
        width = WIDTHS[name]
        samples = {"ghostserve": {}, "eager": {}, "eager_openblas1": {}}
        info = {}
        for r in range(args.rounds):
            g = run_json([bench, "--model", name, "--batch-sizes", args.batch_sizes,
                          "--seconds", str(args.seconds), "--threads",
                          str(args.threads), "--json"])
            info = {"parameters": g["parameters"], "macs": g["macs"]}
            e_cmd = ["/usr/bin/python3", eager, "--width", str(width),
                     "--batch-sizes", args.batch_sizes, "--seconds",
                     str(args.seconds), "--threads", str(args.threads)]
            e = run_json(e_cmd, base_env)
            t = run_json(e_cmd, tuned_env)
            for key, res in (("ghostserve", g), ("eager", e), ("eager_openblas1", t)):
                for row in res["results"]:
                    samples[key].setdefault(row["batch_size"], []).append(
                        row["images_per_second"])
            print(f"{name}: round {r + 1}/{args.rounds} done", file=sys.stderr)
        med = {k: {bs: statistics.median(v[bs]) for bs in batch_sizes}
               for k, v in samples.items()}
        best = {k: max(v.values()) for k, v in med.items()}
        entry = dict(model=name, width=width, **info,
                     images_per_second={k: {str(bs): round(x, 1) for bs, x in v.items()}
                                        for k, v in med.items()},
                     ratio_batch1={k: round(med["ghostserve"][1] / med[k][1], 2)
                                   for k in ("eager", "eager_openblas1")}
                     if 1 in batch_sizes else None,
                     ratio_best_batch={k: round(best["ghostserve"] / best[k], 2)
                                       for k in ("eager", "eager_openblas1")})
        report["models"].append(entry)

    cols = " | ".join(f"b{bs}" for bs in batch_sizes)
    print(f"\n| model | params | MMACs | impl | {cols} | x eager b1 | x eager best |",
          file=sys.stderr)
    print("|" + "---|" * (6 + len(batch_sizes)), file=sys.stderr)
    for m in report["models"]:
        for impl in ("ghostserve", "eager", "eager_openblas1"):
            ips = " | ".join(f"{m['images_per_second'][impl][str(bs)]:.1f}"
                             for bs in batch_sizes)
            r1 = rb = ""
            if impl == "ghostserve":
                r1 = " / ".join(f"{v:.2f}" for v in (m["ratio_batch1"] or {}).values())
                rb = " / ".join(f"{v:.2f}" for v in m["ratio_best_batch"].values())
            print(f"| {m['model']} | {m['parameters']:,} | {m['macs'] / 1e6:.1f} | "
                  f"{impl} | {ips} | {r1} | {rb} |", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
