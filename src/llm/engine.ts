/**
 * The engine: one llama context, and the executor of the scheduler's plans. Runs inside
 * the engine worker, calling llama.cpp synchronously. The policy (which rows, which
 * prompt chunks, which cached prefix, what to evict) lives in `scheduler.ts`; this file
 * turns each plan into llama.cpp calls, samples, and turns tokens into stream events.
 *
 * Default mode: a unified KV cache (`kv_unified`), so one `llama_decode` per step holds
 * every decoding stream's row and prompt chunks (llama.cpp splits such a batch simply, in
 * one ubatch of up to n_batch tokens), one stream may use the whole context, and
 * sequences share prefix cells (`llama_memory_seq_cp` adds a sequence id to cells).
 *
 * Deterministic mode (`--deterministic`): the same seed gives the same tokens alone or
 * beside others, which needs llama.cpp to take the same kernel path whatever runs beside:
 * - every decode call has at least two rows: a one-row decode takes another kernel path;
 *   a lone stream's second row is its lookup draft when it has one (see `lookup.ts`),
 *   else a filler on a spare sequence;
 * - sequence ids in a decode call are contiguous (holes get a filler row that is removed
 *   afterwards): with one KV stream per sequence llama.cpp splits a batch at every gap,
 *   which would make one-row ubatches;
 * - every row of the decode call asks for logits, so the output matmul has ≥ 2 rows;
 * - prompt chunks stay under 64 tokens, in calls of their own: from 64 query rows on, the
 *   CPU flash-attention kernel switches to a tiled path that rounds differently.
 * It keeps one KV stream per sequence: under a unified cache a sequence's cells go
 * wherever free cells are (holes left by ended streams) and the CPU flash-attention
 * kernel accumulates its online softmax in cell order, so the same sequence would round
 * differently depending on its neighbours' history.
 */
import { deviceList, type OffloadRequest, planModelOffload } from "./devices.ts";
import { Batch, GrammarRejectedError, LlamaContext, LlamaModel, Sampler } from "./llama.ts";
import { ChatTemplateError, type ChatTemplateOverride, PromptBuilder } from "./prompt.ts";
import { detectToolCallFormat, parseToolCalls, type ToolCallFormat } from "./tool_calls.ts";
import type { DecodePriority, NativeLibs } from "./ffi.ts";
import { Detokenizer } from "./detokenizer.ts";
import { FittedCostModel } from "./cost_model.ts";
import {
  type DecodeCall,
  DETERMINISTIC_MAX_CHUNK,
  type MemoryOp,
  type Row,
  Scheduler,
} from "./scheduler.ts";
import {
  CANCEL_NONE,
  CANCEL_SHUTDOWN,
  CTRL_PREFILL,
  ctrlWord,
  type EngineInfo,
  type EngineStart,
  type GenerateParams,
  type LibraryInfo,
  SLOT_CANCEL,
  SLOT_PAUSED,
  SLOT_WORDS,
  type StepStats,
  type StreamEvent,
} from "./engine_messages.ts";
import type { ToolSpec } from "../protocol/messages.ts";
import type { ToolCall } from "../protocol/events.ts";

/** Most tokens of one decode call in default mode (llama.cpp's usual n_batch). */
const UNIFIED_BATCH = 512;

type EndReason = "stop" | "length" | "stop_string" | "cancelled" | "shutdown";

/** A stream's sampling and text state; its tokens and KV belong to the scheduler. */
class Stream {
  readonly slot: number;
  readonly rid: number;
  readonly params: GenerateParams;
  readonly promptTokens: number;
  readonly sampler: Sampler;
  readonly text: Detokenizer;
  generated = 0;
  /** Prompt tokens taken from the prefix cache (known once admitted). */
  cached = 0;
  /** The sampled tokens, for tool calls read out of the output. */
  readonly output: number[] = [];
  /** The request's tools, when its output is read for tool calls. */
  readonly tools: ToolSpec[] | null;
  constructor(
    slot: number,
    rid: number,
    params: GenerateParams,
    promptTokens: number,
    sampler: Sampler,
    tools: ToolSpec[] | null,
  ) {
    this.slot = slot;
    this.rid = rid;
    this.params = params;
    this.promptTokens = promptTokens;
    this.sampler = sampler;
    this.tools = tools;
    this.text = new Detokenizer(params.stop);
  }
}

