import { decodeBase64 } from "./base64.ts";
import type { Codec, Message } from "./codec.ts";
import { UmadError } from "./errors.ts";
import { hasLoneSurrogate } from "./uma.ts";

/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;

/** Longest request id accepted. */
export const MAX_ID_LENGTH = 256;
/** Widest terminal accepted, columns (xterm state is allocated per cell). */
export const MAX_COLS = 1000;
/** Tallest terminal accepted, rows. */
export const MAX_ROWS = 500;
/** At most this many stop strings per request. */
export const MAX_STOP_STRINGS = 16;
/** The longest stop string accepted, characters. */
export const MAX_STOP_LENGTH = 256;

/** Signal names accepted by `pty.kill`. */
export const SIGNAL_NAMES = [
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGILL",
  "SIGTRAP",
  "SIGABRT",
  "SIGBUS",
  "SIGFPE",
  "SIGKILL",
  "SIGUSR1",
  "SIGSEGV",
  "SIGUSR2",
  "SIGPIPE",
  "SIGALRM",
  "SIGTERM",
  "SIGCHLD",
  "SIGCONT",
  "SIGSTOP",
  "SIGTSTP",
  "SIGTTIN",
  "SIGTTOU",
  "SIGURG",
  "SIGXCPU",
  "SIGXFSZ",
  "SIGVTALRM",
  "SIGPROF",
  "SIGWINCH",
  "SIGIO",
  "SIGSYS",
] as const;
/** A signal name `pty.kill` accepts. */
export type SignalName = typeof SIGNAL_NAMES[number];

/** A tool call inside an assistant message sent back in a chat (OpenAI's shape). */
export interface ChatToolCall {
  /** The call's id, echoed by the tool's answer. */
  id?: string;
  /** Always "function". */
  type?: "function";
  /** The function called, with its arguments as JSON text. */
  function: { name: string; arguments: string };
}

/**
 * One chat message of a `generate` request. `content` may be empty for an assistant
 * turn that only called tools; `tool_call_id` and `name` belong to `role: "tool"`
 * answers.
 */
export interface ChatMessage {
  /** "system", "user", "assistant" or "tool". */
  role: string;
  /** The text of the turn. */
  content: string;
  /** The tool's name, for `role: "tool"`. */
  name?: string;
  /** The call this answers, for `role: "tool"`. */
  tool_call_id?: string;
  /** The calls an assistant turn made. */
  tool_calls?: ChatToolCall[];
}

