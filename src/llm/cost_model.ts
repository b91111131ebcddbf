/**
 * What a decode call costs, learned online from the calls the engine makes: the
 * scheduler asks it how many prompt tokens fit beside the decoding rows of a step
 * within the latency budget.
 *
 * A call's time is modelled as `a + b·tokens + r·outputs + c·attended/1024 + m·tokens·nKv/1024`:
 * - `a`, one pass over the weights (memory-bound on CPUs; launch overhead on GPUs);
 * - `b`, the matmuls of one more token (a prompt token costs about one decode row);
 * - `r`, one more row of logits and its sampling (large for big vocabularies);
 * - `c`, attention over the cells each row really attends (its own sequence so far:
 *   a decode row at position 2000 costs more than a prompt token at position 10);
 * - `m`, the scan of the cells masked out: with a unified KV cache every row looks at all
 *   `nKv` cells in use (measured: ~1/50 of an attended cell on a CPU), so a big cache of
 *   other sequences makes every row a little slower.
 * The time measured is the whole call, decode through sampling, so it stays right on a
 * GPU where `llama_decode` returns before the work ends (reading the logits waits).
 *
 * @module
 */

/** The shape of one decode call, as far as its cost goes. */
export interface CallShape {
  /** Tokens in the call (decode rows and prompt tokens). */
  tokens: number;
  /** Rows whose logits are read and sampled. */
  outputs: number;
  /** KV cells every row scans (llama.cpp's `n_kv`, padded to 256). */
  nKv: number;
  /** Cells the rows attend to, summed over rows (a row at position p: p + 1). */
  attended: number;
}

/** Predicts a call's time from its shape and learns from measured calls. */
export interface CostModel {
  /** Predicted milliseconds of a call of this shape. */
  predict(shape: CallShape): number;
  /** A call of this shape took `ms`. */
  observe(shape: CallShape, ms: number): void;
  /** The most tokens of any call observed so far (0 before the first). */
  readonly maxTokensSeen: number;
}

/** The fitted coefficients (ms), for metrics and the docs. */
export interface CostCoefficients {
  /** One pass over the weights. */
  fixed: number;
  /** One more token. */
  perToken: number;
  /** One more row of logits sampled. */
  perOutput: number;
  /** Per 1024 cells attended (summed over rows). */
  perKcellAttended: number;
  /** Per token per 1024 cells of span scanned. */
  perTokenKcell: number;
}

const FEATURES = 5;
/**
 * Calls are grouped by log2(tokens) and log2(nKv / 256); each group keeps a moving
 * average of its calls.
 */
const TOKEN_BUCKETS = 14;
const SPAN_BUCKETS = 9;
const BUCKETS = TOKEN_BUCKETS * SPAN_BUCKETS;
/** Weight of a new call in its group's average (after the group's first few). */
const ALPHA = 0.1;

function features(s: CallShape): number[] {
  return [1, s.tokens, s.outputs, s.attended / 1024, (s.tokens * s.nKv) / 1024];
}

function bucketOf(s: CallShape): number {
  const t = Math.min(TOKEN_BUCKETS - 1, Math.floor(Math.log2(Math.max(1, s.tokens))));
  const k = Math.min(SPAN_BUCKETS - 1, Math.floor(Math.log2(Math.max(1, s.nKv / 256))));
  return t * SPAN_BUCKETS + k;
}

/**
 * Least squares over per-shape averages: each group of similar calls (1, 2–3, 4–7, ...
 * tokens; spans of 256, 512–767, 1024–2047, ... cells) keeps a moving average of its
 * features and times, so what was learned about big calls during one storm of prompts
 * survives the quiet steps that follow, and recent calls of a shape outweigh old ones. Coefficients are kept
 * non-negative. With calls of one size only, the time is taken as proportional to
 * tokens, which overstates what extra tokens cost: the safe side of a latency budget.
 *
 * @example
 * ```ts
 * import { FittedCostModel } from "./cost_model.ts";
 * const m = new FittedCostModel();
 * const shape = (t: number) => ({ tokens: t, outputs: 1, nKv: 256, attended: t * 100 });
 * for (const t of [1, 8, 64]) m.observe(shape(t), 10 + 2 * t);
 * console.log(Math.round(m.predict(shape(32)))); // 74
 * ```
 */
export class FittedCostModel implements CostModel {
  #x: number[][] = Array.from({ length: BUCKETS }, () => new Array(FEATURES).fill(0));
  #y = new Array(BUCKETS).fill(0);
  #n = new Array(BUCKETS).fill(0);
  #theta: number[] | null = null;
  #dirty = false;
  #maxTokens = 0;

  get maxTokensSeen(): number {
    return this.#maxTokens;
  }

