/** Latency samples kept in a ring, summarized as percentiles on demand. */
export class Samples {
  readonly #ring: Float64Array;
  #n = 0;
  #count = 0;

  constructor(size = 8192) {
    this.#ring = new Float64Array(size);
  }

  add(x: number) {
    this.#ring[this.#n] = x;
    this.#n = (this.#n + 1) % this.#ring.length;
    this.#count++;
  }

  /** Total samples ever added. */
  get count(): number {
    return this.#count;
  }

  /** p50/p95/p99/max over the most recent samples, rounded to 0.01. */
  summary(): { count: number; p50: number; p95: number; p99: number; max: number } {
    const n = Math.min(this.#count, this.#ring.length);
    const sorted = this.#ring.slice(0, n).sort();
    const at = (q: number) => n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor(q * n))];
    const r = (x: number) => Math.round(x * 100) / 100;
    return {
      count: this.#count,
      p50: r(at(0.5)),
      p95: r(at(0.95)),
      p99: r(at(0.99)),
      max: r(n ? sorted[n - 1] : 0),
    };
  }

  clear() {
    this.#n = 0;
    this.#count = 0;
  }
}
