#!/usr/bin/python3
"""LibTorch's own int8 engines against fp32, for GhostNet on CPU: static
post-training quantization (FX graph mode), same process, one thread,
interleaved rounds.

    /usr/bin/python3 scripts/bench_torch_quantized.py [--widths 0.5,1.0]
        [--batch-sizes 1,8] [--rounds 5] [--seconds 1] [--isa native,AVX2]
        [--no-asis] [--quick]

Model: tests/reference/ghostnet_ref.py, ghostnet_ref.randomize(seed 0) (the
weights bench_ort.py uses), eval mode, 224x224. Speed only; the weights are
random.

Quantization: torch.ao.quantization.quantize_fx prepare_fx / convert_fx with
get_default_qconfig_mapping(engine) and the native backend config (1.13 has
no oneDNN backend config), calibrated on 16 random N(0,1) images (4 batches of
4). Engines: those of fbgemm / x86 / qnnpack / onednn that
torch.backends.quantized.supported_engines lists (Debian's python3-torch
1.13.1 has qnnpack and onednn only; it is built without FBGEMM, and 'x86'
arrived in PyTorch 2.0). The engine is set before every timed round, since
elementwise quantized ops (add, mul, cat, hardsigmoid, pooling) pick their
kernels from it at run time.

Two versions of the network are quantized:
  * "patched" (variants <engine>_fx, <engine>_ts_frozen): the reference with
    three rewrites that leave fp32 outputs bit-identical (checked, reported as
    patch_fp32_max_abs_diff), so FX 1.13 quantizes the whole graph (one
    quantize at the input, one dequantize at the logits):
      - GhostModule returns cat([x1, x2]) without the out[:, :oup] slice when
        the slice keeps every channel (true for every GhostNet width: oup is
        a multiple of 4, so 2 * ceil(oup / 2) == oup). FX 1.13 does not treat
        getitem-with-slices as a quantizable op and wraps each of the 32
        slices in dequantize / quantize_per_tensor.
      - SqueezeExcite uses F.hardsigmoid (= relu6(x + 3) / 6) instead of
        relu6(x + 3) / 6.0: "truediv" has no quantized kernel, so each of
        the 7 SE blocks gets a float island around the division.
      - GhostNet's head uses torch.flatten(x, 1) and skips dropout in eval:
        x.view(x.size(0), -1) left conv_head (+ReLU) in float and dropout
        became a quantized::dropout call.
  * "as-is" (variants <engine>_asis_fx, <engine>_asis_ts_frozen): the
    reference unchanged, float islands and all (41 quantize / 41 dequantize
    pairs). --no-asis skips these.
fp32 variants run the patched model (same outputs): fp32_eager (BN
unfused), fp32_ts_frozen (torch.jit.trace + torch.jit.freeze, which folds BN)
and fp32_ts_ofi (+ torch.jit.optimize_for_inference, oneDNN-layout convs).
"_fx" is the converted torch.fx.GraphModule run eagerly; "_ts_frozen" is
torch.jit.trace + torch.jit.freeze of it (traced per batch size).

First-shape cache: in 1.13 the onednn engine's quantized conv / linear keep
one cached oneDNN primitive per packed weight, for the first input shape (and
scales) they see; every later call with another shape takes a slow path that
also re-reorders data on each call (the probe shows ~96 extra "reorder"
executions per forward at width 0.5). So every timed variant is a fresh
copy (copy.deepcopy of the GraphModule; trace+freeze also repacks) whose
first call has the timed batch size, and <engine>_fx_shape_miss is a copy
first called with batch + 1, i.e. what a server with mixed batch sizes gets
for all but one size.

Timing: torch.set_num_threads(1), set_num_interop_threads(1), no_grad,
OPENBLAS_NUM_THREADS=1 and OMP_NUM_THREADS=1 in the children's environment. Per
(width, batch) every variant warms up for ~0.5 s, then each round runs every
variant in turn for --seconds (A, B, C, ... A, B, C, ...); img/s is the
median over rounds, and ratios are ratios of medians from the same run.

ISA: each --isa entry is a child process of this script (oneDNN reads
ONEDNN_MAX_CPU_ISA once, at first use): "native" clears ONEDNN_MAX_CPU_ISA /
DNNL_MAX_CPU_ISA, anything else sets ONEDNN_MAX_CPU_ISA to it. The variable
only affects oneDNN (the onednn quantized engine, and the fp32 convolutions
PyTorch hands to oneDNN). QNNPACK has no ISA switch: its x86 micro-kernels
are SSE2 only. ATen's own vectorised kernels follow ATEN_CPU_CAPABILITY
(reported as aten_cpu_capability; not changed here). After timing, each
child runs every oneDNN-using variant once under
torch.backends.mkldnn.verbose and reports the oneDNN ISA line and the
primitive implementations used (kind, implementation, source data type ->
count).

Sanity: on 64 further random images, each quantized model's logits against
the fp32 model's: top-1 agreement, max and mean |diff|, and the fp32 logits'
max |x| and std for scale (random weights give small, close logits, so top-1
agreement is a harsh test here). The TorchScript copy's logits are checked
against the GraphModule's.

Prints a Markdown table on stderr and one JSON object on stdout.
"""
import argparse
import copy
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF_DIR = os.path.join(ROOT, "tests", "reference")
PY = "/usr/bin/python3"
WIDTH_NAMES = {0.5: "ghostnet_050", 1.0: "ghostnet_100", 1.3: "ghostnet_130"}
ENGINE_ORDER = ("fbgemm", "x86", "qnnpack", "onednn")
FP32 = ("fp32_eager", "fp32_ts_frozen", "fp32_ts_ofi")


