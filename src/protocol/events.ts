/**
 * Every reply and event of the wire contract, typed once: the fields of each event by
 * name ({@linkcode EventFields}), the whole event as it travels ({@linkcode Event}), and
 * which events answer which request ({@linkcode ReplyOf}). Services send through
 * `Stream.send(name, fields)`, checked against these types; the client hands them back.
 *
 * @module
 */
import type { ErrorCode, UmaErrorCode } from "./errors.ts";
import type { RequestType } from "./messages.ts";

/** Why a generation ended (PROTOCOL.md, `eos.reason`). */
export type EndReason = "stop" | "length" | "stop_string" | "cancelled" | "shutdown";

/** Token counts and timings of a finished generation. */
export interface Usage {
  prompt_tokens: number;
  /** Prompt tokens reused from the prefix cache (not prefilled again). */
  cached_tokens: number;
  completion_tokens: number;
  /** Time to the first token, ms. */
  ttft_ms: number;
  total_ms: number;
}

/** A function call the model made (OpenAI's shape, flattened). */
export interface ToolCall {
  id: string;
  /** The function's name. */
  name: string;
  /** The arguments as JSON text, as OpenAI's API carries them. */
  arguments: string;
}

/** A GPU or other compute device llama.cpp can use. */
export interface DeviceInfo {
  /** llama.cpp's name for it (`CUDA0`, `Vulkan0`, `MTL0`, `CPU`): what `--device` takes. */
  name: string;
  /** The driver's description (the GPU's or CPU's model). */
  description: string;
  /** `enum ggml_backend_dev_type`. */
  type: "cpu" | "gpu" | "igpu" | "accel";
  /** Free memory in bytes. */
  memory_free: number;
  /** Total memory in bytes. */
  memory_total: number;
}

/** The loaded model, as `hello.model` describes it. */
export interface ModelInfo {
  name: string;
  path: string;
  description: string;
  /** True for the built-in demo model (its output is meaningless). */
  random_weights: boolean;
  n_params: number;
  n_vocab: number;
  /** Tokens one stream may hold. */
  n_ctx: number;
  n_ctx_total: number;
  n_ctx_train: number;
  parallel: number;
  threads: number;
  /** Which chat template renders `messages` (its name or "model"). */
  chat_template: string;
  decode_priority: "idle" | "low" | "normal";
  /** The llama.cpp library in use, where it came from and why (see docs/PROTOCOL.md). */
  library?: {
    path: string;
    source: string;
    layout: "npm" | "cmake";
    backend: "cpu" | "cuda" | "vulkan" | "metal";
    version: string;
    backends: string[];
    cpu_variant: string | null;
    cpu_features: string[];
    reason: string;
  };
  /** Every compute device the library's backends see, the CPU included. */
  devices?: DeviceInfo[];
  /** Layers on a GPU (0: the CPU only), of the model's blocks plus its output layer. */
  gpu_layers?: number;
  gpu_layers_total?: number;
  gpu_devices?: string[];
  /** Further fields a service reports (mode, ...). */
  [key: string]: unknown;
}

/** One terminal session in `pty.list`. */
export interface SessionInfo {
  session: string;
  name: string;
  pid: number;
  cols: number;
  rows: number;
  clients: number;
  state: "running" | "exited";
  code?: number | null;
  signal?: string | null;
  /** Creation time, ms since the epoch. */
  created: number;
}

/** How a terminal session ended (`pty.exit.reason`). */
export type ExitReason = "exited" | "killed" | "shutdown";

/** The fields of each event, by event name (`event` and `id` come on top). */
export interface EventFields {
  hello: {
    server: "umad";
    version: string;
    protocol: number;
    pid: number;
    /** The model; null under `--no-model`. */
    model?: ModelInfo | null;
    [key: string]: unknown;
  };
  pong: { t?: unknown };
  metrics: { metrics: Record<string, unknown> };
  token: { text: string; token_id: number };
  eos: { reason: EndReason; usage: Usage; tool_calls?: ToolCall[] };
  result: { text: string; reason: EndReason; usage: Usage; tool_calls?: ToolCall[] };
  error: { code: ErrorCode | UmaErrorCode; message: string };
  tokenize: { tokens: number[]; pieces?: string[] };
  detokenize: { text: string };
  embed: { embeddings: number[][]; usage: { prompt_tokens: number; total_tokens: number } };
  "pty.spawned": { session: string; pid: number };
  "pty.snapshot": { session: string; data: Uint8Array; cols: number; rows: number };
  "pty.output": { session: string; data: Uint8Array };
  "pty.exit": {
    session: string;
    code: number | null;
    signal: string | null;
    reason: ExitReason;
  };
  "pty.detached": { session: string };
  "pty.killed": { session: string };
  "pty.list": { sessions: SessionInfo[] };
  "pty.capture": {
    session: string;
    data: string;
    cols: number;
    rows: number;
    cursor: { x: number; y: number };
  };
  "pty.waited": { session: string; matched: boolean; text?: string };
  "watch.event": {
    kind: "created" | "exited" | "resized" | "title";
    session: string;
    [key: string]: unknown;
  };
}

/** An event's name. */
export type EventName = keyof EventFields;

/** One event as it travels: `{event, id, ...fields}`. */
export type Event<E extends EventName = EventName> = E extends EventName
  ? { event: E; id: string | null } & EventFields[E]
  : never;

/** The events that answer each request type (`error` can answer any of them). */
export interface Replies {
  hello: "hello";
  ping: "pong";
  metrics: "metrics";
  generate: "token" | "eos" | "result";
  cancel: never;
  tokenize: "tokenize";
  detokenize: "detokenize";
  embed: "embed";
  "pty.spawn": "pty.spawned";
  "pty.attach": "pty.snapshot" | "pty.output" | "pty.exit" | "pty.detached";
  "pty.input": never;
  "pty.resize": never;
  "pty.detach": "pty.detached";
  "pty.kill": "pty.killed";
  "pty.list": "pty.list";
  "pty.capture": "pty.capture";
  "pty.wait": "pty.waited";
  watch: "watch.event";
}

/** The events that may answer a request of type `T`. */
export type ReplyOf<T extends RequestType> = Event<Replies[T]>;
