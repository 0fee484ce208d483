"""Eager PyTorch GhostNet throughput, for comparison with ghostserve.

    python3 eager_bench.py --width 1.0 --batch-sizes 1,8,32 --seconds 3

Prints one JSON line shaped like ghostserve-model-bench's. Plain eager mode,
as a PyTorch user would run it: model.eval(), torch.inference_mode(), NCHW,
torch.set_num_threads(threads). The environment (e.g. OPENBLAS_NUM_THREADS)
is whatever the caller passes.
"""
import argparse
import json
import statistics
import time

import torch

import ghostnet_ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = ghostnet_ref.randomize(ghostnet_ref.GhostNet(width=args.width), 0).eval()
    results = []
    with torch.inference_mode():
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            x = torch.randn(bs, 3, 224, 224)
            for _ in range(args.warmup):
                model(x)
            lat = []
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                model(x)
                t1 = time.perf_counter()
                lat.append((t1 - t0) * 1e3)
                if t1 - start >= args.seconds and len(lat) >= 3:
                    break
            results.append({"batch_size": bs,
                            "images_per_second": bs * len(lat) / (t1 - start),
                            "latency_ms_p50": statistics.median(lat)})
    print(json.dumps({"model": f"eager_pytorch_w{args.width}",
                      "threads": args.threads, "torch": torch.__version__,
                      "results": results}))


if __name__ == "__main__":
    main()
