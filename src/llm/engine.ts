/**
 * The engine: one llama context and the continuous-batching scheduler that drives it.
 * Runs inside the engine worker, calling llama.cpp synchronously.
 *
 * Each step makes one decode call holding one row per decoding stream (plus the last
 * prompt token of streams whose prompt is done), then spends a time budget on prompt
 * chunks, so inter-token latency stays flat while long prompts arrive.
 *
 * Batch invariance (the same seed gives the same tokens alone or beside others; on
 * unless `batchInvariant` is false, which drops the two-row minimum and the chunk cap):
 * - every decode call has at least two rows: a one-row decode takes another kernel path;
 *   a lone stream's second row is its lookup draft when it has one (see `_lookup.ts`),
 *   else a filler on a spare sequence;
 * - sequence ids in a decode call are contiguous (holes get a filler row that is removed
 *   afterwards): with one KV stream per sequence llama.cpp splits a batch at every gap,
 *   which would make one-row ubatches;
 * - every row of the decode call asks for logits, so the output matmul has ≥ 2 rows;
 * - prompt chunks stay under 64 tokens: from 64 query rows on, the CPU flash-attention
 *   kernel switches to a tiled path that rounds differently.
 *
 * Why prompt chunks are not rows of the decode call: with one KV stream per sequence
 * llama.cpp splits a batch into ubatches of equal tokens per sequence (split_equal), so a
 * chunk beside 1-token decode rows becomes a second ubatch, a second pass anyway. Mixing
 * needs kv_unified=true (split_simple), but there a sequence's cells go wherever
 * find_slot finds room (seq_rm moves the head back into holes left by ended streams),
 * and the CPU flash-attention kernel accumulates its online softmax in cell order: the
 * same sequence would round differently depending on its neighbours' history. Keeping
 * invariance would need ended streams' cells kept occupied (moved to a garbage sequence)
 * plus compaction through llama_state_seq_get/set_data, and the unified cache makes
 * every row scan all cells (measured ~25% slower 8-row decodes at 700-token contexts).
 */
import { deviceList, type OffloadRequest, planModelOffload } from "./devices.ts";
import { Batch, GrammarRejectedError, LlamaContext, LlamaModel, Sampler } from "./llama.ts";
import { ChatTemplateError, type ChatTemplateOverride, PromptBuilder } from "./prompt.ts";
import { detectToolCallFormat, parseToolCalls, type ToolCallFormat } from "./tool_calls.ts";
import type { DecodePriority, NativeLibs } from "./ffi.ts";
import { Detokenizer } from "./detokenizer.ts";
import { TokenHistory } from "./lookup.ts";
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

/** Largest prompt chunk: from 64 rows on, flash attention takes a path with other rounding. */
export const MAX_CHUNK = 63;
/** Rows of one decode call without batch invariance (llama.cpp's usual n_batch). */
const FREE_BATCH = 512;

/**
 * Prompt backlog (opt-in, `--prefill-max-ratio`): a prompt that has waited longer than
 * BACKLOG_GRACE_MS raises the prefill share of a step linearly from the configured ratio
 * to the configured maximum over BACKLOG_RAMP_MS. Off by default (maximum = ratio), since
 * it trades the inter-token latency guard for time to first token. A prompt pass is its own pass over the weights (~30-40% of an 8-row
 * decode step before its first token), so under a fixed 40-50% guard only 1-3 prompt
 * tokens fit per step (~60-100 tok/s here): prompts arriving faster than that would wait
 * without bound. Past the grace period decoding streams slow down (at most 1 + max ratio,
 * i.e. 1 + maximum) so that queued prompts get through.
 */
export const BACKLOG_GRACE_MS = 1000;
export const BACKLOG_RAMP_MS = 2000;

