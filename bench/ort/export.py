#!/usr/bin/python3
"""Exports one GhostNet width for the side-by-side benchmark, with the same
weights for every contender: ghostnet_ref.randomize(seed 0), as
tests/reference/eager_bench.py and jit_bench.py build it.

    bench/ort/export.py --width 1.0 --out DIR

Writes into DIR:
  ghostnet_<w>.pth    state_dict (ghostserve-model-bench --weights)
  ghostnet_<w>.onnx   torch.onnx.export, opset 13, dynamic batch axis
  check_input.bin     float32 NCHW [2,3,224,224], seed 1
  check_logits.bin    float32 [2,1000], the reference model's fp32 logits
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "tests", "reference"))
import ghostnet_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=float, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tag = f"{args.width:g}"
    model = ghostnet_ref.randomize(ghostnet_ref.GhostNet(width=args.width), 0).eval()
    torch.save(model.state_dict(), os.path.join(args.out, f"ghostnet_{tag}.pth"))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        torch.onnx.export(model, x, os.path.join(args.out, f"ghostnet_{tag}.onnx"),
                          opset_version=13, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}})
    x.numpy().astype("float32").tofile(os.path.join(args.out, "check_input.bin"))
    y.numpy().astype("float32").tofile(os.path.join(args.out, "check_logits.bin"))


if __name__ == "__main__":
    main()