/** A tool the model may call (OpenAI's shape). */
export interface ToolSpec {
  /** Always "function". */
  type: "function";
  /** The function: its name, what it does, its parameters as JSON Schema. */
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

/** Which tool the model must call: any (`auto`), none, at least one, or a named one. */
export type ToolChoice = "auto" | "none" | "required" | {
  type: "function";
  function: { name: string };
};

/** `hello`: introduces the client; answered with the daemon's `hello`. */
export interface HelloRequest {
  /** The request type. */
  type: "hello";
  /** Request id; needed only to match an error reply. */
  id?: string;
  /** The client's name, for the daemon's log. */
  client?: string;
}
/** `ping`: the latency probe; answered with `pong`. */
export interface PingRequest {
  /** The request type. */
  type: "ping";
  /** Request id; needed only to match an error reply. */
  id?: string;
  /** Anything; echoed in `pong`. */
  t?: unknown;
}
/** `metrics`: the daemon's counters and histograms. */
export interface MetricsRequest {
  /** The request type. */
  type: "metrics";
  /** Request id; needed only to match an error reply. */
  id?: string;
}
/** `generate`: a completion of `prompt`, or of `messages` through the chat template. */
export interface GenerateRequest {
  /** The request type. */
  type: "generate";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** Raw text to complete (or `messages`). */
  prompt?: string;
  /** A chat, rendered with the model's template (or `prompt`). */
  messages?: ChatMessage[];
  /** Tokens to generate at most (default: until the end or the context). */
  max_tokens?: number;
  /** Sampling temperature; 0 is greedy. */
  temperature?: number;
  /** Sample among the k likeliest tokens. */
  top_k?: number;
  /** Sample among the likeliest tokens whose probabilities sum to p. */
  top_p?: number;
  /** Drop tokens less likely than p times the likeliest. */
  min_p?: number;
  /** Penalty on tokens already generated (1: none). */
  repeat_penalty?: number;
  /** Sampling seed: the same seed gives the same text. */
  seed?: number;
  /** Strings that end the generation (`eos` reason `stop_string`). */
  stop: string[];
  /** `token` events then `eos` (default), or one `result`. */
  stream: boolean;
  /** Interactive streams are served before batch ones. */
  priority: "interactive" | "batch";
  /** Reuse the longest cached prefix of the prompt (default true). */
  cache_prompt: boolean;
  /**
   * Parse control-token text in a raw `prompt` (default true, as before; false keeps
   * `<|im_end|>` and the like as text). Message content is never parsed for them.
   */
  special: boolean;
  /** A GBNF grammar the output must match. */
  grammar?: string;
  /** A JSON Schema the output must validate against (converted to a grammar). */
  json_schema?: Record<string, unknown>;
  /** Tools the model may call, passed to the chat template. */
  tools?: ToolSpec[];
  /** Which tool the model must call, if any. */
  tool_choice?: ToolChoice;
  /** Set for a request in UMA Serve's form (no `type`): its errors carry UMA's codes. */
  uma?: true;
}
/** `cancel`: stops the stream whose id is `target` (a generation, an attach, a watch). */
export interface CancelRequest {
  /** The request type. */
  type: "cancel";
  /** Request id; needed only to match an error reply. */
  id?: string;
  /** The id of the stream to stop. */
  target: string;
}
/** `pty.spawn`: starts a program in a new terminal session. */
export interface PtySpawnRequest {
  /** The request type. */
  type: "pty.spawn";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The program and its arguments (default: the user's shell). */
  argv?: string[];
  /** Working directory (default: the daemon's home). */
  cwd?: string;
  /** Variables merged over the daemon's environment. */
  env?: Record<string, string>;
  /** Width, columns (default 80). */
  cols?: number;
  /** Height, rows (default 24). */
  rows?: number;
  /** A name shown by `pty.list` (default: the program's). */
  name?: string;
}
/** `pty.attach`: watches a session: a snapshot, then output, until exit or detach. */
export interface PtyAttachRequest {
  /** The request type. */
  type: "pty.attach";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The session's id (or its name, when only one session has it). */
  session: string;
  /** Watch only: input and resize from this client are refused. */
  readonly: boolean;
  /** This client's width (the session takes it while this client is active). */
  cols?: number;
  /** This client's height. */
  rows?: number;
}
/** `pty.input`: types into a session. */
export interface PtyInputRequest {
  /** The request type. */
  type: "pty.input";
  /** Request id; needed only to match an error reply. */
  id?: string;
  /** The session's id (or its name, when only one session has it). */
  session: string;
  /** The bytes typed (base64 in JSON). */
  data: Uint8Array;
}
/** `pty.resize`: this client's size of a session. */
export interface PtyResizeRequest {
  /** The request type. */
  type: "pty.resize";
  /** Request id; needed only to match an error reply. */
  id?: string;
  /** The session's id (or its name, when only one session has it). */
  session: string;
  /** Width, columns. */
  cols: number;
  /** Height, rows. */
  rows: number;
}
/** `pty.detach`: stops this connection's attachments to a session. */
export interface PtyDetachRequest {
  /** The request type. */
  type: "pty.detach";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The session's id (or its name, when only one session has it). */
  session: string;
}
/** `pty.kill`: signals a session's program. */
export interface PtyKillRequest {
  /** The request type. */
  type: "pty.kill";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The session's id (or its name, when only one session has it). */
  session: string;
  /** The signal (default SIGHUP). */
  signal: SignalName;
}
/** `pty.list`: every session. */
export interface PtyListRequest {
  /** The request type. */
  type: "pty.list";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
}
/** Holds output to this connection's attachments of `session` (umad's addition: flow control). */
export interface PtyPauseRequest {
  /** The request type. */
  type: "pty.pause";
  /** Request id; needed only to match an error reply. */
  id?: string;
  /** The session's id (or its name). */
  session: string;
}
/** Sends the held output (or a fresh snapshot, if more than the cap waited) and goes on. */
export interface PtyResumeRequest {
  /** The request type. */
  type: "pty.resume";
  /** Request id; needed only to match an error reply. */
  id?: string;
  /** The session's id (or its name). */
  session: string;
}
/** `pty.capture`: the screen and scrollback as text or ANSI. */
export interface PtyCaptureRequest {
  /** The request type. */
  type: "pty.capture";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The session's id (or its name, when only one session has it). */
  session: string;
  /** Plain text (default) or with ANSI attributes. */
  format: "text" | "ansi";
  /** First line (0 = top of the screen, negative = scrollback); default the screen's top. */
  start?: number;
  /** Last line, inclusive; default the screen's bottom. */
  end?: number;
}
/** `pty.wait`: resolves when the screen or new output matches, or at the timeout. */
export interface PtyWaitRequest {
  /** The request type. */
  type: "pty.wait";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The session's id (or its name, when only one session has it). */
  session: string;
  /** The text to wait for. */
  pattern: string;
  /** `pattern` is a regular expression. */
  regex: boolean;
  /** Give up after this long (`pty.waited` with `matched: false`). */
  timeout_ms: number;
}
/** `watch`: session lifecycle events until cancelled. */
export interface WatchRequest {
  /** The request type. */
  type: "watch";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** Sessions to watch (ids or names); default all, those created later included. */
  sessions?: string[];
}
/** `tokenize`: the model's tokens for a text. */
export interface TokenizeRequest {
  /** The request type. */
  type: "tokenize";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The text to tokenize. */
  text: string;
  /** Parse control-token text (default false: it stays text). */
  special: boolean;
  /** Add the model's BOS (default false). */
  add_special: boolean;
  /** Also return each token's text. */
  pieces: boolean;
}
/** `detokenize`: the text of tokens. */
export interface DetokenizeRequest {
  /** The request type. */
  type: "detokenize";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The tokens to turn into text. */
  tokens: number[];
}
/** `embed`: one embedding per input string. */
export interface EmbedRequest {
  /** The request type. */
  type: "embed";
  /** Request id, unique among this connection's requests in flight. */
  id: string;
  /** The strings to embed. */
  input: string[];
}

/** Every request the daemon understands, validated and normalized. */
export type Request =
  | HelloRequest
  | PingRequest
  | MetricsRequest
  | GenerateRequest
  | CancelRequest
  | PtySpawnRequest
  | PtyAttachRequest
  | PtyInputRequest
  | PtyResizeRequest
  | PtyDetachRequest
  | PtyKillRequest
  | PtyListRequest
  | PtyPauseRequest
  | PtyResumeRequest
  | PtyCaptureRequest
  | PtyWaitRequest
  | WatchRequest
  | TokenizeRequest
  | DetokenizeRequest
  | EmbedRequest;

/** The validated request of type `T`. */
export type RequestOf<T extends RequestType> = Extract<Request, { type: T }>;

/** A request's `type`. */
export type RequestType = Request["type"];

function bad(message: string): UmadError {
  return new UmadError("E_PROTO_BAD_REQUEST", message);
}

/** The request's id if it has a usable one, for addressing an error reply. */
export function requestIdOf(message: Message): string | undefined {
  const id = message.id;
  return typeof id === "string" && id.length > 0 && id.length <= MAX_ID_LENGTH ? id : undefined;
}

class Fields {
  constructor(readonly m: Message, readonly type: string) {}

