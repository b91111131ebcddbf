/**
 * LLM inference for umad: llama.cpp loaded through FFI, run in a worker by a
 * continuous-batching scheduler, served as the `generate` service.
 *
 * @example
 * ```ts
 * import { createLlmService } from "./mod.ts";
 * const llm = await createLlmService({ parallel: 8, log: (level, msg) => console.error(level, msg) });
 * console.log(llm.hello?.());
 * await llm.close?.();
 * ```
 *
 * @module
 */
export {
  createLlmService,
  createNoModelService,
  GENERATE_DEFAULTS,
  type LlmLogLevel,
  type LlmService,
  type LlmServiceOptions,
} from "./service.ts";
export type { EngineInfo, LibraryInfo } from "./engine_messages.ts";
export { GgufError, ggufValueOf, readGgufHeader, writeGgufSync } from "./gguf.ts";
export type {
  GgufHeader,
  GgufReadValue,
  GgufScalarType,
  GgufStoredType,
  GgufTensorInfo,
  GgufTensorSource,
  GgufTensorType,
  GgufValue,
} from "./gguf.ts";
export type { DecodePriority } from "./ffi.ts";
export type { LibraryLayout, LibrarySource, LlamaBackend } from "./llama_lib.ts";
export type { DeviceInfo } from "../protocol/events.ts";
export {
  ensureLlamaSource,
  LLAMA_SOURCE_PACKAGE,
  llamaSourceDir,
  type LlamaSourceOptions,
} from "./llama_source.ts";
export type { ToolCallFormat } from "./tool_calls.ts";
export {
  ensureVocabModel,
  VOCAB_MODELS,
  type VocabModel,
  type VocabModelName,
  type VocabModelOptions,
  vocabTestVectors,
} from "./vocab_models.ts";
export {
  BENCH_MODEL,
  cacheDir,
  DEMO_MODEL,
  ensureDemoModel,
  ensureSyntheticModel,
  type SyntheticModelSpec,
  TINY_MODEL,
  type TokenizerSource,
  writeSyntheticModel,
} from "./synthetic_model.ts";
