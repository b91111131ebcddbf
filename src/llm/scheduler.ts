/**
 * The scheduler: which streams hold a sequence, which rows and prompt chunks each step
 * decodes, which cached prefix a new stream reuses and which one is evicted. Pure data
 * in, pure data out: it never calls llama.cpp. The engine turns each {@linkcode StepPlan}
 * into `llama_memory_*` calls and `llama_decode` calls, then reports back what happened
 * (`commit`, `push`, `finish`), so every policy here is tested without a model.
 *
 * Two modes:
 * - **default**: one unified KV cache; each step is ONE decode call holding a row for
 *   every decoding stream and prompt chunks (chunked prefill), as many prompt tokens as
 *   the latency budget leaves (see `cost_model.ts`), all of them when nobody decodes.
 *   Streams are admitted by free cells; a stream may use the whole context.
 * - **deterministic**: one KV stream per sequence and the kernel-path rules that make a
 *   stream's tokens the same alone or beside others (see `engine.ts`): decode calls of
 *   at least two rows (a lookup draft or a filler), contiguous sequence ids, prompt
 *   chunks under 64 tokens in calls of their own, within the same latency budget.
 *
 * Prefix cache (both modes, per request `cachePrompt`): a new stream starts from the
 * longest prefix of its prompt already in KV. Default mode shares the cells of finished
 * streams kept as cached sequences and of live streams (`llama_memory_seq_cp`, no copy);
 * a cached sequence is dropped least recently used first when cells or sequence ids run
 * out, and also once holding it has cost the decoding streams what recomputing it is
 * expected to save (every cell in use slows every row's attention): ski rental, with the
 * recompute cost weighed by how much of what was cached lately was reused
 * ({@linkcode ReuseRate}), so a chat's history is kept as long as it would cost to
 * recompute while one-off prompts that nobody reuses go several times sooner.
 * Deterministic mode reuses only a free sequence's own previous tokens, which
 * recomputing would give bit for bit.
 *
 * Order: interactive before batch, oldest first within a class; every 4th step looks at
 * age alone so batch prompts are never starved. The first prompt in order gets 3/4 of a
 * step's prompt tokens and the next ones the rest, so no prompt waits behind a whole
 * other prompt (a short prompt behind a long one finishes at a quarter of full speed).
 *
 * @module
 */
import type { CallShape, CostModel } from "./cost_model.ts";
import { promptTokensWithin } from "./cost_model.ts";
export type { CallShape, CostModel } from "./cost_model.ts";
import { KV_PAD, KvCells } from "./kv_cells.ts";
import { TokenHistory } from "./lookup.ts";

/** Request classes, in the order they are served. */
export type Priority = "interactive" | "batch";

/** Largest prompt chunk in deterministic mode: from 64 rows on, flash attention rounds differently. */
export const DETERMINISTIC_MAX_CHUNK = 63;
/** Share of a step's prompt tokens the first prompt in order may take while others wait. */
export const FIRST_PROMPT_SHARE = 0.75;
/** Every this many steps, prompts are ordered by age alone (batch ones are never starved). */
export const AGE_ORDER_EVERY = 4;
/** Prompt tokens of a step while the cost model has seen no call as large (it may grow 2× per step). */
export const EXPLORE_TOKENS = 4;
/**
 * A new stream whose prompt starts with at least this many more tokens of a prompt still
 * being prefilled waits for them and shares them, instead of computing them twice.
 */
export const FOLLOW_MIN = 16;
/** Shorter matches (a BOS token, a common first word) are not worth a shared prefix. */
export const MIN_REUSE = 4;
/** Tokens cached after which what was cached before counts half in the reuse rate. */
export const REUSE_HALF_LIFE = 8192;
/** The reuse rate starts as if this many tokens had been cached and all of them reused. */
export const REUSE_PRIOR = 1024;
/** The reuse rate never goes below this: a cached sequence always gets some chance. */
export const REUSE_FLOOR = 0.05;

/**
 * How much of what the prefix cache took in lately came back: tokens new streams reused
 * from cached sequences over tokens cached, both decaying by half every
 * {@linkcode REUSE_HALF_LIFE} tokens cached, from a prior of full reuse. It scales the
 * ski-rental threshold: holding a sequence is worth its recompute cost times the chance
 * that it is used.
 *
 * @example
 * ```ts
 * import { ReuseRate } from "./scheduler.ts";
 * const r = new ReuseRate();
 * console.log(r.rate); // 1: no evidence yet
 * for (let i = 0; i < 20; i++) r.cached(512); // one-off prompts, never reused
 * console.log(r.rate); // 0.05: the floor
 * r.reused(512);
 * r.cached(1024); // a chat's turn, then the next one
 * r.reused(1024);
 * console.log(r.rate > 0.2); // true
 * ```
 */
export class ReuseRate {
  #cached = REUSE_PRIOR;
  #reused = REUSE_PRIOR;

  /** A sequence of `tokens` tokens entered the cache. */
  cached(tokens: number): void {
    const f = 0.5 ** (tokens / REUSE_HALF_LIFE);
    this.#cached = this.#cached * f + tokens;
    this.#reused *= f;
  }

  /** A new stream reused `tokens` cached tokens. */
  reused(tokens: number): void {
    this.#reused += tokens;
  }

