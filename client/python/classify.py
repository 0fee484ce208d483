#!/usr/bin/python3
"""Classifies image files with a ghostserve server from Python.

Generates the gRPC stubs from the repository's proto/ files at run time (with
grpc_tools.protoc, into a temporary directory; nothing generated is kept),
then sends each file to ghostserve.v1.Classifier/Classify and prints the
predictions. With --kserve it also sends all the files in one KServe v2
ModelInfer call (a BYTES [N] input) and prints the top class of each from the
returned probabilities.

  /usr/bin/python3 client/python/classify.py --server localhost:50051 \\
      --model ghostnet_100 --top-k 3 tests/testdata/chelsea.jpg
  /usr/bin/python3 client/python/classify.py --json --kserve \\
      --model ghostnet_050 tests/testdata/*.jpg

Needs grpcio, protobuf and grpcio-tools (Debian: python3-grpcio
python3-grpc-tools). Exit status: 0 when every call succeeded, 1 otherwise.
"""
import argparse
import importlib
import json
import os
import struct
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "proto")
PROTOS = ["ghostserve/v1/classifier.proto", "kserve/grpc_predict_v2.proto"]


def load_stubs(proto_dir, out_dir):
    """Runs protoc on PROTOS into out_dir and imports the generated modules.

    Returns (classifier_pb2, classifier_pb2_grpc, kserve_pb2, kserve_pb2_grpc).
    """
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}"] + [os.path.join(proto_dir, p) for p in PROTOS]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTOS} in {proto_dir}")
    # The generated modules import each other by package path
    # (ghostserve/v1/...): make the packages importable.
    for d in ("ghostserve", "ghostserve/v1", "kserve"):
        open(os.path.join(out_dir, d, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)
    return tuple(importlib.import_module(m) for m in (
        "ghostserve.v1.classifier_pb2", "ghostserve.v1.classifier_pb2_grpc",
        "kserve.grpc_predict_v2_pb2", "kserve.grpc_predict_v2_pb2_grpc"))


def classify(channel, pb, pb_grpc, path, image, model, top_k, timeout):
    stub = pb_grpc.ClassifierStub(channel)
    request = pb.ClassifyRequest(image=image, model=model, top_k=top_k,
                                 request_id=os.path.basename(path))
    response = stub.Classify(request, timeout=timeout)
    return {
        "file": path,
        "model": response.model,
        "request_id": response.request_id,
        "batch_size": response.batch_size,
        "timing_us": {"preprocess_wait": response.timing.preprocess_wait_us,
                      "preprocess": response.timing.preprocess_us, "queue": response.timing.queue_us,
                      "inference": response.timing.inference_us, "total": response.timing.total_us},
        "predictions": [{"class_index": p.class_index, "label": p.label, "score": p.score}
                        for p in response.predictions],
    }


def kserve_infer(channel, pb, pb_grpc, paths, images, model, timeout):
    """One ModelInfer call with the images as a BYTES [N] input; returns the
    top class index and probability of each."""
    request = pb.ModelInferRequest(model_name=model, id="python-example")
    tensor = request.inputs.add(name="images", datatype="BYTES", shape=[len(images)])
    tensor.contents.bytes_contents.extend(images)
    request.outputs.add(name="probabilities")
    response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=timeout)
    out = response.outputs[0]
    n, classes = out.shape
    # FP32 outputs come back as raw little-endian bytes, as Triton sends them.
    probs = struct.unpack(f"<{n * classes}f", response.raw_output_contents[0])
    results = []
    for i, path in enumerate(paths):
        row = probs[i * classes:(i + 1) * classes]
        best = max(range(classes), key=row.__getitem__)
        results.append({"file": path, "class_index": best, "probability": row[best]})
    return {"model": response.model_name, "output": out.name, "shape": list(out.shape),
            "results": results}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="JPEG or PNG files")
    ap.add_argument("--server", default="localhost:50051", help="gRPC target (default localhost:50051)")
    ap.add_argument("--model", required=True, help="model name, e.g. ghostnet_100")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    ap.add_argument("--kserve", action="store_true", help="also one KServe v2 ModelInfer call")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--proto-dir", default=DEFAULT_PROTO_DIR, help="the repository's proto/ directory")
    args = ap.parse_args()

    failed = 0
    images = {}
    for path in args.files:
        try:
            with open(path, "rb") as f:
                images[path] = f.read()
        except OSError as e:
            print(f"{path}: {e.strerror}", file=sys.stderr)
            failed += 1
    if not images:
        return 1
    with tempfile.TemporaryDirectory(prefix="ghostserve-stubs-") as stub_dir:
        pb, pb_grpc, kpb, kpb_grpc = load_stubs(args.proto_dir, stub_dir)
        with grpc.insecure_channel(args.server, options=[
                ("grpc.max_send_message_length", 64 * 2**20)]) as channel:
            for path, image in images.items():
                try:
                    result = classify(channel, pb, pb_grpc, path, image, args.model, args.top_k,
                                      args.timeout)
                except grpc.RpcError as e:
                    print(f"{path}: {e.code().name}: {e.details()}", file=sys.stderr)
                    failed += 1
                    continue
                if args.json:
                    print(json.dumps(result))
                else:
                    t = result["timing_us"]
                    print(f"{path}: model {result['model']}, batch size {result['batch_size']}, "
                          f"server total {t['total'] / 1000:.2f} ms")
                    for rank, p in enumerate(result["predictions"], 1):
                        print(f"  {rank:>2}  {p['class_index']:>4}  {p['label']:<30} {p['score']:.4f}")
            if args.kserve:
                try:
                    result = kserve_infer(channel, kpb, kpb_grpc, list(images), list(images.values()),
                                          args.model, args.timeout)
                except grpc.RpcError as e:
                    print(f"ModelInfer: {e.code().name}: {e.details()}", file=sys.stderr)
                    failed += 1
                else:
                    if args.json:
                        print(json.dumps({"kserve": result}))
                    else:
                        print(f"KServe ModelInfer {result['model']}: {result['output']} {result['shape']}")
                        for r in result["results"]:
                            print(f"  {r['file']}: class {r['class_index']} p={r['probability']:.4f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
