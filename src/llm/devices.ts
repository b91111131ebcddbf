/**
 * Compute devices and GPU offload: the devices llama.cpp's backends registered, and how
 * many layers of a model go to them (`--gpu-layers N|auto`, `--device NAME`, `--no-gpu`).
 *
 * The plan is a pure function of the devices, the model's footprint and the request
 * ({@linkcode planOffload}), tested without a GPU.
 *
 * @module
 */
import type { DeviceInfo } from "../protocol/events.ts";
import { ConfigError } from "../protocol/errors.ts";
import { DEVICE_TYPES, type NativeLibs } from "./ffi.ts";
import { readGgufHeader } from "./gguf.ts";

export type { DeviceInfo };

/** What {@linkcode modelFootprint} reads of a GGUF header (`readGgufHeader` gives one). */
export interface GgufLayout {
  /** The metadata keys and values. */
  metadata: Map<string, unknown>;
  /** The tensors: name, offset in the data section, size when known. */
  tensors: readonly { name: string; offset: number; size?: number }[];
  /** File offset of the data section. */
  dataOffset: number;
  /** Size of the file. */
  fileSize: number;
}

/** A device as the planner sees it: its info and its place in llama.cpp's list. */
export interface Device extends DeviceInfo {
  /** Its index in `ggml_backend_dev_get`. */
  index: number;
}

/**
 * Every device the loaded backends registered (the CPU included), in llama.cpp's order.
 *
 * @example
 * ```ts ignore
 * for (const d of listDevices(libs)) console.log(d.name, d.type, d.memory_free);
 * ```
 */
export function listDevices(libs: NativeLibs): Device[] {
  const out: Device[] = [];
  const n = Number(libs.ggml.ggml_backend_dev_count());
  const free = new BigUint64Array(1);
  const total = new BigUint64Array(1);
  const str = (
    p: Deno.PointerValue,
  ) => (p === null ? "" : new Deno.UnsafePointerView(p).getCString());
  for (let i = 0; i < n; i++) {
    const dev = libs.ggml.ggml_backend_dev_get(BigInt(i));
    if (dev === null) continue;
    free[0] = 0n;
    total[0] = 0n;
    libs.ggmlBase.ggml_backend_dev_memory(
      dev,
      new Uint8Array(free.buffer),
      new Uint8Array(total.buffer),
    );
    out.push({
      index: i,
      name: str(libs.ggmlBase.ggml_backend_dev_name(dev)),
      description: str(libs.ggmlBase.ggml_backend_dev_description(dev)),
      type: DEVICE_TYPES[libs.ggmlBase.ggml_backend_dev_type(dev)] ?? "accel",
      memory_free: Number(free[0]),
      memory_total: Number(total[0]),
    });
  }
  return out;
}

/** What a model needs in memory, per offloadable layer. */
export interface ModelFootprint {
  /** Bytes of each repeating block's weights, `blk.0` first. */
  layerBytes: number[];
  /** Bytes of the output layer (`output.weight`, `output_norm`), offloaded last. */
  outputBytes: number;
  /** KV cache bytes per cell per layer (F16 K and V). */
  kvBytesPerCell: number;
  /** Tokens of the vocabulary (logits rows). */
  nVocab: number;
  /** Embedding width. */
  nEmbd: number;
}

function metaNumber(meta: Map<string, unknown>, key: string): number | null {
  const v = meta.get(key);
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  return null;
}

/**
 * A model's footprint from its GGUF header. Tensor sizes come from the data offsets (so
 * any quantization type is counted, padding included). Pure.
 */
