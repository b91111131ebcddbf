/**
 * Deterministic pseudo-random numbers for tests and benchmarks (xorshift32), so a run
 * can be repeated and two servers get the same inputs.
 */

/** A generator of numbers in [0, 1) from `seed`. */
export function xorshift(seed: number): () => number {
  let s = (seed * 2654435761) >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}
