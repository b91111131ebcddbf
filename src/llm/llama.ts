/**
 * Thin typed wrappers over the llama.cpp C API: model, context, batch, sampler. Every
 * input that would abort the process in llama.cpp is checked here first. Not
 * thread-safe: one context is used from one thread, one call at a time.
 */
import {
  BATCH,
  CONTEXT_PARAMS,
  CPU_PROCS,
  cString,
  MODEL_PARAMS,
  nativeFunction,
  type NativeLibs,
  THREADPOOL_PARAMS,
} from "./ffi.ts";

/** Addresses of buffers that must not move while native code holds them. */
function addressOf(view: ArrayBufferView): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view as BufferSource)));
}

const decoder = new TextDecoder();

/** Messages llama.cpp logged while a model loads (its errors say why a load failed). */
export type NativeLog = (level: number, text: string) => void;

/** A loaded model and its vocabulary. */
export class LlamaModel {
  readonly libs: NativeLibs;
  readonly ptr: Deno.PointerObject;
  readonly vocab: Deno.PointerObject;
  readonly nVocab: number;
  readonly nCtxTrain: number;
  readonly bos: number;
  readonly eos: number;
  readonly addBos: boolean;
  readonly description: string;
  readonly chatTemplate: string | null;
  readonly nParams: number;
  readonly sizeBytes: number;
  /** Layers llama.cpp put on a GPU, and how many it could have (from its load log). */
  readonly offloaded: { layers: number; of: number } | null;
  #pieces: (Uint8Array | undefined)[];
  #tokBuf = new Int32Array(1024);

  private constructor(
    libs: NativeLibs,
    ptr: Deno.PointerObject,
    offloaded: { layers: number; of: number } | null,
  ) {
    this.libs = libs;
    this.ptr = ptr;
    this.offloaded = offloaded;
    const L = libs.llama;
    this.vocab = L.llama_model_get_vocab(ptr)!;
    this.nVocab = L.llama_vocab_n_tokens(this.vocab);
    this.nCtxTrain = L.llama_model_n_ctx_train(ptr);
    this.bos = L.llama_vocab_bos(this.vocab);
    this.eos = L.llama_vocab_eos(this.vocab);
    this.addBos = L.llama_vocab_get_add_bos(this.vocab);
    const buf = new Uint8Array(256);
    const n = L.llama_model_desc(ptr, buf, BigInt(buf.length));
    this.description = n > 0 ? decoder.decode(buf.subarray(0, Math.min(n, 255))) : "";
    const tmpl = L.llama_model_chat_template(ptr, null);
    this.chatTemplate = tmpl ? new Deno.UnsafePointerView(tmpl).getCString() : null;
    this.nParams = Number(L.llama_model_n_params(ptr));
    this.sizeBytes = Number(L.llama_model_size(ptr));
    this.#pieces = new Array(this.nVocab);
  }

