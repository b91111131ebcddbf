/**
 * The `generate` service: admission, the bounded wait queue, streams' events and
 * backpressure, metrics. The model runs in the engine worker; this side never blocks.
 *
 * @module
 */
import { LLAMA_PATCHES } from "./llama_patches.ts";
import { noCacheStats } from "./scheduler.ts";
import {
  type GenerateRequest,
  type Message,
  type Request,
  type ToolCall,
  UmadError,
  type Usage,
} from "../protocol/mod.ts";
import { ModelRequestClient } from "./model_requests.ts";
import { structuredOutputGrammar } from "./structured_output.ts";
import type { ChatTemplateOverride } from "./prompt.ts";
import type { Service, Stream } from "../protocol/service.ts";
import type { DecodePriority } from "./ffi.ts";
import { chooseLibrary, gpuHints, libraryCandidates } from "./llama_lib.ts";
import { ConfigError } from "../protocol/errors.ts";
import { readGgufHeader } from "./gguf.ts";
import { ensureDemoModel } from "./synthetic_model.ts";
import { Samples } from "../protocol/samples.ts";
import { UmaCounters } from "./uma_metrics.ts";
import {
  CANCEL_CANCELLED,
  CANCEL_SHUTDOWN,
  CTRL_MAIL,
  CTRL_PREFILL,
  CTRL_WORDS,
  ctrlWord,
  type EngineInfo,
  type FromEngine,
  type GenerateParams,
  SLOT_CANCEL,
  SLOT_PAUSED,
  SLOT_WORDS,
  type StepStats,
  type StreamEvent,
  type ToEngine,
} from "./engine_messages.ts";

/** Log levels the service writes. */
export type LlmLogLevel = "debug" | "info" | "warn" | "error";

/** Settings of {@linkcode createLlmService}. */
export interface LlmServiceOptions {
  /** A GGUF model file; default: the demo model (random weights), generated on first use. */
  model?: string;
  /**
   * Directory of libllama/libggml; default `$UMAD_LLAMA_LIB`, else the best of a native
   * build, an added GPU package, the embedded libraries and the npm package (see
   * `llama_lib.ts`).
   */
  libDir?: string;
  /** Layers to offload to the GPU, or "auto" (default): as many as fit; 0: the CPU only. */
  gpuLayers?: number | "auto";
  /** The device to offload to (`CUDA0`, `Vulkan0`, `MTL0`; see `umad devices`). */
  device?: string;
  /** Use the CPU only, and prefer a CPU library. */
  noGpu?: boolean;
  /**
   * Total context in tokens (KV cells), shared by the streams (default 1024 per stream).
   * By default one stream may use all of it; `deterministic` splits it evenly.
   */
  ctx?: number;
  /** Streams decoded together (default 8). */
  parallel?: number;
  /** CPU threads (default: the CPUs this process may use). */
  threads?: number;
  /** Requests that may wait for a stream before `E_BUSY` (default 64). */
  queue?: number;
  /** `max_tokens` of requests that give none (`--max-tokens`; default 256). */
  defaultMaxTokens?: number;
  /**
   * How much longer than its decode rows alone a step may take while prompts are
   * prefilled beside them (default 1.5: inter-token latency at most 1.5x the quiet
   * step); prompt tokens flow at the most this allows, at full speed while nobody
   * decodes. Infinity: no limit (prompts never wait, decoding stalls for them).
   */
  latencyBudget?: number;
  /**
   * How decode threads compete for the CPU (Linux). `low` (default): nice 5, so they
   * yield to the event loop within a scheduler tick and keep a share of the CPU beside
   * busy programs; `idle`: `SCHED_IDLE`, so pings, keystrokes and every other program
   * preempt them at once, but programs that keep all cores busy starve decoding;
   * `normal`: like the daemon.
   */
  decodePriority?: DecodePriority;
  /**
   * The deterministic scheduler (default false): the same seed gives the same tokens
   * whether a request runs alone or beside others. One KV stream per sequence (each
   * holds ctx / parallel tokens), one-stream decodes padded to two rows, prompt chunks
   * under 64 tokens in passes of their own: slower, and time to first token is longer.
   */
  deterministic?: boolean;
  /**
   * Reuse prompt prefixes already in KV (default true): of finished streams kept as
   * cached sequences, and of live ones; a request opts out with `cache_prompt: false`.
   */
  prefixCache?: boolean;
  /**
   * Lookup drafts (default true; deterministic mode only): a lone stream's decodes
   * carry a second row anyway, so it holds the token that followed the stream's last
   * tokens where they occurred before. When the sampled token matches, the row's logits
   * give the next token in the same step; the tokens are the same either way.
   */
  lookup?: boolean;
  /**
   * `--chat-template FILE|NAME`: a Jinja template file, or the name of one of llama.cpp's
   * built-in templates ("chatml", "llama3", ...), instead of the model's own.
   */
  chatTemplate?: string;
  /** Where log lines go. */
  log?: (level: LlmLogLevel, message: string) => void;
}

