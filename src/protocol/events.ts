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
  /** Tokens in the prompt as the model saw it (template included). */
  prompt_tokens: number;
  /** Prompt tokens reused from the prefix cache (not prefilled again). */
  cached_tokens: number;
  /** Tokens generated. */
  completion_tokens: number;
  /** Time to the first token, ms. */
  ttft_ms: number;
  /** Time from the request to the last event, ms. */
  total_ms: number;
}

/** A function call the model made (OpenAI's shape, flattened). */
export interface ToolCall {
  /** The call's id, for the `tool_call_id` of the answer. */
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
  /** The model's name (its GGUF `general.name`, or the file name). */
  name: string;
  /** The GGUF file. */
  path: string;
  /** llama.cpp's one-line description (architecture, size, quantization). */
  description: string;
  /** True for the built-in demo model (its output is meaningless). */
  random_weights: boolean;
  /** Parameters. */
  n_params: number;
  /** Tokens in the vocabulary. */
  n_vocab: number;
  /** Tokens one stream may hold. */
  n_ctx: number;
  /** Tokens the whole context holds (all streams). */
  n_ctx_total: number;
  /** The context the model was trained with. */
  n_ctx_train: number;
  /** Streams decoded at once (`--parallel`). */
  parallel: number;
  /** Decode threads. */
  threads: number;
  /** Which chat template renders `messages` (its name or "model"). */
  chat_template: string;
  /** How decode threads yield to the event loop (`--decode-priority`). */
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
  /** Layers on a GPU (0: the CPU only). */
  gpu_layers?: number;
  /** The model's offloadable layers: its blocks plus its output layer. */
  gpu_layers_total?: number;
  /** The devices holding the offloaded layers. */
  gpu_devices?: string[];
  /** Further fields a service reports (mode, ...). */
  [key: string]: unknown;
}

/** One terminal session in `pty.list`. */
export interface SessionInfo {
  /** The session's id. */
  session: string;
  /** Its name (`pty.spawn`'s `name`, else the program's). */
  name: string;
  /** The program's pid. */
  pid: number;
  /** Current width, columns. */
  cols: number;
  /** Current height, rows. */
  rows: number;
  /** Clients attached now. */
  clients: number;
  /** Whether the program still runs. */
  state: "running" | "exited";
  /** Exit status, once exited (null when a signal ended it). */
  code?: number | null;
  /** The signal that ended it, once exited (null when it exited by itself). */
  signal?: string | null;
  /** Creation time, ms since the epoch. */
  created: number;
  /** The foreground process's name (argv[0] of the terminal's foreground process group). */
  process?: string;
  /** The window title the program set (absent until it sets one). */
  title?: string;
}

/** What a `watch.event` reports. */
export type WatchKind = "created" | "exited" | "resized" | "title";

/** How a terminal session ended (`pty.exit.reason`). */
export type ExitReason = "exited" | "killed" | "shutdown";

/** One `watch.event`: a session was created, exited, resized or retitled. */
export interface WatchEventFields {
  /** What happened. */
  kind: WatchKind;
  /** The session's id. */
  session: string;
  /** (created) The session's name. */
  name?: string;
  /** (created) The program's pid. */
  pid?: number;
  /** (created, resized) The width, columns. */
  cols?: number;
  /** (created, resized) The height, rows. */
  rows?: number;
  /** (exited) The exit status, null when a signal ended it. */
  code?: number | null;
  /** (exited) The signal that ended it, if one did. */
  signal?: string | null;
  /** (exited) Why: exited by itself, killed, or the daemon shut down. */
  reason?: ExitReason;
  /** (title) The window title the program set. */
  title?: string;
}

