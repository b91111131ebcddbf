/**
 * The native boundary: symbol tables for libllama, libggml and libc, and where the
 * libraries are found. Struct layouts belong to `@node-llama-cpp/<platform>@3.22.1`
 * (llama.cpp v0.5.0); see NATIVE.md. Nothing outside `src/llm/` touches pointers.
 *
 * @module
 */

/** The exact package version whose struct layouts this binding was written against. */
export const LLAMA_PACKAGE_VERSION = "3.22.1";

/** `struct llama_model_params` is 80 bytes. */
export const MODEL_PARAMS = {
  size: 80,
  n_gpu_layers: 16,
  load_mode: 24,
  progress_callback: 48,
  progress_callback_user_data: 56,
  vocab_only: 72,
  check_tensors: 73,
  use_extra_bufts: 74,
} as const;

/** `struct llama_context_params` is 160 bytes. */
export const CONTEXT_PARAMS = {
  size: 160,
  n_ctx: 0,
  n_batch: 4,
  n_ubatch: 8,
  n_seq_max: 12,
  n_threads: 28,
  n_threads_batch: 32,
  flash_attn_type: 52,
  abort_callback: 112,
  abort_callback_data: 120,
  pooling_type: 44,
  embeddings: 128,
  no_perf: 130,
  kv_unified: 133,
} as const;

/** `struct llama_batch` is 56 bytes. */
export const BATCH = {
  size: 56,
  n_tokens: 0,
  token: 8,
  embd: 16,
  pos: 24,
  n_seq_id: 32,
  seq_id: 40,
  logits: 48,
} as const;

/** `struct ggml_threadpool_params`: bool cpumask[512], int n_threads, prio, u32 poll, 2 bools. */
export const THREADPOOL_PARAMS = { size: 528, n_threads: 512, prio: 516, poll: 520 } as const;

function bytesStruct(n: number): Deno.NativeStructType {
  // Deno describes a by-value struct by its fields; 8-byte words give the right size and
  // alignment for these all-8-aligned structs.
  return { struct: new Array(n / 8).fill("u64") };
}

const modelParamsType = bytesStruct(MODEL_PARAMS.size);
const contextParamsType = bytesStruct(CONTEXT_PARAMS.size);
const batchType = bytesStruct(BATCH.size);
// struct llama_sampler_chain_params { bool no_perf; }
const chainParamsType = { struct: ["u8"] } as const;

