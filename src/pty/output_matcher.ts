/**
 * What `pty.wait` matches against: terminal output turned into plain text as it streams
 * ({@linkcode AnsiStripper}), and a pattern tested incrementally on that text and on the
 * screen lines that changed ({@linkcode TextMatcher}). Pure: no terminal, no I/O.
 *
 * @module
 */

const ESC = 0x1b;
const BEL = 0x07;

type StripState = "text" | "esc" | "escInter" | "csi" | "string" | "stringEsc";

/**
 * Removes escape sequences (CSI, OSC, DCS, APC, PM, SOS, two- and three-byte ESC
 * sequences) and C0 controls from streamed terminal text, keeping printable text, tabs
 * and line breaks (CR, LF and CR LF all become one `\n`). State carries across chunks,
 * so a sequence split between two reads is still removed.
 *
 * @example
 * ```ts
 * import { AnsiStripper } from "./output_matcher.ts";
 * const s = new AnsiStripper();
 * const text = s.push("\x1b[1mbold\x1b[") + s.push("0m done\r\n");
 * console.log(JSON.stringify(text)); // "bold done\n"
 * ```
 */
export class AnsiStripper {
  #state: StripState = "text";
  #lastCr = false;
  /**
   * True when the text since the last {@linkcode takeMotion} may have been drawn
   * somewhere else than where the stream puts it: a cursor movement, an erase, a bare
   * CR or a backspace (anything but text, line feeds and colors). Plain scrolling output
   * leaves it false, so a caller can skip reading back the screen.
   */
  motion = false;

  /** Returns {@linkcode motion} and clears it. */
  takeMotion(): boolean {
    const m = this.motion;
    this.motion = false;
    return m;
  }

  /** Plain text of `chunk` (already decoded from UTF-8). */
  push(chunk: string): string {
    let out = "";
    let runStart = -1;
    const flush = (end: number) => {
      if (runStart >= 0) {
        out += chunk.slice(runStart, end);
        runStart = -1;
      }
    };
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      switch (this.#state) {
        case "text":
          if (c >= 0x20 && c !== 0x7f && !(c >= 0x80 && c < 0xa0)) {
            if (runStart < 0) runStart = i;
            if (this.#lastCr) {
              this.motion = true; // text after a bare CR overwrites the line
              this.#lastCr = false;
            }
            continue;
          }
          flush(i);
          if (c === ESC) this.#state = "esc";
          else if (c === 0x9b) this.#state = "csi"; // C1 CSI
          else if (c === 0x9d || c === 0x90 || c === 0x9e || c === 0x9f || c === 0x98) {
            this.#state = "string"; // C1 OSC, DCS, PM, APC, SOS
          } else if (c === 0x0d) {
            out += "\n";
            this.#lastCr = true;
            continue;
          } else if (c === 0x0a || c === 0x0b || c === 0x0c) {
            if (!this.#lastCr) out += "\n";
          } else if (c === 0x09) {
            out += "\t";
          } else if (c === 0x08) {
            this.motion = true;
          }
          if (this.#lastCr && c !== 0x0a) this.motion = true; // a bare CR: overwriting
          this.#lastCr = false;
          break;
        case "esc":
          if (c === 0x5b) this.#state = "csi"; // [
          else if (c === 0x5d || c === 0x50 || c === 0x5f || c === 0x5e || c === 0x58) {
            this.#state = "string"; // ] P _ ^ X
          } else if (c >= 0x20 && c <= 0x2f) this.#state = "escInter"; // ESC ( 0, ESC # 8...
          else {
            this.#state = "text"; // ESC 7, ESC 8, ESC M, ESC c...: may move the cursor
            if (c !== 0x3d && c !== 0x3e) this.motion = true; // but not keypad modes
          }
          break;
        case "escInter":
          if (c < 0x20 || c > 0x2f) this.#state = "text";
          break;
        case "csi":
          if (c >= 0x40 && c <= 0x7e) {
            this.#state = "text";
            if (c !== 0x6d) this.motion = true; // anything but SGR (m)
          } else if (c === ESC) this.#state = "esc";
          break;
        case "string":
          if (c === BEL || c === 0x9c) this.#state = "text";
          else if (c === ESC) this.#state = "stringEsc";
          break;
        case "stringEsc":
          this.#state = c === 0x5c ? "text" : "string"; // ESC \ ends it
          break;
      }
    }
    flush(chunk.length);
    return out;
  }
}

/** Text kept from earlier output so that a match across two chunks is still found. */
const TAIL_CHARS = 4096;

/**
 * A `pty.wait` pattern: a literal string or a regular expression. {@linkcode test}
 * checks a whole text (the screen, one changed line); {@linkcode feed} checks streamed
 * output, keeping the last 4096 characters so a match split across chunks is found
 * (a match longer than that, in streamed output, is not).
 *
 * @example
 * ```ts
 * import { TextMatcher } from "./output_matcher.ts";
 * const m = new TextMatcher("\\$ $", true);
 * console.log(m.feed("building...\n"), m.feed("user@host $ ")); // undefined "$ "
 * ```
 */
export class TextMatcher {
  readonly pattern: string;
  readonly regex: boolean;
  #re: RegExp | undefined;
  #tail = "";