# ---------------------------------------------------------------- CPU info

def lscpu():
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = {}
    for line in out.splitlines():
        key, _, val = line.partition(":")
        info[key.strip()] = val.strip()
    flags = info.get("Flags", "").split()
    interesting = [f for f in flags if f.startswith(("avx", "fma", "amx",
                                                     "sse4", "vnni", "f16c"))]
    return {
        "model_name": info.get("Model name"),
        "vendor": info.get("Vendor ID"),
        "family_model_stepping": "%s/%s/%s" % (info.get("CPU family"),
                                               info.get("Model"),
                                               info.get("Stepping")),
        "cpus": info.get("CPU(s)"),
        "max_mhz": info.get("CPU max MHz"),
        "simd_flags": interesting,
        "avx512_vnni": "avx512_vnni" in flags,
        "flags": flags,
    }


# ------------------------------------------------------------ model setup

def load_reference():
    sys.path.insert(0, REF_DIR)
    import ghostnet_ref
    return ghostnet_ref


def patched_classes(G):
    import torch
    import torch.nn.functional as F

    class GhostModuleP(G.GhostModule):
        def forward(self, x):
            x1 = self.primary_conv(x)
            x2 = self.cheap_operation(x1)
            out = torch.cat([x1, x2], dim=1)
            if (self.primary_conv[0].out_channels
                    + self.cheap_operation[0].out_channels) == self.oup:
                return out
            return out[:, :self.oup, :, :]

    class SqueezeExciteP(G.SqueezeExcite):
        def forward(self, x):
            s = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
            return x * F.hardsigmoid(s)

    class GhostNetP(G.GhostNet):
        def forward(self, x):
            x = self.act1(self.bn1(self.conv_stem(x)))
            x = self.blocks(x)
            x = self.global_pool(x)
            x = self.act2(self.conv_head(x))
            x = torch.flatten(x, 1)
            if self.dropout > 0.0 and self.training:
                x = F.dropout(x, p=self.dropout, training=True)
            return self.classifier(x)

    return {G.GhostModule: GhostModuleP, G.SqueezeExcite: SqueezeExciteP,
            G.GhostNet: GhostNetP}


def patch(model, classes):
    model = copy.deepcopy(model)
    for m in model.modules():
        if type(m) in classes:
            m.__class__ = classes[type(m)]
    return model


def graph_summary(gm):
    """Counts of quantize/dequantize nodes and of modules/functions left in
    float (not from a quantized namespace)."""
    import torch
    q = dq = 0
    float_ops = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is torch.quantize_per_tensor:
            q += 1
        elif n.op == "call_method" and n.target == "dequantize":
            dq += 1
        elif n.op == "call_module":
            cls = type(gm.get_submodule(n.target))
            if "quantized" not in cls.__module__:
                key = cls.__name__
                float_ops[key] = float_ops.get(key, 0) + 1
        elif n.op in ("call_function", "call_method"):
            name = getattr(n.target, "__name__", str(n.target))
            # these consume the dequantized (float) tensor in the graph
            if any(a.op == "call_method" and a.target == "dequantize"
                   for a in n.all_input_nodes):
                float_ops[name] = float_ops.get(name, 0) + 1
    return {"quantize_per_tensor": q, "dequantize": dq,
            "float_ops_after_dequantize_or_float_modules": float_ops}


