// ONNX Runtime side of ghostserve's side-by-side benchmark.
//
//   node bench/ort/ort_bench.js --model DIR/ghostnet_1.onnx --check-dir DIR \
//       --batch-sizes 1,8,32 --seconds 3 --threads 2
//
// CPU execution provider, intraOpNumThreads = --threads, interOpNumThreads 1,
// sequential execution, all graph optimisations. First runs check_input.bin
// and reports the max abs difference against check_logits.bin (export.py);
// then times each batch size. Prints one JSON line shaped like
// ghostserve-model-bench's ("results": [{batch_size, images_per_second,
// latency_ms_p50}]).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const a = {batchSizes: '1,8,32', seconds: 3, threads: 2, warmup: 3};
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (k === '--model') a.model = v;
    else if (k === '--check-dir') a.checkDir = v;
    else if (k === '--batch-sizes') a.batchSizes = v;
    else if (k === '--seconds') a.seconds = Number(v);
    else if (k === '--threads') a.threads = Number(v);
    else if (k === '--warmup') a.warmup = Number(v);
    else throw new Error(`unknown flag ${k}`);
  }
  if (!a.model) throw new Error('--model is required');
  return a;
}

function readF32(file) {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

function median(xs) {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function main() {
  const a = parseArgs(process.argv);
  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const out = {model: path.basename(a.model), engine: 'onnxruntime-node',
               threads: a.threads, results: []};
  if (a.checkDir) {
    const x = readF32(path.join(a.checkDir, 'check_input.bin'));
    const want = readF32(path.join(a.checkDir, 'check_logits.bin'));
    const n = x.length / (3 * 224 * 224);
    const r = await session.run({input: new ort.Tensor('float32', x, [n, 3, 224, 224])});
    const got = r.logits.data;
    let maxAbs = 0;
    for (let i = 0; i < want.length; ++i) maxAbs = Math.max(maxAbs, Math.abs(got[i] - want[i]));
    out.max_abs_diff_vs_reference = maxAbs;
  }
  for (const bs of a.batchSizes.split(',').map(Number)) {
    const data = new Float32Array(bs * 3 * 224 * 224);
    for (let i = 0; i < data.length; ++i) data[i] = Math.random() * 2 - 1;
    const feeds = {input: new ort.Tensor('float32', data, [bs, 3, 224, 224])};
    for (let i = 0; i < a.warmup; ++i) await session.run(feeds);
    const lat = [];
    const start = process.hrtime.bigint();
    let t1;
    for (;;) {
      const t0 = process.hrtime.bigint();
      await session.run(feeds);
      t1 = process.hrtime.bigint();
      lat.push(Number(t1 - t0) / 1e6);
      if (Number(t1 - start) / 1e9 >= a.seconds && lat.length >= 3) break;
    }
    const elapsed = Number(t1 - start) / 1e9;
    out.results.push({batch_size: bs, images_per_second: bs * lat.length / elapsed,
                      latency_ms_p50: median(lat)});
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
