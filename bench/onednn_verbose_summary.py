#!/usr/bin/python3
"""Time per forward by oneDNN primitive kind, from ONEDNN_VERBOSE output.

    ONEDNN_VERBOSE=1 build/bin/ghostserve-model-bench --model ghostnet_100 \\
        --precision int8 --calibration synthetic --batch-sizes 1 --seconds 1 \\
        --warmup 1 --json 2>&1 | bench/onednn_verbose_summary.py

Sums the `exec` lines' times by (primitive kind, depthwise or not,
implementation) and divides by the number of forwards, counted as the
classifier's inner products (ic1280oc1000, the ImageNet widths). In an int8
run the fp32 steps of the in-process calibration are left out. Plan builds
(weight reorders, thread tuning) are included, so compare the convolution
rows, not the totals.
"""
import collections
import sys


def main():
    lines = [l.strip().split(",") for l in sys.stdin if l.startswith("onednn_verbose,exec")]
    int8_run = any("src_u8" in f[6] for f in lines)
    agg = collections.defaultdict(lambda: [0, 0.0])
    forwards = 0
    for f in lines:
        kind, impl, dts, shape, ms = f[3], f[4], f[6], f[-2], float(f[-1])
        if int8_run and "src_f32" in dts and kind in ("convolution", "pooling_v2", "binary",
                                                      "inner_product"):
            continue  # the calibration's fp32 forward
        if kind == "inner_product" and "ic1280oc1000" in shape:
            forwards += 1
        depthwise = kind == "convolution" and "_g" in shape
        key = (kind, "depthwise" if depthwise else "", impl)
        agg[key][0] += 1
        agg[key][1] += ms
    if forwards == 0:
        raise SystemExit("no forward found (is ONEDNN_VERBOSE=1 set, and the model 1000-class?)")
    for (kind, dw, impl), (n, ms) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{ms / forwards:8.3f} ms/forward {n / forwards:6.1f} calls  {kind} {dw} {impl}")
    print(f"forwards {forwards}, total {sum(v[1] for v in agg.values()) / forwards:.3f} ms/forward")


if __name__ == "__main__":
    main()