def quantize(model, engine, calib, example):
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = engine
    t0 = time.perf_counter()
    prepared = prepare_fx(copy.deepcopy(model),
                          get_default_qconfig_mapping(engine), (example,))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    t1 = time.perf_counter()
    q = convert_fx(prepared)
    t2 = time.perf_counter()
    return q, {"prepare_calibrate_s": round(t1 - t0, 2),
               "convert_s": round(t2 - t1, 2)}


def trace_freeze(model, x, engine=None, ofi=False):
    import torch
    if engine:
        torch.backends.quantized.engine = engine
    with torch.no_grad():
        ts = torch.jit.freeze(torch.jit.trace(model, x).eval())
        if ofi:
            ts = torch.jit.optimize_for_inference(ts)
    return ts


def agreement(ref_logits, logits):
    import torch
    d = (logits - ref_logits).abs()
    return {
        "top1_agreement": round((logits.argmax(1) == ref_logits.argmax(1))
                                .float().mean().item(), 4),
        "max_abs_diff": round(d.max().item(), 5),
        "mean_abs_diff": round(d.mean().item(), 5),
        "fp32_logit_max_abs": round(ref_logits.abs().max().item(), 5),
        "fp32_logit_std": round(ref_logits.std().item(), 5),
        "n_images": int(ref_logits.shape[0]),
    }


def run_batched(fn, xs):
    import torch
    with torch.no_grad():
        return torch.cat([fn(x) for x in xs])


# ----------------------------------------------------------------- timing

def set_engine(engine):
    import torch
    if engine:
        torch.backends.quantized.engine = engine


def timed(fn, x, engine, seconds, min_calls=1):
    import torch
    set_engine(engine)
    n = 0
    with torch.no_grad():
        t0 = time.perf_counter()
        while True:
            fn(x)
            n += 1
            el = time.perf_counter() - t0
            if el >= seconds and n >= min_calls:
                return n * x.shape[0] / el


# ----------------------------------------------------------- oneDNN probe

_libc = ctypes.CDLL(None)


def capture_stdout(fn):
    """fd-level capture (oneDNN's verbose output is C printf)."""
    sys.stdout.flush()
    _libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            fn()
        finally:
            _libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")


def onednn_profile(fn, x, engine):
    import torch
    set_engine(engine)

    def go():
        with torch.no_grad():
            with torch.backends.mkldnn.verbose(
                    torch.backends.mkldnn.VERBOSE_ON):
                fn(x)
    text = capture_stdout(go)
    isa, prims = None, {}
    for line in text.splitlines():
        if not line.startswith(("onednn_verbose", "dnnl_verbose")):
            continue
        f = line.split(",")
        if f[1] == "info" and len(f) > 3 and f[3].startswith("isa:"):
            isa = f[3][4:]
        elif f[1] == "exec" and len(f) > 6:
            m = re.search(r"\bsrc_([a-z0-9]+)", f[6])
            key = "%s %s src=%s" % (f[3], f[4], m.group(1) if m else "?")
            prims[key] = prims.get(key, 0) + 1
    return isa, prims


# ------------------------------------------------------------------ child

