#!/usr/bin/python3
"""Writes the seed corpora of the weight-file reader fuzzers.

  /usr/bin/python3 tests/fuzz/make_reader_corpus.py   (Debian's python3-torch)

pickle/corpus/: small torch.save state dicts in the format of
tests/fuzz/reader_input.h (data.pkl and its data/N records, without the
zip), plus truncated and mutated copies. safetensors/corpus/: small
safetensors files, plus truncated and mutated copies. Deterministic.
"""
import collections
import io
import json
import os
import struct
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def pickle_input(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    pkl, records = b"", []
    for name in z.namelist():
        rel = name.split("/", 1)[1]  # archive/data.pkl -> data.pkl
        if rel == "data.pkl":
            pkl = z.read(name)
        elif rel.startswith("data/"):
            records.append((rel, z.read(name)))
    out = struct.pack("<I", len(pkl)) + pkl
    for rel, data in records:
        out += struct.pack("<I", len(rel)) + rel.encode() + struct.pack("<I", len(data)) + data
    return out


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    codes = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.bool: "BOOL",
             torch.uint8: "U8", torch.bfloat16: "BF16"}
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def variants(name, blob):
    """The file, two truncations and three byte flips."""
    yield name, blob
    yield name + "_trunc_half", blob[: len(blob) // 2]
    yield name + "_trunc_end", blob[:-3]
    for i, pos in enumerate((len(blob) // 7, len(blob) // 3, (2 * len(blob)) // 3)):
        b = bytearray(blob)
        b[pos] ^= 0xFF
        yield f"{name}_flip{i}", bytes(b)


def main():
    torch.manual_seed(0)
    small = collections.OrderedDict(
        [("conv.weight", torch.randn(2, 1, 3, 3)), ("bn.running_mean", torch.zeros(2)),
         ("bn.num_batches_tracked", torch.tensor(7))])
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    pickles = {
        "state_dict": small,
        "half_int_bool": collections.OrderedDict(
            [("h", torch.ones(3, dtype=torch.float16)), ("i", torch.arange(4)),
             ("b", torch.tensor([True, False]))]),
        "views": collections.OrderedDict(
            [("t", base.t()), ("row", base[1]), ("col", base[:, 2]), ("empty", torch.zeros(0, 5))]),
        "wrapped": {"state_dict": {"module.a": torch.ones(2), "module.b": torch.zeros(1)},
                    "epoch": 3, "lr": 0.1, "tags": ["x", "y"], "ok": True, "none": None},
        "parameter": collections.OrderedDict([("p", torch.nn.Parameter(torch.ones(2, 2)))]),
    }
    safes = {
        "state_dict": dict(small),
        "metadata": ({"a": torch.ones(2, 2), "b": torch.zeros(3, dtype=torch.int64)},
                     {"format": "pt"}),
        "dtypes": {"h": torch.ones(3, dtype=torch.float16), "bf": torch.ones(2, dtype=torch.bfloat16),
                   "u": torch.arange(5, dtype=torch.uint8), "b": torch.tensor([True]),
                   "empty": torch.zeros(0, 3), "scalar": torch.tensor(1.5)},
    }
    for sub, items, make in (
            ("pickle", pickles, pickle_input),
            ("safetensors", safes, lambda v: safetensors(*v) if isinstance(v, tuple) else safetensors(v))):
        d = os.path.join(HERE, sub, "corpus")
        os.makedirs(d, exist_ok=True)
        for name, obj in items.items():
            for vname, blob in variants(name, make(obj)):
                with open(os.path.join(d, vname), "wb") as f:
                    f.write(blob)


if __name__ == "__main__":
    main()
