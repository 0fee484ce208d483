#!/usr/bin/python3
"""What the access log costs: the same server with and without
--access-log (every request logged, --access-log-sample 1), in interleaved
rounds, measured by ghostserve-client bench (closed loop) on one file.

    scripts/bench_access_log.py [--build build] [--model ghostnet_050_fashion]
                                [--rounds 3] [--duration 8] [--concurrency 8]

The default model is the fastest one served, where a log line per request
weighs most. Prints one JSON line: images/s per round with the log off and
on, the per-round on/off ratios and their median, and the lines written.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, log_path):
    port = free_port()
    flags = ["--models", args.model, "--listen", f"127.0.0.1:{port}", "--http-listen", "",
             "--metrics-listen", ""]
    if log_path:
        flags += ["--access-log", log_path]
    with tempfile.TemporaryFile() as server_log:
        server = subprocess.Popen([os.path.join(args.build, "bin", "ghostserve"), *flags],
                                  stdout=server_log, stderr=server_log)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                server_log.seek(0)
                if b"ready:" in server_log.read():
                    break
                time.sleep(0.2)
            out = subprocess.run(
                [os.path.join(args.build, "bin", "ghostserve-client"), "bench", "--server",
                 f"127.0.0.1:{port}", "--model", args.model, "--concurrency", str(args.concurrency),
                 "--duration", str(args.duration), "--json", args.file],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"]
        finally:
            server.terminate()
            server.wait(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", default="ghostnet_050_fashion")
    ap.add_argument("--file", default=os.path.join(ROOT, "tests", "testdata", "coffee.jpg"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    off, on, lines = [], [], []
    log_path = os.path.join(tempfile.mkdtemp(prefix="access-log-bench-"), "access.log")
    for r in range(args.rounds):
        off.append(run(args, None))
        if os.path.exists(log_path):
            os.remove(log_path)
        on.append(run(args, log_path))
        with open(log_path) as f:
            lines.append(sum(1 for _ in f))
        print(f"round {r + 1}: off {off[-1]:.1f} img/s, on {on[-1]:.1f} img/s, "
              f"{lines[-1]} lines", file=sys.stderr)
    ratios = [b / a for a, b in zip(off, on)]
    print(json.dumps({"model": args.model, "concurrency": args.concurrency,
                      "images_per_second_off": off, "images_per_second_on": on,
                      "on_over_off": [round(x, 3) for x in ratios],
                      "on_over_off_median": round(statistics.median(ratios), 3),
                      "lines_written": lines}))


if __name__ == "__main__":
    main()
