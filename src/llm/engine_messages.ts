/**
 * Messages between the service (main thread) and the engine worker, and the layout of
 * the shared control memory the main thread writes without waiting for the worker.
 */

import type { DecodePriority } from "./ffi.ts";
import type { SamplingParams } from "./llama.ts";
import type { OffloadRequest } from "./devices.ts";
import type { DeviceInfo } from "../protocol/events.ts";
import type { LibraryLayout, LibrarySource, LlamaBackend } from "./llama_lib.ts";

/** Per-slot words in the shared Int32Array. */
export const SLOT_WORDS = 2;
/** Word offsets within a slot. */
export const SLOT_CANCEL = 0; // 0 none, 1 cancelled, 2 shutdown
export const SLOT_PAUSED = 1; // 1 while the stream's connection is over its byte cap
/** Global words after the slots. */
export const CTRL_PREFILL = 0; // slot+1 whose prompt chunk is decoding now, -1 several, else 0
export const CTRL_MAIL = 1; // messages the main thread has posted to the engine so far
export const CTRL_WORDS = 2;

/** Index of a global control word. */
export function ctrlWord(control: Int32Array, word: number): number {
  return control.length - CTRL_WORDS + word;
}

/** Cancel codes. */
export const CANCEL_NONE = 0;
export const CANCEL_CANCELLED = 1;
export const CANCEL_SHUTDOWN = 2;

/** Engine settings sent with `init`. */
export interface EngineInit {
  op: "init";
  /**
   * The llama.cpp library directories to try, best first (`llama_lib.ts` chose them):
   * the next is loaded only when one fails (one entry for --llama-lib).
   */
  libraries: { dir: string; source: LibrarySource; reason: string }[];
  /** GPU offload (`--gpu-layers`, `--device`, `--no-gpu`); default: auto. */
  gpu?: OffloadRequest;
  modelPath: string;
  /** Context per stream (tokens), or 0 for the default. */
  ctx: number;
  parallel: number;
  threads: number;
  /** Int32Array over SharedArrayBuffer: parallel*SLOT_WORDS + CTRL_WORDS words. */
  control: SharedArrayBuffer;
  /** 2 bytes: byte 0 nonzero aborts the decode in progress. */
  abort: SharedArrayBuffer;
  /** Fraction of a decode step's time that prompt chunks may add (latency guard). */
  prefillRatio: number;
  /** Largest share while prompts wait over a second (== prefillRatio: no ramp). */
  prefillMaxRatio: number;
  /** How decode threads compete for the CPU (Linux; see `lowerThisThread`). */
  decodePriority: DecodePriority;
  /** Same seed, same tokens alone or beside others (costs one-stream speed). */
  batchInvariant: boolean;
  /** Lookup drafts in a lone stream's padding row. */
  lookup: boolean;
}

/** Sampling and stopping settings of one stream, defaults applied. */
export interface GenerateParams extends SamplingParams {
  maxTokens: number;
  stop: string[];
  priority: "interactive" | "batch";
}

/** Starts a stream in a slot. */
export interface EngineStart {
  op: "start";
  slot: number;
  rid: number;
  prompt?: string;
  messages?: { role: string; content: string }[];
  params: GenerateParams;
}

/** Main → worker. */
export type ToEngine =
  | EngineInit
  | EngineStart
  | { op: "wake" }
  | { op: "shutdown" }
  /** Several messages of one turn of the main thread's event loop, handled together. */
  | { op: "batch"; messages: ToEngine[] };

/** The llama.cpp library in use, as `hello.model.library` reports it. */
export interface LibraryInfo {
  /** Its directory. */
  path: string;
  /** Where it came from (`--llama-lib`, `native`, `npm`, ...). */
  source: LibrarySource;
  /** npm's versioned names with loadable backends, or a plain cmake build. */
  layout: LibraryLayout;
  /** The GPU backend the library carries, or "cpu". */
  backend: LlamaBackend;
  /** `llama_version()`. */
  version: string;
  /** Backends registered: `["Vulkan", "CPU"]`. */
  backends: string[];
  /** The CPU backend variant npm's layout picked (`libggml-cpu-haswell.so`), or null. */
  cpu_variant: string | null;
  /** The CPU code's features (`AVX2`, `AVX512`, `AMX_INT8`, `LLAMAFILE`, `REPACK`, ...). */
  cpu_features: string[];
  /** Why this library was chosen. */
  reason: string;
}

/** What the loaded model and context look like. */
export interface EngineInfo {
  name: string;
  path: string;
  description: string;
  n_params: number;
  size_bytes: number;
  n_vocab: number;
  n_ctx_train: number;
  /** Tokens one stream may hold (prompt + output). */
  n_ctx: number;
  n_ctx_total: number;
  n_batch: number;
  parallel: number;
  threads: number;
  chat_template: string;
  /** Same seed, same tokens alone or beside others (`--no-batch-invariance`: false). */
  batch_invariant: boolean;
  /** A lone stream's padding row carries a prompt-lookup draft (`--no-lookup`: false). */
  lookup_drafts: boolean;
  /** The decode threads' priority as applied (`--decode-priority`). */
  decode_priority: DecodePriority;
  /** The llama.cpp library in use. */
  library: LibraryInfo;
  /** Every compute device the library's backends see (the CPU included). */
  devices: DeviceInfo[];
  /** Layers on a GPU (0: CPU only). */
  gpu_layers: number;
  /** The model's offloadable layers (its blocks and the output layer). */
  gpu_layers_total: number;
  /** The devices holding them. */
  gpu_devices: string[];
  /** Why this many layers (`--gpu-layers`, what fits, no GPU...). */
  gpu_reason: string;
}

/** One event of a stream. */
export type StreamEvent =
  | { rid: number; kind: "started"; prompt_tokens: number }
  | { rid: number; kind: "token"; text: string; token_id: number }
  | {
    rid: number;
    kind: "end";
    reason: "stop" | "length" | "stop_string" | "cancelled" | "shutdown";
    prompt_tokens: number;
    completion_tokens: number;
  }
  | {
    rid: number;
    kind: "error";
    code: "E_LIMIT_PROMPT_TOO_LARGE" | "E_INTERNAL";
    message: string;
  };

/** Per-step figures for metrics. */
export interface StepStats {
  /** Rows of the decode call (fillers included), 0 when none ran. */
  rows: number;
  /** Lookup drafts decoded this step, and how many of them were the sampled token. */
  drafts: number;
  draftsAccepted: number;
  prefillTokens: number;
  kvCells: number;
  decodeMs: number;
  /** Time spent in prompt chunk decodes. */
  prefillMs: number;
}

/** Worker → main. */
export type FromEngine =
  | { op: "log"; level: "info" | "warn" | "error"; message: string }
  | { op: "ready"; info: EngineInfo }
  /** `config`: the user's setup is wrong (library, device): a configuration error. */
  | { op: "fatal"; message: string; config?: boolean }
  | { op: "events"; events: StreamEvent[]; stats?: StepStats }
  | { op: "closed" };
