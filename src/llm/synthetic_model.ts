/**
 * Llama-architecture GGUF models with deterministic random weights: the demo model
 * `umad serve` uses when no `--model` is given, the tiny models of the tests, and the
 * 85M-parameter bench model.
 *
 * @module
 */
import {
  GgufError,
  type GgufTensorSource,
  type GgufTensorType,
  type GgufValue,
  ggufValueOf,
  readGgufHeader,
  writeGgufSync,
} from "./gguf.ts";
import { buildVocab } from "./synthetic_vocab.ts";

/** The shape of a generated llama model. */
export interface SyntheticModelSpec {
  /** `general.name`, and the cached file's name. */
  name: string;
  /** Width of the hidden state. */
  nEmbd: number;
  /** Transformer blocks. */
  nLayer: number;
  /** Attention heads. */
  nHead: number;
  /** Key/value heads (default: `nHead`). */
  nHeadKv?: number;
  /** Width of the feed-forward layer. */
  nFf: number;
  /** `llama.context_length`. */
  contextLength: number;
  /** Weight type of the matrices (norms are always F32). */
  type: GgufTensorType;
  /** Seed of the random weights. */
  seed: number;
  /**
   * Take the tokenizer from another GGUF (a real model's, or llama.cpp's vocabulary-only
   * `ggml-vocab-*.gguf`) instead of the generated one: every `tokenizer.*` key is copied
   * (vocabulary, merges, scores, types, special ids, pre-tokenizer, chat template) and
   * the embedding and output matrices are sized to its vocabulary.
   */
  tokenizer?: TokenizerSource;
}

/** Where a generated model's tokenizer comes from. */
export interface TokenizerSource {
  /** A GGUF file holding `tokenizer.*` keys. */
  gguf: string;
  /**
   * The chat template to store: Jinja text, or null for none (the daemon then falls back
   * to llama.cpp's built-in template). Default: the source's own, if it has one.
   */
  chatTemplate?: string | null;
}

/** The demo model: small enough to generate in well under a second, real tokenizer. */
export const DEMO_MODEL: SyntheticModelSpec = {
  name: "umad-demo-random",
  nEmbd: 256,
  nLayer: 4,
  nHead: 4,
  nFf: 768,
  contextLength: 4096,
  type: "F16",
  seed: 1,
};

/** The bench model of NATIVE.md: n_embd 768, 12 layers, 12 heads, ff 2048, F16 (~85M). */
export const BENCH_MODEL: SyntheticModelSpec = {
  name: "umad-bench-85m-random",
  nEmbd: 768,
  nLayer: 12,
  nHead: 12,
  nFf: 2048,
  contextLength: 4096,
  type: "F16",
  seed: 2,
};

/** A tiny model for tests: loads and decodes in milliseconds. */
export const TINY_MODEL: SyntheticModelSpec = {
  name: "umad-tiny-random",
  nEmbd: 64,
  nLayer: 2,
  nHead: 2,
  nFf: 128,
  contextLength: 2048,
  type: "F16",
  seed: 3,
};

/** Control tokens of the chatml template, so chat prompts tokenize to them. */
const CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"];
const CHATML_TEMPLATE = "{% for message in messages %}{{'<|im_start|>' + message['role'] + " +
  "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function hashString(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

/** A tensor of uniform random values in [-scale, scale], the same for the same seed. */
function randomTensor(
  name: string,
  dims: number[],
  type: GgufTensorType,
  seed: number,
  scale: number,
): GgufTensorSource {
  let state = (hashString(name) ^ Math.imul(seed, 0x9e3779b1)) >>> 0;
  let next = 0;
  return {
    name,
    dims,
    type,
    fill(out, start) {
      if (start !== next) throw new RangeError(`${name}: chunks out of order`);
      next = start + out.length;
      let s = state;
      for (let i = 0; i < out.length; i++) {
        // mulberry32
        s = (s + 0x6d2b79f5) | 0;
        let t = Math.imul(s ^ (s >>> 15), 1 | s);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
      }
      state = s;
    },
  };
}

function onesTensor(name: string, n: number): GgufTensorSource {
  return { name, dims: [n], type: "F32", fill: (out) => out.fill(1) };
}

/**
 * Writes a llama GGUF with random weights for `spec` to `path`. Deterministic: the same
 * spec gives the same bytes.
 *
 * @example
 * ```ts
 * writeSyntheticModel("/tmp/tiny.gguf", TINY_MODEL);
 * ```
 */
