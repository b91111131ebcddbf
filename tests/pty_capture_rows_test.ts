/**
 * `pty.capture`'s row reader (src/pty/capture_rows.ts) against xterm itself, on screens
 * full of random text and attributes: text equals xterm's own trimmed rows, ANSI is the
 * same whether cells are read from xterm's cell array or through its public API, and
 * each ANSI line drawn on a fresh terminal gives back the row's cells and attributes.
 */
import assert from "node:assert/strict";
import xtermHeadless from "@xterm/headless";
import { type CaptureBuffer, captureRows, sgrBetween } from "../src/pty/capture_rows.ts";
import { xorshift } from "./_random.ts";

const { Terminal } = xtermHeadless;
type Term = InstanceType<typeof Terminal>;

function write(t: Term, s: string): Promise<void> {
  return new Promise((r) => t.write(s, r));
}

const PIECES = ["a", "Z", "7", " ", "  ", "你", "好", "é", "e\u0301", "🙂", "\t", "-", "_"];
const SGRS = [
  "0",
  "1",
  "2",
  "3",
  "4",
  "5",
  "7",
  "8",
  "9",
  "53",
  "22",
  "23",
  "24",
  "27",
  "31",
  "92",
  "39",
  "44",
  "103",
  "49",
  "38;5;200",
  "48;5;17",
  "38;5;9",
  "38;2;1;2;3",
  "48;2;250;128;0",
  "4:3",
];

/** A terminal after a few hundred random writes: text, attributes, wraps, moves, erases. */
async function randomScreen(seed: number, cols = 17, rows = 6): Promise<Term> {
  const t = new Terminal({ cols, rows, scrollback: 50, allowProposedApi: true, logLevel: "off" });
  const r = xorshift(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  let s = "";
  for (let i = 0; i < 400; i++) {
    const k = r();
    if (k < 0.55) s += pick(PIECES);
    else if (k < 0.8) s += `\x1b[${pick(SGRS)}m`;
    else if (k < 0.88) s += "\r\n";
    else if (k < 0.92) s += `\x1b[${1 + Math.floor(r() * rows)};${1 + Math.floor(r() * cols)}H`;
    else if (k < 0.95) s += "\x1b[K";
    else if (k < 0.97) s += `\x1b[${1 + Math.floor(r() * 4)}X`;
    else s += `\x1b[${1 + Math.floor(r() * 3)}C`;
  }
  await write(t, s);
  return t;
}

function all(t: Term): [CaptureBuffer, number] {
  const b = t.buffer.active;
  return [b as unknown as CaptureBuffer, b.length - 1];
}

Deno.test("text capture is xterm's own rows, trailing blanks trimmed, whichever way cells are read", async () => {
  for (let seed = 1; seed <= 40; seed++) {
    const t = await randomScreen(seed);
    const [buf, last] = all(t);
    const lines: string[] = [];
    for (let y = 0; y <= last; y++) {
      lines.push(
        (t.buffer.active.getLine(y)?.translateToString(true) ?? "").replace(/ +$/, ""),
      );
    }
    const want = lines.join("\n") + "\n";
    assert.equal(captureRows(buf, 0, last, false), want, `seed ${seed}`);
    assert.equal(captureRows(buf, 0, last, false, false), want, `seed ${seed}, public API`);
    t.dispose();
  }
});

Deno.test("ansi capture reads the same from xterm's cell array as through its public API", async () => {
  for (let seed = 1; seed <= 40; seed++) {
    const t = await randomScreen(seed);
    const [buf, last] = all(t);
    const fast = captureRows(buf, 0, last, true);
    assert.equal(fast, captureRows(buf, 0, last, true, false), `seed ${seed}`);
    assert.ok(fast.endsWith("\x1b[0m\n"));
    assert.equal(fast.split("\n").length - 1, last + 1, "one line per row");
    t.dispose();
  }
});

interface Shown {
  chars: string;
  width: number;
  attrs: string;
}

/** What a cell shows: its text, width and every attribute the capture carries. */
function shown(t: Term, y: number, x: number): Shown {
  const c = t.buffer.active.getLine(y)!.getCell(x)!;
  const attrs = [
    c.getFgColorMode(),
    c.getFgColor(),
    c.getBgColorMode(),
    c.getBgColor(),
    c.isBold(),
    c.isDim(),
    c.isItalic(),
    c.isUnderline(),
    c.isBlink(),
    c.isInverse(),
    c.isInvisible(),
    c.isStrikethrough(),
    c.isOverline(),
  ].map(Number).join(",");
  return { chars: c.getChars() || " ", width: c.getWidth(), attrs };
}

Deno.test("each ansi line drawn on a fresh terminal gives back the row's text and attributes", async () => {
  for (let seed = 1; seed <= 25; seed++) {
    const t = await randomScreen(seed);
    const [buf, last] = all(t);
    const lines = captureRows(buf, 0, last, true).split("\n");
    for (let y = 0; y <= last; y++) {
      // One column more than the row, and a marker after the line: where the capture ended.
      const f = new Terminal({
        cols: t.cols + 1,
        rows: 2,
        allowProposedApi: true,
        logLevel: "off",
      });
      await write(f, lines[y] + "\x1b[0m|");
      let kept = 0;
      while (shown(f, 0, kept).chars !== "|") kept++;
      const where = (x: number) => `seed ${seed} row ${y} col ${x}: ${JSON.stringify(lines[y])}`;
      for (let x = 0; x < t.cols; x++) {
        const want = shown(t, y, x);
        if (want.width === 0) continue; // the right half of a wide character
        if (x < kept) {
          const got = shown(f, 0, x);
          assert.equal(got.chars, want.chars, where(x));
          assert.equal(got.attrs, want.attrs, where(x));
        } else {
          // Dropped: a blank nothing marks (no background, inverse, underline, strike, overline).
          const a = want.attrs.split(",").map(Number);
          assert.equal(want.chars, " ", where(x));
          assert.deepEqual([a[2], a[7], a[9], a[11], a[12]], [0, 0, 0, 0, 0], where(x));
        }
      }
      f.dispose();
    }
    t.dispose();
  }
});

Deno.test("sgr: attributes are added one by one, and a reset comes first when one is taken away", () => {
  const BOLD = 0x8000000;
  const DIM = 0x8000000; // in the background word
  const RED = 0x1000000 | 1;
  assert.equal(sgrBetween(0, 0, 0, 0), "");
  assert.equal(sgrBetween(0, 0, RED, 0), "\x1b[31m");
  assert.equal(sgrBetween(RED, 0, RED | BOLD, 0), "\x1b[1m");
  assert.equal(sgrBetween(RED | BOLD, 0, 0, 0), "\x1b[0m");
  // Bold off while dim stays on: 22 would turn both off.
  assert.equal(sgrBetween(BOLD, DIM, 0, DIM), "\x1b[0;2m");
  assert.equal(sgrBetween(RED, 0, 0x2000000 | 200, 0), "\x1b[38;5;200m");
  assert.equal(sgrBetween(0, 0, 0x3000000 | 0x010203, 0), "\x1b[38;2;1;2;3m");
  assert.equal(sgrBetween(RED, 0, 0, 0x1000000 | 12), "\x1b[39;104m");
});
