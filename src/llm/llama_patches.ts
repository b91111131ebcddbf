/**
 * umad's changes to the llama.cpp source it builds (`umad llama build`), the way Ollama
 * keeps its own: each is a named edit of exact text, with why it exists and what it was
 * measured to do. A native build copies the source that `npm:node-llama-cpp` ships into its
 * own folder and applies them there (`native_build.ts`, `preparePatchedSource`); the shared
 * checkout stays as shipped (the benchmarks build llama-server from it, the tests read its
 * vocabularies). An edit whose text is not in the source exactly once stops the build with
 * the patch's name: a source that moved under a patch is never built half-patched. The
 * prebuilt libraries are not patched.
 *
 * @module
 */

/** One exact-text replacement in one file. */
export interface LlamaEdit {
  /** The text in the shipped source (it must occur exactly once). */
  before: string;
  /** What it becomes. */
  after: string;
}

/** A named change to one file of the llama.cpp source. */
export interface LlamaPatch {
  /** Short name, recorded in a build's `build.json` (`patches`). */
  name: string;
  /** Why, and what it was measured to do. */
  why: string;
  /** The file, relative to the source root. */
  file: string;
  /** The replacements, applied in order. */
  edits: LlamaEdit[];
}

const OPS = "ggml/src/ggml-cpu/ops.cpp";

/**
 * The patches a native build applies, in order.
 *
 * `fa-masked-tiles`: with one KV cache for every sequence (umad's default mode) a row's
 * attention scans the cells of every sequence and most of them are masked. The CPU
 * flash-attention kernel converted each row's mask from F16 to F32 over the whole span,
 * for every head, before it could skip a tile that is all masked; and the one-row path
 * converted and compared one cell at a time. Both now find masked cells from the mask's
 * F16 bits (`-inf` is `0xFC00`) first: a tile is skipped, or a run of 8 cells stepped over,
 * without converting anything. Cells that are not masked are computed exactly as before,
 * in the same order, so results are bit for bit the same. Measured on the bench model
 * (docs/BENCHMARKS.md, physics): 8 decode rows beside 8000 cached cells +13 ms → +0 ms; a
 * 504-token prompt beside 8 decoding streams in one call 1.36× → 1.10× the time of one KV
 * stream per sequence.
 */
export const LLAMA_PATCHES: readonly LlamaPatch[] = [{
  name: "fa-masked-tiles",
  why: "flash attention skips masked tiles and cells from the mask's F16 bits, " +
    "before converting them (one unified KV cache: most cells are other sequences')",
  file: OPS,
  edits: [
    {
      before: String.raw`        for (int64_t ic = ic_start; ic < ic_end; ++ic) {
            const float mv = mp ? slope*GGML_CPU_FP16_TO_FP32(mp[ic]) : 0.0f;
            if (mv == -INFINITY) {
                continue;
            }
`,
      after: String.raw`        for (int64_t ic = ic_start; ic < ic_end; ++ic) {
            if (mp) {
                // umad patch (fa-masked-tiles): step over masked cells 8 at a time from the
                // mask's F16 bits (-inf is 0xFC00)
                while (ic + 8 <= ic_end) {
                    uint64_t lo, hi;
                    memcpy(&lo, mp + ic,     sizeof(lo));
                    memcpy(&hi, mp + ic + 4, sizeof(hi));
                    if (((lo ^ 0xFC00FC00FC00FC00ull) | (hi ^ 0xFC00FC00FC00FC00ull)) != 0) {
                        break;
                    }
                    ic += 8;
                }
                if (ic >= ic_end) {
                    break;
                }
            }
            const float mv = mp ? slope*GGML_CPU_FP16_TO_FP32(mp[ic]) : 0.0f;
            if (mv == -INFINITY) {
                continue;
            }
`,
    },
    {
      before: String.raw`            if (mask) {
                bool can_skip = true;
                for (int tq = 0; tq < tile_rows; tq++) {
                    const ggml_fp16_t * mp_row = (const ggml_fp16_t *)((const char *) mask->data + (iq1 + tq)*mask->nb[1] + (iq2%mask->ne[2])*mask->nb[2] + (iq3%mask->ne[3])*mask->nb[3]);
                    for (int tk = 0; tk < kv_tile; tk++) {
                        mask32[tq * KV_TILE_SZ + tk] = slope * GGML_CPU_FP16_TO_FP32(mp_row[ic + tk]);
                        if (mask32[tq * KV_TILE_SZ + tk] != -INFINITY) {
                            can_skip = false;
                        }
                    }
                    // Pad remaining mask entries with -inf
                    for (int tk = kv_tile; tk < KV_TILE_SZ; tk++) {
                        mask32[tq * KV_TILE_SZ + tk] = -INFINITY;
                    }
                }

                if (can_skip) {
                    continue;
                }
            }
`,
      after: String.raw`            if (mask) {
                // umad patch (fa-masked-tiles): find an all -inf tile from the mask's F16 bits
                // before converting anything; with one KV cache for every sequence most
                // tiles of a prompt's rows belong to other sequences and are all masked
                bool can_skip = true;
                for (int tq = 0; tq < tile_rows && can_skip; tq++) {
                    const uint16_t * mp_bits = (const uint16_t *)((const char *) mask->data + (iq1 + tq)*mask->nb[1] + (iq2%mask->ne[2])*mask->nb[2] + (iq3%mask->ne[3])*mask->nb[3]) + ic;
                    uint16_t open = 0;
                    for (int tk = 0; tk < kv_tile; tk++) {
                        open |= (uint16_t) (mp_bits[tk] ^ 0xFC00u);
                    }
                    can_skip = open == 0;
                }

                if (can_skip) {
                    continue;
                }

                for (int tq = 0; tq < tile_rows; tq++) {
                    const ggml_fp16_t * mp_row = (const ggml_fp16_t *)((const char *) mask->data + (iq1 + tq)*mask->nb[1] + (iq2%mask->ne[2])*mask->nb[2] + (iq3%mask->ne[3])*mask->nb[3]);
                    for (int tk = 0; tk < kv_tile; tk++) {
                        mask32[tq * KV_TILE_SZ + tk] = slope * GGML_CPU_FP16_TO_FP32(mp_row[ic + tk]);
                    }
                    // Pad remaining mask entries with -inf
                    for (int tk = kv_tile; tk < KV_TILE_SZ; tk++) {
                        mask32[tq * KV_TILE_SZ + tk] = -INFINITY;
                    }
                }
            }
`,
    },
  ],
}];