/** The service, plus what it loaded. */
export interface LlmService extends Service {
  /** The loaded model and context. */
  readonly info: EngineInfo;
  /** True when serving the generated demo model (random weights). */
  readonly demo: boolean;
}

/** Defaults of sampling, as llama-server has them. */
export const GENERATE_DEFAULTS = {
  max_tokens: 256,
  temperature: 0.8,
  top_k: 40,
  top_p: 0.95,
  min_p: 0.05,
  repeat_penalty: 1.0,
} as const;

const DEFAULT_PARALLEL = 8;
/** The default latency budget: a step at most 1.5x its decode rows' cost alone. */
export const DEFAULT_LATENCY_BUDGET = 1.5;
const DEFAULT_CTX_PER_STREAM = 1024;
const DEFAULT_QUEUE = 64;

interface Job {
  rid: number;
  req: GenerateRequest;
  stream: Stream;
  params: GenerateParams;
  slot: number;
  start: number;
  firstAt: number;
  lastAt: number;
  text: string[];
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  /** The client was answered (eos sent, or gone); the slot waits for the engine. */
  answered: boolean;
  ended: boolean;
  onAbort: () => void;
}

type Outcome =
  | "stop"
  | "length"
  | "stop_string"
  | "cancelled"
  | "shutdown"
  | "disconnected"
  | "busy"
  | "prompt_too_large"
  | "bad_request"
  | "error";

