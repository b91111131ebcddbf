/**
 * Turns a stream of token bytes into text events: complete UTF-8 only, and text that
 * may be the start of a stop string held back until it is known not to be.
 */

/** What one token's bytes released. */
export interface TextStep {
  /** Text safe to send now. */
  text: string;
  /** True when a stop string was found: `text` ends right before it. */
  stopped: boolean;
}

/** Incremental detokenizer with stop strings. */
export class Detokenizer {
  #decoder = new TextDecoder("utf-8");
  #held = "";
  readonly #stops: readonly string[];

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** Feeds one token's bytes; returns the text now safe to emit. */
  push(bytes: Uint8Array): TextStep {
    this.#held += this.#decoder.decode(bytes, { stream: true });
    if (this.#stops.length === 0) {
      const text = this.#held;
      this.#held = "";
      return { text, stopped: false };
    }
    let cut = -1;
    for (const s of this.#stops) {
      const i = this.#held.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      const text = this.#held.slice(0, cut);
      this.#held = "";
      return { text, stopped: true };
    }
    let end = this.#held.length - this.#partialStopSuffix();
    // Never split a surrogate pair between what is sent and what is held.
    if (end > 0 && isHighSurrogate(this.#held.charCodeAt(end - 1))) end--;
    const text = this.#held.slice(0, end);
    this.#held = this.#held.slice(end);
    return { text, stopped: false };
  }

  /** Everything still held (the stream ends without a stop string). */
  flush(): string {
    const text = this.#held + this.#decoder.decode();
    this.#held = "";
    return text;
  }

  /** Length of the longest suffix of the held text that starts some stop string. */
  #partialStopSuffix(): number {
    const h = this.#held;
    let best = 0;
    for (const s of this.#stops) {
      const max = Math.min(s.length - 1, h.length);
      for (let n = max; n > best; n--) {
        if (h.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
