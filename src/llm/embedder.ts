/**
 * Embeddings: a second llama context on the loaded weights with embeddings on, run in
 * the engine worker between decode steps. Texts are decoded in chunks (at most the
 * tokens the decode budget has spare, so an embedding batch never stalls token streams
 * beyond it), per-token hidden states are pooled here, and each vector is L2-normalized.
 * One text per decode call: a text's rows never share a matrix product with another
 * text's, so (at a given chunking) its vector is bit-identical alone or in a batch.
 *
 * Pooling is the model's declared one (`<arch>.pooling_type`: mean, cls or last), else
 * mean. Pooling here rather than inside llama.cpp lets a long text be decoded across
 * several steps: llama.cpp's own pooling needs a whole sequence in one decode. That holds
 * for causal models (every model umad generates with); encoder models (BERT) attend both
 * ways and are refused.
 *
 * @module
 */
import { Batch, LlamaContext, type LlamaModel } from "./llama.ts";

/** Why an embedding request failed. */
export class EmbedError extends Error {
  /** Creates the error; `code` is the wire code the request gets. */
  constructor(readonly code: "E_PROTO_BAD_REQUEST" | "E_LIMIT_PROMPT_TOO_LARGE", message: string) {
    super(message);
    this.name = "EmbedError";
  }
}

/** Settings of the embedding context. */
export interface EmbedderOptions {
  /** CPU threads of the embedding context's thread pool. */
  threads: number;
  /** KV cells shared by the texts decoded at once; the longest text allowed. */
  nCtx?: number;
  /** Texts decoded side by side. */
  nSeq?: number;
}

/** One request: its texts and their vectors as they complete. */
export interface EmbedJob {
  /** The request's number in the worker. */
  rid: number;
  /** Each input's tokens. */
  texts: Int32Array[];
  /** Each input's vector, once decoded. */
  vectors: (Float32Array | null)[];
  /** Called with every vector and the tokens they took. */
  done(vectors: number[][], promptTokens: number): void;
  /** Called when the request cannot be embedded. */
  fail(err: EmbedError): void;
}

/** A text being decoded in one sequence. */
interface Active {
  job: EmbedJob;
  index: number;
  tokens: Int32Array;
  /** Tokens already decoded. */
  at: number;
  sum: Float64Array;
}

const POOLING_NAMES: Record<string, "mean" | "cls" | "last"> = {
  "1": "mean",
  "2": "cls",
  "3": "last",
};

/** The embedding side of one model. */
export class Embedder {
  /** The loaded model whose weights embed. */
  readonly model: LlamaModel;
  /** Length of every vector. */
  readonly nEmbd: number;
  /** How token states become one vector. */
  readonly pooling: "mean" | "cls" | "last";
  /** KV cells of the embedding context: the longest text. */
  readonly nCtx: number;
  readonly #opts: EmbedderOptions;
  readonly #nSeq: number;
  #ctx: LlamaContext | null = null;
  #batch: Batch | null = null;
  #queue: EmbedJob[] = [];
  #active: (Active | null)[];
  /** Where the next text of the oldest job starts. */
  #next = 0;

  /** Settings apply when the first request opens the context. */
  constructor(model: LlamaModel, options: EmbedderOptions) {
    this.model = model;
    this.#opts = options;
    this.nEmbd = model.nEmbd;
    const arch = model.meta("general.architecture") ?? "llama";
    this.pooling = POOLING_NAMES[model.meta(`${arch}.pooling_type`) ?? ""] ?? "mean";
    this.nCtx = options.nCtx ?? Math.min(2048, model.nCtxTrain > 0 ? model.nCtxTrain : 2048);
    this.#nSeq = options.nSeq ?? 2;
    this.#active = new Array(this.#nSeq).fill(null);
  }

  /** True while some text waits or is being decoded. */
  get busy(): boolean {
    return this.#queue.length > 0;
  }

  /**
   * Queues the texts of one request. Throws {@linkcode EmbedError} at once for a text
   * that is empty or longer than the context.
   */
  enqueue(
    rid: number,
    inputs: readonly string[],
    done: EmbedJob["done"],
    fail: EmbedJob["fail"],
  ): void {
    if (this.model.hasEncoder) {
      throw new EmbedError(
        "E_PROTO_BAD_REQUEST",
        "This model has an encoder (non-causal attention); umad embeds with causal models only",
      );
    }
    const texts = inputs.map((text, i) => {
      const tokens = this.model.tokenize(text, true, false);
      if (tokens.length === 0) {
        throw new EmbedError("E_PROTO_BAD_REQUEST", `embed: input[${i}] is empty`);
      }
      if (tokens.length > this.nCtx) {
        throw new EmbedError(
          "E_LIMIT_PROMPT_TOO_LARGE",
          `embed: input[${i}] has ${tokens.length} tokens; at most ${this.nCtx} fit`,
        );
      }
      return tokens;
    });
    this.#queue.push({ rid, texts, vectors: texts.map(() => null), done, fail });
  }

  /** Drops a request (its client went away). */
  cancel(rid: number): void {
    const job = this.#queue.find((j) => j.rid === rid);
    if (!job) return;
    for (let s = 0; s < this.#nSeq; s++) {
      if (this.#active[s]?.job === job) {
        this.#ctx?.seqRm(s);
        this.#active[s] = null;
      }
    }
    const wasFirst = this.#queue[0] === job;
    this.#queue.splice(this.#queue.indexOf(job), 1);
    if (wasFirst) this.#next = 0;
  }

