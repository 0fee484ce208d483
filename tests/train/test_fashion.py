"""End-to-end checks of custom models (issue 4), run by CTest with the built
binaries (flags as in tests/deploy/deploy_testlib.py; ghostserve-train comes
from $GHOSTSERVE_TRAIN_BIN).

* The built-in ghostnet_050_fashion, served by a real server, classifies the
  first 1,000 Fashion-MNIST test images (sent as PNG files, as a client would)
  with top-1 >= 0.90, and agrees with the same weights evaluated in process
  to within 0.1%.
* The whole custom-model path on a tiny budget: export PNGs, train on an
  ImageFolder, fine-tune from that checkpoint on IDX files, serve both through
  --model-config, and get the in-process accuracy back through gRPC.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import deploy_testlib as lib

FASHION = "/usr/share/datasets/fashion-mnist"
TRAIN_BIN = os.environ.get("GHOSTSERVE_TRAIN_BIN")


def run_json(cmd, timeout=600):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


class FashionTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ghostserve-fashion-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def serve(self, *flags):
        s = lib.GhostServe(extra_flags=["--executors", "2", *flags])
        self.servers.append(s)
        return s.start().wait_serving()

    def export(self, split, limit, out):
        got = run_json([TRAIN_BIN, "export", "--data", FASHION, "--split", split,
                        "--limit", str(limit), "--out", out])
        self.assertEqual(got["images"], limit)
        return out

    def test_builtin_model_through_grpc(self):
        images = self.export("t10k", 1000, os.path.join(self.tmp, "test"))
        server = self.serve("--models", "ghostnet_050_fashion")
        models = run_json([lib.ARGS.client, "models", "--server", server.target, "--json"])
        (m,) = models["models"]
        self.assertEqual(m["name"], "ghostnet_050_fashion")
        self.assertTrue(m["trained"])
        self.assertEqual((m["input_channels"], m["num_classes"]), (1, 10))

        grpc = run_json([lib.ARGS.client, "eval", "--server", server.target, "--model",
                         "ghostnet_050_fashion", "--concurrency", "8", images])
        self.assertEqual(grpc["images"], 1000)
        self.assertEqual(grpc["errors"], 0, grpc)
        self.assertGreaterEqual(grpc["top1"], 0.90, grpc)

        # The same weights in process (no gRPC, no PNG decoding, no batching).
        builtin = os.path.join(lib.ARGS.source_dir, "models", "ghostnet_050_fashion.json")
        local = run_json([TRAIN_BIN, "evaluate", "--model-config", builtin, "--data", FASHION,
                          "--limit", "1000", "--threads", "1"])
        self.assertEqual(local["images"], 1000)
        self.assertLessEqual(abs(grpc["top1"] - local["top1"]), 0.001, (grpc, local))

        # Labels are the dataset's class names.
        r = subprocess.run([lib.ARGS.client, "classify", "--server", server.target, "--model",
                            "ghostnet_050_fashion", "--top-k", "1", "--json",
                            os.path.join(images, "9", "00000.png")],
                           stdout=subprocess.PIPE, text=True, timeout=60, check=True)
        pred = json.loads(r.stdout)["predictions"][0]
        self.assertEqual(pred["label"], "Ankle boot")  # test image 0 is an ankle boot

    def test_reduced_precision_accuracy_gate(self):
        """Issue 11's gate: ghostnet_050_fashion's top-1 on all 10,000 test
        images, in every reduced precision this CPU runs natively, within 0.3
        points of fp32. A precision the CPU lacks must be refused with an
        error naming the missing feature (and is reported as not run)."""
        builtin = os.path.join(lib.ARGS.source_dir, "models", "ghostnet_050_fashion.json")

        def evaluate(precision):
            return subprocess.run([TRAIN_BIN, "evaluate", "--model-config", builtin, "--data",
                                   FASHION, "--precision", precision],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  timeout=600)

        fp32 = evaluate("fp32")
        self.assertEqual(fp32.returncode, 0, fp32.stderr)
        base = json.loads(fp32.stdout.strip().splitlines()[-1])
        self.assertEqual((base["images"], base["precision"]), (10000, "fp32"))
        self.assertGreaterEqual(base["top1"], 0.90)
        print(f"fp32: top-1 {base['top1']:.4f} on {base['images']} images")
        native = {"bf16": lib.cpu_has_native_bf16(), "int8": lib.cpu_has_int8()}
        missing = {"bf16": "needs a CPU with AVX512-BF16 or AMX-BF16",
                   "int8": "needs a CPU with AVX2"}
        for precision in ("bf16", "int8"):
            with self.subTest(precision=precision):
                r = evaluate(precision)
                if not native[precision]:
                    self.assertNotEqual(r.returncode, 0)
                    self.assertIn(missing[precision], r.stderr)
                    print(f"{precision}: not run, this CPU (as oneDNN sees it) lacks it: "
                          f"{r.stderr.strip()}")
                    continue
                self.assertEqual(r.returncode, 0, r.stderr)
                got = json.loads(r.stdout.strip().splitlines()[-1])
                self.assertEqual((got["images"], got["precision"]), (10000, precision))
                print(f"{precision}: top-1 {got['top1']:.4f} "
                      f"({100 * (got['top1'] - base['top1']):+.2f} points)")
                self.assertLessEqual(abs(got["top1"] - base["top1"]), 0.003, (base, got))

    def test_calibrate_writes_what_int8_loads(self):
        """ghostserve-train calibrate on a few training images writes a file
        that int8 evaluation loads; the same command gives the same file; the
        file is refused for other weights (a fine-tuned copy)."""
        builtin = os.path.join(lib.ARGS.source_dir, "models", "ghostnet_050_fashion.json")
        out = os.path.join(self.tmp, "a.calibration")
        cmd = [TRAIN_BIN, "calibrate", "--model-config", builtin, "--data", FASHION,
               "--images", "64", "--batch-size", "32", "--seed", "3", "--threads", "2"]
        got = run_json(cmd + ["--out", out])
        self.assertEqual((got["images"], got["out"]), (64, out))
        with open(out) as f:
            cal = json.load(f)
        self.assertEqual(cal["format"], "ghostserve-int8-calibration")
        self.assertEqual(cal["images"], 64)
        self.assertEqual(len(cal["ranges"]), got["steps"])
        self.assertTrue(all(lo <= hi for lo, hi in cal["ranges"].values()))
        # The shipped calibration was made for the same weights.
        with open(os.path.join(lib.ARGS.source_dir, "models",
                               "ghostnet_050_fashion.calibration")) as f:
            self.assertEqual(json.load(f)["fingerprint"], cal["fingerprint"])
        again = os.path.join(self.tmp, "b.calibration")
        run_json(cmd + ["--out", again])
        with open(out) as a, open(again) as b:
            self.assertEqual(a.read(), b.read())
        if not lib.cpu_has_int8():
            print("int8 evaluation not run: no AVX2 as oneDNN sees this CPU")
            return
        r = run_json([TRAIN_BIN, "evaluate", "--model-config", builtin, "--data", FASHION,
                      "--precision", "int8", "--calibration", out, "--limit", "500"])
        self.assertEqual((r["precision"], r["images"]), ("int8", 500))
        self.assertGreaterEqual(r["top1"], 0.88)
        # Other weights: a one-step fine-tune of the same model.
        tuned = os.path.join(self.tmp, "tuned")
        run_json([TRAIN_BIN, "train", "--data", FASHION, "--name", "tuned", "--width", "0.5",
                  "--input-size", "64", "--epochs", "1", "--limit-train", "64",
                  "--limit-val", "64", "--batch-size", "64", "--out-dir", tuned,
                  "--init", os.path.join(lib.ARGS.source_dir, "models",
                                         "ghostnet_050_fashion.safetensors"),
                  "--threads", "2"])
        bad = subprocess.run([TRAIN_BIN, "evaluate", "--model-config",
                              os.path.join(tuned, "tuned.json"), "--data", FASHION,
                              "--precision", "int8", "--calibration", out, "--limit", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=600)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("measured on other weights", bad.stderr)

    def test_train_finetune_and_serve_custom_models(self):
        folder = os.path.join(self.tmp, "folder")
        self.export("train", 600, os.path.join(folder, "train"))
        self.export("t10k", 200, os.path.join(folder, "val"))
        out = os.path.join(self.tmp, "models")

        # ImageFolder, grayscale, 32 px.
        first = run_json([TRAIN_BIN, "train", "--data", folder, "--name", "tiny_folder",
                          "--width", "0.5", "--input-size", "32", "--input-channels", "1",
                          "--epochs", "2", "--batch-size", "64", "--out-dir", out,
                          "--threads", "2"])
        self.assertEqual(first["val_images"], 200)
        with open(os.path.join(out, "tiny_folder.json")) as f:
            config = json.load(f)
        self.assertEqual(config["labels"], [str(k) for k in range(10)])  # directory names
        self.assertEqual((config["input_channels"], config["input_size"]), (1, 32))
        self.assertEqual(config["preprocess"]["crop_size"], 32)
        self.assertEqual(len(config["training"]["history"]), 2)
        self.assertTrue(os.path.exists(os.path.join(out, "tiny_folder.safetensors")))

        # Fine-tune that checkpoint on IDX files with a new head.
        second = run_json([TRAIN_BIN, "train", "--data", FASHION, "--name", "tiny_idx",
                           "--width", "0.5", "--input-size", "32", "--epochs", "1",
                           "--limit-train", "512", "--limit-val", "200", "--batch-size", "64",
                           "--init", os.path.join(out, "tiny_folder.safetensors"),
                           "--replace-head", "--optimizer", "adamw",
                           "--class-names", "a,b,c,d,e,f,g,h,i,j", "--out-dir", out,
                           "--threads", "2"])
        self.assertEqual(second["val_images"], 200)

        local = run_json([TRAIN_BIN, "evaluate", "--model-config",
                          os.path.join(out, "tiny_folder.json"), "--data", folder])
        self.assertEqual(local["images"], 200)

        # Both served from the directory, without the built-in models.
        server = self.serve("--models", "none", "--model-config", out)
        names = [m["name"] for m in
                 run_json([lib.ARGS.client, "models", "--server", server.target, "--json"])["models"]]
        self.assertEqual(sorted(names), ["tiny_folder", "tiny_idx"])
        grpc = run_json([lib.ARGS.client, "eval", "--server", server.target, "--model",
                         "tiny_folder", os.path.join(folder, "val")])
        self.assertEqual(grpc["errors"], 0)
        self.assertLessEqual(abs(grpc["top1"] - local["top1"]), 0.005, (grpc, local))
        # Class directories named by index match; labels a..j of tiny_idx do not
        # look like indices, but "eval" accepts an index or the label.
        grpc_idx = run_json([lib.ARGS.client, "eval", "--server", server.target, "--model",
                             "tiny_idx", os.path.join(folder, "val")])
        self.assertEqual(grpc_idx["errors"], 0)


if __name__ == "__main__":
    lib.main()