  #where(key: string): string {
    return `${this.type}: field "${key}"`;
  }
  id(required: boolean): string | undefined {
    const v = this.m.id;
    if (v === undefined) {
      if (required) throw bad(`${this.type}: field "id" is required`);
      return undefined;
    }
    if (typeof v !== "string" || v.length === 0 || v.length > MAX_ID_LENGTH) {
      throw bad(`${this.#where("id")} must be a string of 1 to ${MAX_ID_LENGTH} characters`);
    }
    return v;
  }
  str(key: string, opts: { required?: boolean; max?: number; noNul?: boolean } = {}) {
    const v = this.m[key];
    if (v === undefined || v === null) {
      if (opts.required) throw bad(`${this.#where(key)} is required`);
      return undefined;
    }
    if (typeof v !== "string") throw bad(`${this.#where(key)} must be a string`);
    if (opts.max !== undefined && v.length > opts.max) {
      throw bad(`${this.#where(key)} is longer than ${opts.max} characters`);
    }
    if (opts.noNul && v.includes("\0")) throw bad(`${this.#where(key)} contains a NUL byte`);
    return v;
  }
  bool(key: string, fallback: boolean): boolean {
    const v = this.m[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "boolean") throw bad(`${this.#where(key)} must be a boolean`);
    return v;
  }
  num(
    key: string,
    opts: { int?: boolean; min?: number; max?: number; required?: boolean } = {},
  ): number | undefined {
    const v = this.m[key];
    if (v === undefined || v === null) {
      if (opts.required) throw bad(`${this.#where(key)} is required`);
      return undefined;
    }
    if (typeof v !== "number" || !Number.isFinite(v)) {
      throw bad(`${this.#where(key)} must be a finite number, got ${JSON.stringify(v)}`);
    }
    if (opts.int && !Number.isInteger(v)) {
      throw bad(`${this.#where(key)} must be an integer, got ${v}`);
    }
    if (opts.min !== undefined && v < opts.min) {
      throw bad(`${this.#where(key)} must be at least ${opts.min}, got ${v}`);
    }
    if (opts.max !== undefined && v > opts.max) {
      throw bad(`${this.#where(key)} must be at most ${opts.max}, got ${v}`);
    }
    return v;
  }
  cols(required: boolean): number | undefined {
    return this.num("cols", { int: true, min: 1, max: MAX_COLS, required });
  }
  rows(required: boolean): number | undefined {
    return this.num("rows", { int: true, min: 1, max: MAX_ROWS, required });
  }
  session(): string {
    return this.str("session", { required: true, max: 256 })!;
  }
}

function stringArray(value: unknown, where: string, max: number): string[] {
  if (!Array.isArray(value)) throw bad(`${where} must be an array of strings`);
  if (value.length > max) throw bad(`${where} has more than ${max} items`);
  for (const s of value) {
    if (typeof s !== "string") throw bad(`${where} must be an array of strings`);
  }
  return value as string[];
}

/** Largest GBNF grammar accepted, in characters. */
export const MAX_GRAMMAR_LENGTH = 256 * 1024;
/** Most tools one request may offer. */
export const MAX_TOOLS = 128;
/** Most texts one `embed` request may carry. */
export const MAX_EMBED_INPUTS = 2048;
/** Most tokens one `detokenize` request may carry. */
export const MAX_DETOKENIZE_TOKENS = 1 << 20;
/** Longest `pty.wait` (24 hours). */
export const MAX_WAIT_MS = 24 * 3600 * 1000;

function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function validateToolCalls(v: unknown, where: string): ChatToolCall[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw bad(`${where} must be an array`);
  return v.map((c: unknown, i: number) => {
    const fn = isMap(c) ? c.function : undefined;
    if (!isMap(c) || !isMap(fn) || typeof fn.name !== "string") {
      throw bad(`${where}[${i}] must be {id?, type: "function", function: {name, arguments}}`);
    }
    const args = fn.arguments;
    const call: ChatToolCall = {
      type: "function",
      function: {
        name: fn.name,
        arguments: typeof args === "string" ? args : JSON.stringify(args ?? {}),
      },
    };
    if (typeof c.id === "string") call.id = c.id;
    return call;
  });
}

function validateMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) {
    throw bad('generate: field "messages" must be a non-empty array of {role, content}');
  }
  return v.map((msg: unknown, i: number) => {
    const where = `generate: messages[${i}]`;
    if (!isMap(msg) || typeof msg.role !== "string") {
      throw bad(`${where} must be {role: string, content: string}`);
    }
    const toolCalls = validateToolCalls(msg.tool_calls, `${where}.tool_calls`);
    let content = msg.content;
    // An assistant turn that only called tools may carry no content (OpenAI sends null).
    if ((content === null || content === undefined) && toolCalls) content = "";
    if (typeof content !== "string") throw bad(`${where}: field "content" must be a string`);
    const out: ChatMessage = { role: msg.role, content };
    if (typeof msg.name === "string") out.name = msg.name;
    if (typeof msg.tool_call_id === "string") out.tool_call_id = msg.tool_call_id;
    if (toolCalls) out.tool_calls = toolCalls;
    return out;
  });
}

