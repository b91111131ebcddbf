/**
 * GPU offload decisions without a GPU: how many layers fit (`--gpu-layers auto`), which
 * devices, `op_offload` off when nothing is offloaded, and a model's footprint read from
 * its GGUF header.
 */
import assert from "node:assert/strict";
import {
  computeReserve,
  type Device,
  layersThatFit,
  type ModelFootprint,
  modelFootprint,
  planOffload,
} from "../src/llm/devices.ts";
import { readGgufHeader } from "../src/llm/gguf.ts";
import { TINY_MODEL } from "../src/llm/synthetic_model.ts";
import { tinyModel } from "./llm_helpers.ts";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** 8 blocks of 100 MiB, a 50 MiB output layer, 1 KiB of KV per cell per layer. */
const FP: ModelFootprint = {
  layerBytes: new Array(8).fill(100 * MiB),
  outputBytes: 50 * MiB,
  kvBytesPerCell: 1024,
  nVocab: 32000,
  nEmbd: 2048,
};

function device(name: string, type: Device["type"], free: number, index = 0): Device {
  return {
    index,
    name,
    description: `${name} device`,
    type,
    memory_free: free,
    memory_total: free,
  };
}

Deno.test("auto offloads the blocks that fit from the last one down, the output layer once all do", () => {
  // 1000 MiB free, no reserve, 1024 cells (1 MiB of KV per layer): 8 × 101 + 50 = 858 MiB.
  assert.equal(layersThatFit(FP, 1000 * MiB, 1024, 0), 9);
  assert.equal(layersThatFit(FP, 850 * MiB, 1024, 0), 8, "every block, not the output layer");
  assert.equal(layersThatFit(FP, 450 * MiB, 1024, 0), 4);
  assert.equal(layersThatFit(FP, 450 * MiB, 1024, 200 * MiB), 2, "the reserve comes first");
  assert.equal(layersThatFit(FP, 50 * MiB, 1024, 0), 0);
  // A long context takes room from the weights.
  assert.equal(layersThatFit(FP, 999 * MiB, 100 * 1024, 0), 4);
});

Deno.test("the plan: CPU only without a GPU, under --no-gpu, or with 0 layers; all that fit with auto", () => {
  const ctx = { nCtx: 4096, nBatch: 512 };
  const cpu = device("CPU", "cpu", 24 * GiB);
  for (
    const [req, devs, why] of [
      [{ gpuLayers: "auto" }, [cpu], /no GPU device found/],
      [{ gpuLayers: "auto", noGpu: true }, [device("CUDA0", "gpu", 80 * GiB), cpu], /--no-gpu/],
      [{ gpuLayers: 0 }, [device("CUDA0", "gpu", 80 * GiB), cpu], /--gpu-layers 0/],
      [{ gpuLayers: "auto" }, [device("Vulkan0", "gpu", 10 * MiB), cpu], /auto: 0 of 9 layers fit/],
    ] as const
  ) {
    const plan = planOffload(req, devs, FP, ctx);
    assert.equal(plan.gpuLayers, 0);
    assert.deepEqual(plan.devices, [], "an empty device list: nothing is allocated on a GPU");
    assert.equal(plan.opOffload, false, "no big matmuls go to a visible device");
    assert.match(plan.reason, why);
  }
  const big = planOffload({ gpuLayers: "auto" }, [device("CUDA0", "gpu", 80 * GiB), cpu], FP, ctx);
  assert.equal(big.gpuLayers, 9);
  assert.equal(big.totalLayers, 9);
  assert.equal(big.devices, null, "llama.cpp's default devices");
  assert.equal(big.opOffload, true);
  assert.deepEqual(big.deviceNames, ["CUDA0"]);
  assert.match(big.reason, /auto: 9 of 9 layers fit in 81920 MiB free on CUDA0/);
  const some = planOffload(
    { gpuLayers: "auto" },
    [device("CUDA0", "gpu", computeReserve(FP, 512) + 410 * MiB), cpu],
    FP,
    ctx,
  );
  assert.ok(some.gpuLayers > 0 && some.gpuLayers < 9, `${some.gpuLayers}`);
  assert.equal(
    planOffload({ gpuLayers: 99 }, [device("CUDA0", "gpu", GiB), cpu], FP, ctx).gpuLayers,
    9,
    "capped at the model's layers",
  );
});

Deno.test("--device picks one device by name; a missing one is a configuration error naming those there", () => {
  const devs = [
    device("CUDA0", "gpu", 8 * GiB, 0),
    device("CUDA1", "gpu", 80 * GiB, 1),
    device("CPU", "cpu", GiB, 2),
  ];
  const one = planOffload({ gpuLayers: "auto", device: "CUDA1" }, devs, FP, {
    nCtx: 4096,
    nBatch: 512,
  });
  assert.deepEqual(one.devices, [1]);
  assert.deepEqual(one.deviceNames, ["CUDA1"]);
  assert.throws(
    () => planOffload({ gpuLayers: "auto", device: "CUDA7" }, devs, FP, { nCtx: 1, nBatch: 1 }),
    /--device "CUDA7" does not exist; devices: CUDA0 \(CUDA0 device\), CUDA1/,
  );
  assert.equal(
    planOffload({ gpuLayers: "auto", device: "CPU" }, devs, FP, { nCtx: 1, nBatch: 1 }).gpuLayers,
    0,
  );
  // An integrated GPU counts when there is no discrete one.
  const igpu = planOffload(
    { gpuLayers: "auto" },
    [device("Vulkan0", "igpu", 8 * GiB), devs[2]],
    FP,
    { nCtx: 16, nBatch: 8 },
  );
  assert.deepEqual(igpu.deviceNames, ["Vulkan0"]);
});

Deno.test("a model's footprint comes from its GGUF header: every block's bytes, output, KV per cell", () => {
  const fp = modelFootprint(readGgufHeader(tinyModel()));
  assert.equal(fp.layerBytes.length, TINY_MODEL.nLayer);
  const e = TINY_MODEL.nEmbd;
  const kv = (TINY_MODEL.nHeadKv ?? TINY_MODEL.nHead) * (e / TINY_MODEL.nHead);
  // F16 matrices (2 bytes) and F32 norms (4 bytes), before the 32-byte padding.
  const block = 2 * (2 * e * e + 2 * e * kv + 3 * e * TINY_MODEL.nFf) + 4 * 2 * e;
  for (const b of fp.layerBytes) assert.ok(b >= block && b < block + 9 * 32, `${b} vs ${block}`);
  assert.equal(fp.kvBytesPerCell, 2 * 2 * kv);
  assert.equal(fp.nEmbd, e);
  assert.ok(fp.outputBytes >= 2 * e * fp.nVocab, "output.weight");
});
