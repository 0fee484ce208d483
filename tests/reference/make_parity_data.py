"""Writes parity fixtures for the C++ GhostNet: for each width, a checkpoint
in the published format (torch.save of the state dict OrderedDict, zip
archive) with random weights and non-trivial BatchNorm statistics, the same
weights as .safetensors, and an input batch with the reference logits.

    python3 make_parity_data.py OUT_DIR
"""
import collections
import copy
import json
import os
import struct
import sys

import torch

import ghostnet_ref

WIDTHS = {"ghostnet_050": 0.5, "ghostnet_100": 1.0, "ghostnet_130": 1.3}


def write_safetensors(path, tensors):
    """Minimal safetensors writer (the format is a JSON header + raw data),
    so the test needs no safetensors Python package."""
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for i, (name, width) in enumerate(WIDTHS.items()):
        model = ghostnet_ref.randomize(ghostnet_ref.GhostNet(width=width), 100 + i)
        model.eval()
        state = model.state_dict()
        assert isinstance(state, collections.OrderedDict)
        torch.save(state, os.path.join(out, f"{name}.pth"))
        write_safetensors(os.path.join(out, f"{name}.safetensors"), state)
        g = torch.Generator().manual_seed(7 + i)
        # Two images of different sizes would need two calls; use one batch of
        # 224x224 and one odd-sized batch to exercise padding arithmetic.
        x224 = torch.randn(3, 3, 224, 224, generator=g)
        x_odd = torch.randn(2, 3, 97, 131, generator=g)
        # Reference logits in float64: the truth the float32 C++ is held to.
        ref64 = copy.deepcopy(model).double()
        with torch.no_grad():
            fixtures = collections.OrderedDict(
                input_224=x224, logits_224=ref64(x224.double()),
                input_odd=x_odd, logits_odd=ref64(x_odd.double()))
        torch.save(fixtures, os.path.join(out, f"{name}.io.pth"))
        if name == "ghostnet_050":
            # What training scripts save: the weights under "state_dict" next
            # to an epoch counter and optimiser state (lists, dicts, floats,
            # momentum tensors), with DataParallel "module." prefixes.
            # The optimiser state comes from a copy, so the saved weights stay
            # the reference ones.
            trainee = copy.deepcopy(model).train()
            opt = torch.optim.SGD(trainee.parameters(), lr=0.1, momentum=0.9)
            trainee(torch.randn(2, 3, 64, 64)).sum().backward()
            opt.step()
            wrapped = collections.OrderedDict(
                ("module." + k, v) for k, v in model.state_dict().items())
            torch.save({"epoch": 3, "arch": "ghostnet", "best_top1": 0.5,
                        "state_dict": wrapped, "optimizer": opt.state_dict()},
                       os.path.join(out, f"{name}.train_checkpoint.pth"))
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