  /** `pattern` as a literal string, or as a JavaScript regular expression (flag `m`). */
  constructor(pattern: string, regex: boolean) {
    this.pattern = pattern;
    this.regex = regex;
    if (regex) this.#re = new RegExp(pattern, "m");
  }

  /** The matched text in `text`, or undefined. */
  test(text: string): string | undefined {
    if (this.#re !== undefined) {
      const m = this.#re.exec(text);
      return m === null ? undefined : m[0];
    }
    return text.includes(this.pattern) ? this.pattern : undefined;
  }

  /** Adds streamed text; the match in the kept tail plus `text`, or undefined. */
  feed(text: string): string | undefined {
    if (text.length === 0) return undefined;
    const keep = this.#re === undefined ? Math.max(0, this.pattern.length - 1) : TAIL_CHARS;
    const window = this.#tail + text;
    const found = this.test(window);
    this.#tail = keep === 0 ? "" : window.slice(-keep);
    return found;
  }
}

const REGEX_SPECIAL = /[.*+?^${}()|[\]\\]/g;

/**
 * Many pending waits on one stream, checked together: literal patterns are scanned for
 * in one pass (one alternation regex over the text, then only the literals it hints at),
 * regular expressions each with their own {@linkcode TextMatcher}. What matched is
 * returned and forgotten.
 *
 * @example
 * ```ts
 * import { MatcherSet } from "./output_matcher.ts";
 * const set = new MatcherSet<number>();
 * set.add(1, "ready", false);
 * set.add(2, "err(or)?:", true);
 * console.log(set.feed("compiling... rea"), set.feed("dy\n")); // [] [[1, "ready"]]
 * ```
 */
export class MatcherSet<K> {
  #regex = new Map<K, TextMatcher>();
  #literal = new Map<K, string>();
  #combined: RegExp | undefined;
  #stale = false;
  #tail = "";

  /** Waits pending. */
  get size(): number {
    return this.#regex.size + this.#literal.size;
  }

  /** Adds a wait for `pattern` (a literal string, or a regular expression). */
  add(id: K, pattern: string, regex: boolean): void {
    if (regex) this.#regex.set(id, new TextMatcher(pattern, true));
    else {
      this.#literal.set(id, pattern);
      this.#stale = true;
    }
  }

  /** Forgets a wait. */
  delete(id: K): void {
    this.#regex.delete(id);
    if (this.#literal.delete(id)) this.#stale = true;
  }

  /** The waits `text` (a whole text: the screen, one line) matches, removed. */
  test(text: string): [K, string][] {
    const out: [K, string][] = [];
    for (const [id, m] of this.#regex) {
      const found = m.test(text);
      if (found !== undefined) out.push([id, found]);
    }
    if (this.#literal.size > 0 && this.#any(text)) {
      for (const [id, p] of this.#literal) if (text.includes(p)) out.push([id, p]);
    }
    for (const [id] of out) this.delete(id);
    return out;
  }

  /** The waits streamed `text` matches (with what came before it), removed. */
  feed(text: string): [K, string][] {
    const out: [K, string][] = [];
    if (text.length === 0) return out;
    for (const [id, m] of this.#regex) {
      const found = m.feed(text);
      if (found !== undefined) out.push([id, found]);
    }
    if (this.#literal.size > 0) {
      const window = this.#tail + text;
      if (this.#any(window)) {
        for (const [id, p] of this.#literal) if (window.includes(p)) out.push([id, p]);
      }
      let keep = 0;
      for (const p of this.#literal.values()) keep = Math.max(keep, p.length - 1);
      this.#tail = keep === 0 ? "" : window.slice(-keep);
    }
    for (const [id] of out) this.delete(id);
    return out;
  }

  /** One pass: does any literal occur in `text`? */
  #any(text: string): boolean {
    if (this.#stale) {
      this.#stale = false;
      this.#combined = this.#literal.size === 0 ? undefined : new RegExp(
        [...new Set(this.#literal.values())].map((p) => p.replace(REGEX_SPECIAL, "\\$&")).join("|"),
      );
    }
    return this.#combined?.test(text) ?? false;
  }
}