/** Deepest nesting of a tool's JSON Schema (templates and converters walk it recursively). */
export const MAX_SCHEMA_NESTING = 64;

/** How deeply objects and arrays nest in `v` (stops counting past the limit). */
function nestingOf(v: unknown, depth = 0): number {
  if (depth > MAX_SCHEMA_NESTING || v === null || typeof v !== "object") return depth;
  let max = depth + 1;
  for (const x of Object.values(v as Record<string, unknown>)) {
    max = Math.max(max, nestingOf(x, depth + 1));
    if (max > MAX_SCHEMA_NESTING) break;
  }
  return max;
}

function validateTools(v: unknown): ToolSpec[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw bad('generate: field "tools" must be an array of tools');
  if (v.length > MAX_TOOLS) throw bad(`generate: field "tools" has more than ${MAX_TOOLS} tools`);
  return v.map((t: unknown, i: number) => {
    const fn = isMap(t) ? t.function : undefined;
    if (!isMap(t) || (t.type !== undefined && t.type !== "function") || !isMap(fn)) {
      throw bad(`generate: tools[${i}] must be {type: "function", function: {name, ...}}`);
    }
    if (typeof fn.name !== "string" || !/^[A-Za-z0-9_.:-]{1,128}$/.test(fn.name)) {
      throw bad(
        `generate: tools[${i}].function.name must be 1 to 128 letters, digits or _.:-, got ${
          JSON.stringify(fn.name)
        }`,
      );
    }
    if (fn.description !== undefined && typeof fn.description !== "string") {
      throw bad(`generate: tools[${i}].function.description must be a string`);
    }
    if (fn.parameters !== undefined && !isMap(fn.parameters)) {
      throw bad(`generate: tools[${i}].function.parameters must be a JSON Schema object`);
    }
    if (fn.parameters !== undefined && nestingOf(fn.parameters) > MAX_SCHEMA_NESTING) {
      throw bad(`generate: tools[${i}].function.parameters nest deeper than ${MAX_SCHEMA_NESTING}`);
    }
    const spec: ToolSpec = { type: "function", function: { name: fn.name } };
    if (fn.description !== undefined) spec.function.description = fn.description as string;
    if (fn.parameters !== undefined) {
      spec.function.parameters = fn.parameters as Record<string, unknown>;
    }
    return spec;
  });
}