  /**
   * Loads a model file. `onProgress` runs on this thread during the load. `gpu` offloads
   * `layers` to `devices` (a NULL-terminated `ggml_backend_dev_t` list; null: llama.cpp's
   * default); without it everything stays on the CPU. Returns the model, or throws with
   * llama.cpp's own error lines when it refuses the file.
   */
  static load(
    libs: NativeLibs,
    path: string,
    onProgress?: (fraction: number) => void,
    onLog?: NativeLog,
    gpu?: { layers: number; devices: BigUint64Array | null },
  ): LlamaModel {
    const L = libs.llama;
    const params = new Uint8Array(L.llama_model_default_params() as Uint8Array);
    const dv = new DataView(params.buffer);
    // The default (-1) offloads everything to any device present: only when asked.
    dv.setInt32(MODEL_PARAMS.n_gpu_layers, gpu?.layers ?? 0, true);
    const noDevices = new BigUint64Array(1);
    const devices = gpu === undefined || gpu.layers === 0 ? noDevices : gpu.devices;
    if (devices) dv.setBigUint64(MODEL_PARAMS.devices, addressOf(devices), true);
    let offloaded: { layers: number; of: number } | null = null;
    const errors: string[] = [];
    const log = new Deno.UnsafeCallback(
      { parameters: ["i32", "pointer", "pointer"], result: "void" } as const,
      (level, text) => {
        if (!text) return;
        const line = new Deno.UnsafePointerView(text).getCString().trimEnd();
        if (level >= 4) errors.push(line);
        const m = line.match(/offloaded (\d+)\/(\d+) layers to GPU/);
        if (m) offloaded = { layers: Number(m[1]), of: Number(m[2]) };
        onLog?.(level, line);
      },
    );
    let lastReported = -1;
    const progress = new Deno.UnsafeCallback(
      { parameters: ["f32", "pointer"], result: "bool" } as const,
      (fraction) => {
        const step = Math.floor(fraction * 10);
        if (step !== lastReported) {
          lastReported = step;
          onProgress?.(fraction);
        }
        return true;
      },
    );
    dv.setBigUint64(
      MODEL_PARAMS.progress_callback,
      BigInt(Deno.UnsafePointer.value(progress.pointer)),
      true,
    );
    L.llama_log_set(log.pointer, null);
    let ptr: Deno.PointerValue;
    try {
      ptr = L.llama_model_load_from_file(cString(path), params);
    } finally {
      // Later native logging may come from other threads: point it at a native no-op.
      L.llama_log_set(nativeFunction(libs, "getpid") as Deno.PointerObject, null);
      log.close();
      progress.close();
      void devices?.length; // alive until the load returned
    }
    if (ptr === null) {
      throw new Error(
        `llama.cpp could not load "${path}"` + (errors.length ? `: ${errors.join(" / ")}` : ""),
      );
    }
    return new LlamaModel(libs, ptr, offloaded);
  }