  observe(shape: CallShape, ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms) || shape.tokens <= 0) return;
    const b = bucketOf(shape);
    const n = ++this.#n[b];
    // The first calls of a group average plainly; then recent ones count more.
    const w = Math.max(ALPHA, 1 / n);
    const f = features(shape);
    for (let j = 0; j < FEATURES; j++) this.#x[b][j] += w * (f[j] - this.#x[b][j]);
    this.#y[b] += w * (ms - this.#y[b]);
    this.#maxTokens = Math.max(this.#maxTokens, shape.tokens);
    this.#dirty = true;
  }

  predict(shape: CallShape): number {
    const t = this.coefficients();
    if (!t) return 0;
    const f = features(shape);
    return t.fixed * f[0] + t.perToken * f[1] + t.perOutput * f[2] +
      t.perKcellAttended * f[3] + t.perTokenKcell * f[4];
  }

  /** The current fit, or null before any call was observed. */
  coefficients(): CostCoefficients | null {
    if (this.#dirty) {
      this.#theta = this.#fit();
      this.#dirty = false;
    }
    const t = this.#theta;
    return t
      ? {
        fixed: t[0],
        perToken: t[1],
        perOutput: t[2],
        perKcellAttended: t[3],
        perTokenKcell: t[4],
      }
      : null;
  }

  #fit(): number[] | null {
    const rows: number[] = [];
    for (let b = 0; b < BUCKETS; b++) if (this.#n[b] > 0) rows.push(b);
    if (rows.length === 0) return null;
    if (new Set(rows.map((b) => Math.floor(b / SPAN_BUCKETS))).size === 1) {
      // One call size only: nothing tells a fixed cost from a per-token one.
      let y = 0;
      let t = 0;
      for (const b of rows) [y, t] = [y + this.#y[b], t + this.#x[b][1]];
      return [0, y / Math.max(1e-9, t), 0, 0, 0];
    }
    // Weighted least squares over the groups (weight: calls seen, capped), features
    // scaled to one magnitude, a small ridge so that directions the data does not
    // tell apart share the load instead of blowing up; negative coefficients are
    // dropped and the rest refitted (a small active-set NNLS).
    const scale = new Array(FEATURES).fill(0);
    for (const b of rows) {
      for (let j = 0; j < FEATURES; j++) scale[j] = Math.max(scale[j], Math.abs(this.#x[b][j]));
    }
    const active = scale.map((s) => s > 0);
    for (let iter = 0; iter <= FEATURES; iter++) {
      const idx = active.flatMap((a, j) => (a ? [j] : []));
      const k = idx.length;
      const A = Array.from({ length: k }, () => new Array(k).fill(0));
      const v = new Array(k).fill(0);
      for (const b of rows) {
        const w = Math.min(this.#n[b], 20);
        const f = idx.map((j) => this.#x[b][j] / scale[j]);
        for (let p = 0; p < k; p++) {
          v[p] += w * f[p] * this.#y[b];
          for (let q = 0; q < k; q++) A[p][q] += w * f[p] * f[q];
        }
      }
      let trace = 0;
      for (let p = 0; p < k; p++) trace += A[p][p];
      // Outputs and attention span move with tokens in most calls: they get a coefficient
      // only where the data asks for one, so the model does not extrapolate a guess.
      for (let p = 0; p < k; p++) A[p][p] += (idx[p] < 2 ? 1e-6 : 1e-3) * trace + 1e-12;
      const sol = solve(A, v);
      const theta = new Array(FEATURES).fill(0);
      let negative = -1;
      for (let p = 0; p < k; p++) {
        theta[idx[p]] = sol[p] / scale[idx[p]];
        if (sol[p] < 0 && (negative < 0 || sol[p] < sol[idx.indexOf(negative)])) {
          negative = idx[p];
        }
      }
      if (negative < 0) return theta;
      active[negative] = false;
    }
    return new Array(FEATURES).fill(0);
  }
}

/** Gaussian elimination with partial pivoting (k ≤ 4). */
function solve(A: number[][], v: number[]): number[] {
  const k = v.length;
  const M = A.map((row, i) => [...row, v[i]]);
  for (let c = 0; c < k; c++) {
    let p = c;
    for (let r = c + 1; r < k; r++) if (Math.abs(M[r][c]) > Math.abs(M[p][c])) p = r;
    [M[c], M[p]] = [M[p], M[c]];
    if (Math.abs(M[c][c]) < 1e-300) continue;
    for (let r = c + 1; r < k; r++) {
      const f = M[r][c] / M[c][c];
      for (let q = c; q <= k; q++) M[r][q] -= f * M[c][q];
    }
  }
  const x = new Array(k).fill(0);
  for (let r = k - 1; r >= 0; r--) {
    let s = M[r][k];
    for (let q = r + 1; q < k; q++) s -= M[r][q] * x[q];
    x[r] = Math.abs(M[r][r]) < 1e-300 ? 0 : s / M[r][r];
  }
  return x;
}

/**
 * The most prompt tokens that fit beside a step's decode rows within `budget` times the
 * cost of those rows alone (their quiet step), under `model`. `quiet` is the call the
 * rows alone would make; `withPrompt(p)` the call with p prompt tokens added. Zero when
 * even one token would break the budget (or nothing is known yet); all of `maxTokens`
 * when nothing decodes or the budget is unlimited.
 *
 * @example
 * ```ts
 * import { FittedCostModel, promptTokensWithin } from "./cost_model.ts";
 * const m = new FittedCostModel();
 * const shape = (t: number) => ({ tokens: t, outputs: 1, nKv: 256, attended: t });
 * for (const t of [1, 8, 64]) m.observe(shape(t), 10 + 2 * t);
 * // 8 rows cost 26 ms; 1.5× leaves 13 ms: 6 tokens at 2 ms each.
 * console.log(promptTokensWithin(m, shape(8), (p) => shape(8 + p), 1.5, 512)); // 6
 * ```
 */
export function promptTokensWithin(
  model: CostModel,
  quiet: CallShape,
  withPrompt: (p: number) => CallShape,
  budget: number,
  maxTokens: number,
): number {
  if (maxTokens <= 0) return 0;
  if (quiet.tokens === 0 || budget === Infinity) return maxTokens;
  const quietMs = model.predict(quiet);
  const limit = budget * quietMs;
  const cost = (p: number) => model.predict(withPrompt(p));
  if (!(quietMs > 0) || cost(1) > limit) return 0;
  let lo = 1; // fits
  let hi = maxTokens + 1; // does not fit (or beyond the cap)
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (cost(mid) <= limit) lo = mid;
    else hi = mid;
  }
  return Math.min(lo, maxTokens);
}