export function modelFootprint(header: GgufLayout): ModelFootprint {
  const meta = header.metadata;
  const arch = String(meta.get("general.architecture") ?? "llama");
  const num = (k: string) => metaNumber(meta, `${arch}.${k}`);
  const sorted = [...header.tensors].sort((a, b) => a.offset - b.offset);
  const dataBytes = header.fileSize - header.dataOffset;
  const size = new Map<string, number>();
  sorted.forEach((t, i) => {
    const end = i + 1 < sorted.length ? sorted[i + 1].offset : dataBytes;
    size.set(t.name, t.size ?? Math.max(0, end - t.offset));
  });
  const nLayer = num("block_count") ?? 0;
  const layerBytes = new Array(nLayer).fill(0);
  let outputBytes = 0;
  for (const [name, bytes] of size) {
    const m = name.match(/^blk\.(\d+)\./);
    if (m && Number(m[1]) < nLayer) layerBytes[Number(m[1])] += bytes;
    else if (name.startsWith("output")) outputBytes += bytes;
  }
  // Tied embeddings: the output matrix is the token embedding, which stays on the CPU.
  if (!size.has("output.weight")) outputBytes += size.get("token_embd.weight") ?? 0;
  const nEmbd = num("embedding_length") ?? 0;
  const nHead = num("attention.head_count") ?? 1;
  const nHeadKv = num("attention.head_count_kv") ?? nHead;
  const kDim = num("attention.key_length") ?? Math.floor(nEmbd / Math.max(1, nHead));
  const vDim = num("attention.value_length") ?? kDim;
  const tokens = meta.get("tokenizer.ggml.tokens");
  return {
    layerBytes,
    outputBytes,
    kvBytesPerCell: 2 * nHeadKv * (kDim + vDim),
    nVocab: Array.isArray(tokens) ? tokens.length : (num("vocab_size") ?? 0),
    nEmbd,
  };
}

/** `--gpu-layers`, `--device`, `--no-gpu`. */
export interface OffloadRequest {
  /** Layers to offload (more than the model has: all, output included), or "auto". */
  gpuLayers: number | "auto";
  /** A device name (`CUDA0`, `Vulkan0`, `MTL0`) to put them on; default: llama.cpp's choice. */
  device?: string;
  /** Use no device but the CPU. */
  noGpu?: boolean;
}

/** What to pass to llama.cpp, and why. */
export interface OffloadPlan {
  /** `n_gpu_layers`. */
  gpuLayers: number;
  /** Indexes of the devices to use, or null for llama.cpp's default (every GPU). */
  devices: number[] | null;
  /** `op_offload`: false when no layer is offloaded, so no matmul goes to a device. */
  opOffload: boolean;
  /** Offloadable layers of the model (blocks + the output layer). */
  totalLayers: number;
  /** Names of the devices the layers go to. */
  deviceNames: string[];
  /** Why this many layers, for the log. */
  reason: string;
}

const MiB = 2 ** 20;

/**
 * The layers of a model that fit in `free` bytes beside their KV cache (`nCtx` cells) and
 * a compute reserve, offloading from the last block as llama.cpp does (blocks first, the
 * output layer once every block is on the device). Pure.
 *
 * @example
 * ```ts
 * import { layersThatFit } from "./devices.ts";
 * const fp = { layerBytes: [100, 100, 100], outputBytes: 50, kvBytesPerCell: 1, nVocab: 10, nEmbd: 4 };
 * console.log(layersThatFit(fp, 1000, 10, 0)); // 4: three blocks and the output
 * ```
 */
export function layersThatFit(
  fp: ModelFootprint,
  free: number,
  nCtx: number,
  reserve: number,
): number {
  let used = reserve;
  let n = 0;
  for (let i = fp.layerBytes.length - 1; i >= 0; i--) {
    used += fp.layerBytes[i] + fp.kvBytesPerCell * nCtx;
    if (used > free) return n;
    n++;
  }
  return used + fp.outputBytes <= free ? n + 1 : n;
}

/** Compute buffers beside the weights and KV cache: logits and activations of one batch. */
export function computeReserve(fp: ModelFootprint, nBatch: number): number {
  return 256 * MiB + nBatch * (fp.nVocab + 16 * fp.nEmbd) * 4;
}