/** The prefill share of a step when the oldest waiting prompt has waited `waitMs`. */
export function prefillShare(base: number, max: number, waitMs: number): number {
  if (waitMs <= BACKLOG_GRACE_MS || base >= max) return base;
  const f = Math.min(1, (waitMs - BACKLOG_GRACE_MS) / BACKLOG_RAMP_MS);
  return base + f * (max - base);
}

function noStats(): StepStats {
  return {
    rows: 0,
    drafts: 0,
    draftsAccepted: 0,
    prefillTokens: 0,
    kvCells: 0,
    decodeMs: 0,
    prefillMs: 0,
  };
}

type EndReason = "stop" | "length" | "stop_string" | "cancelled" | "shutdown";

/** One stream holding a sequence. */
class Seq {
  readonly slot: number;
  readonly rid: number;
  readonly params: GenerateParams;
  readonly prompt: Int32Array;
  readonly sampler: Sampler;
  readonly text: Detokenizer;
  /** Prompt and output tokens, for lookup drafts. */
  readonly history: TokenHistory;
  /** Tokens already in the KV cache. */
  nPast = 0;
  /** The token the next decode row feeds (last prompt token, then each sampled one). */
  next: number;
  generated = 0;
  /** When the stream started waiting for its prompt to be processed (ms). */
  readonly queuedAt = performance.now();
  constructor(
    slot: number,
    rid: number,
    params: GenerateParams,
    prompt: Int32Array,
    sampler: Sampler,
  ) {
    this.slot = slot;
    this.rid = rid;
    this.params = params;
    this.prompt = prompt;
    this.sampler = sampler;
    this.text = new Detokenizer(params.stop);
    this.history = new TokenHistory(prompt, prompt.length + Math.min(params.maxTokens, 1024));
    this.next = prompt[prompt.length - 1];
  }
  /** Prompt tokens still to prefill before the last one (which goes with the decode rows). */
  get prefillLeft(): number {
    return Math.max(0, this.prompt.length - 1 - this.nPast);
  }
}

/** Engine settings. */
export interface EngineOptions {
  modelPath: string;
  ctx: number;
  parallel: number;
  threads: number;
  control: Int32Array;
  abort: Uint8Array;
  prefillRatio: number;
  /** Largest prefill share while prompts wait (== prefillRatio: no ramp). */
  prefillMaxRatio: number;
  /** Pad one-row decodes and keep prompt chunks small, for batch invariance. */
  batchInvariant: boolean;
  /** Spend a lone stream's padding row on a prompt-lookup draft (batch invariance only). */
  lookup: boolean;
  /** The decode threads' priority, as applied (reported in `info`). */
  decodePriority: DecodePriority;
  /** The library loaded (reported in `info`). */
  library: LibraryInfo;
  /** GPU offload; default: as many layers as fit on the GPUs. */
  gpu?: OffloadRequest;
  /** `--chat-template`: replaces the model's own. */
  chatTemplate?: ChatTemplateOverride;
  log: (level: "info" | "warn" | "error", message: string) => void;
  emit: (events: StreamEvent[], stats?: StepStats) => void;
}

/** An exponential moving average that starts at its first sample. */
class Ema {
  value = 0;
  #n = 0;
  constructor(readonly alpha: number) {}
  add(x: number) {
    this.value = this.#n++ === 0 ? x : this.value + this.alpha * (x - this.value);
  }
  get ready() {
    return this.#n > 0;
  }
}