class GenerateService implements LlmService {
  readonly types = ["generate", "tokenize", "detokenize", "embed"] as const;
  readonly info: EngineInfo;
  readonly demo: boolean;
  readonly #worker: Worker;
  readonly #control: Int32Array;
  readonly #abort: Uint8Array;
  readonly #log: (level: LlmLogLevel, message: string) => void;
  readonly #slots: (Job | null)[];
  readonly #queueMax: number;
  readonly #defaultMaxTokens: number;
  #interactive: Job[] = [];
  #batch: Job[] = [];
  #batchSkips = 0;
  #jobs = new Map<number, Job>();
  #nextRid = 1;
  #closing = false;
  #closed: Promise<void>;
  #resolveClosed!: () => void;
  #fatal: string | null = null;
  // metrics
  #tokensIn = 0;
  #tokensOut = 0;
  #outcomes: Record<Outcome, number> = {
    stop: 0,
    length: 0,
    stop_string: 0,
    cancelled: 0,
    shutdown: 0,
    disconnected: 0,
    busy: 0,
    prompt_too_large: 0,
    bad_request: 0,
    error: 0,
  };
  #ttft = new Samples();
  #itl = new Samples();
  #rows = new Samples(4096);
  #steps = 0;
  #drafts = 0;
  #draftsAccepted = 0;
  #prefillTokens = 0;
  #decodeMs = 0;
  #prefillMs = 0;
  #kvCells = 0;
  #kvSpan = 0;
  #paused = 0;
  #cache: StepStats["cache"] = noCacheStats();
  #cost: StepStats["cost"] = null;
  #uma = new UmaCounters();

  constructor(
    worker: Worker,
    control: Int32Array,
    abort: Uint8Array,
    info: EngineInfo,
    demo: boolean,
    queueMax: number,
    log: (level: LlmLogLevel, message: string) => void,
    defaultMaxTokens: number = GENERATE_DEFAULTS.max_tokens,
  ) {
    this.#defaultMaxTokens = defaultMaxTokens;
    this.#worker = worker;
    this.#control = control;
    this.#abort = abort;
    this.info = info;
    this.demo = demo;
    this.#queueMax = queueMax;
    this.#log = log;
    this.#slots = new Array(info.parallel).fill(null);
    this.#closed = new Promise((r) => (this.#resolveClosed = r));
    worker.onmessage = (e: MessageEvent<FromEngine>) => this.#onEngine(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      this.#onFatal(`engine worker crashed: ${e.message}`);
    };
  }

  #outbox: ToEngine[] = [];
  readonly #model = new ModelRequestClient((msg) => this.#post(msg));

  /** Queues a message; one postMessage per turn, so requests sent together start together. */
  #post(msg: ToEngine) {
    if (this.#outbox.push(msg) > 1) return;
    queueMicrotask(() => {
      const messages = this.#outbox;
      this.#outbox = [];
      this.#worker.postMessage(messages.length === 1 ? messages[0] : { op: "batch", messages });
      // The busy engine checks this count to know a message waits for it (see engine_worker.ts).
      Atomics.add(this.#control, ctrlWord(this.#control, CTRL_MAIL), 1);
    });
  }

  handle(request: Request, stream: Stream): void {
    if (this.#fatal !== null) throw new UmadError("E_INTERNAL", this.#fatal);
    if (
      request.type === "tokenize" || request.type === "detokenize" || request.type === "embed"
    ) {
      if (this.#closing) throw new UmadError("E_INTERNAL", "The daemon is shutting down");
      this.#model.handle(request, stream);
      return;
    }
    if (request.type !== "generate") {
      throw new UmadError("E_PROTO_BAD_REQUEST", `generate service got "${request.type}"`);
    }
    if (this.#closing) {
      stream.send("eos", { reason: "shutdown", usage: usage(0, 0, 0, 0, 0) });
      stream.end();
      return;
    }
    const params = paramsOf(request, this.#defaultMaxTokens);
    // Grammar, schema and forced tool calls are checked here: a bad one is the client's error.
    const grammar = structuredOutputGrammar(request, this.info.tool_call_format);
    if (grammar !== undefined) params.grammar = grammar;
    const busy = this.#slots.every((s) => s !== null);
    if (busy && this.#interactive.length + this.#batch.length >= this.#queueMax) {
      this.#outcomes.busy++;
      throw new UmadError(
        "E_BUSY",
        `All ${this.#slots.length} streams are busy and ${this.#queueMax} requests are ` +
          `already waiting; retry later`,
      );
    }
    const job: Job = {
      rid: this.#nextRid++,
      req: request,
      stream,
      params,
      slot: -1,
      start: performance.now(),
      firstAt: 0,
      lastAt: 0,
      text: [],
      promptTokens: 0,
      cachedTokens: 0,
      completionTokens: 0,
      answered: false,
      ended: false,
      onAbort: () => this.#onAbort(job),
    };
    this.#jobs.set(job.rid, job);
    if (stream.signal.aborted) {
      this.#onAbort(job);
      return;
    }
    stream.signal.addEventListener("abort", job.onAbort, { once: true });
    (params.priority === "batch" ? this.#batch : this.#interactive).push(job);
    this.#admit();
  }

  /** Moves waiting jobs into free slots: interactive first, a batch job after 3 skips. */
  #admit() {
    while (this.#interactive.length + this.#batch.length > 0) {
      const slot = this.#slots.indexOf(null);
      if (slot < 0) return;
      let job: Job;
      if (this.#batch.length && (this.#interactive.length === 0 || this.#batchSkips >= 3)) {
        job = this.#batch.shift()!;
        this.#batchSkips = 0;
      } else {
        job = this.#interactive.shift()!;
        if (this.#batch.length) this.#batchSkips++;
      }
      job.slot = slot;
      this.#slots[slot] = job;
      Atomics.store(this.#control, slot * SLOT_WORDS + SLOT_CANCEL, 0);
      Atomics.store(this.#control, slot * SLOT_WORDS + SLOT_PAUSED, 0);
      const toolsOn = (job.req.tools?.length ?? 0) > 0 && job.req.tool_choice !== "none";
      this.#post({
        op: "start",
        slot,
        rid: job.rid,
        prompt: job.req.prompt,
        messages: job.req.messages,
        tools: toolsOn ? job.req.tools : undefined,
        special: job.req.special,
        parseTools: toolsOn && job.req.messages !== undefined,
        params: job.params,
      });
    }
  }

  #onAbort(job: Job) {
    if (job.ended) return;
    const reason = String(job.stream.signal.reason);
    if (job.slot < 0) {
      // Still waiting: it never reached the engine.
      for (const q of [this.#interactive, this.#batch]) {
        const i = q.indexOf(job);
        if (i >= 0) q.splice(i, 1);
      }
      this.#answer(job, reason === "shutdown" ? "shutdown" : "cancelled", reason);
      this.#release(job);
      return;
    }
    const code = reason === "shutdown" ? CANCEL_SHUTDOWN : CANCEL_CANCELLED;
    Atomics.store(this.#control, job.slot * SLOT_WORDS + SLOT_CANCEL, code);
    // A prompt chunk of this stream may be decoding now: abort it inside llama_decode.
    const prefillWord = ctrlWord(this.#control, CTRL_PREFILL);
    const decoding = Atomics.load(this.#control, prefillWord);
    if (decoding === job.slot + 1 || decoding === -1) Atomics.store(this.#abort, 0, 1);
    this.#post({ op: "wake" });
    // Answer now: tokens the engine made before it saw the flag are dropped. The slot
    // is reused once the engine confirms the sequence is cleared.
    this.#answer(job, reason === "shutdown" ? "shutdown" : "cancelled", reason);
  }

  #onEngine(msg: FromEngine) {
    switch (msg.op) {
      case "events":
        for (const ev of msg.events) this.#onEvent(ev);
        if (msg.stats) this.#onStats(msg.stats);
        this.#admit();
        return;
      case "log":
        this.#log(msg.level, msg.message);
        return;
      case "fatal":
        this.#onFatal(msg.message);
        return;
      case "closed":
        this.#resolveClosed();
        return;
      case "ready":
        return;
      case "reply":
        this.#model.onReply(msg);
        return;
    }
  }

  #onStats(s: StepStats) {
    this.#uma.add(s);
    if (s.rows) {
      this.#steps++;
      this.#rows.add(s.rows);
    }
    this.#drafts += s.drafts;
    this.#draftsAccepted += s.draftsAccepted;
    this.#prefillTokens += s.prefillTokens;
    this.#decodeMs += s.decodeMs;
    this.#prefillMs += s.prefillMs;
    this.#kvCells = s.kvCells;
    this.#kvSpan = s.kvSpan;
    this.#cache = s.cache;
    this.#cost = s.cost;
  }

  #onEvent(ev: StreamEvent) {
    const job = this.#jobs.get(ev.rid);
    if (!job || job.ended) return;
    if (job.answered) {
      if (ev.kind === "end" || ev.kind === "error") this.#release(job);
      return;
    }
    const now = performance.now();
    switch (ev.kind) {
      case "started":
        job.promptTokens = ev.prompt_tokens;
        return;
      case "admitted":
        job.cachedTokens = ev.cached_tokens;
        return;
      case "token": {
        job.completionTokens++;
        this.#tokensOut++;
        if (job.firstAt === 0) {
          job.firstAt = now;
          this.#ttft.add(now - job.start);
        } else {
          this.#itl.add(now - job.lastAt);
        }
        job.lastAt = now;
        if (!job.req.stream) {
          job.text.push(ev.text);
          return;
        }
        const ok = job.stream.send("token", { text: ev.text, token_id: ev.token_id });
        if (!ok && job.slot >= 0) this.#pause(job);
        return;
      }
      case "end":
        job.promptTokens = ev.prompt_tokens;
        job.cachedTokens = ev.cached_tokens;
        job.completionTokens = ev.completion_tokens;
        this.#answer(job, ev.reason, undefined, ev.tool_calls);
        this.#release(job);
        return;
      case "error":
        this.#outcomes[
          ev.code === "E_LIMIT_PROMPT_TOO_LARGE"
            ? "prompt_too_large"
            : ev.code === "E_PROTO_BAD_REQUEST"
            ? "bad_request"
            : "error"
        ]++;
        job.answered = true;
        this.#release(job);
        job.stream.fail(ev.code, ev.message);
        return;
    }
  }

  /** The connection is over its byte cap: leave this stream out of batches until it drains. */
  #pause(job: Job) {
    const word = job.slot * SLOT_WORDS + SLOT_PAUSED;
    if (Atomics.load(this.#control, word)) return;
    Atomics.store(this.#control, word, 1);
    this.#paused++;
    job.stream.ready().then(() => {
      if (this.#slots[job.slot] !== job) return;
      Atomics.store(this.#control, word, 0);
      this.#post({ op: "wake" });
    });
  }

  /** The engine is done with the job: its slot is free again. */
  #release(job: Job) {
    job.ended = true;
    this.#jobs.delete(job.rid);
    job.stream.signal.removeEventListener("abort", job.onAbort);
    if (job.slot >= 0 && this.#slots[job.slot] === job) {
      this.#slots[job.slot] = null;
      Atomics.store(this.#control, job.slot * SLOT_WORDS + SLOT_PAUSED, 0);
    }
  }

  /** Sends the stream's last event (eos or result) once, and counts its outcome. */
  #answer(
    job: Job,
    reason: "stop" | "length" | "stop_string" | "cancelled" | "shutdown",
    abortReason?: string,
    toolCalls?: ToolCall[],
  ) {
    if (job.answered) return;
    job.answered = true;
    job.stream.signal.removeEventListener("abort", job.onAbort);
    const signalReason = abortReason ?? String(job.stream.signal.reason ?? "");
    this.#outcomes[
      reason === "cancelled" && signalReason === "disconnected" ? "disconnected" : reason
    ]++;
    this.#tokensIn += job.promptTokens;
    const now = performance.now();
    const u = usage(
      job.promptTokens,
      job.cachedTokens,
      job.completionTokens,
      job.firstAt ? job.firstAt - job.start : now - job.start,
      now - job.start,
    );
    const calls = toolCalls?.length ? { tool_calls: toolCalls } : {};
    if (job.req.stream) job.stream.send("eos", { reason, usage: u, ...calls });
    else job.stream.send("result", { text: job.text.join(""), reason, usage: u, ...calls });
    job.stream.end();
  }

  #onFatal(message: string) {
    if (this.#fatal !== null) return;
    this.#fatal = message;
    this.#log("error", `LLM engine stopped: ${message}`);
    for (const job of [...this.#jobs.values()]) {
      this.#release(job);
      if (!job.answered) job.stream.fail("E_INTERNAL", `The model engine failed: ${message}`);
      job.answered = true;
    }
    this.#slots.fill(null);
    this.#interactive = [];
    this.#batch = [];
    this.#model.failAll(`The model engine failed: ${message}`);
    this.#resolveClosed();
  }

  hello(): Message {
    const i = this.info;
    return {
      model: {
        name: i.name,
        path: i.path,
        description: i.description,
        random_weights: this.demo,
        n_params: i.n_params,
        n_vocab: i.n_vocab,
        n_ctx: i.n_ctx,
        n_ctx_total: i.n_ctx_total,
        n_ctx_train: i.n_ctx_train,
        parallel: i.parallel,
        threads: i.threads,
        chat_template: i.chat_template,
        chat_template_renderer: i.chat_template_renderer,
        tool_call_format: i.tool_call_format,
        vocab_type: i.vocab_type,
        n_embd: i.n_embd,
        embedding_pooling: i.embedding_pooling,
        mode: i.mode,
        kv_unified: i.kv_unified,
        batch_invariant: i.batch_invariant,
        latency_budget: i.latency_budget,
        prefix_cache: i.prefix_cache,
        n_seq_max: i.n_seq_max,
        lookup_drafts: i.lookup_drafts,
        decode_priority: i.decode_priority,
        library: i.library,
        devices: i.devices,
        gpu_layers: i.gpu_layers,
        gpu_layers_total: i.gpu_layers_total,
        gpu_devices: i.gpu_devices,
      },
    };
  }

  metrics(): Message {
    const active = this.#slots.filter((s) => s !== null).length;
    const rows = this.#rows.summary();
    return {
      // UMA Serve's clients read its counters at the top level (PROTOCOL.md).
      ...this.#uma.flat(this.#tokensOut),
      llm: {
        model: this.info.name,
        tokens_in: this.#tokensIn,
        tokens_out: this.#tokensOut,
        requests: { ...this.#outcomes },
        queue_depth: this.#interactive.length + this.#batch.length,
        queue_max: this.#queueMax,
        active_streams: active,
        parallel: this.#slots.length,
        decode_steps: this.#steps,
        prefill_tokens: this.#prefillTokens,
        decode_ms: Math.round(this.#decodeMs),
        prefill_ms: Math.round(this.#prefillMs),
        batch_rows: { p50: rows.p50, p95: rows.p95, max: rows.max },
        lookup_drafts: { decoded: this.#drafts, accepted: this.#draftsAccepted },
        kv_cells_used: this.#kvCells,
        kv_cells_total: this.info.n_ctx_total,
        kv_cells_span: this.#kvSpan,
        prefix_cache: {
          hits: this.#cache.hits,
          misses: this.#cache.misses,
          tokens_reused: this.#cache.tokensReused,
          evictions: this.#cache.evictions,
          sequences: this.#cache.sequences,
          cells: this.#cache.cells,
          reuse_rate: {
            chat: round3(this.#cache.reuseRate.chat),
            prompt: round3(this.#cache.reuseRate.prompt),
          },
        },
        cost_model: this.#cost && {
          fixed_ms: round3(this.#cost.fixed),
          per_token_ms: round3(this.#cost.perToken),
          per_output_ms: round3(this.#cost.perOutput),
          per_kcell_attended_ms: round3(this.#cost.perKcellAttended),
          per_token_kcell_ms: round3(this.#cost.perTokenKcell),
        },
        backpressure_pauses: this.#paused,
        ttft_ms: this.#ttft.summary(),
        inter_token_ms: this.#itl.summary(),
        model_requests: { ...this.#model.counts, waiting: this.#model.pending },
      },
    };
  }

  async close(deadline: number = performance.now() + 3000): Promise<void> {
    if (this.#closing) return this.#closed;
    this.#closing = true;
    for (const job of [...this.#interactive, ...this.#batch]) {
      this.#answer(job, "shutdown", "shutdown");
      this.#release(job);
    }
    this.#interactive = [];
    this.#batch = [];
    for (let s = 0; s < this.#slots.length; s++) {
      Atomics.store(this.#control, s * SLOT_WORDS + SLOT_CANCEL, CANCEL_SHUTDOWN);
    }
    Atomics.store(this.#abort, 0, 1);
    this.#post({ op: "shutdown" });
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#closed,
      new Promise((r) => (timer = setTimeout(r, Math.max(0, deadline - performance.now())))),
    ]);
    clearTimeout(timer);
    this.#worker.terminate();
    for (const job of [...this.#jobs.values()]) {
      this.#answer(job, "shutdown", "shutdown");
      this.#release(job);
    }
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function usage(
  prompt: number,
  cached: number,
  completion: number,
  ttft: number,
  total: number,
): Usage {
  const r = (x: number) => Math.round(x * 100) / 100;
  return {
    prompt_tokens: prompt,
    cached_tokens: cached,
    completion_tokens: completion,
    ttft_ms: r(ttft),
    total_ms: r(total),
  };
}

/**
 * `--chat-template FILE|NAME`: an existing file is a Jinja template; anything else names
 * one of llama.cpp's built-in templates (checked against the library's list when the
 * model loads).
 */
function chatTemplateOverride(value: string | undefined): ChatTemplateOverride | undefined {
  if (value === undefined) return undefined;
  let isFile = false;
  try {
    isFile = Deno.statSync(value).isFile;
  } catch { /* not a file: a built-in's name */ }
  if (!isFile) {
    if (value.includes("/") || value.endsWith(".jinja")) {
      throw new Error(`--chat-template: file "${value}" does not exist`);
    }
    return { kind: "builtin", name: value };
  }
  return { kind: "jinja", source: Deno.readTextFileSync(value), name: `file:${value}` };
}

/** Sampling settings with defaults; a request without a seed gets a random one. */
function paramsOf(r: GenerateRequest, defaultMaxTokens: number): GenerateParams {
  const d = GENERATE_DEFAULTS;
  return {
    maxTokens: r.max_tokens ?? defaultMaxTokens,
    temperature: r.temperature ?? d.temperature,
    topK: r.top_k ?? d.top_k,
    topP: r.top_p ?? d.top_p,
    minP: r.min_p ?? d.min_p,
    repeatPenalty: r.repeat_penalty ?? d.repeat_penalty,
    seed: r.seed ?? crypto.getRandomValues(new Uint32Array(1))[0],
    stop: r.stop,
    priority: r.priority,
    cachePrompt: r.cache_prompt,
  };
}

/**
 * Loads a model into an engine worker and returns the `generate` service. With no
 * `model`, serves the demo model (random weights), generated on first use into the
 * user cache directory. Throws an Error with a clear message when the model file is
 * not a valid GGUF or the llama.cpp libraries cannot be found.
 *
 * @example
 * ```ts
 * const llm = await createLlmService({ parallel: 4 });
 * // server routes "generate" requests to llm.handle(request, stream)
 * await llm.close?.();
 * ```
 */
export async function createLlmService(options: LlmServiceOptions = {}): Promise<LlmService> {
  const log = options.log ?? (() => {});
  const latencyBudget = options.latencyBudget ?? DEFAULT_LATENCY_BUDGET;
  if (!(latencyBudget >= 1)) {
    throw new RangeError(`latencyBudget must be at least 1 (or Infinity), got ${latencyBudget}`);
  }
  const parallel = options.parallel ?? DEFAULT_PARALLEL;
  if (!(Number.isInteger(parallel) && parallel >= 1 && parallel <= 256)) {
    throw new RangeError(`parallel must be an integer from 1 to 256, got ${parallel}`);
  }
  const libraries = chooseLibrary(libraryCandidates({ libDir: options.libDir }), {
    gpu: !options.noGpu,
    present: gpuHints(),
  });
  log("info", `llama.cpp: loading ${libraries.reason}`);
  for (const s of libraries.skipped) log("info", `llama.cpp: skipped ${s}`);
  const unpatched = LLAMA_PATCHES.map((p) => p.name).filter((n) =>
    !libraries.choice.manifest?.patches?.includes(n)
  );
  if (
    !options.deterministic && libraries.choice.files?.backend === "cpu" && unpatched.length
  ) {
    log(
      "info",
      `llama.cpp: this library lacks umad's patch ${unpatched.join(", ")}: attention over the ` +
        `one KV cache every stream shares passes other streams' cells more slowly (a whole ` +
        `prompt beside 8 streams: 1.3× the time); "umad llama build" makes a native build with it`,
    );
  }
  let modelPath = options.model;
  const demo = modelPath === undefined;
  if (modelPath === undefined) {
    modelPath = ensureDemoModel();
    log(
      "warn",
      `No --model given: serving the built-in demo model "${modelPath}". It has random ` +
        `weights, so its output is meaningless text; start with --model FILE.gguf to serve a real model.`,
    );
  }
  readGgufHeader(modelPath); // a clear error for a file that is not a GGUF model
  const chatTemplate = chatTemplateOverride(options.chatTemplate);
  const total = options.ctx ?? DEFAULT_CTX_PER_STREAM * parallel;
  const perStream = Math.floor(total / parallel);
  if (perStream < 16) {
    throw new RangeError(
      `--ctx ${options.ctx} leaves ${perStream} tokens per stream for ${parallel} streams; ` +
        `give at least ${16 * parallel}`,
    );
  }
  const control = new SharedArrayBuffer((parallel * SLOT_WORDS + CTRL_WORDS) * 4);
  const abort = new SharedArrayBuffer(8);
  const worker = new Worker(new URL("./engine_worker.ts", import.meta.url).href, {
    type: "module",
  });
  const info = await new Promise<EngineInfo>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<FromEngine>) => {
      const m = e.data;
      if (m.op === "log") log(m.level, m.message);
      else if (m.op === "ready") resolve(m.info);
      else if (m.op === "fatal") {
        reject(m.config ? new ConfigError(m.message) : new Error(m.message));
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`LLM engine worker failed to start: ${e.message}`));
    };
    worker.postMessage(
      {
        op: "init",
        libraries: [libraries.choice, ...libraries.fallbacks].map((c) => ({
          dir: c.dir,
          source: c.source,
          reason: c === libraries.choice ? libraries.reason : `fallback: ${c.source} ${c.dir}`,
        })),
        gpu: {
          gpuLayers: options.noGpu ? 0 : options.gpuLayers ?? "auto",
          device: options.device,
          noGpu: options.noGpu,
        },
        modelPath: modelPath!,
        ctx: total,
        parallel,
        threads: options.threads ?? 0,
        control,
        abort,
        latencyBudget,
        decodePriority: options.decodePriority ?? "low",
        deterministic: options.deterministic ?? false,
        prefixCache: options.prefixCache ?? true,
        lookup: options.lookup ?? true,
        chatTemplate,
      } satisfies ToEngine,
    );
  }).catch((err) => {
    worker.terminate();
    throw err;
  });
  return new GenerateService(
    worker,
    new Int32Array(control),
    new Uint8Array(abort),
    info,
    demo,
    options.queue ?? DEFAULT_QUEUE,
    log,
    options.defaultMaxTokens,
  );
}

/**
 * A service for `--no-model`: every `generate` gets `E_NO_MODEL`.
 *
 * @example
 * ```ts
 * const services = [createNoModelService()];
 * ```
 */
export function createNoModelService(): Service {
  return {
    types: ["generate", "tokenize", "detokenize", "embed"],
    handle() {
      throw new UmadError(
        "E_NO_MODEL",
        "No model is loaded (the daemon runs with --no-model); start it with --model FILE.gguf",
      );
    },
    hello: () => ({ model: null }),
  };
}