function validateToolChoice(v: unknown, tools: ToolSpec[] | undefined): ToolChoice | undefined {
  if (v === undefined || v === null) return undefined;
  if (v === "auto" || v === "none" || v === "required") {
    if (v === "required" && !tools?.length) {
      throw bad('generate: tool_choice "required" needs a non-empty "tools"');
    }
    return v;
  }
  const fn = isMap(v) ? v.function : undefined;
  if (isMap(v) && isMap(fn) && typeof fn.name === "string") {
    if (!tools?.some((t) => t.function.name === fn.name)) {
      throw bad(`generate: tool_choice names ${JSON.stringify(fn.name)}, which is not in "tools"`);
    }
    return { type: "function", function: { name: fn.name } };
  }
  throw bad(
    'generate: field "tool_choice" must be "auto", "none", "required" or ' +
      '{type: "function", function: {name}}',
  );
}

function validateGenerate(f: Fields): GenerateRequest {
  const m = f.m;
  const prompt = f.str("prompt");
  const messages = m.messages !== undefined && m.messages !== null
    ? validateMessages(m.messages)
    : undefined;
  if ((prompt === undefined) === (messages === undefined)) {
    throw bad('generate: exactly one of "prompt" or "messages" is required');
  }
  const stop = m.stop === undefined || m.stop === null
    ? []
    : stringArray(m.stop, 'generate: field "stop"', MAX_STOP_STRINGS);
  for (const s of stop) {
    if (s.length === 0 || s.length > MAX_STOP_LENGTH) {
      throw bad(`generate: each stop string must have 1 to ${MAX_STOP_LENGTH} characters`);
    }
  }
  const priority = m.priority ?? "interactive";
  if (priority !== "interactive" && priority !== "batch") {
    throw bad(
      `generate: field "priority" must be "interactive" or "batch", got ${
        JSON.stringify(priority)
      }`,
    );
  }
  const grammar = f.str("grammar", { max: MAX_GRAMMAR_LENGTH });
  let jsonSchema: Record<string, unknown> | undefined;
  if (m.json_schema !== undefined && m.json_schema !== null) {
    if (typeof m.json_schema === "boolean") jsonSchema = m.json_schema ? {} : { not: {} };
    else if (isMap(m.json_schema)) jsonSchema = m.json_schema;
    else throw bad('generate: field "json_schema" must be a JSON Schema object');
  }
  if (jsonSchema !== undefined && nestingOf(jsonSchema) > MAX_SCHEMA_NESTING) {
    throw bad(`generate: field "json_schema" nests deeper than ${MAX_SCHEMA_NESTING}`);
  }
  if (grammar !== undefined && jsonSchema !== undefined) {
    throw bad('generate: give "grammar" or "json_schema", not both');
  }
  const tools = validateTools(m.tools);
  const req: GenerateRequest = {
    type: "generate",
    id: f.id(true)!,
    prompt,
    messages,
    max_tokens: f.num("max_tokens", { int: true, min: 1, max: 1 << 24 }),
    temperature: f.num("temperature", { min: 0, max: 100 }),
    top_k: f.num("top_k", { int: true, min: 0, max: 1 << 24 }),
    top_p: f.num("top_p", { min: 0, max: 1 }),
    min_p: f.num("min_p", { min: 0, max: 1 }),
    repeat_penalty: f.num("repeat_penalty", { min: 0.01, max: 100 }),
    seed: f.num("seed", { int: true, min: 0, max: 0xffffffff }),
    stop,
    stream: f.bool("stream", true),
    priority,
    cache_prompt: f.bool("cache_prompt", true),
    special: f.bool("special", true),
  };
  if (grammar !== undefined) req.grammar = grammar;
  if (jsonSchema !== undefined) req.json_schema = jsonSchema;
  if (tools !== undefined) req.tools = tools;
  const toolChoice = validateToolChoice(m.tool_choice, tools);
  if (toolChoice !== undefined) req.tool_choice = toolChoice;
  return req;
}