export function writeSyntheticModel(path: string, spec: SyntheticModelSpec): void {
  const tokenizer = spec.tokenizer ? copiedTokenizer(spec.tokenizer) : generatedTokenizer();
  const nVocab = tokenizer.nVocab;
  const { nEmbd, nFf, nHead } = spec;
  const nHeadKv = spec.nHeadKv ?? nHead;
  const headDim = nEmbd / nHead;
  if (!Number.isInteger(headDim)) throw new RangeError("nEmbd must be a multiple of nHead");
  const kvDim = headDim * nHeadKv;
  const metadata: Record<string, GgufValue> = {
    "general.architecture": { type: "string", value: "llama" },
    "general.name": { type: "string", value: spec.name },
    "general.description": {
      type: "string",
      value: "Random weights generated by umad; it produces meaningless text.",
    },
    "llama.context_length": { type: "u32", value: spec.contextLength },
    "llama.embedding_length": { type: "u32", value: nEmbd },
    "llama.block_count": { type: "u32", value: spec.nLayer },
    "llama.feed_forward_length": { type: "u32", value: nFf },
    "llama.attention.head_count": { type: "u32", value: nHead },
    "llama.attention.head_count_kv": { type: "u32", value: nHeadKv },
    "llama.rope.dimension_count": { type: "u32", value: headDim },
    "llama.rope.freq_base": { type: "f32", value: 10000 },
    "llama.attention.layer_norm_rms_epsilon": { type: "f32", value: 1e-5 },
    ...tokenizer.metadata,
  };
  const t = spec.type;
  const s = spec.seed;
  const w = (fanIn: number) => Math.sqrt(3 / fanIn);
  const tensors: GgufTensorSource[] = [
    randomTensor("token_embd.weight", [nEmbd, nVocab], t, s, 1),
    onesTensor("output_norm.weight", nEmbd),
    randomTensor("output.weight", [nEmbd, nVocab], t, s, w(nEmbd) * 4),
  ];
  for (let l = 0; l < spec.nLayer; l++) {
    const b = `blk.${l}`;
    tensors.push(
      onesTensor(`${b}.attn_norm.weight`, nEmbd),
      randomTensor(`${b}.attn_q.weight`, [nEmbd, nEmbd], t, s, w(nEmbd)),
      randomTensor(`${b}.attn_k.weight`, [nEmbd, kvDim], t, s, w(nEmbd)),
      randomTensor(`${b}.attn_v.weight`, [nEmbd, kvDim], t, s, w(nEmbd)),
      randomTensor(`${b}.attn_output.weight`, [nEmbd, nEmbd], t, s, w(nEmbd)),
      onesTensor(`${b}.ffn_norm.weight`, nEmbd),
      randomTensor(`${b}.ffn_gate.weight`, [nEmbd, nFf], t, s, w(nEmbd)),
      randomTensor(`${b}.ffn_up.weight`, [nEmbd, nFf], t, s, w(nEmbd)),
      randomTensor(`${b}.ffn_down.weight`, [nFf, nEmbd], t, s, w(nFf)),
    );
  }
  writeGgufSync(path, metadata, tensors);
}

/** The tokenizer keys of a generated model and its vocabulary size. */
interface TokenizerKeys {
  metadata: Record<string, GgufValue>;
  nVocab: number;
}

/** umad's own small SPM vocabulary with chatml control tokens and template. */
function generatedTokenizer(): TokenizerKeys {
  const vocab = buildVocab(CHATML_TOKENS);
  return {
    nVocab: vocab.tokens.length,
    metadata: {
      "tokenizer.ggml.model": { type: "string", value: "llama" },
      "tokenizer.ggml.tokens": { type: "array", itemType: "string", values: vocab.tokens },
      "tokenizer.ggml.scores": { type: "array", itemType: "f32", values: vocab.scores },
      "tokenizer.ggml.token_type": { type: "array", itemType: "i32", values: vocab.types },
      "tokenizer.ggml.bos_token_id": { type: "u32", value: vocab.bos },
      "tokenizer.ggml.eos_token_id": { type: "u32", value: vocab.eos },
      "tokenizer.ggml.unknown_token_id": { type: "u32", value: vocab.unk },
      "tokenizer.ggml.add_bos_token": { type: "bool", value: true },
      "tokenizer.ggml.add_eos_token": { type: "bool", value: false },
      "tokenizer.chat_template": { type: "string", value: CHATML_TEMPLATE },
    },
  };
}

/** Every `tokenizer.*` key of another GGUF, with its stored type. */
function copiedTokenizer(source: TokenizerSource): TokenizerKeys {
  const header = readGgufHeader(source.gguf);
  const metadata: Record<string, GgufValue> = {};
  for (const key of header.metadata.keys()) {
    if (key.startsWith("tokenizer.")) metadata[key] = ggufValueOf(header, key);
  }
  const tokens = header.metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.length === 0) {
    throw new GgufError(`"${source.gguf}" has no tokenizer.ggml.tokens to copy`);
  }
  if (source.chatTemplate === null) delete metadata["tokenizer.chat_template"];
  else if (source.chatTemplate !== undefined) {
    metadata["tokenizer.chat_template"] = { type: "string", value: source.chatTemplate };
  }
  return { metadata, nVocab: tokens.length };
}

/** The user cache directory for umad: `$XDG_CACHE_HOME/umad` or `~/.cache/umad`. */
export function cacheDir(): string {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/umad`;
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  if (!home) throw new Error("Cannot find a cache directory: set XDG_CACHE_HOME or HOME");
  return `${home}/.cache/umad`;
}

/**
 * Returns the path of a generated model in the cache directory, writing it first if it
 * is not there (deterministic, so concurrent writers produce the same file; the write
 * is atomic through a rename).
 */
export function ensureSyntheticModel(spec: SyntheticModelSpec, dir = cacheDir()): string {
  const path = `${dir}/${spec.name}-v1.gguf`;
  try {
    if (Deno.statSync(path).isFile) return path;
  } catch { /* not there yet */ }
  Deno.mkdirSync(dir, { recursive: true });
  writeSyntheticModel(path, spec);
  return path;
}

/**
 * The demo model's path, generating it into the cache directory on first use.
 *
 * @example
 * ```ts
 * const path = ensureDemoModel();
 * ```
 */
export function ensureDemoModel(dir?: string): string {
  return ensureSyntheticModel(DEMO_MODEL, dir);
}
