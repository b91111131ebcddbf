/**
 * `pty.capture`'s rows, read straight from the emulator's cells: as text (each row's
 * trailing blanks trimmed, wide characters once) or as ANSI the way `tmux capture-pane -e`
 * gives it (one line per row, an SGR sequence where the attributes change, blanks kept
 * where they are coloured, each line back to the default attributes before its `\n`).
 *
 * Speed is the point: a screen plus 10,000 lines of scrollback is two million cells. The
 * cells are read from xterm's own cell array (three 32-bit words a cell: content,
 * foreground, background) and the output is written as UTF-16 code units into one
 * buffer, decoded once at the end; xterm's serialize addon and `translateToString` build
 * a string a character at a time. Where xterm's internals are not what this module
 * expects, the rows are read through the public cell API instead, with the same result
 * (tests compare the two).
 *
 * @module
 */

/** The parts of an xterm buffer line this module reads (the public `IBufferLine`). */
export interface CaptureLine {
  /** Cells in the row. */
  readonly length: number;
  /** The row as text (xterm's). */
  translateToString(trimRight?: boolean, startColumn?: number, endColumn?: number): string;
  /** Loads cell `x` into `cell` (an `IBufferCell`) and returns it. */
  getCell(x: number, cell?: unknown): unknown;
}

/** The parts of an xterm buffer this module reads (the public `IBuffer`). */
export interface CaptureBuffer {
  /** Row `y` (absolute: scrollback first), or undefined past the end. */
  getLine(y: number): CaptureLine | undefined;
  /** A cell object for `getCell` to load into. */
  getNullCell(): unknown;
}

// xterm's cell layout (src/common/buffer/Constants.ts, unchanged from v4 to v6).
const CODEPOINT = 0x1fffff;
const COMBINED = 0x200000;
const HAS_CONTENT = 0x3fffff;
const WIDTH_SHIFT = 22;
const COLOR = 0xffffff;
const CM_MASK = 0x3000000;
const CM_P16 = 0x1000000;
const CM_RGB = 0x3000000;
const FG_INVERSE = 0x4000000;
const FG_BOLD = 0x8000000;
const FG_UNDERLINE = 0x10000000;
const FG_BLINK = 0x20000000;
const FG_INVISIBLE = 0x40000000;
const FG_STRIKE = 0x80000000;
const BG_ITALIC = 0x4000000;
const BG_DIM = 0x8000000;
const BG_OVERLINE = 0x40000000;
/** Foreground flags that show: all of them. */
const FG_FLAG_BITS = FG_INVERSE | FG_BOLD | FG_UNDERLINE | FG_BLINK | FG_INVISIBLE | FG_STRIKE;
/** Background flags that show: italic, dim, overline (not "has extended" or "protected"). */
const BG_FLAG_BITS = BG_ITALIC | BG_DIM | BG_OVERLINE;

/**
 * A colour word with only what shows: the flags kept, the mode, and the colour's bits
 * for that mode (a palette index is 8 bits; xterm leaves older bits above it).
 */
function shownWord(word: number, flags: number): number {
  const mode = word & CM_MASK;
  const color = mode === CM_RGB ? word & COLOR : mode !== 0 ? word & 0xff : 0;
  return (word & flags) | mode | color;
}
/** Attributes that make a blank cell visible: a background colour, inverse, lines drawn through or under it. */
const FG_MARKS_BLANK = FG_INVERSE | FG_UNDERLINE | FG_STRIKE;
const BG_MARKS_BLANK = CM_MASK | BG_OVERLINE;

/** One row's cells as xterm keeps them: `data[3x]` content, `[3x+1]` fg, `[3x+2]` bg. */
interface Cells {
  data: Uint32Array;
  combined: Record<number, string>;
  length: number;
}

/** xterm's internal cell array behind a public line, or null when it is not there as expected. */
function internalCells(line: CaptureLine): Cells | null {
  const inner = (line as unknown as { _line?: { _data?: unknown; _combined?: unknown } })._line;
  const data = inner?._data;
  if (!(data instanceof Uint32Array) || data.length < line.length * 3) return null;
  const combined = inner!._combined;
  if (typeof combined !== "object" || combined === null) return null;
  return { data, combined: combined as Record<number, string>, length: line.length };
}

