/**
 * The native boundary: symbol tables for libllama, libggml and libc, the struct layouts
 * umad fills by hand, and opening the libraries. Layouts belong to llama.cpp v0.4.0, the
 * release inside `@node-llama-cpp/<platform>@3.21.1` (every platform's package, CPU and
 * GPU, has the same version); `tests/llm_abi_test.ts` compiles a C program against that
 * release's headers and checks every offset below. Where the libraries are found and
 * which one is chosen is `llama_lib.ts`. Nothing outside `src/llm/` touches pointers.
 *
 * @module
 */
import {
  chooseLibrary,
  gpuHints,
  inspectLibraryDir,
  libraryCandidates,
  LibraryError,
  type LibraryFiles,
  LLAMA_CPP_VERSION,
  LLAMA_PACKAGE_VERSION,
} from "./llama_lib.ts";

export { LLAMA_CPP_VERSION, LLAMA_PACKAGE_VERSION };

/** `struct llama_model_params` (80 bytes): offset of every field. */
export const MODEL_PARAMS = {
  size: 80,
  devices: 0,
  tensor_buft_overrides: 8,
  n_gpu_layers: 16,
  split_mode: 20,
  load_mode: 24,
  lazy_mode: 28,
  main_gpu: 32,
  tensor_split: 40,
  progress_callback: 48,
  progress_callback_user_data: 56,
  kv_overrides: 64,
  vocab_only: 72,
  check_tensors: 73,
  use_extra_bufts: 74,
  no_host: 75,
  no_alloc: 76,
  load_mtp: 77,
} as const;

/** `struct llama_context_params` (160 bytes): offset of every field. */
export const CONTEXT_PARAMS = {
  size: 160,
  n_ctx: 0,
  n_batch: 4,
  n_ubatch: 8,
  n_seq_max: 12,
  n_rs_seq: 16,
  n_outputs_max: 20,
  n_outputs_max_per_seq: 24,
  n_threads: 28,
  n_threads_batch: 32,
  ctx_type: 36,
  rope_scaling_type: 40,
  pooling_type: 44,
  attention_type: 48,
  flash_attn_type: 52,
  rope_freq_base: 56,
  rope_freq_scale: 60,
  yarn_ext_factor: 64,
  yarn_attn_factor: 68,
  yarn_beta_fast: 72,
  yarn_beta_slow: 76,
  yarn_orig_ctx: 80,
  defrag_thold: 84,
  cb_eval: 88,
  cb_eval_user_data: 96,
  type_k: 104,
  type_v: 108,
  abort_callback: 112,
  abort_callback_data: 120,
  embeddings: 128,
  offload_kqv: 129,
  no_perf: 130,
  op_offload: 131,
  swa_full: 132,
  kv_unified: 133,
  samplers: 136,
  n_samplers: 144,
  ctx_other: 152,
} as const;

/** `struct llama_batch` (56 bytes). */
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

/** `struct ggml_threadpool_params`: bool cpumask[GGML_MAX_N_THREADS = 512], then scalars. */
export const THREADPOOL_PARAMS = {
  size: 528,
  cpumask: 0,
  n_threads: 512,
  prio: 516,
  poll: 520,
  strict_cpu: 524,
  paused: 525,
} as const;

/** `enum ggml_backend_dev_type`, as `DeviceInfo.type` names it. */
export const DEVICE_TYPES = ["cpu", "gpu", "igpu", "accel"] as const;

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