  #open(): LlamaContext {
    if (this.#ctx) return this.#ctx;
    this.#ctx = new LlamaContext(this.model, {
      nCtx: this.nCtx,
      nBatch: 512,
      nSeqMax: this.#nSeq,
      threads: this.#opts.threads,
      kvUnified: true,
      embeddings: true,
      pooling: "none",
    });
    this.#batch = new Batch(this.#ctx.nBatch);
    return this.#ctx;
  }

  /** Cells in use by the texts being decoded. */
  #cells(): number {
    let n = 0;
    for (const a of this.#active) if (a) n += a.tokens.length;
    return n;
  }

  /** Starts waiting texts in free sequences while their cells fit. */
  #admit() {
    while (this.#queue.length) {
      const job = this.#queue[0];
      if (this.#next >= job.texts.length) return;
      const seq = this.#active.indexOf(null);
      if (seq < 0) return;
      const tokens = job.texts[this.#next];
      if (this.#cells() + tokens.length > this.nCtx) return;
      this.#active[seq] = {
        job,
        index: this.#next++,
        tokens,
        at: 0,
        sum: new Float64Array(this.nEmbd),
      };
    }
  }

  /**
   * Decodes at most `budget` tokens of waiting texts (at least 1); finished requests get
   * their vectors. Returns the tokens decoded.
   */
  step(budget: number): number {
    if (!this.busy) return 0;
    const ctx = this.#open();
    this.#admit();
    const b = this.#batch!;
    b.clear();
    const limit = Math.max(1, Math.min(budget, b.capacity));
    const rows: { a: Active; first: number; n: number }[] = [];
    for (let s = 0; s < this.#nSeq && b.n === 0; s++) {
      const a = this.#active[s];
      if (!a) continue;
      const n = Math.min(a.tokens.length - a.at, limit - b.n);
      const first = b.n;
      for (let i = 0; i < n; i++) b.add(a.tokens[a.at + i], a.at + i, s, true);
      rows.push({ a, first, n });
    }
    if (b.n === 0) return 0;
    const rc = ctx.decode(b);
    if (rc !== 0) {
      for (const { a } of rows) {
        this.#failJob(
          a.job,
          new EmbedError("E_PROTO_BAD_REQUEST", `llama_decode failed (${rc}) while embedding`),
        );
      }
      return 0;
    }
    for (const { a, first, n } of rows) {
      for (let r = first; r < first + n; r++) {
        const pos = a.at + (r - first);
        const use = this.pooling === "mean" ||
          (this.pooling === "cls" && pos === 0) ||
          (this.pooling === "last" && pos === a.tokens.length - 1);
        if (!use) continue;
        const e = ctx.embedding(b.outputIndex(r), this.nEmbd);
        if (!e) continue;
        for (let k = 0; k < this.nEmbd; k++) a.sum[k] += e[k];
      }
      a.at += n;
      if (a.at === a.tokens.length) this.#finish(a);
    }
    return b.n;
  }

  #finish(a: Active) {
    const seq = this.#active.indexOf(a);
    this.#ctx!.seqRm(seq);
    this.#active[seq] = null;
    const count = this.pooling === "mean" ? a.tokens.length : 1;
    let norm = 0;
    for (let k = 0; k < a.sum.length; k++) norm += (a.sum[k] / count) ** 2;
    norm = Math.sqrt(norm) || 1;
    const v = new Float32Array(a.sum.length);
    for (let k = 0; k < a.sum.length; k++) v[k] = a.sum[k] / count / norm;
    a.job.vectors[a.index] = v;
    if (a.job.vectors.every((x) => x !== null)) {
      this.#queue.splice(this.#queue.indexOf(a.job), 1);
      this.#next = 0;
      let tokens = 0;
      for (const t of a.job.texts) tokens += t.length;
      a.job.done(a.job.vectors.map((x) => Array.from(x!)), tokens);
    }
  }

  #failJob(job: EmbedJob, err: EmbedError) {
    this.cancel(job.rid);
    job.fail(err);
  }

  /** Frees the embedding context. */
  close() {
    this.#ctx?.free();
    this.#ctx = null;
  }
}

/**
 * How many embedding tokens fit beside a decode step: the share of a step's time that
 * prompt chunks may add (`--prefill-ratio`), divided by the measured cost of an embedding
 * token. Used until the scheduler reports its own spare room (`engine.spareTokens()`).
 * Pure: fed with measurements, no clock of its own.
 *
 * @example
 * ```ts
 * import { EmbedBudget } from "./embedder.ts";
 * const b = new EmbedBudget(0.4);
 * b.decodeStep(10); // a 10 ms decode step
 * b.embedded(8, 4); // 8 tokens took 4 ms
 * console.log(b.tokens()); // 8: 0.4 × 10 ms at 0.5 ms a token
 * ```
 */
export class EmbedBudget {
  /** Tokens tried before any measurement, and the floor (embeddings always progress). */
  static readonly FIRST = 4;
  readonly #share: number;
  #stepMs = 0;
  #msPerToken = 0;

  /** `share`: the fraction of a decode step's time embedding may add. */
  constructor(share: number) {
    this.#share = share;
  }

  /** A decode step took `ms`. */
  decodeStep(ms: number): void {
    this.#stepMs = this.#stepMs === 0 ? ms : this.#stepMs + 0.2 * (ms - this.#stepMs);
  }

  /** An embedding decode of `tokens` took `ms`. */
  embedded(tokens: number, ms: number): void {
    if (tokens <= 0) return;
    const per = ms / tokens;
    this.#msPerToken = this.#msPerToken === 0
      ? per
      : this.#msPerToken + 0.2 * (per - this.#msPerToken);
  }

  /** Tokens to embed beside the next decode step. */
  tokens(): number {
    if (this.#stepMs === 0 || this.#msPerToken === 0) return EmbedBudget.FIRST;
    return Math.max(1, Math.floor((this.#share * this.#stepMs) / this.#msPerToken));
  }
}
