/**
 * One session's terminal state in the emulator Worker: an `@xterm/headless` terminal plus
 * what xterm does not keep or does not serialize (title, cursor visibility and style,
 * scroll region, mouse encoding, keypad, kitty keyboard flags), and what `pty.capture`
 * and `pty.wait` read from it.
 *
 * @module
 */
import xtermHeadless from "@xterm/headless";
import serializeAddon from "@xterm/addon-serialize";
import { AnsiStripper, MatcherSet, TextMatcher } from "./output_matcher.ts";
import { captureRows } from "./capture_rows.ts";
import { BYTES_PER_CELL } from "./emulator.ts";

const { Terminal } = xtermHeadless;
const { SerializeAddon } = serializeAddon;

/** The headless terminal type. */
export type HeadlessTerminal = InstanceType<typeof Terminal>;

/** What {@linkcode Screen} needs to start. */
export interface ScreenOptions {
  cols: number;
  rows: number;
  /** Scrollback lines at most. */
  scrollback: number;
  /** Scrollback memory at most, in bytes (lines × cols × 12); 0 = no cap but the lines. */
  scrollbackBytes: number;
}

/** A `pty.capture` answer. */
export interface Capture {
  data: string;
  cols: number;
  rows: number;
  cursor: { x: number; y: number };
}

/** xterm's internals that hold state its public API does not expose (read defensively). */
interface XtermCore {
  coreService?: {
    isCursorHidden?: boolean;
    decPrivateModes?: { cursorStyle?: "block" | "underline" | "bar"; cursorBlink?: boolean };
  };
  coreMouseService?: { activeEncoding?: string };
  buffer?: { scrollTop?: number; scrollBottom?: number };
  _inputHandler?: {
    onRequestRefreshRows?: (cb: (e?: { start: number; end: number }) => void) => unknown;
  };
}

function coreOf(term: HeadlessTerminal): XtermCore {
  return ((term as unknown as { _core?: XtermCore })._core) ?? {};
}

/** Characters a title may not carry back to a terminal (C0, DEL, C1). */
// deno-lint-ignore no-control-regex
const UNSAFE_TITLE = /[\x00-\x1f\x7f-\x9f]/g;

const DECSCUSR: Record<string, number> = { block: 2, underline: 4, bar: 6 };

/**
 * One session's screen. Output goes in through {@linkcode write}; {@linkcode snapshot}
 * redraws everything a terminal needs to look and behave as this one does;
 * {@linkcode capture} reads lines as text or ANSI; waits are checked after each write on
 * the new output's text and on the lines that changed.
 */
export class Screen {
  readonly term: HeadlessTerminal;
  readonly #serializer: InstanceType<typeof SerializeAddon>;
  #maxLines: number;
  #maxBytes: number;
  #title = "";
  /** Kitty keyboard protocol flags stack (CSI > flags u pushes, CSI < n u pops). */
  #kitty: number[] = [];
  /** Mouse encodings xterm parses but does not keep (UTF-8 1005, urxvt 1015). */
  #mouseUtf8 = false;
  #mouseUrxvt = false;
  #waits = new MatcherSet<number>();
  #decoder: TextDecoder | undefined;
  #stripper: AnsiStripper | undefined;
  #dirtyStart = Infinity;
  #dirtyEnd = -1;
  /** Writes and `after` calls xterm has not run the callbacks of yet. */
  #queued = 0;
  /** Called when a program sets the window title. */
  onTitle: (title: string) => void = () => {};