def child(args):
    warnings.filterwarnings("ignore")
    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    G = load_reference()
    classes = patched_classes(G)
    engines = [e for e in ENGINE_ORDER
               if e in torch.backends.quantized.supported_engines]
    cap = [l.split(":", 1)[1].strip()
           for l in torch.__config__.show().splitlines()
           if "CPU capability usage" in l]
    out = {
        "onednn_max_cpu_isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "aten_cpu_capability": cap[0] if cap else None,
        "engines": engines,
        "widths": {}, "failures": [],
    }
    g = torch.Generator().manual_seed(1)
    calib = [torch.randn(4, 3, 224, 224, generator=g) for _ in range(4)]
    g = torch.Generator().manual_seed(2)
    evalx = [torch.randn(8, 3, 224, 224, generator=g) for _ in range(8)]

    for width in args.widths:
        wname = WIDTH_NAMES.get(width, "ghostnet_w%g" % width)
        log("[%s] %s: building" % (args.isa_label, wname))
        ref = G.randomize(G.GhostNet(width=width), 0).eval()
        pat = patch(ref, classes).eval()
        with torch.no_grad():
            ref_logits = run_batched(ref, evalx)
            pat_logits = run_batched(pat, evalx)
        wout = {
            "patch_fp32_max_abs_diff": (pat_logits - ref_logits).abs().max()
            .item(),
            "quantization": {}, "accuracy": {}, "graph": {}, "groups": {},
            "onednn_probe": {},
        }
        qmods = {}  # variant base name -> (GraphModule, engine)
        bases = [("", pat)] + ([] if args.no_asis else [("_asis", ref)])
        for eng in engines:
            for suffix, base in bases:
                name = eng + suffix
                try:
                    q, tinfo = quantize(base, eng, calib, calib[0])
                    wout["quantization"][name] = tinfo
                    wout["graph"][name] = graph_summary(q)
                    set_engine(eng)
                    logits = run_batched(q, evalx)
                    wout["accuracy"][name] = agreement(ref_logits, logits)
                    qmods[name] = (q, eng, logits)
                except Exception as e:  # noqa: BLE001 - reported
                    out["failures"].append("%s %s quantize: %r"
                                           % (wname, name, e))
        for batch in args.batch_sizes:
            x = torch.randn(batch, 3, 224, 224,
                            generator=torch.Generator().manual_seed(3))
            variants = [("fp32_eager", pat, None)]
            for vname, kw in (("fp32_ts_frozen", {}),
                              ("fp32_ts_ofi", {"ofi": True})):
                try:
                    variants.append((vname, trace_freeze(pat, x, **kw), None))
                except Exception as e:  # noqa: BLE001
                    out["failures"].append("%s b%d %s: %r"
                                           % (wname, batch, vname, e))
            for name, (q, eng, logits) in qmods.items():
                # A fresh copy per batch size whose first call has this
                # batch's shape (see "first-shape cache" above).
                set_engine(eng)
                qb = copy.deepcopy(q)
                with torch.no_grad():
                    qb(x)
                variants.append((name + "_fx", qb, eng))
                if not name.endswith("_asis"):
                    qm = copy.deepcopy(q)
                    with torch.no_grad():
                        qm(torch.randn(batch + 1, 3, 224, 224))
                    variants.append((name + "_fx_shape_miss", qm, eng))
                try:
                    ts = trace_freeze(qb, x, engine=eng)
                    set_engine(eng)
                    with torch.no_grad():
                        d = (ts(x) - qb(x)).abs().max().item()
                    wout["accuracy"][name].setdefault(
                        "ts_vs_fx_max_abs_diff", {})["b%d" % batch] = d
                    variants.append((name + "_ts_frozen", ts, eng))
                except Exception as e:  # noqa: BLE001
                    out["failures"].append("%s b%d %s_ts_frozen: %r"
                                           % (wname, batch, name, e))
            log("[%s] %s b%d: %d variants, warm-up"
                % (args.isa_label, wname, batch, len(variants)))
            for _, fn, eng in variants:
                timed(fn, x, eng, args.warmup, min_calls=3)
            samples = {v[0]: [] for v in variants}
            for r in range(args.rounds):
                for vname, fn, eng in variants:
                    samples[vname].append(timed(fn, x, eng, args.seconds))
                log("[%s] %s b%d round %d/%d" % (args.isa_label, wname,
                                                  batch, r + 1, args.rounds))
            med = {k: statistics.median(v) for k, v in samples.items()}
            fp32_best = max(med[k] for k in FP32 if k in med)
            grp = {"img_per_s_median": {k: round(v, 2) for k, v in med.items()},
                   "img_per_s_rounds": {k: [round(s, 2) for s in v]
                                        for k, v in samples.items()},
                   "ratio_vs_fp32_eager": {}, "ratio_vs_fp32_ts_frozen": {},
                   "ratio_vs_best_fp32": {}}
            for k, v in med.items():
                grp["ratio_vs_fp32_eager"][k] = round(v / med["fp32_eager"], 3)
                if "fp32_ts_frozen" in med:
                    grp["ratio_vs_fp32_ts_frozen"][k] = round(
                        v / med["fp32_ts_frozen"], 3)
                grp["ratio_vs_best_fp32"][k] = round(v / fp32_best, 3)
            wout["groups"]["b%d" % batch] = grp
            # which oneDNN primitives each variant ran, once, after timing
            probe = {}
            for vname, fn, eng in variants:
                if vname.startswith("qnnpack"):
                    continue
                isa, prims = onednn_profile(fn, x, eng)
                if isa:
                    wout["onednn_isa"] = isa
                probe[vname] = prims
            wout["onednn_probe"]["b%d" % batch] = probe
        out["widths"][wname] = wout
    print(json.dumps(out))


