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
  POOLING,
  THREADPOOL_PARAMS,
  TOKEN_ATTR,
  TOKEN_DATA,
  TOKEN_DATA_ARRAY,
  VOCAB_TYPES,
} from "./ffi.ts";

/** Addresses of buffers that must not move while native code holds them. */
function addressOf(view: ArrayBufferView): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view as BufferSource)));
}

const decoder = new TextDecoder();

/** A control token: its text, and whether it eats the whitespace before or after it. */
export interface ControlToken {
  /** The token id. */
  id: number;
  /** Its text ("<|im_end|>"). */
  text: string;
  /** Eats the whitespace before it. */
  lstrip: boolean;
  /** Eats the whitespace after it. */
  rstrip: boolean;
}

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
  /** The tokenizer family: "spm", "bpe", ... (llama.h `enum llama_vocab_type`). */
  readonly vocabType: string;
  /** End-of-turn token, or -1. */
  readonly eot: number;
  /** Width of the hidden state (the length of an embedding). */
  readonly nEmbd: number;
  #pieces: (Uint8Array | undefined)[];
  #specialPieces = new Map<number, Uint8Array>();
  #controlTokens: ControlToken[] | null = null;
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
    this.vocabType = VOCAB_TYPES[L.llama_vocab_type(this.vocab)] ?? "unknown";
    this.eot = L.llama_vocab_eot(this.vocab);
    this.nEmbd = L.llama_model_n_embd(ptr);
    this.#pieces = new Array(this.nVocab);
  }

  /** True when `token` is a valid id of this vocabulary. */
  isToken(token: number): boolean {
    return Number.isInteger(token) && token >= 0 && token < this.nVocab;
  }

  /** The stored text of a token (control tokens as written: "<|im_end|>"), or "". */
  tokenText(token: number): string {
    if (!this.isToken(token)) throw new RangeError(`Token ${token} out of range`);
    const p = this.libs.llama.llama_vocab_get_text(this.vocab, token);
    return p ? new Deno.UnsafePointerView(p).getCString() : "";
  }

  /**
   * Tokens whose text, if found in a prompt, the tokenizer turns into the control token
   * when it parses special tokens (control and unknown attributes; user-defined tokens
   * match as plain text anyway). Longest text first. Computed once.
   */
  controlTokens(): readonly ControlToken[] {
    if (this.#controlTokens) return this.#controlTokens;
    const L = this.libs.llama;
    const out: ControlToken[] = [];
    const mask = TOKEN_ATTR.control | TOKEN_ATTR.unknown;
    for (let id = 0; id < this.nVocab; id++) {
      const attr = L.llama_vocab_get_attr(this.vocab, id);
      if ((attr & mask) === 0) continue;
      const text = this.tokenText(id);
      if (text.length > 0) {
        out.push({
          id,
          text,
          lstrip: (attr & TOKEN_ATTR.lstrip) !== 0,
          rstrip: (attr & TOKEN_ATTR.rstrip) !== 0,
        });
      }
    }
    out.sort((a, b) => b.text.length - a.text.length || a.id - b.id);
    this.#controlTokens = out;
    return out;
  }

  /** The bytes of one token with control tokens rendered as their text ("<|im_end|>"). */
  pieceSpecial(token: number): Uint8Array {
    const cached = this.#specialPieces.get(token);
    if (cached) return cached;
    if (!this.isToken(token)) throw new RangeError(`Token ${token} out of range`);
    const out = this.#tokenToPiece(token, true);
    if (this.#specialPieces.size < 65536) this.#specialPieces.set(token, out);
    return out;
  }

  /**
   * Text of a token sequence as llama.cpp joins it (SPM's leading space handled), with
   * control tokens as their text. Every id must be valid (checked).
   */
  detokenize(tokens: ArrayLike<number>, removeSpecial = false): string {
    const ids = Int32Array.from(tokens as ArrayLike<number>);
    for (const t of ids) if (!this.isToken(t)) throw new RangeError(`Token ${t} out of range`);
    let buf = new Uint8Array(Math.max(64, ids.length * 8));
    let n = this.libs.llama.llama_detokenize(
      this.vocab,
      ids,
      ids.length,
      buf,
      buf.length,
      removeSpecial,
      true,
    );
    if (n < 0) {
      buf = new Uint8Array(-n);
      n = this.libs.llama.llama_detokenize(
        this.vocab,
        ids,
        ids.length,
        buf,
        buf.length,
        removeSpecial,
        true,
      );
      if (n < 0) throw new Error(`llama_detokenize failed (${n})`);
    }
    return decoder.decode(buf.subarray(0, n));
  }

  /** The names of llama.cpp's built-in chat templates ("chatml", "llama3", ...). */
  builtinTemplates(): string[] {
    const L = this.libs.llama;
    const n = L.llama_chat_builtin_templates(new Uint8Array(8), 0n);
    const ptrs = new BigUint64Array(Math.max(1, n));
    L.llama_chat_builtin_templates(new Uint8Array(ptrs.buffer), BigInt(n));
    const names: string[] = [];
    for (const p of ptrs.subarray(0, n)) {
      const ptr = Deno.UnsafePointer.create(p);
      if (ptr) names.push(new Deno.UnsafePointerView(ptr).getCString());
    }
    return names;
  }

  /** Whether the model has an encoder (BERT-like, T5): its attention is not causal. */
  get hasEncoder(): boolean {
    return this.libs.llama.llama_model_has_encoder(this.ptr);
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
    const out = this.#tokenToPiece(token, false);
    this.#pieces[token] = out;
    return out;
  }

  /** llama_token_to_piece into a buffer of the size it asks for; `special`: control tokens as text. */
  #tokenToPiece(token: number, special: boolean): Uint8Array {
    let buf = new Uint8Array(64);
    let n = this.libs.llama.llama_token_to_piece(this.vocab, token, buf, buf.length, 0, special);
    if (n < 0) {
      buf = new Uint8Array(-n);
      n = this.libs.llama.llama_token_to_piece(this.vocab, token, buf, buf.length, 0, special);
    }
    return buf.slice(0, Math.max(0, n));
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
  applyChatTemplate(
    messages: readonly { role: string; content: string }[],
    template?: string,
  ): string {
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
    if (template !== undefined) {
      const out = render(template);
      if (out === null) throw new RangeError(`llama.cpp does not know the template "${template}"`);
      return out;
    }
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
  /** Extract embeddings (an embedding context); with `pooling` (default none: per token). */
  embeddings?: boolean;
  /** Pooling of an embedding context (default none: per-token states). */
  pooling?: keyof typeof POOLING;
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
    if (opts.embeddings) {
      dv.setUint8(CONTEXT_PARAMS.embeddings, 1);
      dv.setInt32(CONTEXT_PARAMS.pooling_type, POOLING[opts.pooling ?? "none"], true);
    }
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

  /**
   * Makes positions [p0, p1) of `src` also belong to `dst` (p1 -1: to the end). Under a
   * unified KV cache the cells are shared, not copied: one prefix held by many sequences.
   */
  seqCp(src: number, dst: number, p0 = -1, p1 = -1): void {
    if (!(src >= 0 && src < this.nSeqMax)) throw new RangeError(`seq ${src} out of range`);
    if (!(dst >= 0 && dst < this.nSeqMax)) throw new RangeError(`seq ${dst} out of range`);
    this.libs.llama.llama_memory_seq_cp(this.mem, src, dst, p0, p1);
  }

  /** The first position held by a sequence, -1 when empty. */
  posMin(seq: number): number {
    if (!(seq >= 0 && seq < this.nSeqMax)) throw new RangeError(`seq ${seq} out of range`);
    return this.libs.llama.llama_memory_seq_pos_min(this.mem, seq);
  }

  /** The last position held by a sequence, -1 when empty. */
  posMax(seq: number): number {
    if (!(seq >= 0 && seq < this.nSeqMax)) throw new RangeError(`seq ${seq} out of range`);
    return this.libs.llama.llama_memory_seq_pos_max(this.mem, seq);
  }

  /** The embedding of output row `i` of the last decode (a view of native memory), or null. */
  embedding(i: number, nEmbd: number): Float32Array | null {
    const p = this.libs.llama.llama_get_embeddings_ith(this.ptr, i);
    if (p === null) return null;
    return new Float32Array(new Deno.UnsafePointerView(p).getArrayBuffer(nEmbd * 4));
  }

  /** Removes every sequence from the KV cache. */
  clearMemory(): void {
    this.libs.llama.llama_memory_clear(this.mem, true);
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
  /** A GBNF grammar the sampled text must follow (validated by `grammar.ts` first). */
  grammar?: string;
}

/** llama.cpp refused a grammar (`llama_sampler_init_grammar` returned NULL). */
export class GrammarRejectedError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "GrammarRejectedError";
  }
}

/**
 * A sampler chain: penalties → top_k → top_p → min_p → temperature → dist (or greedy).
 * With a grammar, tokens are sampled as llama.cpp's own server does: the chain picks a
 * token; when the grammar rejects it, the grammar masks the whole vocabulary and the
 * chain picks again (checking one token is far cheaper than masking 150k).
 */
export class Sampler {
  readonly libs: NativeLibs;
  readonly ptr: Deno.PointerObject;
  readonly #grammar: GrammarState | null = null;

  constructor(
    libs: NativeLibs,
    p: SamplingParams,
    nVocab: number,
    model?: LlamaModel,
  ) {
    this.libs = libs;
    const L = libs.llama;
    if (p.grammar !== undefined) {
      if (!model) throw new TypeError("A grammar needs the model's vocabulary");
      // The chain keeps the top_k best tokens (greedy: 1) unless penalties reorder them first.
      const keep = p.temperature <= 0 ? 1 : p.topK > 0 && p.repeatPenalty === 1 ? p.topK : 0;
      this.#grammar = new GrammarState(model, p.grammar, keep);
    }
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

  /**
   * Samples from output row `row` of the last decode (and accepts the token). With a
   * grammar that allows no token at all (a dead end), returns an end-of-generation token
   * without feeding it to the grammar (llama.cpp aborts on that).
   */
  sample(ctx: LlamaContext, row: number): number {
    if (this.#grammar === null) return this.libs.llama.llama_sampler_sample(this.ptr, ctx.ptr, row);
    return this.#grammar.sample(this.ptr, ctx.logits(row));
  }

  free() {
    this.libs.llama.llama_sampler_free(this.ptr);
    this.#grammar?.free();
  }
}

/**
 * Tokens by the first byte of their text as a grammar sees it (control tokens written
 * out), the one-byte token of each byte, and the end-of-generation tokens: built once per
 * model for {@linkcode GrammarState}'s first-byte probe.
 */
export interface GrammarIndex {
  /** Token ids per first byte (end-of-generation and empty tokens left out). */
  buckets: Int32Array[];
  /** The token whose text is exactly that one byte, or -1. */
  byteToken: Int32Array;
  /** End-of-generation tokens (the grammar decides when they are allowed). */
  eog: Int32Array;
  /**
   * UTF-8 shape of each token's bytes: leading continuation bytes (0-4), and how many
   * bytes the unfinished last character still needs (255: the bytes are invalid UTF-8).
   */
  leadCont: Uint8Array;
  /** Bytes the unfinished last character of each token still needs (255: invalid). */
  tailNeed: Uint8Array;
  /** Each token's length in bytes. */
  length: Uint16Array;
}

/** Continuation bytes a UTF-8 lead byte announces, or -1 for a byte that cannot lead. */
function utf8Need(b: number): number {
  if (b < 0x80) return 0;
  if (b >= 0xc2 && b <= 0xdf) return 1;
  if (b >= 0xe0 && b <= 0xef) return 2;
  if (b >= 0xf0 && b <= 0xf4) return 3;
  return -1;
}

/** [leading continuation bytes, bytes the unfinished last character needs (255: invalid)]. */
function utf8Shape(piece: Uint8Array): [number, number] {
  let lead = 0;
  while (lead < piece.length && (piece[lead] & 0xc0) === 0x80) lead++;
  let need = 0;
  for (let i = lead; i < piece.length; i++) {
    const b = piece[i];
    if (need > 0) {
      if ((b & 0xc0) !== 0x80) return [Math.min(lead, 4), 255];
      need--;
      continue;
    }
    const n = utf8Need(b);
    if (n < 0) return [Math.min(lead, 4), 255];
    need = n;
  }
  return [Math.min(lead, 4), need];
}

const grammarIndexes = new WeakMap<LlamaModel, GrammarIndex>();

/**
 * The model's {@linkcode GrammarIndex}, built on first use (~0.1 s for a 150k vocabulary):
 * call it when the model loads so no request pays for it in the middle of serving.
 */
export function grammarIndexOf(model: LlamaModel): GrammarIndex {
  const known = grammarIndexes.get(model);
  if (known) return known;
  const lists: number[][] = Array.from({ length: 256 }, () => []);
  const byteToken = new Int32Array(256).fill(-1);
  const eog: number[] = [];
  const leadCont = new Uint8Array(model.nVocab);
  const tailNeed = new Uint8Array(model.nVocab).fill(255);
  const length = new Uint16Array(model.nVocab);
  for (let t = 0; t < model.nVocab; t++) {
    if (model.isEog(t)) {
      eog.push(t);
      continue;
    }
    const piece = model.pieceSpecial(t);
    if (piece.length === 0 || piece[0] === 0) continue; // the grammar rejects these anyway
    lists[piece[0]].push(t);
    if (piece.length === 1 && byteToken[piece[0]] < 0) byteToken[piece[0]] = t;
    [leadCont[t], tailNeed[t]] = utf8Shape(piece);
    length[t] = Math.min(piece.length, 65535);
  }
  const index = {
    buckets: lists.map((l) => Int32Array.from(l)),
    byteToken,
    eog: Int32Array.from(eog),
    leadCont,
    tailNeed,
    length,
  };
  grammarIndexes.set(model, index);
  return index;
}

/**
 * A grammar sampler and the candidate array it masks. Masking a 150k vocabulary costs
 * tens of milliseconds in llama.cpp, so the grammar sees as few candidates as possible:
 * first the token the chain picks unconstrained (usually allowed with a real model);
 * when it is not, a probe of the one-byte tokens says which first bytes the grammar
 * allows now, and only tokens starting with those (plus end-of-generation ones) are
 * masked and sampled. A token whose first byte is refused is refused whole, so the
 * result is the one a full mask gives. When the chain keeps only its top k tokens, the
 * grammar first masks the best PRESELECT of those candidates: if k of them are allowed,
 * they are the k best allowed ones overall, and the chain picks among exactly what a full
 * mask would have left it.
 *
 * llama.cpp's grammar decodes UTF-8 without checking continuation bytes, so it would let
 * byte tokens write invalid UTF-8 that a client then sees as U+FFFD. Candidates are also
 * held to valid UTF-8 here, given the unfinished character the output ends with.
 */
class GrammarState {
  readonly #model: LlamaModel;
  readonly #ptr: Deno.PointerObject;
  readonly #n: number;
  readonly #index: GrammarIndex;
  readonly #ids: Int32Array;
  readonly #vals: Float32Array;
  readonly #array = new Uint8Array(TOKEN_DATA_ARRAY.size);
  readonly #arrayView = new DataView(this.#array.buffer);
  readonly #dataAddr: bigint;
  readonly #one = new Uint8Array(TOKEN_DATA.size);
  readonly #oneArray = new Uint8Array(TOKEN_DATA_ARRAY.size);
  /** Candidates of the probe: one per byte that has a one-byte token. */
  readonly #probeIds: Int32Array;
  readonly #probeVals: Float32Array;
  readonly #probeAddr: bigint;
  readonly #probeArray = new Uint8Array(TOKEN_DATA_ARRAY.size);
  readonly #probeBytes: number[] = [];
  /** Bytes without a one-byte token: their tokens are always candidates. */
  readonly #unprobed: number[] = [];
  /** The chain's top k (0: it keeps more, no preselection). */
  readonly #keep: number;
  /** Continuation bytes the output's last, unfinished character still needs. */
  #pending = 0;
  readonly #preselect: Deno.PointerObject | null = null;

  constructor(model: LlamaModel, grammar: string, keep = 0) {
    this.#model = model;
    const L = model.libs.llama;
    const ptr = L.llama_sampler_init_grammar(model.vocab, cString(grammar), cString("root"));
    if (ptr === null) throw new GrammarRejectedError("llama.cpp rejected the grammar");
    this.#ptr = ptr;
    this.#n = model.nVocab;
    this.#index = grammarIndexOf(model);
    // Large, so it lives off the V8 heap and never moves while native code reads it.
    const buf = new ArrayBuffer(Math.max(4096, this.#n * TOKEN_DATA.size));
    this.#ids = new Int32Array(buf);
    this.#vals = new Float32Array(buf);
    this.#dataAddr = addressOf(this.#ids);
    const one = new DataView(this.#oneArray.buffer);
    one.setBigUint64(TOKEN_DATA_ARRAY.data, addressOf(this.#one), true);
    const probe = new ArrayBuffer(4096);
    this.#probeIds = new Int32Array(probe);
    this.#probeVals = new Float32Array(probe);
    this.#probeAddr = addressOf(this.#probeIds);
    this.#keep = keep;
    if (keep > 0 && keep * 4 < PRESELECT) this.#preselect = L.llama_sampler_init_top_k(PRESELECT);
    for (let b = 0; b < 256; b++) {
      if (this.#index.buckets[b].length === 0) continue;
      if (this.#index.byteToken[b] >= 0) this.#probeBytes.push(b);
      else this.#unprobed.push(b);
    }
  }

  #setArray(view: DataView, data: bigint, n: number) {
    view.setBigUint64(TOKEN_DATA_ARRAY.data, data, true);
    view.setBigUint64(TOKEN_DATA_ARRAY.n, BigInt(n), true);
    view.setBigInt64(TOKEN_DATA_ARRAY.selected, -1n, true);
    view.setUint8(TOKEN_DATA_ARRAY.sorted, 0);
  }

  /** Loads all logits into the candidate array. */
  #fill(logits: Float32Array) {
    const ids = this.#ids;
    const vals = this.#vals;
    for (let i = 0, j = 0; i < this.#n; i++, j += 3) {
      ids[j] = i;
      vals[j + 1] = logits[i];
      vals[j + 2] = 0;
    }
    this.#setArray(this.#arrayView, this.#dataAddr, this.#n);
  }

  /** Loads the candidates whose first byte the grammar allows now (and EOG tokens). */
  #fillAllowed(logits: Float32Array): number {
    const L = this.#model.libs.llama;
    const pIds = this.#probeIds;
    const pVals = this.#probeVals;
    this.#probeBytes.forEach((b, k) => {
      pIds[k * 3] = this.#index.byteToken[b];
      pVals[k * 3 + 1] = 0;
      pVals[k * 3 + 2] = 0;
    });
    const probeView = new DataView(this.#probeArray.buffer);
    this.#setArray(probeView, this.#probeAddr, this.#probeBytes.length);
    L.llama_sampler_apply(this.#ptr, this.#probeArray);
    const ids = this.#ids;
    const vals = this.#vals;
    let j = 0;
    const add = (bucket: Int32Array, checkUtf8: boolean) => {
      for (let i = 0; i < bucket.length; i++) {
        const t = bucket[i];
        if (checkUtf8 && !this.#validNext(t)) continue;
        ids[j] = t;
        vals[j + 1] = logits[t];
        vals[j + 2] = 0;
        j += 3;
      }
    };
    this.#probeBytes.forEach((b, k) => {
      if (pVals[k * 3 + 1] !== -Infinity) add(this.#index.buckets[b], true);
    });
    for (const b of this.#unprobed) add(this.#index.buckets[b], true);
    add(this.#index.eog, false);
    this.#setArray(this.#arrayView, this.#dataAddr, j / 3);
    return j / 3;
  }

  /** Candidates of the array the grammar did not mask (stops counting at `enough`). */
  #countAllowed(enough = Infinity): number {
    const dv = this.#arrayView;
    const data = dv.getBigUint64(TOKEN_DATA_ARRAY.data, true);
    const size = Number(dv.getBigUint64(TOKEN_DATA_ARRAY.n, true));
    const p = Deno.UnsafePointer.create(data);
    if (!p || size === 0) return 0;
    const vals = new Float32Array(
      new Deno.UnsafePointerView(p).getArrayBuffer(size * TOKEN_DATA.size),
    );
    let n = 0;
    for (let j = 1; j < size * 3 && n < enough; j += 3) if (vals[j] !== -Infinity) n++;
    return n;
  }

  /** The token the last chain pass selected (its data pointer may have moved: samplers copy). */
  #selected(): number {
    const dv = this.#arrayView;
    const sel = Number(dv.getBigInt64(TOKEN_DATA_ARRAY.selected, true));
    const data = dv.getBigUint64(TOKEN_DATA_ARRAY.data, true);
    const size = Number(dv.getBigUint64(TOKEN_DATA_ARRAY.n, true));
    if (!(sel >= 0 && sel < size)) return -1;
    const p = Deno.UnsafePointer.create(data + BigInt(sel * TOKEN_DATA.size));
    return p ? new Deno.UnsafePointerView(p).getInt32(TOKEN_DATA.id) : -1;
  }

  /** True when `token` keeps the output valid UTF-8 (end-of-generation tokens always do). */
  #validNext(token: number): boolean {
    const x = this.#index;
    const len = x.length[token];
    if (len === 0) return true;
    const lead = x.leadCont[token];
    // Only continuation bytes: they must belong to the unfinished character.
    if (lead === len) return len <= this.#pending;
    return lead === this.#pending && x.tailNeed[token] !== 255;
  }

  /** The unfinished character after `token`. */
  #advance(token: number) {
    const x = this.#index;
    const len = x.length[token];
    if (len === 0) return;
    if (x.leadCont[token] === len) this.#pending -= len;
    else this.#pending = x.tailNeed[token];
  }

  /** True when the grammar allows `token` next. */
  #allows(token: number): boolean {
    if (!this.#validNext(token)) return false;
    const one = new DataView(this.#one.buffer);
    one.setInt32(TOKEN_DATA.id, token, true);
    one.setFloat32(TOKEN_DATA.logit, 0, true);
    one.setFloat32(TOKEN_DATA.p, 0, true);
    const arr = new DataView(this.#oneArray.buffer);
    arr.setBigUint64(TOKEN_DATA_ARRAY.n, 1n, true);
    arr.setBigInt64(TOKEN_DATA_ARRAY.selected, -1n, true);
    this.#model.libs.llama.llama_sampler_apply(this.#ptr, this.#oneArray);
    return one.getFloat32(TOKEN_DATA.logit, true) !== -Infinity;
  }

  sample(chain: Deno.PointerObject, logits: Float32Array): number {
    const L = this.#model.libs.llama;
    const end = this.#model.eos >= 0 ? this.#model.eos : this.#model.eot;
    this.#fill(logits);
    L.llama_sampler_apply(chain, this.#array);
    let token = this.#selected();
    if (token < 0 || !this.#allows(token)) {
      let n = this.#fillAllowed(logits);
      if (this.#preselect && n > PRESELECT) {
        L.llama_sampler_apply(this.#preselect, this.#array);
        L.llama_sampler_apply(this.#ptr, this.#array);
        // Masking broke the order top_k sorted: the chain's top_k must sort again.
        this.#arrayView.setUint8(TOKEN_DATA_ARRAY.sorted, 0);
        if (this.#countAllowed() < this.#keep) n = this.#fillAllowed(logits);
        else n = 0; // masked already
      }
      if (n > 0) L.llama_sampler_apply(this.#ptr, this.#array);
      if (this.#countAllowed(1) === 0) return end; // a dead end: never fed to the grammar
      L.llama_sampler_apply(chain, this.#array);
      token = this.#selected();
      if (token < 0 || !this.#allows(token)) return end;
    }
    L.llama_sampler_accept(this.#ptr, token);
    L.llama_sampler_accept(chain, token);
    this.#advance(token);
    return token;
  }

  free() {
    this.#model.libs.llama.llama_sampler_free(this.#ptr);
    if (this.#preselect) this.#model.libs.llama.llama_sampler_free(this.#preselect);
  }
}

/** Candidates the grammar masks first when the chain keeps only its top k. */
const PRESELECT = 1024;
