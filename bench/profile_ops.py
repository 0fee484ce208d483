#!/usr/bin/python3
"""Ops per forward and time per ATen op for one GhostNet width, as the
reference model runs in eager PyTorch and as a frozen channels-last
TorchScript graph (the ops ghostserve's LibTorch forward dispatches are the
same ATen ops). Prints one JSON line: op counts per forward and the top ops
by self CPU time.

    PYTHONPATH=tests/reference bench/profile_ops.py --width 1.0 --batch 1

For the oneDNN side, count primitives and their times from ghostserve itself:
    ONEDNN_VERBOSE=1 build/bin/ghostserve-model-bench --model ghostnet_100 \\
        --batch-sizes 1 --seconds 0.2 | grep '^onednn_verbose,exec' \\
        | cut -d, -f4,5 | sort | uniq -c
"""
import argparse
import json
import os
import sys

import torch
from torch.autograd import profiler

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "reference"))
import ghostnet_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ghostnet_ref.randomize(ghostnet_ref.GhostNet(width=args.width), 0).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    cl = torch.channels_last
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model.to(memory_format=cl),
                                                  x.to(memory_format=cl)).eval())
    out = {"width": args.width, "batch": args.batch, "threads": args.threads, "routes": {}}
    for name, fn, inp in (("eager", model, x), ("frozen_channels_last", frozen,
                                                 x.contiguous(memory_format=cl))):
        with torch.inference_mode():
            for _ in range(3):
                fn(inp)
            with profiler.profile() as prof:
                for _ in range(args.iters):
                    fn(inp)
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in rows)
        out["routes"][name] = {
            "ms_per_forward": round(total / 1e3 / args.iters, 2),
            "ops_per_forward": {e.key: e.count // args.iters for e in rows
                                if e.key.startswith("aten::") and e.count >= args.iters},
            "top_self_cpu": [{"op": e.key, "ms_per_forward":
                              round(e.self_cpu_time_total / 1e3 / args.iters, 3),
                              "share": round(e.self_cpu_time_total / total, 3)}
                             for e in rows[:args.top]],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
