/**
 * Messages between the service (main thread) and the engine worker, and the layout of
 * the shared control memory the main thread writes without waiting for the worker.
 */

import type { DecodePriority } from "./ffi.ts";
import type { SamplingParams } from "./llama.ts";
import type { CacheStats } from "./scheduler.ts";
import type { CostCoefficients } from "./cost_model.ts";
import type { OffloadRequest } from "./devices.ts";
import type { DeviceInfo, ToolCall } from "../protocol/events.ts";
import type { LibraryLayout, LibrarySource, LlamaBackend } from "./llama_lib.ts";
import type { ChatMessage, ToolSpec } from "../protocol/messages.ts";
import type { ModelReplyMessage, ModelRequestMessage } from "./model_requests.ts";
import type { ChatTemplateOverride } from "./prompt.ts";
import type { ToolCallFormat } from "./tool_calls.ts";

/** Per-slot words in the shared Int32Array. */
export const SLOT_WORDS = 2;
/** Word offsets within a slot. */
export const SLOT_CANCEL = 0; // 0 none, 1 cancelled, 2 shutdown
export const SLOT_PAUSED = 1; // 1 while the stream's connection is over its byte cap
/** Global words after the slots. */
export const CTRL_PREFILL = 0; // slot+1 whose prompt-only call is decoding now, -1 several, else 0
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
  /** KV cells in all (tokens), shared by the streams. */
  ctx: number;
  parallel: number;
  threads: number;
  /** Int32Array over SharedArrayBuffer: parallel*SLOT_WORDS + CTRL_WORDS words. */
  control: SharedArrayBuffer;
  /** 2 bytes: byte 0 nonzero aborts the decode in progress. */
  abort: SharedArrayBuffer;
  /** A step may take this many times its decode rows' cost alone (Infinity: no limit). */
  latencyBudget: number;
  /** How decode threads compete for the CPU (Linux; see `lowerThisThread`). */
  decodePriority: DecodePriority;
  /** Same seed, same tokens alone or beside others: the batch-invariant path. */
  deterministic: boolean;
  /** Reuse prompt prefixes already in KV. */
  prefixCache: boolean;
  /** Lookup drafts in a lone stream's padding row (deterministic mode). */
  lookup: boolean;
  /** `--chat-template`: replaces the model's own template. */
  chatTemplate?: ChatTemplateOverride;
}

/** Sampling and stopping settings of one stream, defaults applied. */
export interface GenerateParams extends SamplingParams {
  maxTokens: number;
  stop: string[];
  priority: "interactive" | "batch";
  /** Reuse and leave behind cached prompt prefixes. */
  cachePrompt: boolean;
}

/** Starts a stream in a slot. */
export interface EngineStart {
  op: "start";
  slot: number;
  rid: number;
  prompt?: string;
  messages?: ChatMessage[];
  /** Tools passed to the chat template. */
  tools?: ToolSpec[];
  /** Raw prompts: parse control-token text (messages' text never is). */
  special: boolean;
  /** Read tool calls out of the output (the request has tools and may call them). */
  parseTools: boolean;
  params: GenerateParams;
}

/** Main → worker. */
export type ToEngine =
  | EngineInit
  | EngineStart
  | { op: "wake" }
  | { op: "shutdown" }
  | ModelRequestMessage
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
  /** The model's name (`general.name`, else the file name). */
  name: string;
  /** The model file. */
  path: string;
  /** llama.cpp's description of the model. */
  description: string;
  /** Parameters. */
  n_params: number;
  /** Size of the weights in bytes. */
  size_bytes: number;
  /** Tokens in the vocabulary. */
  n_vocab: number;
  /** Context the model was trained with. */
  n_ctx_train: number;
  /** Tokens one stream may hold (prompt + output). */
  n_ctx: number;
  /** KV cells of the context, all streams together. */
  n_ctx_total: number;
  /** Largest decode call. */
  n_batch: number;
  /** Sequence ids of the context: streams plus cached prefixes. */
  n_seq_max: number;
  /** Streams decoded together. */
  parallel: number;
  /** CPU threads. */
  threads: number;
  /** Which template renders messages ("model", "file:PATH" or a llama.cpp built-in's name). */
  chat_template: string;
  /** "jinja" (@huggingface/jinja, as transformers) or "llama.cpp" (its built-in templates). */
  chat_template_renderer: "jinja" | "llama.cpp";
  /** How the template asks the model to call tools. */
  tool_call_format: ToolCallFormat;
  /** Tokenizer family ("bpe", "spm", ...). */
  vocab_type: string;
  /** Length of `embed` vectors. */
  n_embd: number;
  /** How `embed` pools token states ("mean" unless the model declares its own). */
  embedding_pooling: string;
  /** Which scheduler runs: `default` (unified KV, mixed steps) or `deterministic`. */
  mode: "default" | "deterministic";
  /** One KV cache shared by every sequence (default mode). */
  kv_unified: boolean;
  /** Same seed, same tokens alone or beside others: true in deterministic mode only. */
  batch_invariant: boolean;
  /** A step may take this many times its decode rows' cost alone; null: no limit. */
  latency_budget: number | null;
  /** Prompt prefixes already in KV are reused (`--no-prefix-cache`: false). */
  prefix_cache: boolean;
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
  /** The stream got a sequence; this many prompt tokens come from the prefix cache. */
  | { rid: number; kind: "admitted"; cached_tokens: number }
  | { rid: number; kind: "token"; text: string; token_id: number }
  | {
    rid: number;
    kind: "end";
    reason: "stop" | "length" | "stop_string" | "cancelled" | "shutdown";
    prompt_tokens: number;
    /** Prompt tokens found in KV (prefix cache). */
    cached_tokens: number;
    completion_tokens: number;
    /** Calls read from the output (requests with tools). */
    tool_calls?: ToolCall[];
  }
  | {
    rid: number;
    kind: "error";
    code: "E_LIMIT_PROMPT_TOO_LARGE" | "E_PROTO_BAD_REQUEST" | "E_INTERNAL";
    message: string;
  };

/** Per-step figures for metrics. */
export interface StepStats {
  /** Decode rows of the step (fillers and drafts included), 0 when none ran. */
  rows: number;
  /** Lookup drafts decoded this step, and how many of them were the sampled token. */
  drafts: number;
  draftsAccepted: number;
  prefillTokens: number;
  /** KV cells in use (cached prefixes included). */
  kvCells: number;
  /** The span of cells a decode call attends over (unified KV; 0 in deterministic mode). */
  kvSpan: number;
  /** Time of calls holding decode rows (their prompt rows included), through sampling. */
  decodeMs: number;
  /** Time of calls holding prompt rows only. */
  prefillMs: number;
  /** The prefix cache's counters so far. */
  cache: CacheStats;
  /** The cost model's current fit (null before the first call). */
  cost: CostCoefficients | null;
}

/** Worker → main. */
export type FromEngine =
  | { op: "log"; level: "info" | "warn" | "error"; message: string }
  | { op: "ready"; info: EngineInfo }
  /** `config`: the user's setup is wrong (library, device): a configuration error. */
  | { op: "fatal"; message: string; config?: boolean }
  | { op: "events"; events: StreamEvent[]; stats?: StepStats }
  | ModelReplyMessage
  | { op: "closed" };