/**
 * Decides the offload. Pure: over the devices, the model's footprint and the context size.
 * Throws `ConfigError` for a `--device` that does not exist.
 *
 * @example
 * ```ts
 * import { planOffload } from "./devices.ts";
 * const fp = { layerBytes: [100, 100], outputBytes: 50, kvBytesPerCell: 1, nVocab: 10, nEmbd: 4 };
 * const plan = planOffload({ gpuLayers: "auto" }, [], fp, { nCtx: 16, nBatch: 8 });
 * console.log(plan.gpuLayers, plan.opOffload); // 0 false
 * ```
 */
export function planOffload(
  req: OffloadRequest,
  devices: readonly Device[],
  fp: ModelFootprint,
  ctx: { nCtx: number; nBatch: number },
): OffloadPlan {
  const totalLayers = fp.layerBytes.length + 1;
  const cpuOnly = (reason: string): OffloadPlan => ({
    gpuLayers: 0,
    devices: [],
    opOffload: false,
    totalLayers,
    deviceNames: [],
    reason,
  });
  if (req.noGpu) return cpuOnly("--no-gpu");
  let targets: Device[];
  if (req.device !== undefined) {
    const d = devices.find((d) => d.name === req.device);
    if (!d) {
      throw new ConfigError(
        `--device "${req.device}" does not exist; devices: ` +
          (devices.map((d) => `${d.name} (${d.description})`).join(", ") || "none"),
      );
    }
    if (d.type === "cpu") return cpuOnly(`--device ${d.name} is the CPU`);
    targets = [d];
  } else {
    // llama.cpp's default: every discrete GPU, else the integrated ones.
    const gpus = devices.filter((d) => d.type === "gpu");
    targets = gpus.length ? gpus : devices.filter((d) => d.type === "igpu");
  }
  if (targets.length === 0) return cpuOnly("no GPU device found");
  const names = targets.map((d) => d.name);
  let layers: number;
  let reason: string;
  if (req.gpuLayers === "auto") {
    const free = targets.reduce((s, d) => s + d.memory_free, 0);
    const reserve = computeReserve(fp, ctx.nBatch);
    layers = layersThatFit(fp, free, ctx.nCtx, reserve);
    reason = `auto: ${layers} of ${totalLayers} layers fit in ${Math.round(free / MiB)} MiB free ` +
      `on ${names.join(", ")} (with the KV cache of ${ctx.nCtx} cells and ` +
      `${Math.round(reserve / MiB)} MiB for compute buffers)`;
  } else {
    layers = Math.min(req.gpuLayers, totalLayers);
    reason = `--gpu-layers ${req.gpuLayers}`;
  }
  if (layers === 0) return cpuOnly(reason);
  return {
    gpuLayers: layers,
    devices: req.device !== undefined ? targets.map((d) => d.index) : null,
    opOffload: true,
    totalLayers,
    deviceNames: names,
    reason,
  };
}

/**
 * The NULL-terminated `ggml_backend_dev_t` list of `llama_model_params.devices` for a
 * plan, or null for llama.cpp's default (keep it alive until the model is loaded).
 */
export function deviceList(libs: NativeLibs, plan: OffloadPlan): BigUint64Array | null {
  if (plan.devices === null) return null;
  const list = new BigUint64Array(plan.devices.length + 1);
  plan.devices.forEach((i, k) => {
    list[k] = BigInt(Deno.UnsafePointer.value(libs.ggml.ggml_backend_dev_get(BigInt(i))));
  });
  return list;
}

/**
 * The offload plan for a model file on the loaded libraries: its footprint from the GGUF
 * header, the devices from the backends, then {@linkcode planOffload}.
 */
export function planModelOffload(
  libs: NativeLibs,
  modelPath: string,
  req: OffloadRequest,
  ctx: { nCtx: number; nBatch: number },
): { plan: OffloadPlan; devices: Device[] } {
  const devices = listDevices(libs);
  const plan = planOffload(req, devices, modelFootprint(readGgufHeader(modelPath)), ctx);
  return { plan, devices };
}
