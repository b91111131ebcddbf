/**
 * A latency histogram with fixed log-spaced buckets (0.01 ms to ~100 s, 8 per
 * decade): constant memory, O(1) record, percentiles within one bucket (~33%).
 *
 * @example
 * ```ts
 * const h = new Histogram();
 * h.record(1.5);
 * console.log(h.count); // 1
 * ```
 */
export class Histogram {
  static readonly #MIN = 0.01;
  static readonly #PER_DECADE = 8;
  readonly #buckets = new Float64Array(8 * 7 + 2);
  count = 0;
  sum = 0;
  max = 0;

  /** Records one value in milliseconds. */
  record(ms: number): void {
    if (!(ms >= 0)) return;
    this.count++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
    const i = ms <= Histogram.#MIN ? 0 : Math.min(
      this.#buckets.length - 1,
      1 + Math.floor(Math.log10(ms / Histogram.#MIN) * Histogram.#PER_DECADE),
    );
    this.#buckets[i]++;
  }

  /** The value at quantile q (0..1): the upper bound of its bucket, capped at max. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < this.#buckets.length; i++) {
      seen += this.#buckets[i];
      if (seen >= rank) {
        const upper = Histogram.#MIN * 10 ** (i / Histogram.#PER_DECADE);
        return Math.min(upper, this.max);
      }
    }
    return this.max;
  }

  /** `{count, mean, p50, p95, p99, max}` in milliseconds. */
  summary(): Record<string, number> {
    const r = (x: number) => Math.round(x * 1000) / 1000;
    return {
      count: this.count,
      mean: r(this.count ? this.sum / this.count : 0),
      p50: r(this.quantile(0.5)),
      p95: r(this.quantile(0.95)),
      p99: r(this.quantile(0.99)),
      max: r(this.max),
    };
  }
}