/** Engine settings. */
export interface EngineOptions {
  /** The GGUF file. */
  modelPath: string;
  /** KV cells in all, shared by the streams (0: 1024 per stream). */
  ctx: number;
  /** Streams holding a sequence at once. */
  parallel: number;
  /** Decode threads. */
  threads: number;
  /** The shared control words (see engine_messages.ts). */
  control: Int32Array;
  /** Byte 0 nonzero aborts the decode in progress. */
  abort: Uint8Array;
  /** A step may take this many times its decode rows' cost alone (Infinity: no limit). */
  latencyBudget: number;
  /** The batch-invariant path: same seed, same tokens alone or beside others. */
  deterministic: boolean;
  /** Reuse prompt prefixes already in KV. */
  prefixCache: boolean;
  /** Spend a lone stream's padding row on a prompt-lookup draft (deterministic mode). */
  lookup: boolean;
  /** The decode threads' priority, as applied (reported in `info`). */
  decodePriority: DecodePriority;
  /** The library loaded (reported in `info`). */
  library: LibraryInfo;
  /** GPU offload; default: as many layers as fit on the GPUs. */
  gpu?: OffloadRequest;
  /** `--chat-template`: replaces the model's own. */
  chatTemplate?: ChatTemplateOverride;
  /** Log lines for the daemon's log. */
  log: (level: "info" | "warn" | "error", message: string) => void;
  /** Stream events (and a call's figures) for the service. */
  emit: (events: StreamEvent[], stats?: StepStats) => void;
}

/** The model, its context and the scheduler's executor. */
export class Engine {
  /** The loaded model. */
  readonly model: LlamaModel;
  /** Its one context. */
  readonly ctx: LlamaContext;
  /** What `hello` reports. */
  readonly info: EngineInfo;
  /** The policy this engine executes. */
  readonly scheduler: Scheduler;
  /** Requests → prompt tokens (chat template, injection-safe tokenization). */
  readonly prompts: PromptBuilder;
  readonly #toolFormat: ToolCallFormat;
  readonly #o: EngineOptions;
  readonly #streams: (Stream | null)[];
  readonly #batch: Batch;
  readonly #cost = new FittedCostModel();
  #out: StreamEvent[] = [];
  #stats: StepStats;