/** libggml (`libggml[.<gpu>].v0.4.0.so`, or `libggml.so` of a cmake build): the registry. */
export const GGML_SYMBOLS = {
  // void ggml_backend_load_all_from_path(const char * dir_path);
  ggml_backend_load_all_from_path: { parameters: ["buffer"], result: "void" },
  // size_t ggml_backend_reg_count(void);
  ggml_backend_reg_count: { parameters: [], result: "usize" },
  // ggml_backend_reg_t ggml_backend_reg_get(size_t index);
  ggml_backend_reg_get: { parameters: ["usize"], result: "pointer" },
  // ggml_backend_reg_t ggml_backend_reg_by_name(const char * name);
  ggml_backend_reg_by_name: { parameters: ["buffer"], result: "pointer" },
  // size_t ggml_backend_dev_count(void);
  ggml_backend_dev_count: { parameters: [], result: "usize" },
  // ggml_backend_dev_t ggml_backend_dev_get(size_t index);
  ggml_backend_dev_get: { parameters: ["usize"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** libggml-base: devices, registry lookups, logging and thread pool parameters. */
export const GGML_BASE_SYMBOLS = {
  // void ggml_log_set(ggml_log_callback log_callback, void * user_data);
  ggml_log_set: { parameters: ["pointer", "pointer"], result: "void" },
  // const char * ggml_backend_reg_name(ggml_backend_reg_t reg);
  ggml_backend_reg_name: { parameters: ["pointer"], result: "pointer" },
  // void * ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name);
  ggml_backend_reg_get_proc_address: { parameters: ["pointer", "buffer"], result: "pointer" },
  // const char * ggml_backend_dev_name(ggml_backend_dev_t device);
  ggml_backend_dev_name: { parameters: ["pointer"], result: "pointer" },
  // const char * ggml_backend_dev_description(ggml_backend_dev_t device);
  ggml_backend_dev_description: { parameters: ["pointer"], result: "pointer" },
  // void ggml_backend_dev_memory(ggml_backend_dev_t device, size_t * free, size_t * total);
  ggml_backend_dev_memory: { parameters: ["pointer", "buffer", "buffer"], result: "void" },
  // enum ggml_backend_dev_type ggml_backend_dev_type(ggml_backend_dev_t device);
  ggml_backend_dev_type: { parameters: ["pointer"], result: "i32" },
  // ggml_backend_reg_t ggml_backend_dev_backend_reg(ggml_backend_dev_t device);
  ggml_backend_dev_backend_reg: { parameters: ["pointer"], result: "pointer" },
  // void ggml_threadpool_params_init(struct ggml_threadpool_params * p, int n_threads);
  ggml_threadpool_params_init: { parameters: ["buffer", "i32"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * Reached through `ggml_backend_reg_get_proc_address(CPU, name)`, which works in both
 * layouts (a loadable CPU backend, or one linked into libggml).
 */
export const CPU_PROCS = {
  // struct ggml_threadpool * ggml_threadpool_new(struct ggml_threadpool_params * params);
  ggml_threadpool_new: { parameters: ["buffer"], result: "pointer" },
  // void ggml_threadpool_free(struct ggml_threadpool * threadpool);
  ggml_threadpool_free: { parameters: ["pointer"], result: "void" },
  // struct ggml_backend_feature * ggml_backend_get_features(ggml_backend_reg_t reg);
  //   (an array of { const char * name; const char * value; } ending with a NULL name)
  ggml_backend_get_features: { parameters: ["pointer"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** libllama (`libllama[.<gpu>].v0.4.0.so`, or `libllama.so` of a cmake build). */
export const LLAMA_SYMBOLS = {
  // const char * llama_version(void);   ("0.4.0", or "0.4.0-dev" built from source)
  llama_version: { parameters: [], result: "pointer" },
  // bool llama_supports_gpu_offload(void);
  llama_supports_gpu_offload: { parameters: [], result: "bool" },
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
  // int32_t llama_model_n_head_kv(const struct llama_model * model);
  llama_model_n_head_kv: { parameters: ["pointer"], result: "i32" },
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
  // void llama_synchronize(struct llama_context * ctx);   (waits for the device's work)
  llama_synchronize: { parameters: ["pointer"], result: "void" },
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

/** What was loaded: the files, the backends llama.cpp registered, and the CPU code path. */
export interface LoadedLibrary extends LibraryFiles {
  /** `llama_version()`: "0.4.0" for the prebuilt packages, "0.4.0-dev" for a source build. */
  version: string;
  /** Registered backends, e.g. `["Vulkan", "CPU"]`. */
  backends: string[];
  /** The CPU backend's file when it was loaded as a variant (`libggml-cpu-haswell.so`). */
  cpuVariant: string | null;
  /** The CPU backend's compiled-in features (`AVX2`, `AVX512`, `AMX_INT8`, ...). */
  cpuFeatures: string[];
}

/** The opened libraries. */
export interface NativeLibs {
  /** libllama's symbols. */
  llama: Deno.DynamicLibrary<typeof LLAMA_SYMBOLS>["symbols"];
  /** libggml's symbols. */
  ggml: Deno.DynamicLibrary<typeof GGML_SYMBOLS>["symbols"];
  /** libggml-base's symbols. */
  ggmlBase: Deno.DynamicLibrary<typeof GGML_BASE_SYMBOLS>["symbols"];
  /** libc's symbols. */
  libc: Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
  /** Directory the libraries came from. */
  dir: string;
  /** What was loaded from it. */
  library: LoadedLibrary;
  /** Closes the four libraries. */
  close(): void;
}

/**
 * The directory of the llama.cpp libraries `umad serve` would load: `libDir` when given,
 * else the first usable of `$UMAD_LLAMA_LIB`, a native build for this machine, an added
 * GPU package, the embedded libraries and the npm package (see `chooseLibrary`).
 * Throws {@linkcode LibraryError} (a configuration error: exit 2) saying what was tried.
 *
 * @example
 * ```ts ignore
 * const libs = openLibraries(findLibDir());
 * ```
 */
export function findLibDir(libDir?: string, options: { gpu?: boolean } = {}): string {
  return chooseLibrary(libraryCandidates({ libDir }), {
    gpu: options.gpu ?? true,
    present: gpuHints(),
  }).choice.dir;
}

function libcPath(): string {
  if (Deno.build.os === "darwin") return "libSystem.B.dylib";
  return "libc.so.6";
}

function cStringAt(p: Deno.PointerValue): string {
  return p === null ? "" : new Deno.UnsafePointerView(p).getCString();
}

/** The CPU backend's features as `NAME` or `NAME=value` (value "1" dropped). */
function cpuFeatures(ggml: NativeLibs["ggml"], base: NativeLibs["ggmlBase"]): string[] {
  const reg = ggml.ggml_backend_reg_by_name(cString("CPU"));
  if (reg === null) return [];
  const fn = base.ggml_backend_reg_get_proc_address(reg, cString("ggml_backend_get_features"));
  if (fn === null) return [];
  const get = new Deno.UnsafeFnPointer(
    fn as Deno.PointerObject<typeof CPU_PROCS.ggml_backend_get_features>,
    CPU_PROCS.ggml_backend_get_features,
  );
  const list = get.call(reg);
  if (list === null) return [];
  const view = new Deno.UnsafePointerView(list);
  const out: string[] = [];
  for (let i = 0; i < 64; i++) {
    const name = view.getPointer(i * 16);
    if (name === null) break;
    const value = cStringAt(view.getPointer(i * 16 + 8));
    const n = cStringAt(name);
    out.push(value === "1" || value === "" ? n : `${n}=${value}`);
  }
  return out;
}

/**
 * Opens libggml-base, libggml and libllama from `dir` (either layout: npm's versioned
 * names with loadable backends, or a plain cmake build with the CPU backend linked in),
 * loads the backends of a loadable layout from `dir`, checks `llama_version()`, and
 * initializes llama. Backends must be loaded before `llama_backend_init`, or llama looks
 * for them next to the `deno` executable. Throws {@linkcode LibraryError} for files that
 * are missing or of another llama.cpp release.
 */
export function openLibraries(dir: string): NativeLibs {
  const files = inspectLibraryDir(dir);
  let ggmlBase, ggml, llama;
  try {
    ggmlBase = Deno.dlopen(files.ggmlBase, GGML_BASE_SYMBOLS);
    ggml = Deno.dlopen(files.ggml, GGML_SYMBOLS);
    llama = Deno.dlopen(files.llama, LLAMA_SYMBOLS);
  } catch (e) {
    ggml?.close();
    ggmlBase?.close();
    // A missing symbol means another release; anything else is the loader's own message.
    throw new LibraryError(
      `Cannot load the llama.cpp libraries in ${dir}: ${(e as Error).message}` +
        (/symbol/i.test((e as Error).message)
          ? ` (not llama.cpp v${LLAMA_CPP_VERSION}: umad needs @node-llama-cpp/*@` +
            `${LLAMA_PACKAGE_VERSION} or a build of its bundled source, "umad llama build")`
          : ""),
      { cause: e },
    );
  }
  const libc = Deno.dlopen(libcPath(), LIBC_SYMBOLS);
  const close = () => {
    llama.close();
    ggml.close();
    ggmlBase.close();
    libc.close();
  };
  const version = cStringAt(llama.symbols.llama_version());
  if (version.replace(/-dev$/, "") !== LLAMA_CPP_VERSION) {
    close();
    throw new LibraryError(
      `${files.llama} is llama.cpp ${version || "(unknown version)"}, but umad's struct ` +
        `layouts are those of v${LLAMA_CPP_VERSION} (@node-llama-cpp/*@${LLAMA_PACKAGE_VERSION}); ` +
        `use that package or "umad llama build"`,
    );
  }
  // The loader's lines say which CPU variant and GPU backends it picked; after that, a
  // native no-op (logging may come from any thread).
  const lines: string[] = [];
  const capture = new Deno.UnsafeCallback(
    { parameters: ["i32", "pointer", "pointer"], result: "void" } as const,
    (_level, text) => {
      if (text) lines.push(new Deno.UnsafePointerView(text).getCString().trimEnd());
    },
  );
  const noop = libc.symbols.dlsym(null, cString("getpid"));
  ggmlBase.symbols.ggml_log_set(capture.pointer, null);
  // A cmake build registers its linked-in backends itself; a loadable layout has none yet.
  if (Number(ggml.symbols.ggml_backend_reg_count()) === 0) {
    ggml.symbols.ggml_backend_load_all_from_path(cString(dir));
  }
  ggmlBase.symbols.ggml_log_set(noop, null);
  if (noop) llama.symbols.llama_log_set(noop, null);
  capture.close();
  const backends: string[] = [];
  const nReg = Number(ggml.symbols.ggml_backend_reg_count());
  for (let i = 0; i < nReg; i++) {
    backends.push(
      cStringAt(
        ggmlBase.symbols.ggml_backend_reg_name(ggml.symbols.ggml_backend_reg_get(BigInt(i))),
      ),
    );
  }
  if (backends.length === 0) {
    close();
    throw new LibraryError(
      `llama.cpp found no compute backend in ${dir}` +
        (lines.length ? `: ${lines.slice(-3).join(" / ")}` : ""),
    );
  }
  const cpuLine = lines.map((l) => l.match(/loaded CPU backend from (.+)$/)?.[1]).find((m) => m);
  llama.symbols.llama_backend_init();
  return {
    llama: llama.symbols,
    ggml: ggml.symbols,
    ggmlBase: ggmlBase.symbols,
    libc: libc.symbols,
    dir,
    library: {
      ...files,
      version,
      backends,
      cpuVariant: cpuLine ? cpuLine.split(/[\\/]/).pop()! : null,
      cpuFeatures: cpuFeatures(ggml.symbols, ggmlBase.symbols),
    },
    close,
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

/** The choices of `--decode-priority`. */
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
