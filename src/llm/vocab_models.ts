/**
 * Test and demo models with real tokenizers: random weights (so they generate nonsense)
 * carrying the vocabulary, merges, special tokens and chat template of a real model
 * family, copied from llama.cpp's vocabulary files (`models/ggml-vocab-*.gguf` in the
 * source that matches the prebuilt libraries, see `llama_source.ts`). Every real-model
 * path except the weights runs on them: byte-level BPE, 150k-token sampling, control
 * tokens, Jinja templates.
 *
 * @module
 */
import { ensureLlamaSource, type LlamaSourceOptions } from "./llama_source.ts";
import { cacheDir, ensureSyntheticModel, type SyntheticModelSpec } from "./synthetic_model.ts";

/** A model family whose tokenizer a generated model can carry. */
export interface VocabModel {
  /** `models/ggml-vocab-<vocab>.gguf` in the llama.cpp source. */
  vocab: string;
  /**
   * A file of `models/templates/` to store as the chat template; null: store none (the
   * daemon falls back to llama.cpp's built-in one); undefined: keep the vocabulary's own.
   */
  template?: string | null;
  /** What the family is, for docs and logs. */
  description: string;
}

/** The families umad builds test and demo models for. */
export const VOCAB_MODELS = {
  /** Llama 3 (byte-level BPE, 128,256 tokens) with Llama 3.1's template (tools included). */
  llama3: {
    vocab: "llama-bpe",
    template: "meta-llama-Llama-3.1-8B-Instruct.jinja",
    description: "Llama 3 tokenizer (BPE, 128k) with the Llama 3.1 Instruct template",
  },
  /** Qwen2 (byte-level BPE, 151,936 tokens) with its own ChatML template. */
  qwen2: {
    vocab: "qwen2",
    description: "Qwen2 tokenizer (BPE, 152k) with its own ChatML template",
  },
  /** Phi-3 (SentencePiece, 32,064 tokens) with its own template. */
  phi3: {
    vocab: "phi-3",
    description: "Phi-3 tokenizer (SPM, 32k) with its own template",
  },
  /** Llama 2 (SentencePiece, 32,000 tokens) and no template: llama.cpp's built-in one runs. */
  "llama-spm": {
    vocab: "llama-spm",
    template: null,
    description: "Llama 2 tokenizer (SPM, 32k) without a chat template",
  },
} as const satisfies Record<string, VocabModel>;

/** A name of {@linkcode VOCAB_MODELS}. */
export type VocabModelName = keyof typeof VOCAB_MODELS;

/** The weights' shape: tiny, so a 152k vocabulary costs ~40 MB (two F16 matrices). */
const SHAPE = {
  nEmbd: 64,
  nLayer: 2,
  nHead: 2,
  nFf: 128,
  contextLength: 4096,
  type: "F16",
  seed: 5,
} as const;

/** Options of {@linkcode ensureVocabModel}. */
export interface VocabModelOptions {
  /** Where generated models are cached (default: the user cache directory). */
  dir?: string;
  /** Where the llama.cpp source is (or is fetched to). */
  source?: LlamaSourceOptions;
}

/**
 * The path of the random-weight model carrying `name`'s tokenizer, building it in the
 * cache directory on first use (and fetching the llama.cpp source once if needed).
 *
 * @example
 * ```ts ignore
 * import { ensureVocabModel } from "./vocab_models.ts";
 * const path = await ensureVocabModel("qwen2"); // ~/.cache/umad/models/umad-qwen2-vocab-random-v1.gguf
 * ```
 */
export async function ensureVocabModel(
  name: VocabModelName,
  options: VocabModelOptions = {},
): Promise<string> {
  const family: VocabModel = VOCAB_MODELS[name];
  if (family === undefined) {
    throw new RangeError(
      `Unknown vocabulary model "${name}"; known: ${Object.keys(VOCAB_MODELS).join(", ")}`,
    );
  }
  const src = await ensureLlamaSource(options.source);
  const spec: SyntheticModelSpec = {
    ...SHAPE,
    name: `umad-${name}-vocab-random`,
    tokenizer: {
      gguf: `${src}/models/ggml-vocab-${family.vocab}.gguf`,
      chatTemplate: family.template === undefined
        ? undefined
        : family.template === null
        ? null
        : Deno.readTextFileSync(`${src}/models/templates/${family.template}`),
    },
  };
  return ensureSyntheticModel(spec, options.dir ?? `${cacheDir()}/models`);
}

/**
 * The llama.cpp tokenizer test vectors of a family: each text of
 * `ggml-vocab-<vocab>.gguf.inp` with the token ids of `.out` (tokenized without special
 * tokens and without parsing control-token text).
 */
export async function vocabTestVectors(
  name: VocabModelName,
  options: LlamaSourceOptions = {},
): Promise<{ text: string; tokens: number[] }[]> {
  const src = await ensureLlamaSource(options);
  const base = `${src}/models/ggml-vocab-${VOCAB_MODELS[name].vocab}.gguf`;
  const sep = "\n__ggml_vocab_test__\n";
  const inputs = Deno.readTextFileSync(`${base}.inp`).split(sep);
  const outputs = Deno.readTextFileSync(`${base}.out`).split("\n");
  // The .inp file ends with a separator; each text pairs with one line of ids.
  if (inputs[inputs.length - 1] === "") inputs.pop();
  return inputs.map((text, i) => ({
    text,
    tokens: outputs[i].trim() === "" ? [] : outputs[i].trim().split(/\s+/).map(Number),
  }));
}