  /** Loads the model and creates the context for the mode chosen. */
  constructor(libs: NativeLibs, o: EngineOptions) {
    this.#o = o;
    o.log("info", `Loading model "${o.modelPath}"...`);
    const t0 = performance.now();
    const total = o.ctx > 0 ? o.ctx : 1024 * o.parallel;
    const det = o.deterministic;
    // Default: streams plus as many cached prefixes (llama.cpp allows 256 ids). Deterministic:
    // one id per stream, and a spare one pads one-stream decodes.
    const nSeqMax = det
      ? Math.max(2, o.parallel)
      : Math.min(256, Math.max(2 * o.parallel, o.parallel + 1));
    // Deterministic: each stream its share of --ctx (a spare padding sequence gets one too).
    const perSeq = Math.max(16, Math.floor(total / o.parallel));
    const nBatch = det
      ? Math.max(2 * DETERMINISTIC_MAX_CHUNK + 2, nSeqMax)
      : Math.max(UNIFIED_BATCH, nSeqMax);
    const { plan: offload, devices } = planModelOffload(
      libs,
      o.modelPath,
      o.gpu ?? { gpuLayers: "auto" },
      { nCtx: det ? perSeq * nSeqMax : total, nBatch },
    );
    this.model = LlamaModel.load(
      libs,
      o.modelPath,
      (f) => o.log("info", `Loading model: ${Math.round(f * 100)}%`),
      undefined,
      { layers: offload.gpuLayers, devices: deviceList(libs, offload) },
    );
    const m = this.model;
    const gpuLayers = offload.gpuLayers === 0 ? 0 : (m.offloaded?.layers ?? offload.gpuLayers);
    o.log(
      "info",
      gpuLayers > 0
        ? `GPU offload: ${gpuLayers}/${offload.totalLayers} layers on ${
          offload.deviceNames.join(", ")
        } (${offload.reason})`
        : `No GPU offload (${offload.reason}): the model runs on the CPU`,
    );
    this.ctx = new LlamaContext(m, {
      nCtx: det ? perSeq * nSeqMax : total,
      nBatch,
      nSeqMax,
      threads: o.threads,
      kvUnified: !det,
      abortFlag: o.abort,
      poll: 0,
      opOffload: offload.opOffload && gpuLayers > 0,
      synchronize: gpuLayers > 0,
    });
    const nCtxSeq = det ? Math.min(perSeq, this.ctx.nCtxSeq) : this.ctx.nCtx;
    this.#batch = new Batch(this.ctx.nBatch);
    this.scheduler = new Scheduler({
      deterministic: det,
      nCtx: this.ctx.nCtx,
      nCtxSeq,
      nSeqMax,
      maxLive: o.parallel,
      nBatch: this.ctx.nBatch,
      latencyBudget: o.latencyBudget,
      prefixCache: o.prefixCache,
      lookup: det && o.lookup,
      cost: this.#cost,
    });
    this.#streams = new Array(o.parallel).fill(null);
    this.#stats = this.#noStats();
    this.prompts = new PromptBuilder(m, o.chatTemplate);
    if (this.prompts.fallbackReason && !o.chatTemplate) {
      o.log(
        "warn",
        `Chat template: ${this.prompts.fallbackReason}; messages are rendered with ` +
          `llama.cpp's "${this.prompts.choice.name}" template`,
      );
    }
    this.#toolFormat = detectToolCallFormat(
      o.chatTemplate?.kind === "jinja" ? o.chatTemplate.source : m.chatTemplate,
    );
    const name = m.meta("general.name") ?? o.modelPath.split("/").pop() ?? "model";
    this.info = {
      name,
      path: o.modelPath,
      description: m.description,
      n_params: m.nParams,
      size_bytes: m.sizeBytes,
      n_vocab: m.nVocab,
      n_ctx_train: m.nCtxTrain,
      n_ctx: nCtxSeq,
      n_ctx_total: this.ctx.nCtx,
      n_batch: this.ctx.nBatch,
      n_seq_max: nSeqMax,
      parallel: o.parallel,
      threads: o.threads,
      chat_template: this.prompts.choice.name,
      chat_template_renderer: this.prompts.choice.renderer,
      tool_call_format: this.#toolFormat,
      vocab_type: m.vocabType,
      n_embd: m.nEmbd,
      embedding_pooling: "mean",
      mode: det ? "deterministic" : "default",
      kv_unified: !det,
      batch_invariant: det,
      latency_budget: o.latencyBudget === Infinity ? null : o.latencyBudget,
      prefix_cache: o.prefixCache,
      lookup_drafts: det && o.lookup,
      decode_priority: o.decodePriority,
      library: o.library,
      devices: devices.map(({ index: _, ...d }) => d),
      gpu_layers: gpuLayers,
      gpu_layers_total: offload.totalLayers,
      gpu_devices: gpuLayers > 0 ? offload.deviceNames : [],
      gpu_reason: offload.reason,
    };
    o.log(
      "info",
      `Loaded "${name}" (${m.description}, ${(m.nParams / 1e6).toFixed(1)}M parameters) in ` +
        `${Math.round(performance.now() - t0)} ms; ${o.parallel} parallel streams, ` +
        (det ? `deterministic (${nCtxSeq} tokens each)` : `unified KV of ${this.ctx.nCtx} cells`) +
        `, latency budget ${o.latencyBudget === Infinity ? "unlimited" : `${o.latencyBudget}x`}` +
        `, prefix cache ${o.prefixCache ? "on" : "off"}, ${o.threads} threads, decode threads at ` +
        `${o.decodePriority} priority`,
    );
  }

  #noStats(): StepStats {
    return {
      rows: 0,
      drafts: 0,
      draftsAccepted: 0,
      prefillTokens: 0,
      kvCells: 0,
      kvSpan: 0,
      decodeMs: 0,
      prefillMs: 0,
      cache: this.scheduler.cacheStats,
      cost: null,
    };
  }

  /** True while some stream has work this step. */
  get busy(): boolean {
    for (const s of this.#streams) if (s && this.#cancelCode(s) !== CANCEL_NONE) return true;
    return this.scheduler.hasWork(this.#paused);
  }

  /** Streams started and not ended. */
  get activeCount(): number {
    return this.#streams.filter((s) => s !== null).length;
  }

  /**
   * Prompt-equivalent tokens that may run outside the step just made (for instance an
   * embedding batch on another context) without breaking the latency budget; 0 when
   * none. The worker loop may call it between steps.
   */
  spareTokens(): number {
    return this.scheduler.spareTokens();
  }

  #cancelCode(s: Stream): number {
    return Atomics.load(this.#o.control, s.slot * SLOT_WORDS + SLOT_CANCEL);
  }

  #paused = (slot: number): boolean =>
    Atomics.load(this.#o.control, slot * SLOT_WORDS + SLOT_PAUSED) !== 0;

  /** The one place samplers are made (a grammar llama.cpp refuses throws GrammarRejectedError). */
  #createSampler(params: GenerateParams): Sampler {
    return new Sampler(
      this.model.libs,
      {
        temperature: params.temperature,
        topK: params.topK,
        topP: params.topP,
        minP: params.minP,
        repeatPenalty: params.repeatPenalty,
        seed: params.seed,
        grammar: params.grammar,
      },
      this.model.nVocab,
      this.model,
    );
  }

  /** Starts a stream: tokenizes, checks limits, queues it; errors become events. */
  start(msg: EngineStart): void {
    const { slot, rid, params } = msg;
    const fail = (
      code: "E_LIMIT_PROMPT_TOO_LARGE" | "E_PROTO_BAD_REQUEST" | "E_INTERNAL",
      message: string,
    ) => {
      this.#o.emit([{ rid, kind: "error", code, message }]);
    };
    if (!(slot >= 0 && slot < this.#o.parallel) || this.#streams[slot] !== null) {
      fail("E_INTERNAL", `Slot ${slot} is not free`);
      return;
    }
    let prompt: Int32Array;
    try {
      prompt = this.prompts.build(msg);
    } catch (err) {
      if (err instanceof ChatTemplateError) fail("E_PROTO_BAD_REQUEST", err.message);
      else fail("E_INTERNAL", `Tokenizing the prompt failed: ${(err as Error).message}`);
      return;
    }
    if (prompt.length === 0) prompt = Int32Array.of(this.model.bos >= 0 ? this.model.bos : 0);
    for (const t of prompt) {
      if (!(t >= 0 && t < this.model.nVocab)) {
        fail("E_INTERNAL", `Tokenizer produced token ${t} outside the vocabulary`);
        return;
      }
    }
    const max = this.scheduler.maxPrompt;
    if (prompt.length > max) {
      fail(
        "E_LIMIT_PROMPT_TOO_LARGE",
        `Prompt has ${prompt.length} tokens; a stream holds at most ${max + 1} ` +
          `(prompt and output), so at most ${max} prompt tokens (--ctx)`,
      );
      return;
    }
    let sampler: Sampler;
    try {
      sampler = this.#createSampler(params);
    } catch (err) {
      if (!(err instanceof GrammarRejectedError)) throw err;
      fail("E_PROTO_BAD_REQUEST", `grammar: ${err.message}`);
      return;
    }
    const tools = msg.parseTools ? msg.tools ?? [] : null;
    this.#streams[slot] = new Stream(slot, rid, params, prompt.length, sampler, tools);
    this.scheduler.add({
      key: slot,
      prompt,
      priority: params.priority,
      cachePrompt: params.cachePrompt,
      cacheClass: msg.messages ? "chat" : "prompt",
    });
    this.#o.emit([{ rid, kind: "started", prompt_tokens: prompt.length }]);
  }

  #apply(ops: MemoryOp[]) {
    for (const op of ops) {
      if (op.op === "rm") this.ctx.seqRm(op.seq, op.from, -1);
      else this.ctx.seqCp(op.src, op.dst, 0, op.n);
    }
  }

  /** Ends a stream; `keep`: its tokens may stay in KV as a cached prefix. */
  #end(s: Stream, reason: EndReason, keep: boolean) {
    this.#apply(this.scheduler.finish(s.slot, keep));
    this.#close(s);
    this.#out.push({
      rid: s.rid,
      kind: "end",
      reason,
      prompt_tokens: s.promptTokens,
      cached_tokens: s.cached,
      completion_tokens: s.generated,
      ...this.#toolCalls(s),
    });
  }

  /** Tool calls in a finished stream's output, when its request had tools. */
  #toolCalls(s: Stream): { tool_calls?: ToolCall[] } {
    if (s.tools === null) return {};
    const text = this.model.detokenize(s.output);
    const calls = parseToolCalls(text, this.#toolFormat, s.tools).toolCalls;
    return calls.length ? { tool_calls: calls } : {};
  }

  #fail(s: Stream, message: string) {
    this.#apply(this.scheduler.finish(s.slot, false));
    this.#close(s);
    this.#out.push({ rid: s.rid, kind: "error", code: "E_INTERNAL", message });
  }

  #close(s: Stream) {
    s.sampler.free();
    this.#streams[s.slot] = null;
  }

  #flush(withStats: boolean) {
    if (this.#out.length === 0 && !withStats) return;
    const events = this.#out;
    this.#out = [];
    if (!withStats) {
      this.#o.emit(events);
      return;
    }
    const stats = this.#stats;
    stats.kvCells = this.scheduler.kvCellsUsed;
    stats.kvSpan = this.scheduler.kvSpan;
    stats.cache = this.scheduler.cacheStats;
    stats.cost = this.#cost.coefficients();
    this.#stats = this.#noStats();
    this.#o.emit(events, stats);
  }

  /** Ends every stream (daemon shutdown). */
  shutdown() {
    for (const s of this.#streams) if (s) this.#end(s, "shutdown", false);
    this.#flush(false);
  }

  /** One scheduler step: cancellations, then the plan's memory operations and calls. */
  step(): void {
    // Cancellations first: a cancelled stream never gets another token, and its cells
    // (none of them kept as a cached prefix) are free for this step's plan.
    for (const s of this.#streams) {
      if (!s) continue;
      const code = this.#cancelCode(s);
      if (code !== CANCEL_NONE) {
        this.#end(s, code === CANCEL_SHUTDOWN ? "shutdown" : "cancelled", false);
      }
    }
    const plan = this.scheduler.plan(this.#paused);
    this.#apply(plan.memory);
    for (const a of plan.admitted) {
      const s = this.#streams[a.key];
      if (!s) continue;
      s.cached = a.cachedTokens;
      this.#out.push({ rid: s.rid, kind: "admitted", cached_tokens: a.cachedTokens });
    }
    for (const e of plan.ended) {
      const s = this.#streams[e.key];
      if (!s) continue;
      const rest = s.text.flush();
      if (rest) this.#out.push({ rid: s.rid, kind: "token", text: rest, token_id: -1 });
      this.#end(s, e.reason, false);
    }
    for (const call of plan.calls) {
      const ok = this.#run(call);
      // Tokens go out as soon as their call is done, with the call's figures.
      this.#flush(true);
      if (!ok) return;
    }
    if (plan.calls.length === 0) this.#flush(true);
  }

  /** Runs one planned call and samples its outputs; false when it failed or was aborted. */
  #run(call: DecodeCall): boolean {
    const b = this.#batch;
    b.clear();
    const indexOf = new Map<Row, number>();
    for (const r of call.rows) indexOf.set(r, b.add(r.token, r.pos, r.seq, r.logits));
    const control = this.#o.control;
    const prefillWord = ctrlWord(control, CTRL_PREFILL);
    Atomics.store(this.#o.abort, 0, 0);
    if (call.promptOnly) {
      // The main thread aborts this decode when it cancels a stream named here (-1: any).
      const keys = new Set(call.rows.filter((r) => r.key >= 0).map((r) => r.key));
      Atomics.store(control, prefillWord, keys.size === 1 ? [...keys][0] + 1 : -1);
      for (const k of keys) {
        const s = this.#streams[k];
        if (s && this.#cancelCode(s) !== CANCEL_NONE) {
          Atomics.store(control, prefillWord, 0);
          // Not run: the scheduler takes back the cells it had placed for the call; the
          // stream ends at the next step's sweep.
          this.#apply(this.scheduler.commit(call, 2));
          return false;
        }
      }
    }
    const t0 = performance.now();
    const rc = this.ctx.decode(b);
    Atomics.store(control, prefillWord, 0);
    this.#apply(this.scheduler.commit(call, rc));
    if (rc !== 0) {
      Atomics.store(this.#o.abort, 0, 0);
      this.#failed(call, rc, b.n);
      return false;
    }
    const stats = this.#stats;
    // Outputs in row order: decode rows, then prompts whose last token was in this call.
    for (const r of call.rows) {
      if (r.kind === "filler") continue;
      if (r.kind === "prompt") {
        stats.prefillTokens++;
        if (!r.logits) continue;
      } else {
        stats.rows++;
      }
      if (r.kind === "draft") continue; // sampled only when the decode row agreed
      const s = this.#streams[r.key];
      if (!s) continue;
      const token = s.sampler.sample(this.ctx, indexOf.get(r)!);
      const draftPos = this.scheduler.draftPosition(r.key);
      const alive = this.#accept(s, token);
      if (draftPos < 0) continue;
      const draft = call.rows.find((x) => x.kind === "draft" && x.key === r.key)!;
      stats.drafts++;
      if (!alive) continue; // ended: the scheduler dropped the draft's cell
      const accepted = token === draft.token;
      this.#apply(this.scheduler.draftResult(r.key, accepted));
      if (accepted) {
        // The draft row's logits are the ones the next step would compute: sample them.
        stats.draftsAccepted++;
        this.#accept(s, s.sampler.sample(this.ctx, indexOf.get(draft)!));
      }
    }
    for (const r of call.rows) if (r.kind === "filler") stats.rows++;
    // Timed through sampling: reading logits waits for a GPU that returned early.
    const ms = performance.now() - t0;
    if (call.promptOnly) stats.prefillMs += ms;
    else stats.decodeMs += ms;
    this.scheduler.observe(call, ms);
    return true;
  }

  /** A call that did not run: aborted (redone next step), no KV slot, or a bad batch. */
  #failed(call: DecodeCall, rc: number, n: number) {
    const keys = new Set(call.rows.filter((r) => r.key >= 0).map((r) => r.key));
    if (rc === 2) {
      // Aborted: the cancelled streams end at the next step's sweep; the others are
      // planned again (an abort meant for another stream, or a shutdown).
      return;
    }
    if (rc === 1) {
      // No KV slot: the mirror of the cells disagreed with llama.cpp. Make room.
      const ops = this.scheduler.clearCache();
      this.#o.log(
        "warn",
        `llama_decode found no KV slot for ${n} tokens; cleared the prefix cache`,
      );
      this.#apply(ops);
      if (ops.length === 0) {
        const last = [...keys].pop();
        const s = last === undefined ? null : this.#streams[last];
        if (s) this.#end(s, "length", false);
      }
      return;
    }
    for (const k of keys) {
      const s = this.#streams[k];
      if (s) this.#fail(s, `llama_decode failed (${rc}) on a ${n}-token batch`);
    }
  }

  /** Handles one sampled token: emits its text, ends the stream or queues the token; false when ended. */
  #accept(s: Stream, token: number): boolean {
    const model = this.model;
    if (model.isEog(token)) {
      const rest = s.text.flush();
      if (rest) {
        s.generated++;
        this.#out.push({ rid: s.rid, kind: "token", text: rest, token_id: token });
      }
      this.#end(s, "stop", true);
      return false;
    }
    s.generated++;
    if (s.tools !== null) s.output.push(token);
    const step = s.text.push(model.piece(token));
    if (step.stopped) {
      this.#out.push({ rid: s.rid, kind: "token", text: step.text, token_id: token });
      this.#end(s, "stop_string", true);
      return false;
    }
    const atMax = s.generated >= s.params.maxTokens;
    // The next decode writes position `position`: a full sequence ends the stream.
    const full = this.scheduler.full(s.slot);
    const text = atMax || full ? step.text + s.text.flush() : step.text;
    this.#out.push({ rid: s.rid, kind: "token", text, token_id: token });
    if (atMax || full) {
      this.#end(s, "length", true);
      return false;
    }
    this.scheduler.push(s.slot, token);
    return true;
  }

  /** Frees the samplers, the context and the model. */
  close() {
    for (const s of this.#streams) if (s) s.sampler.free();
    this.ctx.free();
    this.model.free();
  }
}