function validateEmbedInput(v: unknown): string[] {
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || list.length === 0 || list.some((s) => typeof s !== "string")) {
    throw bad('embed: field "input" must be a string or a non-empty array of strings');
  }
  if (list.length > MAX_EMBED_INPUTS) {
    throw bad(`embed: field "input" has more than ${MAX_EMBED_INPUTS} texts`);
  }
  return list as string[];
}

function validateTokens(v: unknown): number[] {
  if (!Array.isArray(v)) throw bad('detokenize: field "tokens" must be an array of integers');
  if (v.length > MAX_DETOKENIZE_TOKENS) {
    throw bad(`detokenize: field "tokens" has more than ${MAX_DETOKENIZE_TOKENS} tokens`);
  }
  for (const t of v) {
    if (!(typeof t === "number" && Number.isInteger(t) && t >= 0 && t <= 0x7fffffff)) {
      throw bad(`detokenize: token ${JSON.stringify(t)} is not a non-negative integer`);
    }
  }
  return v as number[];
}

function validateEnv(value: unknown): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) {
    throw bad('pty.spawn: field "env" must be a map of strings');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== "string") throw bad(`pty.spawn: env "${k}" must be a string`);
    if (k.length === 0 || k.includes("=") || k.includes("\0") || v.includes("\0")) {
      throw bad(`pty.spawn: env "${k}" is not a valid variable (no "=" or NUL allowed)`);
    }
    out[k] = v;
  }
  return out;
}

