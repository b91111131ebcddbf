/**
 * Latency figures: one percentile definition (nearest rank) for the daemon's metrics,
 * the CLI and the benchmarks, and a ring of recent samples summarized the way the
 * `metrics` reply reports them.
 *
 * @module
 */

/**
 * The nearest-rank percentile of an ascending array: the smallest value with at least
 * `q` of the samples at or below it. NaN for an empty array.
 *
 * @example
 * ```ts
 * import { percentile } from "./samples.ts";
 * console.log(percentile([1, 2, 3, 4], 0.5)); // 2
 * ```
 */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  return sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))];
}

/**
 * {@linkcode percentile} of an unsorted sample (sorted on a copy).
 *
 * @example
 * ```ts
 * import { percentileOf } from "./samples.ts";
 * console.log(percentileOf([4, 1, 3, 2], 0.99)); // 4
 * ```
 */
export function percentileOf(sample: readonly number[], q: number): number {
  return percentile([...sample].sort((a, b) => a - b), q);
}

/**
 * Upper bounds (ms) of the cumulative histogram every {@linkcode Samples} keeps since it
 * was made, as Prometheus's histograms need them (`le`); the last bucket is +Inf.
 */
export const LATENCY_BUCKETS_MS = [
  1,
  2.5,
  5,
  10,
  25,
  50,
  100,
  250,
  500,
  1000,
  2500,
  5000,
  10000,
  30000,
  60000,
] as const;

/** A latency summary as `metrics` reports it, in milliseconds. */
export interface LatencySummary {
  /** Samples ever added (the percentiles cover the most recent ones). */
  count: number;
  /** Median of the recent samples. */
  p50: number;
  /** 95th percentile of the recent samples. */
  p95: number;
  /** 99th percentile of the recent samples. */
  p99: number;
  /** Largest of the recent samples. */
  max: number;
  /** Sum of every sample ever added. */
  sum: number;
  /**
   * Samples ever added at or below each bound of {@linkcode LATENCY_BUCKETS_MS}
   * (cumulative, keyed by the bound), and `"+Inf"` (= count).
   */
  buckets: Record<string, number>;
}

/**
 * The most recent samples in a ring, summarized on demand.
 *
 * @example
 * ```ts
 * import { Samples } from "./samples.ts";
 * const s = new Samples(4);
 * for (const x of [5, 1, 9, 3, 7]) s.add(x); // the ring keeps 1, 9, 3, 7
 * const { count, p50, max } = s.summary();
 * console.log(count, p50, max); // 5 3 9
 * ```
 */
export class Samples {
  readonly #ring: Float64Array;
  readonly #buckets = new Float64Array(LATENCY_BUCKETS_MS.length);
  #n = 0;
  #count = 0;
  #sum = 0;

  /** Keeps the most recent `size` samples. */
  constructor(size = 8192) {
    this.#ring = new Float64Array(size);
  }

  /** Adds one sample. */
  add(x: number): void {
    this.#ring[this.#n] = x;
    this.#n = (this.#n + 1) % this.#ring.length;
    this.#count++;
    this.#sum += x;
    for (let i = 0; i < LATENCY_BUCKETS_MS.length; i++) {
      if (x <= LATENCY_BUCKETS_MS[i]) {
        this.#buckets[i]++;
        break;
      }
    }
  }

  /** Total samples ever added. */
  get count(): number {
    return this.#count;
  }

  /** The kept samples, ascending. */
  sorted(): Float64Array {
    return this.#ring.slice(0, Math.min(this.#count, this.#ring.length)).sort();
  }

  /**
   * p50/p95/p99/max over the most recent samples, rounded to 0.01 (zeros when empty),
   * and the sum and cumulative buckets of every sample.
   */
  summary(): LatencySummary {
    const sorted = this.sorted();
    const r = (x: number) => Number.isNaN(x) ? 0 : Math.round(x * 100) / 100;
    const buckets: Record<string, number> = {};
    let below = 0;
    LATENCY_BUCKETS_MS.forEach((le, i) => {
      below += this.#buckets[i];
      buckets[String(le)] = below;
    });
    buckets["+Inf"] = this.#count;
    return {
      count: this.#count,
      p50: r(percentile(sorted, 0.5)),
      p95: r(percentile(sorted, 0.95)),
      p99: r(percentile(sorted, 0.99)),
      max: r(percentile(sorted, 1)),
      sum: r(this.#sum),
      buckets,
    };
  }

  /** Forgets every sample. */
  clear(): void {
    this.#n = 0;
    this.#count = 0;
    this.#sum = 0;
    this.#buckets.fill(0);
  }
}