/** The fields of each event, by event name (`event` and `id` come on top). */
export interface EventFields {
  /** The answer to `hello`: who serves this socket. */
  hello: {
    /** Always "umad". */
    server: "umad";
    /** The daemon's version. */
    version: string;
    /** The protocol version (1). */
    protocol: number;
    /** The daemon's pid. */
    pid: number;
    /** The model; null under `--no-model`. */
    model?: ModelInfo | null;
    [key: string]: unknown;
  };
  /** The answer to `ping`, echoing its `t`. */
  pong: { t?: unknown };
  /** The daemon's counters and latency summaries. */
  metrics: { metrics: Record<string, unknown> };
  /** One generated token: its text (whole UTF-8 characters) and id. */
  token: { text: string; token_id: number };
  /** The end of a streamed generation. */
  eos: { reason: EndReason; usage: Usage; tool_calls?: ToolCall[] };
  /** A whole generation at once (`stream: false`). */
  result: { text: string; reason: EndReason; usage: Usage; tool_calls?: ToolCall[] };
  /** A request failed (or, with no id, the connection is about to close). */
  error: { code: ErrorCode | UmaErrorCode; message: string };
  /** The tokens of a text, and each one's text when asked. */
  tokenize: { tokens: number[]; pieces?: string[] };
  /** The text of tokens. */
  detokenize: { text: string };
  /** One embedding per input. */
  embed: { embeddings: number[][]; usage: { prompt_tokens: number; total_tokens: number } };
  /** A session started. */
  "pty.spawned": { session: string; pid: number };
  /** A full redraw of the screen (first event of an attach, and after a dropped backlog). */
  "pty.snapshot": { session: string; data: Uint8Array; cols: number; rows: number };
  /** Output of the program, as it wrote it. */
  "pty.output": { session: string; data: Uint8Array };
  /** The program ended (after its last output). */
  "pty.exit": {
    session: string;
    code: number | null;
    signal: string | null;
    reason: ExitReason;
  };
  /** This client no longer watches the session. */
  "pty.detached": { session: string };
  /** The terminal's foreground process changed (umad's addition, on `pty.attach` streams). */
  "pty.process": { session: string; process: string };
  /** The signal was sent. */
  "pty.killed": { session: string };
  /** Every session. */
  "pty.list": { sessions: SessionInfo[] };
  /** The screen (and scrollback) as text or ANSI, with the cursor. */
  "pty.capture": {
    session: string;
    data: string;
    cols: number;
    rows: number;
    cursor: { x: number; y: number };
  };
  /** A `pty.wait` ended: matched, or timed out. */
  "pty.waited": { session: string; matched: boolean; text?: string };
  /** A session was created, exited, resized or retitled. */
  "watch.event": WatchEventFields & { [key: string]: unknown };
}

/** An event's name. */
export type EventName = keyof EventFields;

/** One event as it travels: `{event, id, ...fields}`. */
export type Event<E extends EventName = EventName> = E extends EventName
  ? { event: E; id: string | null } & EventFields[E]
  : never;

/** The events that answer each request type (`error` can answer any of them). */
export interface Replies {
  /** `hello` is answered by `hello`. */
  hello: "hello";
  /** `ping` by `pong`. */
  ping: "pong";
  /** `metrics` by `metrics`. */
  metrics: "metrics";
  /** `generate` by `token` events then `eos`, or one `result`. */
  generate: "token" | "eos" | "result";
  /** `cancel` by nothing (its target ends). */
  cancel: never;
  /** `tokenize` by `tokenize`. */
  tokenize: "tokenize";
  /** `detokenize` by `detokenize`. */
  detokenize: "detokenize";
  /** `embed` by `embed`. */
  embed: "embed";
  /** `pty.spawn` by `pty.spawned`. */
  "pty.spawn": "pty.spawned";
  /** `pty.attach` by a snapshot, output (and foreground process changes), then exit or detached. */
  "pty.attach": "pty.snapshot" | "pty.output" | "pty.process" | "pty.exit" | "pty.detached";
  /** `pty.input` by nothing. */
  "pty.input": never;
  /** `pty.resize` by nothing. */
  "pty.resize": never;
  /** `pty.detach` by `pty.detached`. */
  "pty.detach": "pty.detached";
  /** `pty.kill` by `pty.killed`. */
  "pty.kill": "pty.killed";
  /** `pty.list` by `pty.list`. */
  "pty.list": "pty.list";
  /** `pty.pause` by nothing (output is held). */
  "pty.pause": never;
  /** `pty.resume` by nothing (held output follows on the attach stream). */
  "pty.resume": never;
  /** `pty.capture` by `pty.capture`. */
  "pty.capture": "pty.capture";
  /** `pty.wait` by `pty.waited`. */
  "pty.wait": "pty.waited";
  /** `watch` by `watch.event`s until cancelled. */
  watch: "watch.event";
}

/** The events that may answer a request of type `T`. */
export type ReplyOf<T extends RequestType> = Event<Replies[T]>;