/** Cost of a prompt chunk of k tokens, fitted as a + b·k over recent chunks. */
class ChunkCost {
  #k: number[] = [];
  #ms: number[] = [];
  add(k: number, ms: number) {
    this.#k.push(k);
    this.#ms.push(ms);
    if (this.#k.length > 32) {
      this.#k.shift();
      this.#ms.shift();
    }
  }
  get ready(): boolean {
    return this.#k.length > 0;
  }
  /** Largest k whose predicted cost fits in `ms`, or 0. */
  tokensWithin(ms: number): number {
    const n = this.#k.length;
    const mk = this.#k.reduce((a, b) => a + b, 0) / n;
    const mt = this.#ms.reduce((a, b) => a + b, 0) / n;
    let cov = 0;
    let vk = 0;
    for (let i = 0; i < n; i++) {
      cov += (this.#k[i] - mk) * (this.#ms[i] - mt);
      vk += (this.#k[i] - mk) ** 2;
    }
    let b = vk > 0 ? cov / vk : mt / mk;
    if (!(b > 0)) b = mt / mk;
    const a = Math.max(0, mt - b * mk);
    return Math.floor((ms - a) / b);
  }
}

/** The model, its context and the scheduler. */
export class Engine {
  readonly model: LlamaModel;
  readonly ctx: LlamaContext;
  readonly info: EngineInfo;
  /** Requests → prompt tokens (chat template, injection-safe tokenization). */
  readonly prompts: PromptBuilder;
  readonly #toolFormat: ToolCallFormat;
  readonly #o: EngineOptions;
  readonly #slots: (Seq | null)[];
  readonly #batch: Batch;
  readonly #nCtxSeq: number;
  /** Largest prompt chunk of one stream. */
  readonly #maxChunk: number;
  /** Lookup drafts in use: only with batch invariance, which pads lone streams. */
  readonly #lookup: boolean;
  #prefillQueue: Seq[] = [];
  #interactiveStreak = 0;
  #decodeMs = new Ema(0.2);
  #chunkCost = new ChunkCost();
  #out: StreamEvent[] = [];
  /** Streams whose output is read for tool calls, and their tools. */
  #parseTools = new Map<Seq, ToolSpec[]>();

  constructor(libs: NativeLibs, o: EngineOptions) {
    this.#o = o;
    o.log("info", `Loading model "${o.modelPath}"...`);
    const t0 = performance.now();
    const nSeqMax = Math.max(2, o.parallel); // a spare sequence id pads one-stream decodes
    // Decode calls hold one row per sequence; prompt calls up to 2 chunks' worth of rows.
    const nBatch = Math.max(o.batchInvariant ? 2 * MAX_CHUNK + 2 : FREE_BATCH, nSeqMax);
    const { plan: offload, devices } = planModelOffload(
      libs,
      o.modelPath,
      o.gpu ?? { gpuLayers: "auto" },
      {
        nCtx: (o.ctx > 0 ? o.ctx : 2048) * nSeqMax,
        nBatch,
      },
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
    const perSeq = Math.max(16, o.ctx > 0 ? o.ctx : Math.min(2048, m.nCtxTrain || 2048));
    this.ctx = new LlamaContext(m, {
      nCtx: perSeq * nSeqMax,
      nBatch,
      nSeqMax,
      threads: o.threads,
      kvUnified: false,
      abortFlag: o.abort,
      poll: 0,
      opOffload: offload.opOffload && gpuLayers > 0,
      synchronize: gpuLayers > 0,
    });
    this.#nCtxSeq = Math.min(perSeq, this.ctx.nCtxSeq);
    this.#batch = new Batch(this.ctx.nBatch);
    this.#maxChunk = o.batchInvariant ? MAX_CHUNK : this.ctx.nBatch;
    this.#lookup = o.batchInvariant && o.lookup;
    this.#slots = new Array(nSeqMax).fill(null);
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
      n_ctx: this.#nCtxSeq,
      n_ctx_total: this.ctx.nCtx,
      n_batch: this.ctx.nBatch,
      parallel: o.parallel,
      threads: o.threads,
      chat_template: this.prompts.choice.name,
      chat_template_renderer: this.prompts.choice.renderer,
      tool_call_format: this.#toolFormat,
      vocab_type: m.vocabType,
      n_embd: m.nEmbd,
      embedding_pooling: "mean",
      batch_invariant: o.batchInvariant,
      lookup_drafts: this.#lookup,
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
        `${Math.round(performance.now() - t0)} ms; ${o.parallel} parallel streams of ` +
        `${this.#nCtxSeq} tokens, ${o.threads} threads` +
        (o.batchInvariant ? "" : ", batch invariance off") +
        `, decode threads at ${o.decodePriority} priority`,
    );
  }

  /** True while some stream has work this step. */
  get busy(): boolean {
    for (const s of this.#slots) {
      if (s && (s.prefillLeft > 0 || !this.#paused(s) || this.#cancelCode(s) !== CANCEL_NONE)) {
        return true;
      }
    }
    return false;
  }

  get activeCount(): number {
    return this.#slots.filter((s) => s !== null).length;
  }

  #cancelCode(s: Seq): number {
    return Atomics.load(this.#o.control, s.slot * SLOT_WORDS + SLOT_CANCEL);
  }
  #paused(s: Seq): boolean {
    return Atomics.load(this.#o.control, s.slot * SLOT_WORDS + SLOT_PAUSED) !== 0;
  }

  /** Starts a stream: tokenizes, checks limits; errors become events. */
  start(msg: EngineStart): void {
    const { slot, rid, params } = msg;
    const fail = (
      code: "E_LIMIT_PROMPT_TOO_LARGE" | "E_PROTO_BAD_REQUEST" | "E_INTERNAL",
      message: string,
    ) => {
      this.#o.emit([{ rid, kind: "error", code, message }]);
    };
    if (!(slot >= 0 && slot < this.#o.parallel) || this.#slots[slot] !== null) {
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
    if (prompt.length > this.#nCtxSeq - 1) {
      fail(
        "E_LIMIT_PROMPT_TOO_LARGE",
        `Prompt has ${prompt.length} tokens; a stream holds at most ${this.#nCtxSeq} ` +
          `(prompt and output), so at most ${this.#nCtxSeq - 1} prompt tokens (--ctx)`,
      );
      return;
    }
    let sampler: Sampler;
    try {
      sampler = new Sampler(
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
    } catch (err) {
      if (!(err instanceof GrammarRejectedError)) throw err;
      fail("E_PROTO_BAD_REQUEST", `grammar: ${err.message}`);
      return;
    }
    this.ctx.seqRm(slot);
    const seq = new Seq(slot, rid, params, prompt, sampler);
    if (msg.parseTools) this.#parseTools.set(seq, msg.tools ?? []);
    this.#slots[slot] = seq;
    if (seq.prefillLeft > 0) this.#prefillQueue.push(seq);
    this.#o.emit([{ rid, kind: "started", prompt_tokens: prompt.length }]);
  }

  #end(s: Seq, reason: EndReason) {
    this.ctx.seqRm(s.slot);
    s.sampler.free();
    this.#slots[s.slot] = null;
    const i = this.#prefillQueue.indexOf(s);
    if (i >= 0) this.#prefillQueue.splice(i, 1);
    this.#out.push({
      rid: s.rid,
      kind: "end",
      reason,
      prompt_tokens: s.prompt.length,
      completion_tokens: s.generated,
      ...this.#toolCalls(s),
    });
  }

  /** Tool calls in a finished stream's output, when its request had tools. */
  #toolCalls(s: Seq): { tool_calls?: ToolCall[] } {
    const tools = this.#parseTools.get(s);
    if (tools === undefined) return {};
    this.#parseTools.delete(s);
    const text = this.model.detokenize(s.history.slice(s.prompt.length));
    const calls = parseToolCalls(text, this.#toolFormat, tools).toolCalls;
    return calls.length ? { tool_calls: calls } : {};
  }

  #fail(s: Seq, message: string) {
    this.#parseTools.delete(s);
    this.ctx.seqRm(s.slot);
    s.sampler.free();
    this.#slots[s.slot] = null;
    const i = this.#prefillQueue.indexOf(s);
    if (i >= 0) this.#prefillQueue.splice(i, 1);
    this.#out.push({ rid: s.rid, kind: "error", code: "E_INTERNAL", message });
  }

  #flush(stats?: StepStats) {
    if (this.#out.length === 0 && !stats) return;
    const events = this.#out;
    this.#out = [];
    this.#o.emit(events, stats);
  }

  /** Ends every stream (daemon shutdown). */
  shutdown() {
    for (const s of this.#slots) if (s) this.#end(s, "shutdown");
    this.#flush();
  }

  /** One scheduler step. */
  step(): void {
    // Cancellations first: a cancelled stream never gets another token.
    for (const s of this.#slots) {
      if (!s) continue;
      const code = this.#cancelCode(s);
      if (code !== CANCEL_NONE) this.#end(s, code === CANCEL_SHUTDOWN ? "shutdown" : "cancelled");
    }
    const stats = noStats();
    this.#decodeStep(stats);
    // Tokens go out before the prompt chunks run.
    this.#flush({ ...stats, kvCells: this.#kvCells() });
    const t0 = performance.now();
    const prefilled = this.#prefillStep(stats.rows > 0);
    if (prefilled || this.#out.length) {
      this.#flush({
        ...noStats(),
        prefillTokens: prefilled,
        kvCells: this.#kvCells(),
        prefillMs: performance.now() - t0,
      });
    }
  }

  #kvCells(): number {
    let n = 0;
    for (const s of this.#slots) if (s) n += s.nPast;
    return n;
  }

  #decodeStep(stats: StepStats) {
    const ready: Seq[] = [];
    for (const s of this.#slots) {
      if (s && s.prefillLeft === 0 && !this.#paused(s)) ready.push(s);
    }
    if (ready.length === 0) return;
    const b = this.#batch;
    b.clear();
    // Rows in sequence-id order with no gaps, at least two (see the module comment).
    let lo = ready[0].slot;
    let hi = ready[ready.length - 1].slot;
    // A lone stream's second row: its lookup draft at the next position, else a filler.
    let draft: { seq: Seq; token: number; row: number } | null = null;
    if (lo === hi && this.#o.batchInvariant) {
      const s = ready[0];
      const token = this.#lookup && s.nPast + 1 < this.#nCtxSeq ? s.history.draft() : -1;
      if (token >= 0) draft = { seq: s, token, row: -1 };
      else if (hi + 1 < this.#slots.length) hi++;
      else lo--;
    }
    const fillers: [number, number][] = [];
    const rowOf = new Map<Seq, number>();
    for (let id = lo; id <= hi; id++) {
      const s = this.#slots[id];
      if (s && ready.includes(s)) {
        rowOf.set(s, b.add(s.next, s.nPast, id, true));
      } else {
        // Filler: any token at the sequence's next position, removed after the decode.
        const pos = s ? s.nPast : 0;
        b.add(0, pos, id, true);
        fillers.push([id, pos]);
      }
    }
    if (draft) draft.row = b.add(draft.token, draft.seq.nPast + 1, draft.seq.slot, true);
    const t0 = performance.now();
    const rc = this.ctx.decode(b);
    const ms = performance.now() - t0;
    for (const [id, pos] of fillers) this.ctx.seqRm(id, pos, -1);
    if (rc !== 0) {
      for (const s of ready) this.ctx.seqRm(s.slot, s.nPast, -1);
      Atomics.store(this.#o.abort, 0, 0);
      if (rc === 2) return; // a stale abort meant for a prompt chunk: redo next step
      for (const s of ready) this.#fail(s, `llama_decode failed (${rc}) on a ${b.n}-row batch`);
      return;
    }
    this.#decodeMs.add(ms);
    stats.rows = b.n;
    stats.decodeMs = ms;
    for (const s of ready) {
      s.nPast++;
      const token = s.sampler.sample(this.ctx, rowOf.get(s)!);
      this.#accept(s, token);
      if (draft?.seq !== s) continue;
      stats.drafts++;
      if (this.#slots[s.slot] !== s) continue; // ended: its whole sequence is gone
      if (token === draft.token) {
        // The draft row's logits are the ones the next step would compute: sample them.
        stats.draftsAccepted++;
        s.nPast++;
        this.#accept(s, s.sampler.sample(this.ctx, draft.row));
      } else {
        this.ctx.seqRm(s.slot, s.nPast, -1);
      }
    }
  }

  /** Handles one sampled token: emit text, or end the stream. */
  #accept(s: Seq, token: number) {
    const model = this.model;
    if (model.isEog(token)) {
      const rest = s.text.flush();
      if (rest) {
        s.generated++;
        this.#out.push({ rid: s.rid, kind: "token", text: rest, token_id: token });
      }
      this.#end(s, "stop");
      return;
    }
    s.generated++;
    s.history.push(token);
    const step = s.text.push(model.piece(token));
    if (step.stopped) {
      this.#out.push({ rid: s.rid, kind: "token", text: step.text, token_id: token });
      this.#end(s, "stop_string");
      return;
    }
    const atMax = s.generated >= s.params.maxTokens;
    // The next decode writes position nPast: a full context ends the stream.
    const full = s.nPast >= this.#nCtxSeq;
    const text = atMax || full ? step.text + s.text.flush() : step.text;
    this.#out.push({ rid: s.rid, kind: "token", text, token_id: token });
    if (atMax || full) {
      this.#end(s, "length");
      return;
    }
    s.next = token;
  }

  /**
   * Picks the next stream to prefill. Class: interactive first, batch every 4th turn
   * while both wait. Within the class: a prompt that finishes within this step's budget
   * first (the shortest), else the oldest, so prompts finish one after another instead
   * of all late together, and a short prompt never waits behind a long one.
   */
  #nextPrefill(budget: number): Seq | undefined {
    const q = this.#prefillQueue;
    if (q.length === 0) return undefined;
    const hasBatch = q.some((s) => s.params.priority === "batch");
    const hasInteractive = q.some((s) => s.params.priority === "interactive");
    const cls = !hasInteractive || (hasBatch && this.#interactiveStreak >= 3)
      ? "batch"
      : "interactive";
    let pick: Seq | undefined;
    for (const s of q) {
      if (s.params.priority !== cls) continue;
      pick ??= s; // the oldest
      if (
        s.prefillLeft <= budget && (pick.prefillLeft > budget || s.prefillLeft < pick.prefillLeft)
      ) {
        pick = s;
      }
    }
    if (cls === "batch") this.#interactiveStreak = 0;
    else this.#interactiveStreak++;
    return pick;
  }

  /** Prompt chunks within this step's time budget; returns tokens prefilled. */
  #prefillStep(decoded: boolean): number {
    if (this.#prefillQueue.length === 0) return 0;
    let budget: number;
    if (decoded && this.#chunkCost.ready) {
      let oldest = Infinity;
      for (const s of this.#prefillQueue) oldest = Math.min(oldest, s.queuedAt);
      const share = prefillShare(
        this.#o.prefillRatio,
        this.#o.prefillMaxRatio,
        performance.now() - oldest,
      );
      budget = this.#chunkCost.tokensWithin(share * this.#decodeMs.value);
      budget = Math.max(2, Math.min(this.#batch.capacity, budget));
    } else if (decoded) {
      budget = 4; // first measurement
    } else {
      budget = Math.min(this.#batch.capacity, 2 * this.#maxChunk); // nobody waits for a token
    }
    let done = 0;
    // Each call is its own pass over the weights: one per step while streams decode.
    for (let calls = 0; budget > 0 && (calls === 0 || !decoded); calls++) {
      const first = this.#nextPrefill(budget);
      if (!first) break;
      const group = this.#prefillGroup(first, budget);
      const k = Math.min(
        this.#maxChunk,
        Math.floor(budget / group.length),
        ...group.map((g) => g.prefillLeft),
      );
      const ok = this.#prefillChunk(group, k);
      for (const g of group) {
        if (this.#slots[g.slot] === g && g.prefillLeft > 0) continue;
        const i = this.#prefillQueue.indexOf(g);
        if (i >= 0) this.#prefillQueue.splice(i, 1);
      }
      if (!ok) break;
      done += k * group.length;
      budget -= k * group.length;
    }
    return done;
  }

  /**
   * The streams prefilled together with `first`: its run of consecutive sequence ids
   * that are all prefilling (llama.cpp splits a batch at gaps in the ids and gives each
   * sequence of a batch the same number of tokens), at most `budget` of them.
   */
  #prefillGroup(first: Seq, budget: number): Seq[] {
    const isPrefilling = (id: number) => {
      const s = this.#slots[id];
      return s !== null && s !== undefined && s.prefillLeft > 0 &&
        this.#cancelCode(s) === CANCEL_NONE;
    };
    let lo = first.slot;
    let hi = first.slot;
    while (hi - lo + 1 < budget) {
      if (isPrefilling(hi + 1)) hi++;
      else if (lo > 0 && isPrefilling(lo - 1)) lo--;
      else break;
    }
    const group: Seq[] = [];
    for (let id = lo; id <= hi; id++) group.push(this.#slots[id]!);
    return group;
  }

  /** Decodes k prompt tokens of each stream of a group; false when aborted or failed. */
  #prefillChunk(group: Seq[], k: number): boolean {
    const b = this.#batch;
    b.clear();
    for (const s of group) {
      for (let i = 0; i < k; i++) b.add(s.prompt[s.nPast + i], s.nPast + i, s.slot, false);
    }
    // One row alone takes another kernel path: pad with a throwaway next position.
    const pad = b.n === 1 && this.#o.batchInvariant ? group[0] : null;
    if (pad) b.add(0, pad.nPast + 1, pad.slot, false);
    const control = this.#o.control;
    const prefillWord = ctrlWord(control, CTRL_PREFILL);
    Atomics.store(this.#o.abort, 0, 0);
    // The main thread aborts this decode when it cancels the stream named here (-1: any).
    Atomics.store(control, prefillWord, group.length === 1 ? group[0].slot + 1 : -1);
    const cancelled = group.filter((s) => this.#cancelCode(s) !== CANCEL_NONE);
    if (cancelled.length) {
      Atomics.store(control, prefillWord, 0);
      for (const s of cancelled) {
        this.#end(s, this.#cancelCode(s) === CANCEL_SHUTDOWN ? "shutdown" : "cancelled");
      }
      return false;
    }
    const t0 = performance.now();
    const rc = this.ctx.decode(b);
    const ms = performance.now() - t0;
    Atomics.store(control, prefillWord, 0);
    if (rc !== 0) {
      // Aborted or failed: processed ubatches stay in memory, so trim back to nPast.
      for (const s of group) this.ctx.seqRm(s.slot, s.nPast, -1);
      Atomics.store(this.#o.abort, 0, 0);
      for (const s of group) {
        const code = this.#cancelCode(s);
        if (rc !== 2) this.#fail(s, `llama_decode failed (${rc}) on a ${b.n}-token prompt chunk`);
        // Not cancelled: an abort meant for another stream, or a late one; redone later.
        else if (code !== CANCEL_NONE) {
          this.#end(s, code === CANCEL_SHUTDOWN ? "shutdown" : "cancelled");
        }
      }
      return false;
    }
    if (pad) this.ctx.seqRm(pad.slot, pad.nPast + 1, -1);
    for (const s of group) s.nPast += k;
    this.#chunkCost.add(b.n, ms);
    return true;
  }

  close() {
    for (const s of this.#slots) if (s) s.sampler.free();
    this.ctx.free();
    this.model.free();
  }
}
