#!/usr/bin/python3
"""Measures ghostserve's memory, to size the Kubernetes memory limit.

Starts a ghostserve on loopback, then reports its resident memory
(/proc/PID/status VmRSS, and the peak VmHWM) at three points, as one JSON line:

  warm       after all models loaded and warmed up (health SERVING)
  burst      after `ghostserve-client bench --concurrency 16` on the JPEG
             photographs of tests/testdata against every model (batches up to
             --max-batch-size, so every batch slab and oneDNN workspace exists)
  big        after a burst of near-max-size images: uncompressed PNGs of
             --big-bytes (default just under the 16 MiB message limit), sent
             --big-concurrency at a time, so the preprocessing queue holds
             that many max-size messages at once

  /usr/bin/python3 deploy/measure_memory.py --bin build/bin
  /usr/bin/python3 deploy/measure_memory.py --bin build/bin --big-concurrency 64 \
      -- --preprocess-queue 32
"""
import argparse
import glob
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(process_resident_memory_bytes|ghostserve_model_weight_bytes)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(3))
    return out


def snapshot(pid, mport):
    m = metrics(mport)
    return {
        "vm_rss_mib": round(status_kib(pid, "VmRSS") / 1024, 1),
        "vm_hwm_mib": round(status_kib(pid, "VmHWM") / 1024, 1),
        "process_resident_memory_mib": round(m.get("process_resident_memory_bytes", 0) / 2**20, 1),
        "model_weight_mib": round(m.get("ghostserve_model_weight_bytes", 0) / 2**20, 1),
    }


def big_png(path, nbytes):
    """An uncompressed (stored) RGB PNG of about nbytes, noise pixels."""
    width = 2048
    height = max(1, (nbytes - 1024) // (width * 3 + 1))
    row = bytes((i * 7919) % 251 for i in range(width * 3))
    raw = b"".join(b"\x00" + row for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)
    return len(png), width, height


def bench(client, port, model, files, concurrency, seconds):
    out = subprocess.run([client, "bench", "--server", f"127.0.0.1:{port}", "--model", model,
                          "--concurrency", str(concurrency), "--duration", str(seconds),
                          "--warmup", "0", "--json", *files],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--models", default="ghostnet_050,ghostnet_100,ghostnet_130")
    ap.add_argument("--executors", default="2")
    ap.add_argument("--preprocess-threads", default="1")
    ap.add_argument("--seconds", type=int, default=8, help="bench seconds per model")
    ap.add_argument("--big-bytes", type=int, default=16 * 2**20 - 64 * 1024)
    ap.add_argument("--big-concurrency", type=int, default=32)
    ap.add_argument("--big-seconds", type=int, default=15)
    ap.add_argument("server_flags", nargs="*", help="more ghostserve flags, after --")
    args = ap.parse_args()

    server, client = os.path.join(args.bin, "ghostserve"), os.path.join(args.bin, "ghostserve-client")
    gport, mport = free_port(), free_port()
    proc = subprocess.Popen([server, "--listen", f"127.0.0.1:{gport}", "--metrics-listen",
                             f"127.0.0.1:{mport}", "--http-listen", "", "--models", args.models, "--executors",
                             args.executors, "--preprocess-threads", args.preprocess_threads,
                             *args.server_flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {"flags": {"models": args.models, "executors": args.executors,
                        "preprocess_threads": args.preprocess_threads,
                        "more": args.server_flags}}
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            r = subprocess.run([client, "health", "--server", f"127.0.0.1:{gport}", "--timeout-ms", "1000"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            if r.stdout.startswith("SERVING"):
                break
            if proc.poll() is not None:
                sys.exit("ghostserve exited during start-up")
            time.sleep(0.5)
        else:
            sys.exit("ghostserve did not become SERVING in 300 s")
        result["warm"] = snapshot(proc.pid, mport)

        photos = sorted(glob.glob(os.path.join(ROOT, "tests", "testdata", "*.jpg")))
        for model in args.models.split(","):
            b = bench(client, gport, model, photos, 16, args.seconds)
            result.setdefault("burst_img_per_s", {})[model] = round(b.get("images_per_second", 0) or 0, 1)
        result["burst"] = snapshot(proc.pid, mport)

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "big.png")
            size, w, h = big_png(path, args.big_bytes)
            b = bench(client, gport, args.models.split(",")[0], [path], args.big_concurrency,
                      args.big_seconds)
            result["big_image"] = {"bytes": size, "width": w, "height": h,
                                   "concurrency": args.big_concurrency,
                                   "successes": b.get("successes"), "errors_by_code": b.get("errors_by_code")}
        result["big"] = snapshot(proc.pid, mport)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
