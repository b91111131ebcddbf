/**
 * Prompt-lookup drafts: the token that followed the latest earlier occurrence of a
 * stream's last few tokens (prompt and output together). Text that repeats itself
 * (code being edited, quoted passages, lists, loops of a small model) continues the way
 * it did before often enough that guessing costs nothing when a decode row is free.
 */

/** Longest and shortest suffix matched, longest first. */
const MAX_NGRAM = 3;
const MIN_NGRAM = 1;

/** A stream's tokens so far, with lookup of a draft for the next one. */
export class TokenHistory {
  #t: Int32Array;
  #n = 0;

  constructor(tokens: ArrayLike<number>, capacity = tokens.length + 16) {
    this.#t = new Int32Array(Math.max(capacity, tokens.length, 16));
    for (let i = 0; i < tokens.length; i++) this.push(tokens[i]);
  }

  get length(): number {
    return this.#n;
  }

  /** The token at position i. */
  at(i: number): number {
    if (!(i >= 0 && i < this.#n)) throw new RangeError(`position ${i} of ${this.#n}`);
    return this.#t[i];
  }

  /** The first n tokens, as a view valid until the next push. */
  view(n = this.#n): Int32Array {
    return this.#t.subarray(0, Math.min(n, this.#n));
  }

  /** The tokens from position `start` on (a stream's output: start at its prompt length). */
  slice(start: number): Int32Array {
    return this.#t.slice(start, this.#n);
  }

  push(token: number) {
    if (this.#n === this.#t.length) {
      const t = new Int32Array(this.#t.length * 2);
      t.set(this.#t);
      this.#t = t;
    }
    this.#t[this.#n++] = token;
  }

  /**
   * The token that followed the most recent earlier occurrence of the last 3 tokens
   * (else the last 2, else the last one), or -1 when the last token is new. A weak guess
   * still beats an empty row: the row is decoded either way.
   */
  draft(): number {
    const t = this.#t;
    const n = this.#n;
    for (let g = MAX_NGRAM; g >= MIN_NGRAM; g--) {
      if (n <= g) continue;
      // Occurrences that start at i and end before the suffix itself (i + g < n).
      outer: for (let i = n - g - 1; i >= 0; i--) {
        for (let j = 0; j < g; j++) if (t[i + j] !== t[n - g + j]) continue outer;
        return t[i + g];
      }
    }
    return -1;
  }
}