  /** Reused over cached, between {@linkcode REUSE_FLOOR} and 1. */
  get rate(): number {
    return Math.max(REUSE_FLOOR, Math.min(1, this.#reused / this.#cached));
  }
}

/** Settings of a {@linkcode Scheduler}. */
export interface SchedulerOptions {
  /** The batch-invariant mode (one KV stream per sequence), else the unified default. */
  deterministic: boolean;
  /** KV cells in all (unified cache) or per sequence × sequences (deterministic). */
  nCtx: number;
  /** Positions one sequence may hold (deterministic: its own stream; default: nCtx). */
  nCtxSeq: number;
  /** Sequence ids llama.cpp was created with. */
  nSeqMax: number;
  /** Streams holding a sequence at once (`--parallel`). */
  maxLive: number;
  /** Most tokens in one decode call. */
  nBatch: number;
  /** A step may take this many times the cost of its decode rows alone; Infinity: no limit. */
  latencyBudget: number;
  /** Reuse prompt prefixes already in KV (requests may still opt out). */
  prefixCache: boolean;
  /** Lookup drafts in a lone stream's padding row (deterministic mode). */
  lookup: boolean;
  /** What a decode call costs: predicted for plans, taught by `observe`. */
  cost: CostModel;
}

/** A stream to schedule: its key (the engine's slot), prompt tokens and class. */
export interface StreamSpec {
  /** The engine's handle for the stream (its slot). */
  key: number;
  /** Prompt tokens, 1 to `maxPrompt` of them. */
  prompt: Int32Array;
  /** Interactive before batch. */
  priority: Priority;
  /** Reuse and leave behind cached prefixes (the request's `cache_prompt`). */
  cachePrompt: boolean;
  /** Whose reuse rate its cached prefix is weighed by (default `"prompt"`). */
  cacheClass?: CacheClass;
}

/**
 * Kinds of request whose cached prefixes are reused differently: a chat's history comes
 * back with its next turn; a raw prompt often never does. Each has its own reuse rate, so
 * a storm of one-off prompts does not shorten how long chats are kept.
 */
export type CacheClass = "chat" | "prompt";

/** What a row of a decode call is for. */
export type RowKind = "decode" | "prompt" | "draft" | "filler";

/** One row (token) of a decode call. */
export interface Row {
  /** What the row is for. */
  kind: RowKind;
  /** The stream's key; -1 for fillers. */
  key: number;
  /** The llama.cpp sequence id. */
  seq: number;
  /** The token fed. */
  token: number;
  /** Its position in the sequence. */
  pos: number;
  /** Whether the row's logits are computed (and sampled, for decode and prompt rows). */
  logits: boolean;
}

/** One `llama_decode` call. */
export interface DecodeCall {
  /** The batch, in order. */
  rows: Row[];
  /** Its shape, for the cost model. */
  shape: CallShape;
  /** Only prompt rows: a cancel may abort it inside llama_decode. */
  promptOnly: boolean;
}

/** A `llama_memory_*` call: remove positions `from`.. of `seq`, or share `n` positions of `src` with `dst`. */
export type MemoryOp =
  | { op: "rm"; seq: number; from: number }
  | { op: "cp"; src: number; dst: number; n: number };

/** A stream the scheduler ended before the step (the context cannot hold another token). */
export interface PlannedEnd {
  /** The stream. */
  key: number;
  /** Always `length`: it cannot continue. */
  reason: "length";
}

/** A step: memory operations first, then the decode calls in order. */
export interface StepPlan {
  /** `llama_memory_*` calls to make first, in order. */
  memory: MemoryOp[];
  /** Streams that got a sequence this step, with the prompt tokens they take from KV. */
  admitted: { key: number; cachedTokens: number }[];
  /** Streams ended before the step. */
  ended: PlannedEnd[];
  /** The decode calls, in order (one in the default mode). */
  calls: DecodeCall[];
}

/** Counters of the prefix cache. */
export interface CacheStats {
  /** Admitted streams that reused at least one cached token. */
  hits: number;
  /** Admitted streams that looked and found nothing. */
  misses: number;
  /** Prompt tokens taken from KV instead of computed. */
  tokensReused: number;
  /** Cached sequences dropped (for cells, ids, or their rent). */
  evictions: number;
  /** Cached sequences held now, and the cells only they hold. */
  sequences: number;
  /** Cells only cached sequences hold. */
  cells: number;
  /** How much of what was cached lately was reused, per class ({@linkcode ReuseRate}, 0 to 1). */
  reuseRate: Record<CacheClass, number>;
}

/** The prefix cache's counters before anything happened. */
export function noCacheStats(): CacheStats {
  return {
    hits: 0,
    misses: 0,
    tokensReused: 0,
    evictions: 0,
    sequences: 0,
    cells: 0,
    reuseRate: { chat: 1, prompt: 1 },
  };
}

type State = "waiting" | "prefill" | "decode";

class Live {
  readonly key: number;
  readonly prompt: Int32Array;
  readonly priority: Priority;
  readonly cachePrompt: boolean;
  readonly cacheClass: CacheClass;
  readonly arrival: number;
  /** Prompt, then each sampled token; tokens [0, nPast) are in KV. */
  readonly tokens: TokenHistory;
  state: State = "waiting";
  seq = -1;
  nPast = 0;
  cached = 0;
  /** A draft row is waiting for the decode row's sample. */
  draftPos = -1;
  /** The prefilling stream whose first `followN` prompt tokens this one waits to share. */
  follow: Live | null = null;
  followN = 0;
  constructor(spec: StreamSpec, arrival: number) {
    this.key = spec.key;
    this.prompt = spec.prompt;
    this.priority = spec.priority;
    this.cachePrompt = spec.cachePrompt;
    this.cacheClass = spec.cacheClass ?? "prompt";
    this.arrival = arrival;
    this.tokens = new TokenHistory(spec.prompt, spec.prompt.length + 256);
  }
  /** Prompt tokens still to prefill (deterministic mode keeps the last one for a decode row). */
  promptLeft(deterministic: boolean): number {
    return Math.max(0, this.prompt.length - (deterministic ? 1 : 0) - this.nPast);
  }
  /** Cells the stream will still take for its prompt. */
  reserve(deterministic: boolean): number {
    return this.follow ? this.prompt.length - this.followN : this.promptLeft(deterministic);
  }
}

/** Tokens a finished stream left in KV, kept for the next stream that starts with them. */
class Cached {
  constructor(
    readonly seq: number,
    readonly tokens: Int32Array,
    public lastUsed: number,
    readonly cacheClass: CacheClass,
  ) {}
  /** Decode time its cells have cost others so far (ms, ski rental). */
  rent = 0;
}

function commonPrefix(a: Int32Array, b: ArrayLike<number>, limit: number): number {
  const n = Math.min(a.length, b.length, limit);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function classRank(p: Priority): number {
  return p === "interactive" ? 0 : 1;
}

/**
 * Admission, queues, prefix cache and per-step plans.
 *
 * @example
 * ```ts
 * import { FittedCostModel } from "./cost_model.ts";
 * import { Scheduler } from "./scheduler.ts";
 * const s = new Scheduler({
 *   deterministic: false, nCtx: 1024, nCtxSeq: 1024, nSeqMax: 8, maxLive: 4, nBatch: 512,
 *   latencyBudget: 1.5, prefixCache: true, lookup: false, cost: new FittedCostModel(),
 * });
 * s.add({ key: 0, prompt: Int32Array.of(1, 2, 3), priority: "interactive", cachePrompt: true });
 * const plan = s.plan(() => false);
 * console.log(plan.calls[0].rows.length); // 3: the whole prompt, nobody else decodes
 * ```
 */
export class Scheduler {
  /** The settings it was made with. */
  readonly o: SchedulerOptions;
  readonly #kv: KvCells | null;
  readonly #live = new Map<number, Live>();
  /** Cached sequences by sequence id. */
  readonly #cached = new Map<number, Cached>();
  #freeIds: number[];
  #arrivals = 0;
  #steps = 0;
  #stats: CacheStats = noCacheStats();
  #spare = 0;
  /** Admission failed and nothing was freed since: waiting streams are no work yet. */
  #stalled = false;
  /** Followers that prefill the shared part themselves after all: 0 cached tokens. */
  #uncached: number[] = [];
  readonly #reuse: Record<CacheClass, ReuseRate> = {
    chat: new ReuseRate(),
    prompt: new ReuseRate(),
  };

  /** A scheduler with nothing to do yet. */
  constructor(o: SchedulerOptions) {
    if (o.maxLive > o.nSeqMax) throw new RangeError("maxLive > nSeqMax");
    this.o = o;
    this.#kv = o.deterministic ? null : new KvCells(o.nCtx);
    this.#freeIds = Array.from({ length: o.nSeqMax }, (_, i) => i);
  }

  /** The largest prompt a stream may have. */
  get maxPrompt(): number {
    return this.o.nCtxSeq - 1;
  }

  /** Adds a stream; it waits for a sequence and cells. The prompt must be within `maxPrompt`. */
  add(spec: StreamSpec): void {
    if (this.#live.has(spec.key)) throw new RangeError(`key ${spec.key} is in use`);
    if (spec.prompt.length < 1 || spec.prompt.length > this.maxPrompt) {
      throw new RangeError(`prompt of ${spec.prompt.length} tokens (at most ${this.maxPrompt})`);
    }
    this.#live.set(spec.key, new Live(spec, this.#arrivals++));
    this.#stalled = false;
  }

  /** True while a stream is known under this key. */
  has(key: number): boolean {
    return this.#live.has(key);
  }

  /** Prompt tokens reused from KV by the stream (known once admitted). */
  cachedTokens(key: number): number {
    return this.#live.get(key)?.cached ?? 0;
  }

  /** Tokens of the stream in KV. */
  position(key: number): number {
    return this.#live.get(key)?.nPast ?? 0;
  }

  /** Something to do this step: a stream to admit, prefill or decode. */
  hasWork(paused: (key: number) => boolean): boolean {
    for (const s of this.#live.values()) {
      if (s.state === "prefill" || (s.state === "waiting" && !this.#stalled)) return true;
      if (s.state === "decode" && !paused(s.key)) return true;
    }
    return false;
  }

  /** KV cells in use (cached sequences included). */
  get kvCellsUsed(): number {
    if (this.#kv) return this.#kv.used;
    let n = 0;
    for (const s of this.#live.values()) n += s.nPast;
    for (const c of this.#cached.values()) n += c.tokens.length;
    return n;
  }

  /**
   * The span of cells every row of a decode call attends over (llama.cpp's `n_kv`: one
   * past the highest cell in use, padded); 0 in deterministic mode, whose sequences each
   * have a KV stream of their own.
   */
  get kvSpan(): number {
    return this.#kv ? this.#kv.span : 0;
  }

  /** The prefix cache's counters, and what it holds now. */
  get cacheStats(): CacheStats {
    let cells = 0;
    for (const c of this.#cached.values()) {
      cells += this.#kv ? this.#kv.ownCells(c.seq) : c.tokens.length;
    }
    return {
      ...this.#stats,
      sequences: this.#cached.size,
      cells,
      reuseRate: { chat: this.#reuse.chat.rate, prompt: this.#reuse.prompt.rate },
    };
  }

  /**
   * Prompt-equivalent tokens that may run outside the last planned step (another context
   * on the same CPU: embeddings) without breaking the latency budget; 0 when none.
   */
  spareTokens(): number {
    return this.#spare;
  }

  /** Plans the next step. `paused(key)`: the stream's connection is full, skip its row. */
  plan(paused: (key: number) => boolean): StepPlan {
    this.#steps++;
    const plan: StepPlan = { memory: [], admitted: [], ended: [], calls: [] };
    for (const key of this.#uncached.splice(0)) plan.admitted.push({ key, cachedTokens: 0 });
    this.#admit(plan);
    if (this.o.deterministic) this.#planDeterministic(plan, paused);
    else this.#planUnified(plan, paused);
    return plan;
  }

  // --- admission -------------------------------------------------------------------

  /** Waiting streams in the order they are served. */
  #ordered(states: State[], byAgeOnly: boolean): Live[] {
    const xs = [...this.#live.values()].filter((s) => states.includes(s.state));
    return xs.sort((a, b) =>
      (byAgeOnly ? 0 : classRank(a.priority) - classRank(b.priority)) || a.arrival - b.arrival
    );
  }

  #liveCount(): number {
    let n = 0;
    for (const s of this.#live.values()) if (s.state !== "waiting") n++;
    return n;
  }

  /** Cells that prefilling streams will still take (reserved when they were admitted). */
  #reserved(): number {
    let n = 0;
    for (const s of this.#live.values()) {
      if (s.state === "prefill") n += s.reserve(this.o.deterministic);
    }
    return n;
  }

  #countReuse(s: Live) {
    if (!s.cachePrompt || !this.o.prefixCache) return;
    if (s.cached > 0) {
      this.#stats.hits++;
      this.#stats.tokensReused += s.cached;
    } else {
      this.#stats.misses++;
    }
  }

  #admit(plan: StepPlan) {
    const byAge = this.#steps % AGE_ORDER_EVERY === 0;
    for (const s of this.#ordered(["waiting"], byAge)) {
      if (this.#liveCount() >= this.o.maxLive) return;
      const ok = this.o.deterministic ? this.#admitOwn(s, plan) : this.#admitShared(s, plan);
      // Head of line: a stream that does not fit yet is not overtaken by later ones.
      if (!ok) {
        this.#stalled = true;
        return;
      }
      if (!s.follow) this.#countReuse(s);
      plan.admitted.push({ key: s.key, cachedTokens: s.follow ? s.followN : s.cached });
    }
  }

  /** Deterministic mode: a free sequence, the one whose leftover tokens match longest. */
  #admitOwn(s: Live, plan: StepPlan): boolean {
    const free = this.#freeIds;
    if (free.length === 0) return false;
    let best = -1;
    let bestN = 0;
    if (s.cachePrompt && this.o.prefixCache) {
      for (const id of free) {
        const c = this.#cached.get(id);
        if (!c) continue;
        const n = commonPrefix(c.tokens, s.prompt, s.prompt.length - 1);
        if (n >= MIN_REUSE && n > bestN) [best, bestN] = [id, n];
      }
    }
    if (best < 0) best = this.#leastRecentFree();
    free.splice(free.indexOf(best), 1);
    const c = this.#cached.get(best);
    if (c) {
      if (bestN > 0) this.#reuse[c.cacheClass].reused(bestN);
      this.#cached.delete(best);
      if (bestN < c.tokens.length) plan.memory.push({ op: "rm", seq: best, from: bestN });
      if (bestN === 0) this.#stats.evictions++;
    }
    s.seq = best;
    s.nPast = bestN;
    s.cached = bestN;
    this.#startPrefill(s);
    return true;
  }

  /** A free id with no cached tokens, else the least recently used cached one. */
  #leastRecentFree(): number {
    let lru = -1;
    for (const id of this.#freeIds) {
      const c = this.#cached.get(id);
      if (!c) return id;
      if (lru < 0 || c.lastUsed < this.#cached.get(lru)!.lastUsed) lru = id;
    }
    return lru;
  }

  /** Default mode: a sequence id, cells for the prompt, and the longest prefix to share. */
  #admitShared(s: Live, plan: StepPlan): boolean {
    const kv = this.#kv!;
    // The longest prefix in KV: a cached sequence or a live stream's tokens so far.
    let src = -1;
    let n = 0;
    let fromCache: Cached | null = null;
    // A prompt being prefilled that starts the same way: wait for it and share.
    let lead: Live | null = null;
    let leadN = 0;
    if (s.cachePrompt && this.o.prefixCache) {
      const limit = s.prompt.length - 1;
      for (const c of this.#cached.values()) {
        const m = commonPrefix(c.tokens, s.prompt, limit);
        if (m >= MIN_REUSE && m > n) [src, n, fromCache] = [c.seq, m, c];
      }
      for (const o of this.#live.values()) {
        if (o.state === "waiting" || !o.cachePrompt || o.follow || o.seq < 0) continue;
        const m = commonPrefix(s.prompt, o.tokens.view(o.nPast), limit);
        if (m >= MIN_REUSE && m > n) [src, n, fromCache] = [o.seq, m, null];
        if (o.state !== "prefill") continue;
        const ahead = commonPrefix(s.prompt, o.prompt, limit);
        if (ahead > leadN) [lead, leadN] = [o, ahead];
      }
    }
    if (lead && leadN >= n + FOLLOW_MIN) {
      [src, n, fromCache] = [-1, 0, null];
    } else {
      lead = null;
      leadN = 0;
    }
    const need = s.prompt.length - Math.max(n, leadN);
    // A step's worth of growth for every decoding stream stays free (a watermark).
    const watermark = this.#liveCount() + 1;
    const keep = new Set(src >= 0 ? [src] : []);
    while (kv.free - this.#reserved() < need + watermark) {
      if (!this.#evictLru(plan, keep)) return false;
    }
    // Take the cached sequence over when little of it would be lost, or when no other one
    // can give up its id; else share it into a new id.
    if (this.#freeIds.length === 0 && fromCache && fromCache.tokens.length > n + 1) {
      this.#evictLru(plan, keep);
    }
    let id: number;
    if (fromCache) {
      this.#reuse[fromCache.cacheClass].reused(n);
      // What was reused paid off: its share of the rent starts over.
      fromCache.rent *= 1 - n / fromCache.tokens.length;
    }
    if (fromCache && (fromCache.tokens.length <= n + 1 || this.#freeIds.length === 0)) {
      id = fromCache.seq;
      this.#cached.delete(id);
      if (n < fromCache.tokens.length) {
        plan.memory.push({ op: "rm", seq: id, from: n });
        kv.remove(id, n);
      }
    } else {
      if (this.#freeIds.length === 0 && !this.#evictLru(plan, keep)) return false;
      id = this.#freeIds.shift()!;
      if (n > 0) {
        plan.memory.push({ op: "cp", src, dst: id, n });
        kv.copy(src, id, n);
        if (fromCache) fromCache.lastUsed = this.#steps;
      }
    }
    s.seq = id;
    s.nPast = n;
    s.cached = n;
    if (lead) {
      s.follow = lead;
      s.followN = leadN;
    }
    this.#startPrefill(s);
    return true;
  }

  /**
   * Followers of `lead` whose shared prefix is in KV now take it over (memory operations
   * into `memory`); those whose lead is gone prefill it themselves, or wait again when
   * the cells it would take are not free.
   */
  #resolveFollowers(memory: MemoryOp[], lead: Live | null = null) {
    for (const s of this.#live.values()) {
      const a = s.follow;
      if (!a || (lead && a !== lead)) continue;
      const alive = this.#live.get(a.key) === a && a.seq >= 0;
      if (alive && a.nPast >= s.followN) {
        memory.push({ op: "cp", src: a.seq, dst: s.seq, n: s.followN });
        this.#kv!.copy(a.seq, s.seq, s.followN);
        s.nPast = s.followN;
        s.cached = s.followN;
        s.follow = null;
        this.#countReuse(s);
        s.state = s.promptLeft(false) > 0 ? "prefill" : "decode";
      } else if (!alive || lead) {
        s.follow = null;
        this.#uncached.push(s.key);
        if (this.#kv!.free < this.#reserved()) {
          // Its lead was cancelled and its whole prompt does not fit now: wait again.
          s.state = "waiting";
          this.#freeIds.push(s.seq);
          s.seq = -1;
        } else {
          this.#countReuse(s);
        }
      }
    }
  }

  #startPrefill(s: Live) {
    s.state = s.promptLeft(this.o.deterministic) > 0 ? "prefill" : "decode";
  }

  /** Drops the least recently used cached sequence not in `keep`; false when none. */
  #evictLru(plan: StepPlan, keep: Set<number>): boolean {
    let lru: Cached | null = null;
    for (const c of this.#cached.values()) {
      if (keep.has(c.seq)) continue;
      if (!lru || c.lastUsed < lru.lastUsed) lru = c;
    }
    if (!lru) return false;
    this.#drop(lru, plan.memory);
    return true;
  }

  #drop(c: Cached, memory: MemoryOp[]) {
    this.#cached.delete(c.seq);
    memory.push({ op: "rm", seq: c.seq, from: 0 });
    this.#kv?.remove(c.seq, 0);
    // Deterministic mode keeps cached tokens in free sequences: the id is free already.
    if (!this.o.deterministic) this.#freeIds.push(c.seq);
    this.#stats.evictions++;
    this.#stalled = false;
  }

  // --- default mode: one call per step ---------------------------------------------

  #planUnified(plan: StepPlan, paused: (key: number) => boolean) {
    const kv = this.#kv!;
    this.#resolveFollowers(plan.memory);
    // Ski rental: a cached sequence goes once it has cost what recomputing it would save.
    for (const c of [...this.#cached.values()]) {
      const rate = this.#reuse[c.cacheClass].rate;
      if (c.rent > 0 && c.rent >= rate * this.#recomputeMs(c)) this.#drop(c, plan.memory);
    }
    const decoding = this.#ordered(["decode"], false).filter((s) => !paused(s.key));
    // Every decoding stream needs a cell; cached sequences go first, then the youngest streams.
    while (
      decoding.length > 0 &&
      (kv.free - this.#reserved() < decoding.length || decoding.at(-1)!.nPast >= this.o.nCtxSeq)
    ) {
      if (decoding.at(-1)!.nPast < this.o.nCtxSeq && this.#evictLru(plan, new Set())) continue;
      const last = decoding.pop()!;
      plan.ended.push({ key: last.key, reason: "length" });
      this.#release(last, false, plan.memory);
    }
    const rows: Row[] = decoding.map((s) => ({
      kind: "decode",
      key: s.key,
      seq: s.seq,
      token: s.tokens.at(s.nPast),
      pos: s.nPast,
      logits: true,
    }));
    const d = rows.length;
    const span = kv.span;
    const quiet: CallShape = { tokens: d, outputs: d, nKv: span, attended: attendedBy(rows) };
    let budget = this.o.nBatch - d;
    if (d > 0) {
      const max = budget;
      // Prompt tokens, as if they all continued the first prompt in order.
      const first = this.#ordered(["prefill"], false).find((s) => !s.follow);
      const at = first?.nPast ?? 0;
      const withPrompt = (p: number): CallShape => ({
        tokens: d + p,
        outputs: d + 1,
        nKv: kv.spanAfter(p),
        attended: quiet.attended + p * at + (p * (p + 1)) / 2,
      });
      budget = promptTokensWithin(this.o.cost, quiet, withPrompt, this.o.latencyBudget, max);
      if (this.o.latencyBudget !== Infinity) {
        budget = Math.min(budget, Math.max(EXPLORE_TOKENS, 2 * this.o.cost.maxTokensSeen - d));
      }
      // Never starved: a prompt token a step at least.
      budget = Math.min(max, Math.max(1, budget));
    }
    const prompts = this.#promptShares(budget);
    let outputs = d;
    for (const [s, k] of prompts) {
      const end = s.nPast + k;
      for (let p = s.nPast; p < end; p++) {
        const last = p === s.prompt.length - 1;
        rows.push({
          kind: "prompt",
          key: s.key,
          seq: s.seq,
          token: s.prompt[p],
          pos: p,
          logits: last,
        });
        if (last) outputs++;
      }
    }
    if (rows.length === 0) {
      this.#spare = this.o.nBatch;
      return;
    }
    if (!kv.place(rows.map((r) => r.seq))) throw new Error("planned more rows than free cells");
    const shape = { tokens: rows.length, outputs, nKv: kv.span, attended: attendedBy(rows) };
    plan.calls.push({ rows, shape, promptOnly: d === 0 });
    this.#spare = this.#spareAfter(quiet, shape);
  }

  /** What recomputing a cached sequence's own cells would take (ms). */
  #recomputeMs(c: Cached): number {
    const own = this.#kv!.ownCells(c.seq);
    const len = c.tokens.length;
    const attended = (len * (len + 1)) / 2 - ((len - own) * (len - own + 1)) / 2;
    return this.o.cost.predict({ tokens: own, outputs: 0, nKv: this.#kv!.span, attended }) -
      this.o.cost.predict({ tokens: 0, outputs: 0, nKv: 0, attended: 0 });
  }

  /** Tokens another pass (on another context) may take before the next step. */
  #spareAfter(quiet: CallShape, shape: CallShape): number {
    if (quiet.tokens === 0 || this.o.latencyBudget === Infinity) return this.o.nBatch;
    const cost = this.o.cost;
    const slack = this.o.latencyBudget * cost.predict(quiet) - cost.predict(shape);
    let t = 0;
    while (t < this.o.nBatch && cost.predict(alonePass(t + 1)) <= slack) t++;
    return t;
  }

  /**
   * Splits `budget` prompt tokens among prefilling streams: in class and age order (age
   * alone every AGE_ORDER_EVERY steps), the first gets FIRST_PROMPT_SHARE when others
   * wait, the next ones the rest in order, and what they cannot use goes back to the first.
   */
  #promptShares(budget: number, cap = Infinity): [Live, number][] {
    const det = this.o.deterministic;
    const q = this.#ordered(["prefill"], this.#steps % AGE_ORDER_EVERY === 0)
      .filter((s) => !s.follow);
    if (q.length === 0 || budget <= 0) return [];
    const left = q.map((s) => Math.min(cap, s.promptLeft(det)));
    const give = new Array(q.length).fill(0);
    let rest = budget;
    const firstMax = q.length > 1 ? Math.max(1, Math.ceil(budget * FIRST_PROMPT_SHARE)) : budget;
    give[0] = Math.min(left[0], firstMax, rest);
    rest -= give[0];
    for (let i = 1; i < q.length && rest > 0; i++) {
      give[i] = Math.min(left[i], rest);
      rest -= give[i];
    }
    const more = Math.min(left[0] - give[0], rest);
    give[0] += more;
    const out: [Live, number][] = [];
    for (let i = 0; i < q.length; i++) if (give[i] > 0) out.push([q[i], give[i]]);
    return out;
  }

  // --- deterministic mode ----------------------------------------------------------

  #planDeterministic(plan: StepPlan, paused: (key: number) => boolean) {
    const ready = [...this.#live.values()]
      .filter((s) => s.state === "decode" && !paused(s.key))
      .sort((a, b) => a.seq - b.seq);
    let decodeMs = 0;
    if (ready.length > 0) {
      const call = this.#decodeCall(ready);
      plan.calls.push(call);
      decodeMs = this.o.cost.predict(call.shape);
      this.#spare = 0;
    }
    // Prompt chunks, each its own call: one per step while streams decode, within the
    // budget's share; while nobody decodes, a batch's worth.
    const decoding = ready.length > 0;
    let budget: number;
    if (!decoding) {
      budget = this.o.nBatch;
    } else if (this.o.latencyBudget === Infinity) {
      budget = DETERMINISTIC_MAX_CHUNK;
    } else {
      const slack = (this.o.latencyBudget - 1) * decodeMs;
      budget = 0;
      while (
        budget < DETERMINISTIC_MAX_CHUNK && this.o.cost.predict(alonePass(budget + 1)) <= slack
      ) budget++;
      budget = Math.max(2, budget); // never starved
    }
    let calls = 0;
    while (budget > 0 && (calls === 0 || !decoding)) {
      const [share] = this.#promptShares(
        Math.min(budget, DETERMINISTIC_MAX_CHUNK),
        DETERMINISTIC_MAX_CHUNK,
      );
      if (!share) break;
      const [s, k] = share;
      const rows: Row[] = [];
      for (let i = 0; i < k; i++) {
        rows.push({
          kind: "prompt",
          key: s.key,
          seq: s.seq,
          token: s.prompt[s.nPast + i],
          pos: s.nPast + i,
          logits: false,
        });
      }
      // One row alone takes another kernel path: pad with a throwaway next position.
      if (k === 1) {
        rows.push({
          kind: "filler",
          key: -1,
          seq: s.seq,
          token: 0,
          pos: s.nPast + 1,
          logits: false,
        });
      }
      plan.calls.push({
        rows,
        shape: {
          tokens: rows.length,
          outputs: 0,
          nKv: spanOf(s.nPast + k),
          attended: attendedBy(rows),
        },
        promptOnly: true,
      });
      // Later calls of this step see the chunk as done (commit confirms it).
      s.nPast += k;
      budget -= k;
      calls++;
    }
    // Undo the provisional advance: commit() applies it for the calls that ran.
    for (const call of plan.calls) {
      if (!call.promptOnly) continue;
      const s = this.#live.get(call.rows[0].key)!;
      s.nPast -= call.rows.filter((r) => r.kind === "prompt").length;
    }
    this.#spare = decoding ? 0 : this.o.nBatch;
  }

  /** Rows in sequence-id order with no gaps, at least two, every row with logits. */
  #decodeCall(ready: Live[]): DecodeCall {
    let lo = ready[0].seq;
    let hi = ready[ready.length - 1].seq;
    const rows: Row[] = [];
    let draft: Row | null = null;
    if (lo === hi) {
      const s = ready[0];
      const token = this.o.lookup && s.nPast + 1 < this.o.nCtxSeq ? s.tokens.draft() : -1;
      if (token >= 0) {
        draft = { kind: "draft", key: s.key, seq: s.seq, token, pos: s.nPast + 1, logits: true };
      } else if (hi + 1 < this.o.nSeqMax) hi++;
      else lo--;
    }
    const bySeq = new Map(ready.map((s) => [s.seq, s]));
    const holder = new Map<number, number>();
    for (const s of this.#live.values()) if (s.seq >= 0) holder.set(s.seq, s.nPast);
    for (const c of this.#cached.values()) holder.set(c.seq, c.tokens.length);
    let maxPos = 0;
    for (let id = lo; id <= hi; id++) {
      const s = bySeq.get(id);
      if (s) {
        rows.push({
          kind: "decode",
          key: s.key,
          seq: id,
          token: s.tokens.at(s.nPast),
          pos: s.nPast,
          logits: true,
        });
        maxPos = Math.max(maxPos, s.nPast + 1);
      } else {
        // Filler: any token at the sequence's next position, removed after the decode.
        const pos = holder.get(id) ?? 0;
        rows.push({ kind: "filler", key: -1, seq: id, token: 0, pos, logits: true });
        maxPos = Math.max(maxPos, pos + 1);
      }
    }
    if (draft) {
      rows.push(draft);
      ready[0].draftPos = draft.pos;
      maxPos = Math.max(maxPos, draft.pos + 1);
    }
    return {
      rows,
      shape: {
        tokens: rows.length,
        outputs: rows.length,
        nKv: spanOf(maxPos),
        attended: attendedBy(rows),
      },
      promptOnly: false,
    };
  }

  // --- results -----------------------------------------------------------------------

  /**
   * A planned call ran and `rc` is llama_decode's result. On success positions advance
   * (fillers' cells are to be removed: the operations returned); otherwise the operations
   * trim what the failed call may have written, and the next plan tries again.
   */
  commit(call: DecodeCall, rc: number): MemoryOp[] {
    const memory: MemoryOp[] = [];
    if (rc !== 0) {
      const first = new Map<number, number>();
      for (const r of call.rows) {
        if (!first.has(r.seq) || r.pos < first.get(r.seq)!) first.set(r.seq, r.pos);
      }
      for (const [seq, from] of first) {
        memory.push({ op: "rm", seq, from });
        this.#kv?.remove(seq, from);
      }
      for (const r of call.rows) {
        const s = this.#live.get(r.key);
        if (s && r.kind === "draft") s.draftPos = -1;
      }
      return memory;
    }
    for (const r of call.rows) {
      if (r.kind === "filler") {
        memory.push({ op: "rm", seq: r.seq, from: r.pos });
        continue;
      }
      const s = this.#live.get(r.key);
      if (!s || r.kind === "draft") continue;
      s.nPast = Math.max(s.nPast, r.pos + 1);
      if (
        r.kind === "prompt" && s.state === "prefill" && s.promptLeft(this.o.deterministic) === 0
      ) {
        // Deterministic: the last prompt token is the next decode row; default: sampled now.
        s.state = "decode";
      }
    }
    return memory;
  }

  /** A committed call took `ms`, decode through sampling: the cost model learns from it. */
  observe(call: DecodeCall, ms: number): void {
    this.o.cost.observe(call.shape, ms);
    // Cached sequences pay rent for the attention their cells cost this call.
    const t = call.shape.tokens;
    const coeff = this.o.cost.predict({ tokens: t, outputs: 0, nKv: 1024, attended: 0 }) -
      this.o.cost.predict({ tokens: t, outputs: 0, nKv: 0, attended: 0 });
    if (this.#kv && coeff > 0) {
      for (const c of this.#cached.values()) c.rent += (coeff * this.#kv.ownCells(c.seq)) / 1024;
    }
  }

  /** The stream's sampled token: it is the next row's input. */
  push(key: number, token: number): void {
    const s = this.#live.get(key);
    if (s) s.tokens.push(token);
  }

  /**
   * The decode row's sample matched the draft: the draft's cell holds it already. Returns
   * nothing to do; a mismatch returns the draft's cell to remove.
   */
  draftResult(key: number, accepted: boolean): MemoryOp[] {
    const s = this.#live.get(key);
    if (!s || s.draftPos < 0) return [];
    const pos = s.draftPos;
    s.draftPos = -1;
    if (accepted) {
      s.nPast = pos + 1;
      return [];
    }
    return [{ op: "rm", seq: s.seq, from: pos }];
  }

  /** The draft row of a stream in the last call, or -1. */
  draftPosition(key: number): number {
    return this.#live.get(key)?.draftPos ?? -1;
  }

  /** True when the stream cannot hold another token (its sequence is full). */
  full(key: number): boolean {
    const s = this.#live.get(key);
    return !s || s.nPast >= this.o.nCtxSeq;
  }

  /**
   * The stream ended. With `keep` (a natural end, cache on for it) its tokens stay in
   * KV as a cached sequence; otherwise its cells and sequence id are freed.
   */
  finish(key: number, keep: boolean): MemoryOp[] {
    const s = this.#live.get(key);
    if (!s) return [];
    const memory: MemoryOp[] = [];
    this.#release(s, keep && s.cachePrompt && this.o.prefixCache, memory);
    return memory;
  }

  #release(s: Live, keep: boolean, memory: MemoryOp[]) {
    if (this.#kv && s.seq >= 0) this.#resolveFollowers(memory, s);
    this.#live.delete(s.key);
    if (s.seq < 0) return;
    if (s.draftPos >= 0) {
      memory.push({ op: "rm", seq: s.seq, from: s.draftPos });
      s.draftPos = -1;
    }
    this.#stalled = false;
    if (keep && s.nPast > 0) {
      const tokens = s.tokens.view(s.nPast).slice();
      // A cached sequence this one extends is redundant: the new one holds all of it.
      for (const c of [...this.#cached.values()]) {
        if (this.o.deterministic) break;
        if (
          c.tokens.length <= tokens.length &&
          commonPrefix(c.tokens, tokens, c.tokens.length) === c.tokens.length
        ) {
          this.#drop(c, memory);
          this.#stats.evictions--; // replaced, not evicted
        }
      }
      this.#cached.set(s.seq, new Cached(s.seq, tokens, this.#steps, s.cacheClass));
      this.#reuse[s.cacheClass].cached(tokens.length);
      if (this.o.deterministic) this.#freeIds.push(s.seq);
      return;
    }
    memory.push({ op: "rm", seq: s.seq, from: 0 });
    this.#kv?.remove(s.seq, 0);
    this.#freeIds.push(s.seq);
  }

  /** Forgets every cached sequence (their memory operations returned). */
  clearCache(): MemoryOp[] {
    const memory: MemoryOp[] = [];
    for (const c of [...this.#cached.values()]) this.#drop(c, memory);
    return memory;
  }
}

/** Cells the rows attend to: a row at position p sees p + 1 cells of its sequence. */
function attendedBy(rows: Row[]): number {
  let n = 0;
  for (const r of rows) n += r.pos + 1;
  return n;
}

/** A pass of t fresh tokens of its own (another context: embeddings, a prompt alone). */
function alonePass(t: number): CallShape {
  return { tokens: t, outputs: 0, nKv: KV_PAD, attended: (t * (t + 1)) / 2 };
}

function spanOf(top: number): number {
  return Math.max(KV_PAD, Math.ceil(top / KV_PAD) * KV_PAD);
}