  /** Tokens of `text` (BOS added when the model asks for it and `addSpecial`). */
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array {
    const bytes = new TextEncoder().encode(text);
    if (bytes.length > 0x7fffffff / 2) throw new RangeError("Text too long to tokenize");
    let cap = Math.max(this.#tokBuf.length, bytes.length + 8);
    if (cap > this.#tokBuf.length) this.#tokBuf = new Int32Array(cap);
    let n = this.libs.llama.llama_tokenize(
      this.vocab,
      bytes,
      bytes.length,
      this.#tokBuf,
      this.#tokBuf.length,
      addSpecial,
      parseSpecial,
    );
    if (n < 0) {
      cap = -n;
      this.#tokBuf = new Int32Array(cap);
      n = this.libs.llama.llama_tokenize(
        this.vocab,
        bytes,
        bytes.length,
        this.#tokBuf,
        cap,
        addSpecial,
        parseSpecial,
      );
      if (n < 0) throw new Error(`llama_tokenize failed (${n})`);
    }
    return this.#tokBuf.slice(0, n);
  }

  /** The bytes of one token (may be a partial UTF-8 sequence); cached. */
  piece(token: number): Uint8Array {
    const cached = this.#pieces[token];
    if (cached) return cached;
    if (!(token >= 0 && token < this.nVocab)) throw new RangeError(`Token ${token} out of range`);
    let buf = new Uint8Array(64);
    let n = this.libs.llama.llama_token_to_piece(this.vocab, token, buf, buf.length, 0, false);
    if (n < 0) {
      buf = new Uint8Array(-n);
      n = this.libs.llama.llama_token_to_piece(this.vocab, token, buf, buf.length, 0, false);
    }
    const out = buf.slice(0, Math.max(0, n));
    this.#pieces[token] = out;
    return out;
  }

  isEog(token: number): boolean {
    return this.libs.llama.llama_vocab_is_eog(this.vocab, token);
  }

  /** A metadata string of the model, or null. */
  meta(key: string): string | null {
    const buf = new Uint8Array(512);
    const n = this.libs.llama.llama_model_meta_val_str(this.ptr, cString(key), buf, 512n);
    if (n < 0) return null;
    return decoder.decode(buf.subarray(0, Math.min(n, 511)));
  }

  /**
   * Renders chat messages with the model's template (chatml when it has none or
   * llama.cpp does not know it), ending with the assistant's turn.
   */
  applyChatTemplate(messages: readonly { role: string; content: string }[]): string {
    // C strings end at NUL: drop NULs rather than silently cut a message short.
    const clean = (t: string) => t.replaceAll("\0", "");
    const strings = messages.flatMap((m) => [cString(clean(m.role)), cString(clean(m.content))]);
    const structs = new BigUint64Array(messages.length * 2);
    strings.forEach((s, i) => (structs[i] = addressOf(s)));
    const structBytes = new Uint8Array(structs.buffer);
    const render = (tmpl: string): string | null => {
      const t = cString(tmpl);
      let len = 0;
      for (const m of messages) len += m.role.length + m.content.length;
      let buf = new Uint8Array(Math.max(256, len * 4 + 256));
      let n = this.libs.llama.llama_chat_apply_template(
        t,
        structBytes,
        BigInt(messages.length),
        true,
        buf,
        buf.length,
      );
      if (n < 0) return null;
      if (n > buf.length) {
        buf = new Uint8Array(n);
        n = this.libs.llama.llama_chat_apply_template(
          t,
          structBytes,
          BigInt(messages.length),
          true,
          buf,
          buf.length,
        );
        if (n < 0) return null;
      }
      // keep the strings alive until here
      void strings.length;
      return decoder.decode(buf.subarray(0, n));
    };
    return (this.chatTemplate ? render(this.chatTemplate) : null) ?? render("chatml")!;
  }

  free() {
    this.libs.llama.llama_model_free(this.ptr);
  }
}

/** Settings of a context. */
export interface ContextOptions {
  /** Total KV cells (llama rounds up to a multiple of 256). */
  nCtx: number;
  nBatch: number;
  nSeqMax: number;
  threads: number;
  /** Share one KV buffer among sequences (false: one stream per sequence). */
  kvUnified: boolean;
  /** A 2-byte shared buffer: byte 0 nonzero aborts the decode in progress. */
  abortFlag?: Uint8Array;
  /** Thread pool polling level 0..100 (0: threads sleep between graphs). */
  poll?: number;
  /** Let the scheduler move big matmuls to a device (only when layers are offloaded). */
  opOffload?: boolean;
  /** Wait for the device after each decode, so timings include its work (GPU offload). */
  synchronize?: boolean;
}

/** A llama context with a persistent thread pool. */
export class LlamaContext {
  readonly libs: NativeLibs;
  readonly model: LlamaModel;
  readonly ptr: Deno.PointerObject;
  readonly mem: Deno.PointerObject;
  readonly nCtx: number;
  readonly nCtxSeq: number;
  readonly nBatch: number;
  readonly nSeqMax: number;
  readonly threads: number;
  #pool: Deno.PointerValue = null;
  /** Held so the shared flag native code reads is never collected. */
  #abortFlag: Uint8Array | null;
  #poolFree: ((p: Deno.PointerValue) => void) | null = null;
  readonly #synchronize: boolean;

  constructor(model: LlamaModel, opts: ContextOptions) {
    const libs = model.libs;
    this.libs = libs;
    this.model = model;
    const L = libs.llama;
    const params = new Uint8Array(L.llama_context_default_params() as Uint8Array);
    const dv = new DataView(params.buffer);
    dv.setUint32(CONTEXT_PARAMS.n_ctx, opts.nCtx, true);
    dv.setUint32(CONTEXT_PARAMS.n_batch, opts.nBatch, true);
    dv.setUint32(CONTEXT_PARAMS.n_ubatch, opts.nBatch, true);
    dv.setUint32(CONTEXT_PARAMS.n_seq_max, opts.nSeqMax, true);
    dv.setInt32(CONTEXT_PARAMS.n_threads, opts.threads, true);
    dv.setInt32(CONTEXT_PARAMS.n_threads_batch, opts.threads, true);
    dv.setUint8(CONTEXT_PARAMS.kv_unified, opts.kvUnified ? 1 : 0);
    dv.setUint8(CONTEXT_PARAMS.no_perf, 1);
    // A visible device with no layers would still get batches of >= 32 rows otherwise.
    dv.setUint8(CONTEXT_PARAMS.op_offload, opts.opOffload ? 1 : 0);
    if (opts.abortFlag) {
      // strlen(flag) is nonzero exactly when byte 0 is nonzero (byte 1 stays 0): a native,
      // lock-free abort check that costs nanoseconds per graph node.
      dv.setBigUint64(
        CONTEXT_PARAMS.abort_callback,
        BigInt(Deno.UnsafePointer.value(nativeFunction(libs, "strlen"))),
        true,
      );
      dv.setBigUint64(CONTEXT_PARAMS.abort_callback_data, addressOf(opts.abortFlag), true);
    }
    const ptr = L.llama_init_from_model(model.ptr, params);
    if (ptr === null) throw new Error("llama.cpp could not create a context (out of memory?)");
    this.ptr = ptr;
    this.mem = L.llama_get_memory(ptr)!;
    this.nCtx = L.llama_n_ctx(ptr);
    this.nCtxSeq = L.llama_n_ctx_seq(ptr);
    this.nBatch = Math.min(L.llama_n_batch(ptr), L.llama_n_ubatch(ptr));
    this.nSeqMax = L.llama_n_seq_max(ptr);
    this.threads = opts.threads;
    this.#abortFlag = opts.abortFlag ?? null;
    this.#synchronize = opts.synchronize ?? false;
    this.#attachPool(opts.threads, opts.poll ?? 0);
  }

  #attachPool(threads: number, poll: number) {
    const libs = this.libs;
    const reg = libs.ggml.ggml_backend_reg_by_name(cString("CPU"));
    if (reg === null) return;
    const newFn = libs.ggmlBase.ggml_backend_reg_get_proc_address(
      reg,
      cString("ggml_threadpool_new"),
    );
    const freeFn = libs.ggmlBase.ggml_backend_reg_get_proc_address(
      reg,
      cString("ggml_threadpool_free"),
    );
    if (newFn === null || freeFn === null) return;
    const params = new Uint8Array(THREADPOOL_PARAMS.size);
    libs.ggmlBase.ggml_threadpool_params_init(params, threads);
    new DataView(params.buffer).setUint32(THREADPOOL_PARAMS.poll, poll, true);
    const create = new Deno.UnsafeFnPointer(
      newFn as Deno.PointerObject<typeof CPU_PROCS.ggml_threadpool_new>,
      CPU_PROCS.ggml_threadpool_new,
    );
    const free = new Deno.UnsafeFnPointer(
      freeFn as Deno.PointerObject<typeof CPU_PROCS.ggml_threadpool_free>,
      CPU_PROCS.ggml_threadpool_free,
    );
    const pool = create.call(params);
    if (pool === null) return;
    this.#pool = pool;
    this.#poolFree = (p) => free.call(p);
    libs.llama.llama_attach_threadpool(this.ptr, pool, pool);
  }

  /**
   * Runs the batch; 0 ok, 1 no KV slot, 2 aborted, negative: error. On a GPU
   * `llama_decode` returns before the device is done: with `synchronize` it waits, so
   * the caller's timing (the scheduler's cost model) measures the real step.
   */
  decode(batch: Batch): number {
    const rc = this.libs.llama.llama_decode(this.ptr, batch.struct);
    if (this.#synchronize) this.libs.llama.llama_synchronize(this.ptr);
    return rc;
  }

  /** Removes positions [p0, p1) of a sequence (p1 -1: to the end). */
  seqRm(seq: number, p0 = -1, p1 = -1): void {
    if (!(seq >= 0 && seq < this.nSeqMax)) throw new RangeError(`seq ${seq} out of range`);
    this.libs.llama.llama_memory_seq_rm(this.mem, seq, p0, p1);
  }

  /** The last position held by a sequence, -1 when empty. */
  posMax(seq: number): number {
    if (!(seq >= 0 && seq < this.nSeqMax)) throw new RangeError(`seq ${seq} out of range`);
    return this.libs.llama.llama_memory_seq_pos_max(this.mem, seq);
  }

  /** The logits of output row `i` of the last decode (a view of native memory). */
  logits(i: number): Float32Array {
    const p = this.libs.llama.llama_get_logits_ith(this.ptr, i);
    if (p === null) throw new RangeError(`No logits for row ${i}`);
    const nV = this.model.nVocab;
    return new Float32Array(new Deno.UnsafePointerView(p).getArrayBuffer(nV * 4));
  }

  free() {
    this.libs.llama.llama_detach_threadpool(this.ptr);
    this.libs.llama.llama_free(this.ptr);
    if (this.#pool && this.#poolFree) this.#poolFree(this.#pool);
    this.#pool = null;
  }
}

/** A llama_batch over buffers owned here (one sequence id per token). */
export class Batch {
  readonly capacity: number;
  readonly token: Int32Array;
  readonly pos: Int32Array;
  readonly seq: Int32Array;
  readonly logits: Int8Array;
  readonly struct: Uint8Array<ArrayBuffer>;
  #nSeqId: Int32Array;
  #seqPtrs: BigUint64Array;
  #structView: DataView;
  n = 0;
  nOutputs = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    // One ArrayBuffer for all arrays: large, so V8 keeps it off the heap and it never moves.
    const words = capacity * 4;
    const buf = new ArrayBuffer(Math.max(4096, capacity * (4 * 4 + 1 + 8) + 64));
    this.#seqPtrs = new BigUint64Array(buf, 0, capacity);
    this.token = new Int32Array(buf, capacity * 8, capacity);
    this.pos = new Int32Array(buf, capacity * 8 + words, capacity);
    this.seq = new Int32Array(buf, capacity * 8 + 2 * words, capacity);
    this.#nSeqId = new Int32Array(buf, capacity * 8 + 3 * words, capacity);
    this.logits = new Int8Array(buf, capacity * 8 + 4 * words, capacity);
    this.#nSeqId.fill(1);
    const seqBase = addressOf(this.seq);
    for (let i = 0; i < capacity; i++) this.#seqPtrs[i] = seqBase + BigInt(i * 4);
    this.struct = new Uint8Array(BATCH.size);
    const dv = new DataView(this.struct.buffer);
    this.#structView = dv;
    dv.setBigUint64(BATCH.token, addressOf(this.token), true);
    dv.setBigUint64(BATCH.embd, 0n, true);
    dv.setBigUint64(BATCH.pos, addressOf(this.pos), true);
    dv.setBigUint64(BATCH.n_seq_id, addressOf(this.#nSeqId), true);
    dv.setBigUint64(BATCH.seq_id, addressOf(this.#seqPtrs), true);
    dv.setBigUint64(BATCH.logits, addressOf(this.logits), true);
    this.clear();
  }

  clear() {
    this.n = 0;
    this.nOutputs = 0;
    this.#structView.setInt32(BATCH.n_tokens, 0, true);
  }

  /** Appends a token; returns its row index. */
  add(token: number, pos: number, seq: number, logits: boolean): number {
    if (this.n >= this.capacity) throw new RangeError("Batch is full");
    const i = this.n++;
    this.token[i] = token;
    this.pos[i] = pos;
    this.seq[i] = seq;
    this.logits[i] = logits ? 1 : 0;
    if (logits) this.nOutputs++;
    this.#structView.setInt32(BATCH.n_tokens, this.n, true);
    return i;
  }

  /** Output index of row i: llama numbers outputs in row order. */
  outputIndex(row: number): number {
    let k = 0;
    for (let i = 0; i < row; i++) if (this.logits[i]) k++;
    return k;
  }
}

/** Sampling settings of one stream. */
export interface SamplingParams {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  seed: number;
}

/** A sampler chain: penalties → top_k → top_p → min_p → temperature → dist (or greedy). */
export class Sampler {
  readonly libs: NativeLibs;
  readonly ptr: Deno.PointerObject;

  constructor(libs: NativeLibs, p: SamplingParams, nVocab: number) {
    this.libs = libs;
    const L = libs.llama;
    const chain = L.llama_sampler_chain_init(new Uint8Array([1]))!;
    this.ptr = chain;
    const add = (s: Deno.PointerValue) => {
      if (s) L.llama_sampler_chain_add(chain, s);
    };
    if (p.repeatPenalty !== 1) {
      add(L.llama_sampler_init_penalties(nVocab, 64, p.repeatPenalty, 0, 0));
    }
    if (p.temperature <= 0) {
      add(L.llama_sampler_init_greedy());
      return;
    }
    if (p.topK > 0) add(L.llama_sampler_init_top_k(p.topK));
    if (p.topP < 1) add(L.llama_sampler_init_top_p(p.topP, 1n));
    if (p.minP > 0) add(L.llama_sampler_init_min_p(p.minP, 1n));
    add(L.llama_sampler_init_temp(p.temperature));
    add(L.llama_sampler_init_dist(p.seed >>> 0));
  }

  /** Samples from output row `row` of the last decode (and accepts the token). */
  sample(ctx: LlamaContext, row: number): number {
    return this.libs.llama.llama_sampler_sample(this.ptr, ctx.ptr, row);
  }

  free() {
    this.libs.llama.llama_sampler_free(this.ptr);
  }
}
