import { decodeBase64 } from "./base64.ts";
import type { Codec, Message } from "./codec.ts";
import { ProtocolError } from "./errors.ts";

/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;

/** Longest request id accepted. */
export const MAX_ID_LENGTH = 256;
/** Terminal sizes accepted (xterm state is allocated per cell). */
export const MAX_COLS = 1000;
export const MAX_ROWS = 500;
/** At most this many stop strings, each at most this long. */
export const MAX_STOP_STRINGS = 16;
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

/** One chat message of a `generate` request. */
export interface ChatMessage {
  role: string;
  content: string;
}

export interface HelloRequest {
  type: "hello";
  id?: string;
  client?: string;
}
export interface PingRequest {
  type: "ping";
  id?: string;
  t?: unknown;
}
export interface MetricsRequest {
  type: "metrics";
  id?: string;
}
export interface GenerateRequest {
  type: "generate";
  id: string;
  prompt?: string;
  messages?: ChatMessage[];
  max_tokens?: number;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  min_p?: number;
  repeat_penalty?: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  priority: "interactive" | "batch";
}
export interface CancelRequest {
  type: "cancel";
  id?: string;
  target: string;
}
export interface PtySpawnRequest {
  type: "pty.spawn";
  id: string;
  argv?: string[];
  cwd?: string;
  env?: Record<string, string>;
  cols?: number;
  rows?: number;
  name?: string;
}
export interface PtyAttachRequest {
  type: "pty.attach";
  id: string;
  session: string;
  readonly: boolean;
  cols?: number;
  rows?: number;
}
export interface PtyInputRequest {
  type: "pty.input";
  id?: string;
  session: string;
  data: Uint8Array;
}
export interface PtyResizeRequest {
  type: "pty.resize";
  id?: string;
  session: string;
  cols: number;
  rows: number;
}
export interface PtyDetachRequest {
  type: "pty.detach";
  id: string;
  session: string;
}
export interface PtyKillRequest {
  type: "pty.kill";
  id: string;
  session: string;
  signal: SignalName;
}
export interface PtyListRequest {
  type: "pty.list";
  id: string;
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
  | PtyListRequest;

/** A request's `type`. */
export type RequestType = Request["type"];

function bad(message: string): ProtocolError {
  return new ProtocolError("E_PROTO_BAD_REQUEST", message);
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

function validateGenerate(f: Fields): GenerateRequest {
  const m = f.m;
  const prompt = f.str("prompt");
  let messages: ChatMessage[] | undefined;
  if (m.messages !== undefined && m.messages !== null) {
    if (!Array.isArray(m.messages) || m.messages.length === 0) {
      throw bad('generate: field "messages" must be a non-empty array of {role, content}');
    }
    messages = m.messages.map((msg: unknown, i: number) => {
      const r = msg as Record<string, unknown> | null;
      if (
        r === null || typeof r !== "object" || typeof r.role !== "string" ||
        typeof r.content !== "string"
      ) {
        throw bad(`generate: messages[${i}] must be {role: string, content: string}`);
      }
      return { role: r.role, content: r.content };
    });
  }
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
  return {
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
  };
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
 * {@linkcode ProtocolError} with `E_PROTO_BAD_REQUEST`. A map with `prompt` and no
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
  let type = message.type;
  if (type === undefined) {
    if (message.event === "cancel") {
      const f = new Fields(message, "cancel");
      return { type: "cancel", target: f.id(true)! };
    }
    if ("prompt" in message) type = "generate";
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
    default:
      throw bad(`Unknown request type ${JSON.stringify(type).slice(0, 80)}`);
  }
}
