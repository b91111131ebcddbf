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
 *
 * `fa-rows-or-tiles`: the tiled kernel (calls of 64 tokens or more) computes each 64-row query
 * tile against every 64-cell KV tile that any of its rows may see. With one KV cache for every
 * sequence, a tile holding the decode rows of 8 sequences beside a prompt's rows opens the KV
 * tiles of all 8, and the GEMM does dense work over cells that most of its rows mask out: 8
 * decode rows at 400 tokens plus 56 prompt tokens took 1.3–1.7× as long as plus 55 (measured, the
 * bench model). A tile whose open cells, times 4, are fewer than the cells its GEMM would cover
 * is now computed row by row by the kernel llama.cpp uses for calls under 64 tokens (the same
 * arithmetic as every decode row); other tiles as before. That call: 329 → 184 ms; 8 rows + 128
 * prompt tokens: 478 → 262 ms. Such tiles' results change by that kernel's rounding (F16
 * accumulation of V), no more than a decode row's.
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
}, {
  name: "fa-rows-or-tiles",
  why: "a flash-attention query tile whose rows open few cells against the KV tiles it opens " +
    "(decode rows of many sequences beside a prompt, one unified KV cache) is computed row by row",
  file: OPS,
  edits: [
    {
      before: String.raw`static void ggml_flash_attn_ext_reduce_partials(`,
      after: String
        .raw`// umad patch (fa-rows-or-tiles): the tiled kernel computes a 64-row query tile against every
// 64-cell KV tile that any of its rows may see. With one KV cache for every sequence, a tile
// that holds decode rows of many sequences (beside a prompt's rows) opens the tiles of all of
// them, and the GEMM then does dense work for cells most of its rows mask out. Such a tile is
// computed row by row instead, each row over its own open cells, when its open cells (times
// 4, for the per-row kernel's slower arithmetic) are fewer than the cells the GEMM would cover.
static void ggml_flash_attn_ext_tiles_or_rows(
        const ggml_compute_params * params,
        ggml_tensor * dst,
        int ir0, int ir1) {
    const ggml_tensor * q    = dst->src[0];
    const ggml_tensor * mask = dst->src[3];
    if (!mask) {
        ggml_compute_forward_flash_attn_ext_tiled(params, dst, ir0, ir1);
        return;
    }
    const int64_t neq1 = q->ne[1];
    const int64_t neq2 = q->ne[2];
    const int64_t nek1 = dst->src[1]->ne[1];
    const int Q_TILE_SZ  = ggml_fa_tile_config::Q;
    const int KV_TILE_SZ = ggml_fa_tile_config::KV;
    const int64_t DK = dst->src[1]->ne[0];
    const int64_t DV = dst->src[2]->ne[0];
    // Per-thread scratch, in floats, of the tiled and of the per-row kernel.
    const int64_t tiled_scratch = Q_TILE_SZ*DK + 2*Q_TILE_SZ*KV_TILE_SZ + Q_TILE_SZ*DV + KV_TILE_SZ*DV + KV_TILE_SZ*DK + CACHE_LINE_SIZE_F32;
    const int64_t row_scratch   = 1*DK + 2*DV + CACHE_LINE_SIZE_F32;
    int ir = ir0;
    while (ir < ir1) {
        const int iq3 = ir/(neq2*neq1);
        const int iq2 = (ir - iq3*neq2*neq1)/neq1;
        const int iq1 = (ir - iq3*neq2*neq1 - iq2*neq1);
        const int tile_rows = MIN(Q_TILE_SZ, MIN((int)(ir1 - ir), (int)(neq1 - iq1)));
        int64_t open_tiles = 0;
        int64_t open_cells = 0;
        for (int64_t ic = 0; ic < nek1; ic += KV_TILE_SZ) {
            const int kv_tile = (int) std::min((int64_t) KV_TILE_SZ, nek1 - ic);
            int64_t open = 0;
            for (int tq = 0; tq < tile_rows; tq++) {
                const uint16_t * mp = (const uint16_t *)((const char *) mask->data + (iq1 + tq)*mask->nb[1] + (iq2%mask->ne[2])*mask->nb[2] + (iq3%mask->ne[3])*mask->nb[3]) + ic;
                int n = 0;
                for (int tk = 0; tk < kv_tile; tk++) {
                    n += mp[tk] != 0xFC00u;
                }
                open += n;
            }
            open_cells += open;
            open_tiles += open > 0;
        }
        if (open_cells * 4 < open_tiles * Q_TILE_SZ * KV_TILE_SZ) {
            // The per-row kernel's scratch, placed inside this thread's tiled scratch: the
            // other threads may be running tiles at the same time.
            ggml_compute_params rows = *params;
            rows.wdata = (float *) params->wdata + params->ith*(tiled_scratch - row_scratch);
            ggml_compute_forward_flash_attn_ext_f16_one_chunk(&rows, dst, ir, ir + tile_rows, 0, nek1, nullptr, 0);
        } else {
            ggml_compute_forward_flash_attn_ext_tiled(params, dst, ir, ir + tile_rows);
        }
        ir += tile_rows;
    }
}

static void ggml_flash_attn_ext_reduce_partials(`,
    },
    {
      before: String.raw`            if (use_tiled) {
                ggml_compute_forward_flash_attn_ext_tiled(params, dst, ir0, ir1);
            } else {`,
      after: String.raw`            if (use_tiled) {
                // umad patch (fa-rows-or-tiles): tiles of rows from many sequences go row by row
                ggml_flash_attn_ext_tiles_or_rows(params, dst, ir0, ir1);
            } else {`,
    },
  ],
}];