function validateData(value: unknown, codec: Codec): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") {
    if (codec === "msgpack") return new TextEncoder().encode(value);
    try {
      return decodeBase64(value);
    } catch {
      throw bad('pty.input: field "data" must be base64 in JSON');
    }
  }
  throw bad('pty.input: field "data" is required (bytes: bin in MessagePack, base64 in JSON)');
}

function validateSignal(value: unknown): SignalName {
  if (value === undefined || value === null) return "SIGHUP";
  if (typeof value === "string") {
    const name = (value.startsWith("SIG") ? value : `SIG${value}`).toUpperCase();
    if ((SIGNAL_NAMES as readonly string[]).includes(name)) return name as SignalName;
  }
  throw bad(`pty.kill: unknown signal ${JSON.stringify(value)}`);
}

/**
 * Validates a decoded message and returns the typed request, or throws a
 * {@linkcode UmadError} with `E_PROTO_BAD_REQUEST`. A map with `prompt` and no
 * `type` is a `generate` request (UMA Serve's form); `{"event":"cancel","id":X}`
 * is a cancel of X.
 *
 * @example
 * ```ts
 * const req = validateRequest({ type: "ping", id: "1" }, "json");
 * console.log(req.type); // "ping"
 * ```
 */
export function validateRequest(message: Message, codec: Codec): Request {
  const type = message.type;
  if (type === undefined) {
    if (message.event === "cancel") {
      const f = new Fields(message, "cancel");
      return { type: "cancel", target: f.id(true)! };
    }
    if ("prompt" in message) {
      const req = validateGenerate(new Fields(message, "generate"));
      if (req.prompt !== undefined && hasLoneSurrogate(req.prompt)) {
        throw new UmadError("E_PROTO_001", "invalid utf-8 in the prompt (a lone surrogate)");
      }
      return { ...req, uma: true };
    }
  }
  if (typeof type !== "string") throw bad('Field "type" is required and must be a string');
  const f = new Fields(message, type);
  switch (type) {
    // These three answer at once, so an id is optional: UMA Serve clients send a bare
    // {"type":"metrics"}. The reply then carries id null.
    case "hello":
      return { type, id: f.id(false), client: f.str("client", { max: 256 }) };
    case "ping":
      return { type, id: f.id(false), t: message.t };
    case "metrics":
      return { type, id: f.id(false) };
    case "generate":
      return validateGenerate(f);
    case "cancel":
      return {
        type,
        id: f.id(false),
        target: f.str("target", { required: true, max: MAX_ID_LENGTH })!,
      };
    case "pty.spawn": {
      const argv = message.argv === undefined || message.argv === null
        ? undefined
        : stringArray(message.argv, 'pty.spawn: field "argv"', 4096);
      if (argv !== undefined) {
        if (argv.length === 0 || argv[0].length === 0) {
          throw bad('pty.spawn: field "argv" must name a program');
        }
        if (argv.some((a) => a.includes("\0"))) {
          throw bad('pty.spawn: field "argv" contains a NUL byte');
        }
      }
      return {
        type,
        id: f.id(true)!,
        argv,
        cwd: f.str("cwd", { max: 4096, noNul: true }),
        env: validateEnv(message.env),
        cols: f.cols(false),
        rows: f.rows(false),
        name: f.str("name", { max: 256, noNul: true }),
      };
    }
    case "pty.attach":
      return {
        type,
        id: f.id(true)!,
        session: f.session(),
        readonly: f.bool("readonly", false),
        cols: f.cols(false),
        rows: f.rows(false),
      };
    case "pty.input":
      return {
        type,
        id: f.id(false),
        session: f.session(),
        data: validateData(message.data, codec),
      };
    case "pty.resize":
      return {
        type,
        id: f.id(false),
        session: f.session(),
        cols: f.cols(true)!,
        rows: f.rows(true)!,
      };
    case "pty.detach":
      return { type, id: f.id(true)!, session: f.session() };
    case "pty.kill":
      return {
        type,
        id: f.id(true)!,
        session: f.session(),
        signal: validateSignal(message.signal),
      };
    case "pty.list":
      return { type, id: f.id(true)! };
    case "pty.pause":
    case "pty.resume":
      return { type, id: f.id(false), session: f.session() };
    case "pty.capture": {
      const format = message.format ?? "text";
      if (format !== "text" && format !== "ansi") {
        throw bad(
          `pty.capture: field "format" must be "text" or "ansi", got ${JSON.stringify(format)}`,
        );
      }
      const line = { int: true, min: -1_000_000, max: 1_000_000 };
      const req: PtyCaptureRequest = { type, id: f.id(true)!, session: f.session(), format };
      const start = f.num("start", line);
      const end = f.num("end", line);
      if (start !== undefined) req.start = start;
      if (end !== undefined) req.end = end;
      if (start !== undefined && end !== undefined && end < start) {
        throw bad(`pty.capture: "end" (${end}) is before "start" (${start})`);
      }
      return req;
    }
    case "pty.wait": {
      const pattern = f.str("pattern", { required: true, max: 4096 })!;
      if (pattern.length === 0) throw bad('pty.wait: field "pattern" must not be empty');
      const regex = f.bool("regex", false);
      if (regex) {
        try {
          new RegExp(pattern);
        } catch (e) {
          throw bad(
            `pty.wait: "pattern" is not a valid regular expression: ${(e as Error).message}`,
          );
        }
      }
      return {
        type,
        id: f.id(true)!,
        session: f.session(),
        pattern,
        regex,
        timeout_ms: f.num("timeout_ms", { int: true, min: 0, max: MAX_WAIT_MS }) ?? 30_000,
      };
    }
    case "watch": {
      const req: WatchRequest = { type, id: f.id(true)! };
      if (message.sessions !== undefined && message.sessions !== null) {
        req.sessions = stringArray(message.sessions, 'watch: field "sessions"', 4096);
      }
      return req;
    }
    case "tokenize":
      return {
        type,
        id: f.id(true)!,
        text: f.str("text", { required: true })!,
        special: f.bool("special", false),
        add_special: f.bool("add_special", false),
        pieces: f.bool("pieces", false),
      };
    case "detokenize":
      return { type, id: f.id(true)!, tokens: validateTokens(message.tokens) };
    case "embed":
      return { type, id: f.id(true)!, input: validateEmbedInput(message.input) };
    default:
      throw bad(`Unknown request type ${JSON.stringify(type).slice(0, 80)}`);
  }
}