# ----------------------------------------------------------------- parent

def log(msg):
    print(msg, file=sys.stderr, flush=True)


def table(result):
    lines = []
    for isa, run in result["runs"].items():
        if "error" in run:
            lines.append("%s: FAILED %s" % (isa, run["error"]))
            continue
        lines.append("\n### ONEDNN_MAX_CPU_ISA=%s (oneDNN isa: %s; ATen: %s)"
                     % (isa, next((w.get("onednn_isa") for w in
                                   run["widths"].values()), None),
                        run["aten_cpu_capability"]))
        for wname, w in run["widths"].items():
            bs = list(w["groups"])
            lines.append("\n%s  img/s median (x vs fp32_eager, x vs "
                         "fp32_ts_frozen)" % wname)
            lines.append("| variant | " + " | ".join(bs) + " |")
            lines.append("|---|" + "---|" * len(bs))
            names = list(w["groups"][bs[0]]["img_per_s_median"])
            for n in names:
                cells = []
                for b in bs:
                    g = w["groups"][b]
                    if n in g["img_per_s_median"]:
                        cells.append("%.1f (%.2fx, %.2fx)" % (
                            g["img_per_s_median"][n],
                            g["ratio_vs_fp32_eager"][n],
                            g["ratio_vs_fp32_ts_frozen"].get(n, float("nan"))))
                    else:
                        cells.append("-")
                lines.append("| %s | %s |" % (n, " | ".join(cells)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", default="0.5,1.0")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--isa", default="native,AVX2",
                    help="comma list; 'native' = no ONEDNN_MAX_CPU_ISA")
    ap.add_argument("--no-asis", action="store_true",
                    help="skip quantizing the unmodified reference")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds of 0.3 s, width 0.5, for a smoke test")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--isa-label", default="native", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 2, 0.3, 0.2
        args.widths = "0.5"
    args.widths = [float(w) for w in args.widths.split(",")]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.child:
        child(args)
        return

    import torch
    result = {
        "script": "scripts/bench_torch_quantized.py",
        "argv": sys.argv[1:],
        "torch": torch.__version__,
        "supported_quantized_engines":
            list(torch.backends.quantized.supported_engines),
        "missing_engines": [e for e in ENGINE_ORDER if e not in
                            torch.backends.quantized.supported_engines],
        "qnnpack_isa": "SSE2 micro-kernels only on x86-64 (no runtime ISA "
                       "switch)",
        "threads": 1,
        "cpu": lscpu(),
        "runs": {},
    }
    t0 = time.time()
    for isa in args.isa.split(","):
        env = dict(os.environ)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        env.pop("DNNL_MAX_CPU_ISA", None)
        # One thread everywhere: Debian's libblas.so.3 is OpenBLAS (pthread),
        # which fp32 1x1 convs reach through slow_conv2d and which
        # torch.set_num_threads does not control (it starts nproc threads).
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["OMP_NUM_THREADS"] = "1"
        if isa != "native":
            env["ONEDNN_MAX_CPU_ISA"] = isa
        cmd = [PY, os.path.abspath(__file__), "--child", "--isa-label", isa,
               "--widths", ",".join("%g" % w for w in args.widths),
               "--batch-sizes", ",".join(map(str, args.batch_sizes)),
               "--rounds", str(args.rounds), "--seconds", str(args.seconds),
               "--warmup", str(args.warmup)]
        if args.no_asis:
            cmd.append("--no-asis")
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        try:
            result["runs"][isa] = json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            result["runs"][isa] = {"error": "child exit %d, stdout %r"
                                   % (p.returncode, p.stdout[-500:])}
    result["wall_s"] = round(time.time() - t0, 1)
    log(table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