/** libggml (`libggml.v0.5.0.so`): backend registry. */
export const GGML_SYMBOLS = {
  // void ggml_backend_load_all_from_path(const char * dir_path);
  ggml_backend_load_all_from_path: { parameters: ["buffer"], result: "void" },
  // size_t ggml_backend_reg_count(void);
  ggml_backend_reg_count: { parameters: [], result: "usize" },
  // ggml_backend_reg_t ggml_backend_reg_by_name(const char * name);
  ggml_backend_reg_by_name: { parameters: ["buffer"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** libggml-base: registry lookups and thread pool parameters. */
export const GGML_BASE_SYMBOLS = {
  // void * ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name);
  ggml_backend_reg_get_proc_address: { parameters: ["pointer", "buffer"], result: "pointer" },
  // void ggml_threadpool_params_init(struct ggml_threadpool_params * p, int n_threads);
  ggml_threadpool_params_init: { parameters: ["buffer", "i32"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** Reached through `ggml_backend_reg_get_proc_address(CPU, name)` (a GGML_BACKEND_DL build). */
export const CPU_PROCS = {
  // struct ggml_threadpool * ggml_threadpool_new(struct ggml_threadpool_params * params);
  ggml_threadpool_new: { parameters: ["buffer"], result: "pointer" },
  // void ggml_threadpool_free(struct ggml_threadpool * threadpool);
  ggml_threadpool_free: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** libllama (`libllama.v0.5.0.so`). */
export const LLAMA_SYMBOLS = {
  // void llama_backend_init(void);
  llama_backend_init: { parameters: [], result: "void" },
  // void llama_log_set(ggml_log_callback log_callback, void * user_data);
  llama_log_set: { parameters: ["function", "pointer"], result: "void" },
  // struct llama_model_params llama_model_default_params(void);
  llama_model_default_params: { parameters: [], result: modelParamsType },
  // struct llama_context_params llama_context_default_params(void);
  llama_context_default_params: { parameters: [], result: contextParamsType },
  // struct llama_model * llama_model_load_from_file(const char * path, struct llama_model_params);
  llama_model_load_from_file: { parameters: ["buffer", modelParamsType], result: "pointer" },
  // void llama_model_free(struct llama_model * model);
  llama_model_free: { parameters: ["pointer"], result: "void" },
  // struct llama_context * llama_init_from_model(struct llama_model *, struct llama_context_params);
  llama_init_from_model: { parameters: ["pointer", contextParamsType], result: "pointer" },
  // void llama_free(struct llama_context * ctx);
  llama_free: { parameters: ["pointer"], result: "void" },
  // void llama_attach_threadpool(struct llama_context *, ggml_threadpool_t, ggml_threadpool_t);
  llama_attach_threadpool: { parameters: ["pointer", "pointer", "pointer"], result: "void" },
  // void llama_detach_threadpool(struct llama_context * ctx);
  llama_detach_threadpool: { parameters: ["pointer"], result: "void" },
  // uint32_t llama_n_ctx(const struct llama_context * ctx);
  llama_n_ctx: { parameters: ["pointer"], result: "u32" },
  // uint32_t llama_n_ctx_seq(const struct llama_context * ctx);
  llama_n_ctx_seq: { parameters: ["pointer"], result: "u32" },
  // uint32_t llama_n_batch(const struct llama_context * ctx);
  llama_n_batch: { parameters: ["pointer"], result: "u32" },
  // uint32_t llama_n_ubatch(const struct llama_context * ctx);
  llama_n_ubatch: { parameters: ["pointer"], result: "u32" },
  // uint32_t llama_n_seq_max(const struct llama_context * ctx);
  llama_n_seq_max: { parameters: ["pointer"], result: "u32" },
  // llama_memory_t llama_get_memory(const struct llama_context * ctx);
  llama_get_memory: { parameters: ["pointer"], result: "pointer" },
  // const struct llama_vocab * llama_model_get_vocab(const struct llama_model * model);
  llama_model_get_vocab: { parameters: ["pointer"], result: "pointer" },
  // int32_t llama_model_n_ctx_train(const struct llama_model * model);
  llama_model_n_ctx_train: { parameters: ["pointer"], result: "i32" },
  // int32_t llama_model_n_embd(const struct llama_model * model);
  llama_model_n_embd: { parameters: ["pointer"], result: "i32" },
  // int32_t llama_model_n_layer(const struct llama_model * model);
  llama_model_n_layer: { parameters: ["pointer"], result: "i32" },
  // uint64_t llama_model_n_params(const struct llama_model * model);
  llama_model_n_params: { parameters: ["pointer"], result: "u64" },
  // uint64_t llama_model_size(const struct llama_model * model);
  llama_model_size: { parameters: ["pointer"], result: "u64" },
  // int32_t llama_model_desc(const struct llama_model * model, char * buf, size_t buf_size);
  llama_model_desc: { parameters: ["pointer", "buffer", "usize"], result: "i32" },
  // int32_t llama_model_meta_val_str(const struct llama_model *, const char * key, char * buf, size_t);
  llama_model_meta_val_str: { parameters: ["pointer", "buffer", "buffer", "usize"], result: "i32" },
  // const char * llama_model_chat_template(const struct llama_model * model, const char * name);
  llama_model_chat_template: { parameters: ["pointer", "pointer"], result: "pointer" },
  // int32_t llama_vocab_n_tokens(const struct llama_vocab * vocab);
  llama_vocab_n_tokens: { parameters: ["pointer"], result: "i32" },
  // bool llama_vocab_is_eog(const struct llama_vocab * vocab, llama_token token);
  llama_vocab_is_eog: { parameters: ["pointer", "i32"], result: "bool" },
  // llama_token llama_vocab_bos(const struct llama_vocab * vocab);
  llama_vocab_bos: { parameters: ["pointer"], result: "i32" },
  // llama_token llama_vocab_eos(const struct llama_vocab * vocab);
  llama_vocab_eos: { parameters: ["pointer"], result: "i32" },
  // bool llama_vocab_get_add_bos(const struct llama_vocab * vocab);
  llama_vocab_get_add_bos: { parameters: ["pointer"], result: "bool" },
  // int32_t llama_tokenize(const struct llama_vocab *, const char * text, int32_t text_len,
  //                        llama_token * tokens, int32_t n_tokens_max, bool add_special,
  //                        bool parse_special);
  llama_tokenize: {
    parameters: ["pointer", "buffer", "i32", "buffer", "i32", "bool", "bool"],
    result: "i32",
  },
  // int32_t llama_token_to_piece(const struct llama_vocab *, llama_token, char * buf,
  //                              int32_t length, int32_t lstrip, bool special);
  llama_token_to_piece: {
    parameters: ["pointer", "i32", "buffer", "i32", "i32", "bool"],
    result: "i32",
  },
  // int32_t llama_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat,
  //                                   size_t n_msg, bool add_ass, char * buf, int32_t length);
  llama_chat_apply_template: {
    parameters: ["buffer", "buffer", "usize", "bool", "buffer", "i32"],
    result: "i32",
  },
  // int32_t llama_decode(struct llama_context * ctx, struct llama_batch batch);
  llama_decode: { parameters: ["pointer", batchType], result: "i32" },
  // float * llama_get_logits_ith(struct llama_context * ctx, int32_t i);
  llama_get_logits_ith: { parameters: ["pointer", "i32"], result: "pointer" },
  // void llama_set_abort_callback(struct llama_context *, ggml_abort_callback, void * data);
  llama_set_abort_callback: { parameters: ["pointer", "pointer", "pointer"], result: "void" },
  // void llama_memory_clear(llama_memory_t mem, bool data);
  llama_memory_clear: { parameters: ["pointer", "bool"], result: "void" },
  // bool llama_memory_seq_rm(llama_memory_t mem, llama_seq_id seq, llama_pos p0, llama_pos p1);
  llama_memory_seq_rm: { parameters: ["pointer", "i32", "i32", "i32"], result: "bool" },
  // llama_pos llama_memory_seq_pos_max(llama_memory_t mem, llama_seq_id seq_id);
  llama_memory_seq_pos_max: { parameters: ["pointer", "i32"], result: "i32" },
  // llama_pos llama_memory_seq_pos_min(llama_memory_t mem, llama_seq_id seq_id);
  llama_memory_seq_pos_min: { parameters: ["pointer", "i32"], result: "i32" },
  // void llama_memory_seq_cp(llama_memory_t mem, llama_seq_id seq_id_src,
  //                          llama_seq_id seq_id_dst, llama_pos p0, llama_pos p1);
  llama_memory_seq_cp: { parameters: ["pointer", "i32", "i32", "i32", "i32"], result: "void" },
  // struct llama_sampler_chain_params llama_sampler_chain_default_params(void);  (one bool)
  // struct llama_sampler * llama_sampler_chain_init(struct llama_sampler_chain_params params);
  llama_sampler_chain_init: { parameters: [chainParamsType], result: "pointer" },
  // void llama_sampler_chain_add(struct llama_sampler * chain, struct llama_sampler * smpl);
  llama_sampler_chain_add: { parameters: ["pointer", "pointer"], result: "void" },
  // struct llama_sampler * llama_sampler_init_greedy(void);
  llama_sampler_init_greedy: { parameters: [], result: "pointer" },
  // struct llama_sampler * llama_sampler_init_dist(uint32_t seed);
  llama_sampler_init_dist: { parameters: ["u32"], result: "pointer" },
  // struct llama_sampler * llama_sampler_init_top_k(int32_t k);
  llama_sampler_init_top_k: { parameters: ["i32"], result: "pointer" },
  // struct llama_sampler * llama_sampler_init_top_p(float p, size_t min_keep);
  llama_sampler_init_top_p: { parameters: ["f32", "usize"], result: "pointer" },
  // struct llama_sampler * llama_sampler_init_min_p(float p, size_t min_keep);
  llama_sampler_init_min_p: { parameters: ["f32", "usize"], result: "pointer" },
  // struct llama_sampler * llama_sampler_init_temp(float t);
  llama_sampler_init_temp: { parameters: ["f32"], result: "pointer" },
  // struct llama_sampler * llama_sampler_init_penalties(int32_t n_vocab, int32_t last_n,
  //                                                     float repeat, float freq, float present);
  llama_sampler_init_penalties: {
    parameters: ["i32", "i32", "f32", "f32", "f32"],
    result: "pointer",
  },
  // llama_token llama_sampler_sample(struct llama_sampler *, struct llama_context *, int32_t idx);
  llama_sampler_sample: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  // void llama_sampler_accept(struct llama_sampler * smpl, llama_token token);
  llama_sampler_accept: { parameters: ["pointer", "i32"], result: "void" },
  // void llama_sampler_free(struct llama_sampler * smpl);
  llama_sampler_free: { parameters: ["pointer"], result: "void" },

  // --- Real models: vocabularies, detokenizing, grammars, embeddings (checked against
  // include/llama.h of node-llama-cpp 3.21.1's source, llama.cpp v0.4.0) ---
  // enum llama_vocab_type llama_vocab_type(const struct llama_vocab * vocab);
  llama_vocab_type: { parameters: ["pointer"], result: "i32" },
  // enum llama_token_attr llama_vocab_get_attr(const struct llama_vocab * vocab, llama_token token);
  llama_vocab_get_attr: { parameters: ["pointer", "i32"], result: "i32" },
  // const char * llama_vocab_get_text(const struct llama_vocab * vocab, llama_token token);
  llama_vocab_get_text: { parameters: ["pointer", "i32"], result: "pointer" },
  // llama_token llama_vocab_eot(const struct llama_vocab * vocab);
  llama_vocab_eot: { parameters: ["pointer"], result: "i32" },
  // int32_t llama_detokenize(const struct llama_vocab *, const llama_token * tokens, int32_t n_tokens,
  //                          char * text, int32_t text_len_max, bool remove_special,
  //                          bool unparse_special);
  llama_detokenize: {
    parameters: ["pointer", "buffer", "i32", "buffer", "i32", "bool", "bool"],
    result: "i32",
  },
  // int32_t llama_chat_builtin_templates(const char ** output, size_t len);
  llama_chat_builtin_templates: { parameters: ["buffer", "usize"], result: "i32" },
  // bool llama_model_has_encoder(const struct llama_model * model);
  llama_model_has_encoder: { parameters: ["pointer"], result: "bool" },
  // struct llama_sampler * llama_sampler_init_grammar(const struct llama_vocab * vocab,
  //                                                   const char * grammar_str,
  //                                                   const char * grammar_root);   (NULL: rejected)
  llama_sampler_init_grammar: { parameters: ["pointer", "buffer", "buffer"], result: "pointer" },
  // void llama_sampler_apply(struct llama_sampler * smpl, llama_token_data_array * cur_p);
  llama_sampler_apply: { parameters: ["pointer", "buffer"], result: "void" },
  // void llama_set_embeddings(struct llama_context * ctx, bool embeddings);
  llama_set_embeddings: { parameters: ["pointer", "bool"], result: "void" },
  // enum llama_pooling_type llama_pooling_type(const struct llama_context * ctx);
  llama_pooling_type: { parameters: ["pointer"], result: "i32" },
  // float * llama_get_embeddings_ith(struct llama_context * ctx, int32_t i);   (NULL: no output i)
  llama_get_embeddings_ith: { parameters: ["pointer", "i32"], result: "pointer" },
  // float * llama_get_embeddings_seq(struct llama_context * ctx, llama_seq_id seq_id);
  llama_get_embeddings_seq: { parameters: ["pointer", "i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** `enum llama_token_attr` bits (llama.h). */
export const TOKEN_ATTR = {
  unknown: 1 << 0,
  unused: 1 << 1,
  normal: 1 << 2,
  control: 1 << 3,
  userDefined: 1 << 4,
  byte: 1 << 5,
  lstrip: 1 << 7,
  rstrip: 1 << 8,
} as const;

/** `enum llama_vocab_type` (llama.h). */
export const VOCAB_TYPES = ["none", "spm", "bpe", "wpm", "ugm", "rwkv", "plamo2"] as const;

/** `enum llama_pooling_type` (llama.h). */
export const POOLING = { unspecified: -1, none: 0, mean: 1, cls: 2, last: 3, rank: 4 } as const;

/**
 * `struct llama_token_data { llama_token id; float logit; float p; }` (12 bytes) and
 * `struct llama_token_data_array { llama_token_data * data; size_t size; int64_t selected;
 * bool sorted; }` (32 bytes).
 */
export const TOKEN_DATA = { size: 12, id: 0, logit: 4, p: 8 } as const;
export const TOKEN_DATA_ARRAY = { size: 32, data: 0, n: 8, selected: 16, sorted: 24 } as const;

/** libc: addresses of functions used as native callbacks, and CPU affinity. */
export const LIBC_SYMBOLS = {
  // void * dlsym(void * handle, const char * symbol);   (handle NULL = RTLD_DEFAULT)
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  // pid_t gettid(void);
  gettid: { parameters: [], result: "i32" },
  // int setpriority(int which, id_t who, int prio);   (which 0 = PRIO_PROCESS: one thread)
  setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
  // int sched_getaffinity(pid_t pid, size_t cpusetsize, cpu_set_t * mask);
  sched_getaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  // int sched_setscheduler(pid_t pid, int policy, const struct sched_param * param);
  //   (pid 0: the calling thread; struct sched_param is one int)
  sched_setscheduler: { parameters: ["i32", "i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The opened libraries. */
export interface NativeLibs {
  llama: Deno.DynamicLibrary<typeof LLAMA_SYMBOLS>["symbols"];
  ggml: Deno.DynamicLibrary<typeof GGML_SYMBOLS>["symbols"];
  ggmlBase: Deno.DynamicLibrary<typeof GGML_BASE_SYMBOLS>["symbols"];
  libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
  /** Directory the libraries came from. */
  dir: string;
  close(): void;
}

/** The npm package that ships llama.cpp for this platform, or null when there is none. */
export function platformPackage(): string | null {
  const arch = Deno.build.arch === "x86_64" ? "x64" : Deno.build.arch === "aarch64" ? "arm64" : "";
  switch (Deno.build.os) {
    case "linux":
      return arch ? `@node-llama-cpp/linux-${arch}` : null;
    case "darwin":
      return arch === "arm64" ? "@node-llama-cpp/mac-arm64-metal" : "@node-llama-cpp/mac-x64";
    case "windows":
      return arch ? `@node-llama-cpp/win-${arch}` : null;
    default:
      return null;
  }
}

function libName(base: string): string {
  if (Deno.build.os === "darwin") return `${base}.dylib`;
  if (Deno.build.os === "windows") return `${base}.dll`;
  return `${base}.so`;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** The platform's bins directory inside the installed npm package, or null. */
function packageBinsDir(): string | null {
  const pkg = platformPackage();
  if (pkg === null) return null;
  // The bare name resolves through deno.json's imports; the versioned npm: form works
  // without it where the package is installed.
  let url = "";
  for (const specifier of [pkg, `npm:${pkg}@${LLAMA_PACKAGE_VERSION}`]) {
    try {
      url = import.meta.resolve(specifier);
    } catch {
      continue;
    }
    if (url.startsWith("file:")) break;
  }
  if (!url.startsWith("file:")) return null;
  const distDir = dirname(decodeURIComponent(new URL(url).pathname));
  const platform = pkg.slice("@node-llama-cpp/".length);
  return `${dirname(distDir)}/bins/${platform}`;
}

/**
 * `dist/llama/<platform>/` beside `main.ts`: where `deno task compile` embeds the
 * libraries (a self-extracting binary unpacks them to real files there).
 */
function embeddedDir(): string | null {
  const pkg = platformPackage();
  if (pkg === null) return null;
  const platform = pkg.slice("@node-llama-cpp/".length);
  const url = new URL(`../../dist/llama/${platform}/`, import.meta.url);
  if (url.protocol !== "file:") return null;
  return decodeURIComponent(url.pathname).replace(/\/$/, "");
}

/** The three library files of one directory, when all are present. */
function libraryFiles(dir: string) {
  const llama = `${dir}/${libName("libllama.v0.5.0")}`;
  const ggml = `${dir}/${libName("libggml.v0.5.0")}`;
  const ggmlBase = `${dir}/${libName("libggml-base")}`;
  const missing = [llama, ggml, ggmlBase].filter((p) => !isFile(p));
  return { llama, ggml, ggmlBase, missing };
}

/**
 * Finds the llama.cpp library directory: `libDir`, else `$UMAD_LLAMA_LIB`, else the
 * installed `@node-llama-cpp/<platform>` package. Throws an Error that says what was
 * tried when none has the libraries.
 */
export function findLibDir(libDir?: string): string {
  const tried: string[] = [];
  const candidates: [string, string | null][] = libDir !== undefined ? [["--llama-lib", libDir]] : [
    ["UMAD_LLAMA_LIB", Deno.env.get("UMAD_LLAMA_LIB") ?? null],
    ["the libraries embedded in this executable", embeddedDir()],
    [`npm package ${platformPackage() ?? "(none for this platform)"}`, packageBinsDir()],
  ];
  for (const [source, dir] of candidates) {
    if (!dir) continue;
    const files = libraryFiles(dir);
    if (files.missing.length === 0) return dir;
    tried.push(`${source}: ${dir} lacks ${files.missing.map((p) => p.slice(dir.length + 1))}`);
  }
  throw new Error(
    `Cannot find the llama.cpp libraries (libllama.v0.5.0, libggml.v0.5.0, libggml-base) ` +
      `for ${Deno.build.os}-${Deno.build.arch}. ` +
      (tried.length ? `Tried ${tried.join("; ")}. ` : "") +
      `Pass --llama-lib DIR or set UMAD_LLAMA_LIB to a directory holding them ` +
      `(npm package ${
        platformPackage() ?? "@node-llama-cpp/<platform>"
      }@${LLAMA_PACKAGE_VERSION}, ` +
      `folder bins/<platform>/).`,
  );
}

function libcPath(): string {
  if (Deno.build.os === "darwin") return "libSystem.B.dylib";
  return "libc.so.6";
}

/**
 * Opens libggml-base, libggml and libllama from `dir` (in that order), loads the CPU
 * backends from it, and initializes llama. Backends must be loaded before
 * `llama_backend_init`, or llama looks for them next to the `deno` executable.
 */
export function openLibraries(dir: string): NativeLibs {
  const files = libraryFiles(dir);
  if (files.missing.length) throw new Error(`llama.cpp library files missing: ${files.missing}`);
  const ggmlBase = Deno.dlopen(files.ggmlBase, GGML_BASE_SYMBOLS);
  const ggml = Deno.dlopen(files.ggml, GGML_SYMBOLS);
  const llama = Deno.dlopen(files.llama, LLAMA_SYMBOLS);
  const libc = Deno.dlopen(libcPath(), LIBC_SYMBOLS);
  // Quiet native logging (it may come from any thread): a native no-op as the callback.
  const noop = libc.symbols.dlsym(null, cString("getpid"));
  if (noop) llama.symbols.llama_log_set(noop, null);
  ggml.symbols.ggml_backend_load_all_from_path(cString(dir));
  if (Number(ggml.symbols.ggml_backend_reg_count()) === 0) {
    throw new Error(`llama.cpp found no compute backend in ${dir}`);
  }
  llama.symbols.llama_backend_init();
  return {
    llama: llama.symbols,
    ggml: ggml.symbols,
    ggmlBase: ggmlBase.symbols,
    libc: libc.symbols,
    dir,
    close() {
      llama.close();
      ggml.close();
      ggmlBase.close();
      libc.close();
    },
  };
}

/** A NUL-terminated UTF-8 copy of `s`. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** The address of a C function by name (libc and already loaded libraries). */
export function nativeFunction(libs: NativeLibs, name: string): Deno.PointerValue {
  const p = libs.libc.dlsym(null, cString(name));
  if (p === null) throw new Error(`dlsym: ${name} not found`);
  return p;
}

/** The CPUs this process may run on: its affinity mask and cgroup quota, whichever is less. */
export function availableCpus(libs?: NativeLibs): number {
  let n = navigator.hardwareConcurrency || 1;
  if (libs && Deno.build.os === "linux") {
    const mask = new Uint8Array(128);
    if (libs.libc.sched_getaffinity(0, BigInt(mask.length), mask) === 0) {
      let count = 0;
      for (const b of mask) for (let v = b; v; v &= v - 1) count++;
      if (count > 0) n = Math.min(n, count);
    }
  }
  const quota = cgroupCpuQuota();
  if (quota !== null) n = Math.min(n, Math.max(1, Math.floor(quota)));
  return Math.max(1, n);
}

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return null;
  }
}

/** CPUs allowed by the cgroup (v2 `cpu.max`, v1 `cfs_quota_us/cfs_period_us`), or null. */
function cgroupCpuQuota(): number | null {
  if (Deno.build.os !== "linux") return null;
  const v2 = readText("/sys/fs/cgroup/cpu.max");
  if (v2) {
    const [q, p] = v2.split(/\s+/);
    if (q !== "max" && Number(p) > 0) return Number(q) / Number(p);
    return null;
  }
  const q = Number(readText("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"));
  const p = Number(readText("/sys/fs/cgroup/cpu/cpu.cfs_period_us"));
  if (q > 0 && p > 0) return q / p;
  return null;
}

/** How decode threads compete for the CPU with the event loop and other programs. */
export type DecodePriority = "idle" | "low" | "normal";

export const DECODE_PRIORITIES: readonly DecodePriority[] = ["idle", "low", "normal"];

/** Linux `SCHED_IDLE`: runs only when nothing else wants the CPU. */
const SCHED_IDLE = 5;
/** The nice increment of `low`. */
const LOW_NICE = 5;

/**
 * Lowers the calling thread's scheduling priority; threads it creates later (the decode
 * thread pool) inherit it. Linux only (elsewhere nice is per process): scheduling policy
 * and nice are per thread there.
 *
 * - `idle`: `SCHED_IDLE`. Any other thread that wakes up (the event loop with a ping or a
 *   keystroke, a client reading its tokens) preempts a decode thread at once. Under a
 *   normal-priority `low` or `normal` thread, a waking thread waits for the next
 *   scheduler tick (4 ms at HZ=250), which is the tail of every round trip while the
 *   model works. The price: other programs that keep every core busy starve decoding.
 * - `low`: nice 5, a quarter of the weight of a normal thread.
 *
 * Neither can be undone by an unprivileged thread. Returns what was applied.
 */
export function lowerThisThread(libs: NativeLibs, priority: DecodePriority): DecodePriority {
  if (Deno.build.os !== "linux" || priority === "normal") return "normal";
  try {
    if (
      priority === "idle" && libs.libc.sched_setscheduler(0, SCHED_IDLE, new Uint8Array(4)) === 0
    ) {
      return "idle";
    }
    return libs.libc.setpriority(0, libs.libc.gettid(), LOW_NICE) === 0 ? "low" : "normal";
  } catch {
    return "normal";
  }
}