/** The fields a client must give for each request type (the rest have defaults). */
export type RequiredInput = {
  hello: never;
  ping: never;
  metrics: never;
  generate: never;
  cancel: "target";
  tokenize: "text";
  detokenize: "tokens";
  embed: never;
  "pty.spawn": never;
  "pty.attach": "session";
  "pty.input": "session";
  "pty.resize": "session" | "cols" | "rows";
  "pty.detach": "session";
  "pty.kill": "session";
  "pty.list": never;
  "pty.pause": "session";
  "pty.resume": "session";
  "pty.capture": "session";
  "pty.wait": "session" | "pattern";
  watch: never;
};

/** Fields whose wire form is looser than the validated one, by request type. */
export type LooseInput = {
  embed: { input: string | string[] };
  "pty.input": { data: Uint8Array | string };
  "pty.kill": { signal?: SignalName | string };
  generate: { json_schema?: Record<string, unknown> | boolean };
};

/**
 * A request of type `T` as a client writes it: `type`, the fields without defaults,
 * and any of the others. `id` is chosen by the client library when left out.
 *
 * @example
 * ```ts
 * import type { RequestInput } from "./messages.ts";
 * const req: RequestInput<"tokenize"> = { type: "tokenize", text: "Hello" };
 * // @ts-expect-error `text` is required
 * const bad: RequestInput<"tokenize"> = { type: "tokenize" };
 * console.log(req.text, bad);
 * ```
 */
export type RequestInput<T extends RequestType = RequestType> = T extends RequestType ?
    & { type: T; id?: string }
    & Partial<Omit<RequestOf<T>, "type" | "id" | keyof LooseOf<T>>>
    & Pick<RequestOf<T>, RequiredInput[T] & keyof RequestOf<T>>
    & LooseOf<T>
  : never;

/** The loose fields of request type `T` ({@linkcode LooseInput}), if it has any. */
export type LooseOf<T extends RequestType> = T extends keyof LooseInput ? LooseInput[T] : unknown;