  constructor(options: ScreenOptions) {
    this.#maxLines = options.scrollback;
    this.#maxBytes = options.scrollbackBytes;
    this.term = new Terminal({
      cols: options.cols,
      rows: options.rows,
      scrollback: this.#scrollbackFor(options.cols),
      allowProposedApi: true,
      logLevel: "off",
    });
    this.#serializer = new SerializeAddon();
    this.term.loadAddon(this.#serializer);
    this.term.onTitleChange((t) => {
      this.#title = t;
      this.onTitle(t.replace(UNSAFE_TITLE, ""));
    });
    const parser = this.term.parser;
    // Returning false lets xterm's own handler run too.
    parser.registerCsiHandler({ prefix: ">", final: "u" }, (p: (number | number[])[]) => {
      this.#kitty.push(Number(p[0] ?? 0));
      if (this.#kitty.length > 16) this.#kitty.shift();
      return true;
    });
    parser.registerCsiHandler({ prefix: "<", final: "u" }, (p: (number | number[])[]) => {
      this.#kitty.splice(-Math.max(1, Number(p[0] ?? 1)));
      return true;
    });
    parser.registerCsiHandler({ prefix: "=", final: "u" }, (p: (number | number[])[]) => {
      const flags = Number(p[0] ?? 0);
      const mode = Number(p[1] ?? 1);
      const cur = this.#kitty.at(-1) ?? 0;
      const next = mode === 2 ? cur | flags : mode === 3 ? cur & ~flags : flags;
      if (this.#kitty.length === 0) this.#kitty.push(next);
      else this.#kitty[this.#kitty.length - 1] = next;
      return true;
    });
    const decMode = (set: boolean) => (p: (number | number[])[]) => {
      for (const m of p) {
        if (m === 1005) this.#mouseUtf8 = set;
        if (m === 1015) this.#mouseUrxvt = set;
      }
      return false;
    };
    parser.registerCsiHandler({ prefix: "?", final: "h" }, decMode(true));
    parser.registerCsiHandler({ prefix: "?", final: "l" }, decMode(false));
    parser.registerEscHandler({ final: "c" }, () => {
      this.#kitty = [];
      this.#mouseUtf8 = this.#mouseUrxvt = false;
      return false;
    });
    coreOf(this.term)._inputHandler?.onRequestRefreshRows?.((e) => {
      const start = e?.start ?? 0;
      const end = e?.end ?? this.term.rows - 1;
      if (start < this.#dirtyStart) this.#dirtyStart = start;
      if (end > this.#dirtyEnd) this.#dirtyEnd = end;
    });
  }

  /** Lines of scrollback at `cols` columns under both caps. */
  #scrollbackFor(cols: number): number {
    if (this.#maxBytes <= 0) return this.#maxLines;
    const byBytes = Math.floor(this.#maxBytes / (cols * BYTES_PER_CELL));
    return Math.max(0, Math.min(this.#maxLines, byBytes));
  }

  /** Lines in the buffer now (scrollback + screen), for the memory figure. */
  get lines(): number {
    return this.term.buffer.normal.length;
  }

  /** Scrollback lines allowed at the current width. */
  get scrollbackLines(): number {
    return this.term.options.scrollback ?? this.#maxLines;
  }

  /** Parses `data`; `done` runs after it is parsed and pending waits were checked. */
  write(data: Uint8Array, done: (matched: [number, string][]) => void): void {
    this.#queued++;
    // Waits are looked at once parsed: one added meanwhile has not seen this data yet.
    this.term.write(data, () => {
      this.#queued--;
      done(this.#waits.size > 0 ? this.#checkWaits(data) : []);
    });
  }

  /**
   * Runs `fn` after everything written so far is parsed: now when nothing is queued
   * (xterm would run it from a timer, a millisecond later), else in turn after the rest.
   */
  after(fn: () => void): void {
    if (this.#queued === 0) return fn();
    this.#queued++;
    this.term.write(new Uint8Array(0), () => {
      this.#queued--;
      fn();
    });
  }

  /** Resizes (after earlier writes) and re-applies the scrollback cap for the new width. */
  resize(cols: number, rows: number): void {
    this.after(() => {
      this.term.options.scrollback = this.#scrollbackFor(cols);
      this.term.resize(cols, rows);
    });
  }

  /**
   * Terminal output that redraws this screen on a reset terminal: the primary buffer
   * with `scrollback` lines, the alternate screen on top when it is active, then every
   * mode a program may have set (xterm's serializer covers cursor keys, keypad, bracketed
   * paste, insert, origin, reverse wrap, focus, wraparound and mouse tracking; the rest is
   * added here).
   */
  snapshot(): string {
    return this.#serializer.serialize({ scrollback: this.scrollbackLines }) + this.#modes();
  }

  /** The modes xterm's serializer leaves out, then the cursor put back where it was. */
  #modes(): string {
    const term = this.term;
    const core = coreOf(term);
    let out = "";
    const top = core.buffer?.scrollTop ?? 0;
    const bottom = core.buffer?.scrollBottom ?? term.rows - 1;
    const region = top !== 0 || bottom !== term.rows - 1;
    if (region) out += `\x1b[${top + 1};${bottom + 1}r`;
    if (term.modes.originMode) out += "\x1b[?6h";
    if (region || term.modes.originMode) {
      // DECSTBM and DECOM home the cursor: put it back (relative to the region in DECOM).
      const buf = term.buffer.active;
      const y = term.modes.originMode ? buf.cursorY - top : buf.cursorY;
      out += `\x1b[${y + 1};${buf.cursorX + 1}H`;
    }
    if (term.modes.applicationKeypadMode) out += "\x1b="; // DECKPAM: what terminals honour
    const encoding = core.coreMouseService?.activeEncoding;
    if (encoding === "SGR") out += "\x1b[?1006h";
    else if (encoding === "SGR_PIXELS") out += "\x1b[?1016h";
    if (this.#mouseUtf8) out += "\x1b[?1005h";
    if (this.#mouseUrxvt) out += "\x1b[?1015h";
    const style = core.coreService?.decPrivateModes?.cursorStyle;
    if (style !== undefined) {
      const blink = core.coreService?.decPrivateModes?.cursorBlink ?? false;
      out += `\x1b[${DECSCUSR[style] - (blink ? 1 : 0)} q`;
    }
    if (core.coreService?.isCursorHidden) out += "\x1b[?25l";
    for (const flags of this.#kitty) out += `\x1b[>${flags}u`;
    if (this.#title !== "") out += `\x1b]2;${this.#title.replace(UNSAFE_TITLE, "")}\x07`;
    return out;
  }

  /**
   * Lines `start`..`end` (0 = the screen's top row, negative = scrollback, clamped to
   * what exists), as text (each line's trailing blanks trimmed, wide characters once)
   * or as ANSI (colors and attributes kept), each line ending in `\n`.
   */
  capture(format: "text" | "ansi", start?: number, end?: number): Capture {
    const term = this.term;
    const buf = term.buffer.active;
    const first = Math.max(0, buf.baseY + (start ?? 0));
    const last = Math.min(buf.length - 1, buf.baseY + (end ?? term.rows - 1));
    const data = last >= first ? captureRows(buf, first, last, format === "ansi") : "";
    return {
      data,
      cols: term.cols,
      rows: term.rows,
      cursor: { x: buf.cursorX, y: buf.cursorY },
    };
  }

  /**
   * The screen's rows as text, joined by `\n` (what a new wait is first tested on).
   * Blanks the program wrote are kept: a prompt's trailing space is part of the prompt.
   */
  screenText(): string {
    const buf = this.term.buffer.active;
    const lines: string[] = [];
    for (let y = buf.baseY; y < buf.baseY + this.term.rows; y++) {
      lines.push(buf.getLine(y)?.translateToString(true) ?? "");
    }
    return lines.join("\n");
  }

  /**
   * Starts a wait; true when the screen already matches (then nothing is kept and
   * `text` holds the match).
   */
  addWait(wid: number, pattern: string, regex: boolean): { matched: boolean; text?: string } {
    const now = new TextMatcher(pattern, regex).test(this.screenText());
    if (now !== undefined) return { matched: true, text: now };
    const fresh = this.#waits.size === 0;
    this.#waits.add(wid, pattern, regex);
    if (fresh) {
      this.#decoder = new TextDecoder();
      this.#stripper = new AnsiStripper();
      this.#dirtyStart = Infinity;
      this.#dirtyEnd = -1;
    }
    return { matched: false };
  }

  /** Drops a wait (timed out, cancelled, answered). */
  removeWait(wid: number): void {
    this.#waits.delete(wid);
    if (this.#waits.size === 0) this.#decoder = this.#stripper = undefined;
  }

  /** New output's text, then each changed row: waits that match are removed and returned. */
  #checkWaits(data: Uint8Array): [number, string][] {
    if (this.#waits.size === 0 || this.#stripper === undefined) return [];
    const text = this.#stripper.push(this.#decoder!.decode(data, { stream: true }));
    const matched = this.#waits.feed(text);
    // Rows are read back only when the output may have drawn something the stream does not
    // show as it is (cursor motion, erases, overwrites): plain scrolling output was checked.
    const moved = this.#stripper.takeMotion();
    if (moved && this.#dirtyEnd >= 0 && this.#waits.size > 0) {
      const buf = this.term.buffer.active;
      const from = Math.max(0, this.#dirtyStart);
      const to = Math.min(this.term.rows - 1, this.#dirtyEnd);
      for (let row = from; row <= to && this.#waits.size > 0; row++) {
        const line = buf.getLine(buf.baseY + row)?.translateToString(true) ?? "";
        if (line !== "") matched.push(...this.#waits.test(line));
      }
    }
    this.#dirtyStart = Infinity;
    this.#dirtyEnd = -1;
    if (this.#waits.size === 0) this.#decoder = this.#stripper = undefined;
    return matched;
  }

  /** Frees the terminal (after pending writes). */
  dispose(): void {
    this.#waits = new MatcherSet<number>();
    this.after(() => this.term.dispose());
  }
}
