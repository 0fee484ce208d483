"""TorchScript routes for the same GhostNet, for comparison with ghostserve:
trace + freeze in channels-last, and trace + freeze + optimize_for_inference.

    OPENBLAS_NUM_THREADS=1 python3 jit_bench.py --width 1.0 --seconds 3

Prints one JSON line with images/s per route and batch size.
"""
import argparse
import json
import time
import warnings

import torch

import ghostnet_ref


def bench(fn, x, seconds):
    for _ in range(3):
        fn(x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        fn(x)
        n += 1
    return x.size(0) * n / (time.perf_counter() - start)


def main():
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ghostnet_ref.randomize(ghostnet_ref.GhostNet(width=args.width), 0).eval()
    cl = torch.channels_last
    example = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        frozen_cl = torch.jit.freeze(
            torch.jit.trace(model.to(memory_format=cl), example.to(memory_format=cl)).eval())
        model = model.to(memory_format=torch.contiguous_format)
        ofi = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.trace(model, example).eval()))
    routes = {"frozen_channels_last": lambda x: frozen_cl(x.contiguous(memory_format=cl)),
              "optimize_for_inference": lambda x: ofi(x)}
    out = {"width": args.width, "threads": args.threads, "images_per_second": {}}
    with torch.inference_mode():
        for name, fn in routes.items():
            out["images_per_second"][name] = {
                bs: round(bench(fn, torch.randn(int(bs), 3, 224, 224), args.seconds), 1)
                for bs in args.batch_sizes.split(",")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