/** The public cell API's view of a cell, as read back into xterm's three words. */
interface PublicCell {
  getChars(): string;
  getCode(): number;
  getWidth(): number;
  getFgColorMode(): number;
  getFgColor(): number;
  getBgColorMode(): number;
  getBgColor(): number;
  isInverse(): number;
  isBold(): number;
  isUnderline(): number;
  isBlink(): number;
  isInvisible(): number;
  isStrikethrough(): number;
  isItalic(): number;
  isDim(): number;
  isOverline(): number;
}

/** The same words through the public cell API (slower; for xterm versions laid out differently). */
function publicCells(line: CaptureLine, buffer: CaptureBuffer): Cells {
  const n = line.length;
  const data = new Uint32Array(n * 3);
  const combined: Record<number, string> = {};
  const cell = buffer.getNullCell();
  for (let x = 0; x < n; x++) {
    const c = line.getCell(x, cell) as PublicCell | undefined;
    if (!c) continue;
    const chars = c.getChars();
    const width = c.getWidth();
    let content = width << WIDTH_SHIFT;
    if (chars.length > 0) {
      const cp = chars.codePointAt(0)!;
      if (chars.length > (cp > 0xffff ? 2 : 1)) {
        content |= COMBINED;
        combined[x] = chars;
      } else {
        content |= cp;
      }
    }
    const fgMode = c.getFgColorMode() & CM_MASK;
    const bgMode = c.getBgColorMode() & CM_MASK;
    // The public colour of the default mode is -1.
    const fg = fgMode | (fgMode ? c.getFgColor() & COLOR : 0) |
      (c.isInverse() ? FG_INVERSE : 0) | (c.isBold() ? FG_BOLD : 0) |
      (c.isUnderline() ? FG_UNDERLINE : 0) | (c.isBlink() ? FG_BLINK : 0) |
      (c.isInvisible() ? FG_INVISIBLE : 0) | (c.isStrikethrough() ? FG_STRIKE : 0);
    const bg = bgMode | (bgMode ? c.getBgColor() & COLOR : 0) |
      (c.isItalic() ? BG_ITALIC : 0) | (c.isDim() ? BG_DIM : 0) |
      (c.isOverline() ? BG_OVERLINE : 0);
    data[x * 3] = content;
    data[x * 3 + 1] = fg;
    data[x * 3 + 2] = bg;
  }
  return { data, combined, length: n };
}

const NO_CELLS: Cells = { data: new Uint32Array(0), combined: {}, length: 0 };

/** UTF-16 code units, written into one growing buffer and decoded once. */
class Utf16Sink {
  buf = new Uint16Array(1 << 16);
  n = 0;

  /** Room for `k` more code units. */
  reserve(k: number) {
    if (this.n + k <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.n + k) size *= 2;
    const next = new Uint16Array(size);
    next.set(this.buf.subarray(0, this.n));
    this.buf = next;
  }

  string(s: string) {
    this.reserve(s.length);
    for (let i = 0; i < s.length; i++) this.buf[this.n++] = s.charCodeAt(i);
  }

  text(): string {
    return new TextDecoder("utf-16le").decode(this.buf.subarray(0, this.n));
  }
}

/** SGR for a colour word, in its own mode: 38/48;2;r;g;b, 38/48;5;n, 30–37/90–97 (40–47/100–107), or 39/49. */
function colorParams(word: number, base: number, out: number[]) {
  const mode = word & CM_MASK;
  const c = word & COLOR;
  if (mode === CM_RGB) out.push(base + 8, 2, (c >>> 16) & 0xff, (c >>> 8) & 0xff, c & 0xff);
  else if (mode === 0) out.push(base + 9);
  else if (mode === CM_P16) out.push(c & 8 ? base + 60 + (c & 7) : base + (c & 7));
  else out.push(base + 8, 5, c);
}

const FG_FLAGS: [number, number][] = [
  [FG_INVERSE, 7],
  [FG_BOLD, 1],
  [FG_UNDERLINE, 4],
  [FG_BLINK, 5],
  [FG_INVISIBLE, 8],
  [FG_STRIKE, 9],
];
const BG_FLAGS: [number, number][] = [[BG_ITALIC, 3], [BG_DIM, 2], [BG_OVERLINE, 53]];

/**
 * The SGR sequence that takes a terminal from attributes (fromFg, fromBg) to (fg, bg)
 * (xterm's words, shown bits only); "" when nothing changes. Only changes are sent while
 * attributes are only added; when one is taken away, a reset and the whole new set (22
 * would turn off bold and dim together, so the difference alone is not always right).
 */
