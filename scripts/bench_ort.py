#!/usr/bin/python3
"""ghostserve against ONNX Runtime, TorchScript and eager PyTorch: same
weights, same threads, interleaved rounds, every width.

    scripts/bench_ort.py [--build build] [--quick] [--seconds 1] [--rounds 3]
                         [--batch-sizes 1,8,32] [--models ghostnet_050,...]
                         [--threads 2]

Per width, bench/ort/export.py writes the weights of
ghostnet_ref.randomize(seed 0) (the weights eager_bench.py and jit_bench.py
build) as a state_dict for ghostserve-model-bench --weights and as ONNX
(opset 13) for bench/ort/ort_bench.js. Before timing, ONNX Runtime's logits
are checked against the reference model's (max abs diff; ghostserve's own
parity with the reference is tests/parity, 1e-4), and the run stops if they
differ by more than 1e-4.

Each round runs, in turn: ghostserve-model-bench, ONNX Runtime (npm
onnxruntime-node, CPU provider, intra-op = --threads, inter-op 1, all graph
optimisations), TorchScript (jit_bench.py: trace+freeze channels-last and
trace+freeze+optimize_for_inference) and eager PyTorch, each as its own
process. Figures are medians over rounds.

% of fp32 peak = images/s * 2 * MACs per image / peak, where
peak = threads (one per physical core) * fp32 lanes (16 with AVX-512F, 8 with
AVX2) * 2 FMA units * 2 FLOP per FMA * clock (lscpu "CPU max MHz", else
/proc/cpuinfo "cpu MHz"). The real FMA-unit count and the AVX-512 licence
clock are not visible to software; the figure is an upper-bound peak.

Prints a Markdown table on stderr and one JSON line on stdout. onnxruntime-node
is installed on first use into bench/ort/node_modules by
`ONNXRUNTIME_NODE_INSTALL=skip npm ci` (package-lock.json pins it).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORT_DIR = os.path.join(ROOT, "bench", "ort")
REF_DIR = os.path.join(ROOT, "tests", "reference")
WIDTHS = {"ghostnet_050": 0.5, "ghostnet_100": 1.0, "ghostnet_130": 1.3}
PY = "/usr/bin/python3"
CONTENDERS = ("ghostserve", "onnxruntime", "torchscript_channels_last",
              "torchscript_optimize_for_inference", "eager_pytorch")


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_info(threads):
    flags, model, mhz = set(), "unknown", None
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, val = line.partition(":")
            key, val = key.strip(), val.strip()
            if key == "flags" and not flags:
                flags = set(val.split())
            elif key == "model name" and model == "unknown":
                model = val
            elif key == "cpu MHz" and mhz is None:
                mhz = float(val)
    clock_source = "/proc/cpuinfo cpu MHz"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"CPU max MHz:\s*([\d.]+)", lscpu)
        if m:
            mhz, clock_source = float(m.group(1)), "lscpu CPU max MHz"
    except OSError:
        pass
    if "avx512f" in flags:
        isa, lanes = "avx512", 16
    elif "avx2" in flags and "fma" in flags:
        isa, lanes = "avx2", 8
    else:
        isa, lanes = "sse", 4
    peak = threads * lanes * 2 * 2 * mhz * 1e6
    notable = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2", "fma")))
    return {"model_name": model, "isa": isa, "fp32_lanes": lanes, "fma_units": 2,
            "cores_used": threads, "clock_mhz": mhz, "clock_source": clock_source,
            "fp32_peak_gflops": round(peak / 1e9, 1), "flags": notable}


def ensure_ort():
    if os.path.isdir(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        return
    env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ORT_DIR,
                   check=True, env=env, stdout=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true",
                    help="1 round of 0.3 s per batch size (smoke run)")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--models", default=",".join(WIDTHS))
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 0.3, 1
    ensure_ort()
    work = os.path.join(args.build, "bench-ort")
    bench = os.path.join(args.build, "bin", "ghostserve-model-bench")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    # One BLAS thread in the Python contenders: PyTorch's own intra-op pool
    # carries the --threads, as in ghostserve and ORT.
    py_env = dict(os.environ, PYTHONPATH=REF_DIR, OPENBLAS_NUM_THREADS="1",
                  OMP_NUM_THREADS=str(args.threads))
    cpu = cpu_info(args.threads)
    report = {"cpu": cpu, "threads": args.threads, "inter_op_threads": 1,
              "seconds": args.seconds, "rounds": args.rounds, "models": []}
    common = ["--batch-sizes", args.batch_sizes, "--seconds", str(args.seconds),
              "--threads", str(args.threads)]
    for name in args.models.split(","):
        width = WIDTHS[name]
        out_dir = os.path.join(work, name)
        subprocess.run([PY, os.path.join(ORT_DIR, "export.py"), "--width",
                        str(width), "--out", out_dir], check=True,
                       capture_output=True, env=py_env)
        onnx = os.path.join(out_dir, f"ghostnet_{width:g}.onnx")
        weights = os.path.join(out_dir, f"ghostnet_{width:g}.pth")
        check = run_json(["node", os.path.join(ORT_DIR, "ort_bench.js"), "--model",
                          onnx, "--check-dir", out_dir, "--batch-sizes", "1",
                          "--seconds", "0", "--threads", str(args.threads)])
        diff = check["max_abs_diff_vs_reference"]
        print(f"{name}: ONNX Runtime vs reference logits, max abs diff {diff:.2e}",
              file=sys.stderr)
        if diff > 1e-4:
            sys.exit(f"{name}: ONNX Runtime's logits differ from the reference by {diff}")
        samples = {k: {bs: [] for bs in batch_sizes} for k in CONTENDERS}
        macs = params = None
        for r in range(args.rounds):
            g = run_json([bench, "--model", name, "--weights", weights, "--json"] + common)
            macs, params = g["macs"], g["parameters"]
            o = run_json(["node", os.path.join(ORT_DIR, "ort_bench.js"), "--model",
                          onnx] + common)
            j = run_json([PY, os.path.join(REF_DIR, "jit_bench.py"), "--width",
                          str(width)] + common, py_env)
            e = run_json([PY, os.path.join(REF_DIR, "eager_bench.py"), "--width",
                          str(width)] + common, py_env)
            for key, res in (("ghostserve", g), ("onnxruntime", o), ("eager_pytorch", e)):
                for row in res["results"]:
                    samples[key][row["batch_size"]].append(row["images_per_second"])
            for route in ("channels_last", "optimize_for_inference"):
                src = j["images_per_second"]["frozen_channels_last" if route ==
                                             "channels_last" else route]
                for bs in batch_sizes:
                    samples["torchscript_" + route][bs].append(src[str(bs)])
            print(f"{name}: round {r + 1}/{args.rounds} done", file=sys.stderr)
        med = {k: {bs: statistics.median(v[bs]) for bs in batch_sizes}
               for k, v in samples.items()}
        best = {k: max(v.values()) for k, v in med.items()}
        peak = cpu["fp32_peak_gflops"] * 1e9
        entry = {
            "model": name, "width": width, "parameters": params, "macs": macs,
            "ort_max_abs_diff_vs_reference": diff,
            "images_per_second": {k: {str(bs): round(x, 1) for bs, x in v.items()}
                                  for k, v in med.items()},
            "percent_of_fp32_peak": {k: {str(bs): round(100 * x * 2 * macs / peak, 1)
                                         for bs, x in v.items()}
                                     for k, v in med.items()},
            "ghostserve_vs_ort_batch1": round(med["ghostserve"][batch_sizes[0]] /
                                              med["onnxruntime"][batch_sizes[0]], 2),
            "ghostserve_vs_ort_best_batch": round(best["ghostserve"] / best["onnxruntime"], 2),
            "all_rounds": {k: {str(bs): [round(x, 1) for x in v[bs]] for bs in batch_sizes}
                           for k, v in samples.items()},
        }
        report["models"].append(entry)

    print(f"\nCPU: {cpu['model_name']}; {cpu['isa']}, {cpu['cores_used']} cores used, "
          f"{cpu['clock_mhz']:.0f} MHz ({cpu['clock_source']}); fp32 peak "
          f"{cpu['fp32_peak_gflops']} GFLOP/s", file=sys.stderr)
    cols = " | ".join(f"b{bs} img/s (% peak)" for bs in batch_sizes)
    print(f"\n| model | MMACs | engine | {cols} |", file=sys.stderr)
    print("|" + "---|" * (3 + len(batch_sizes)), file=sys.stderr)
    for m in report["models"]:
        for k in CONTENDERS:
            cells = " | ".join(f"{m['images_per_second'][k][str(bs)]:.1f} "
                               f"({m['percent_of_fp32_peak'][k][str(bs)]:.1f}%)"
                               for bs in batch_sizes)
            print(f"| {m['model']} | {m['macs'] / 1e6:.0f} | {k} | {cells} |", file=sys.stderr)
        print(f"| {m['model']} | | ghostserve / ORT | batch {batch_sizes[0]}: "
              f"{m['ghostserve_vs_ort_batch1']:.2f}x, best batch: "
              f"{m['ghostserve_vs_ort_best_batch']:.2f}x |", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