export function sgrBetween(fromFg: number, fromBg: number, fg: number, bg: number): string {
  fromFg = shownWord(fromFg, FG_FLAG_BITS);
  fromBg = shownWord(fromBg, BG_FLAG_BITS);
  fg = shownWord(fg, FG_FLAG_BITS);
  bg = shownWord(bg, BG_FLAG_BITS);
  if (fromFg === fg && fromBg === bg) return "";
  const p: number[] = [];
  const fgOff = fromFg & ~fg & FG_FLAG_BITS;
  const bgOff = fromBg & ~bg & BG_FLAG_BITS;
  if (fg === 0 && bg === 0) return "\x1b[0m";
  const reset = fgOff !== 0 || bgOff !== 0;
  if (reset) p.push(0);
  if (reset ? (fg & CM_MASK) !== 0 : ((fromFg ^ fg) & (COLOR | CM_MASK)) !== 0) {
    colorParams(fg, 30, p);
  }
  if (reset ? (bg & CM_MASK) !== 0 : ((fromBg ^ bg) & (COLOR | CM_MASK)) !== 0) {
    colorParams(bg, 40, p);
  }
  for (const [bit, code] of FG_FLAGS) if (fg & bit && (reset || !(fromFg & bit))) p.push(code);
  for (const [bit, code] of BG_FLAGS) if (bg & bit && (reset || !(fromBg & bit))) p.push(code);
  return `\x1b[${p.join(";")}m`;
}

/** One past the last cell that shows: text other than a space, or a marked blank (ANSI only). */
function rowEnd(c: Cells, ansi: boolean): number {
  const d = c.data;
  for (let x = c.length - 1; x >= 0; x--) {
    const content = d[x * 3];
    const cp = content & CODEPOINT;
    if ((content & HAS_CONTENT) !== 0 && (cp !== 32 || (content & COMBINED) !== 0)) {
      return x + Math.max(1, content >>> WIDTH_SHIFT);
    }
    if (ansi && ((d[x * 3 + 1] & FG_MARKS_BLANK) !== 0 || (d[x * 3 + 2] & BG_MARKS_BLANK) !== 0)) {
      return x + 1;
    }
  }
  return 0;
}

/** One row and its `\n`; in ANSI, back to default attributes first (always on the last row). */
function writeRow(out: Utf16Sink, c: Cells, ansi: boolean, last: boolean) {
  const d = c.data;
  const end = rowEnd(c, ansi);
  let fg = 0;
  let bg = 0;
  // Two code units a cell at most, and the row's end.
  out.reserve(2 * end + 8);
  for (let x = 0; x < end;) {
    const content = d[x * 3];
    if (ansi) {
      const cfg = shownWord(d[x * 3 + 1], FG_FLAG_BITS);
      const cbg = shownWord(d[x * 3 + 2], BG_FLAG_BITS);
      if (cfg !== fg || cbg !== bg) {
        out.string(sgrBetween(fg, bg, cfg, cbg));
        out.reserve(2 * (end - x) + 8);
        fg = cfg;
        bg = cbg;
      }
    }
    if (content & COMBINED) {
      out.string(c.combined[x] ?? " ");
      out.reserve(2 * (end - x) + 8);
    } else {
      let cp = (content & CODEPOINT) || 32;
      const buf = out.buf;
      if (cp > 0xffff) {
        cp -= 0x10000;
        buf[out.n++] = 0xd800 + (cp >> 10);
        buf[out.n++] = 0xdc00 + (cp & 0x3ff);
      } else {
        buf[out.n++] = cp;
      }
    }
    x += (content >>> WIDTH_SHIFT) || 1;
  }
  if (ansi && (last || fg !== 0 || bg !== 0)) out.string("\x1b[0m");
  out.string("\n");
}

/**
 * Rows `first`..`last` of `buffer` (absolute line numbers), each ending in `\n`; ANSI
 * output ends with `ESC[0m\n`. `internals: false` reads cells through the public API only.
 */
export function captureRows(
  buffer: CaptureBuffer,
  first: number,
  last: number,
  ansi: boolean,
  internals = true,
): string {
  const out = new Utf16Sink();
  for (let y = first; y <= last; y++) {
    const line = buffer.getLine(y);
    const cells = line && ((internals ? internalCells(line) : null) ?? publicCells(line, buffer));
    writeRow(out, cells ?? NO_CELLS, ansi, y === last);
  }
  return out.text();
}
