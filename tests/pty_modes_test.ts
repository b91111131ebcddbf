// deno-lint-ignore-file no-control-regex
// Every mode a program can set and a terminal keeps comes back on re-attach: one program
// per mode sets it, a client attaches, and the snapshot is played into a fresh terminal
// (xterm headless here; tmux, a terminal we did not write, in pty_cli_test.ts).
import assert from "node:assert/strict";
import xtermHeadless from "@xterm/headless";
import { createPtyService } from "../src/pty/mod.ts";
import { call } from "./pty_helpers.ts";

const { Terminal } = xtermHeadless;
type Term = InstanceType<typeof Terminal>;
// deno-lint-ignore no-explicit-any
const core = (t: Term): any => (t as any)._core;

/** Runs `printf FORMAT; sleep` in a session and returns its snapshot, played into a new terminal. */
async function restored(
  svc: ReturnType<typeof createPtyService>,
  printf: string,
): Promise<{ term: Term; title: string; snapshot: string }> {
  const spawned = await call(svc, {
    type: "pty.spawn",
    argv: ["/bin/sh", "-c", `printf '${printf}'; printf 'MARK'; exec sleep 60`],
    cols: 60,
    rows: 16,
  });
  assert.equal(spawned.failure, undefined, spawned.failure?.message);
  const session = spawned.events[0].session as string;
  // The marker comes after the sequence: once the screen shows it, the mode is set.
  const waited = await call(svc, { type: "pty.wait", session, pattern: "MARK", timeout_ms: 10000 });
  await waited.until((e) => e.length > 0, 12000, "MARK");
  assert.equal(waited.events[0].matched, true);
  // A first client (it gets the raw output since the spawn), gone again: then re-attach.
  const first = await call(svc, { type: "pty.attach", session }, 1);
  await first.until((e) => e.some((x) => x.event === "pty.snapshot"), 5000, "first attach");
  await call(svc, { type: "pty.detach", session }, 1);
  const att = await call(svc, { type: "pty.attach", session }, 2);
  await att.until((e) => e.some((x) => x.event === "pty.snapshot"), 5000, "snapshot");
  const snap = att.events.find((e) => e.event === "pty.snapshot")!;
  const snapshot = new TextDecoder().decode(snap.data as Uint8Array);
  const term = new Terminal({ cols: 60, rows: 16, allowProposedApi: true, logLevel: "off" });
  let title = "";
  term.onTitleChange((t) => title = t);
  await new Promise<void>((r) => term.write(snapshot, r));
  await call(svc, { type: "pty.kill", session, signal: "KILL" });
  return { term, title, snapshot };
}

const ESC = "\\033";

/** One mode each: the sequence a program sends, and what the restored terminal must show. */
const MODES: [string, string, (r: Awaited<ReturnType<typeof restored>>) => void][] = [
  [
    "cursor hidden (DECTCEM)",
    `${ESC}[?25l`,
    (r) => assert.equal(core(r.term).coreService.isCursorHidden, true),
  ],
  ["cursor style: blinking bar (DECSCUSR 5)", `${ESC}[5 q`, (r) => {
    assert.equal(core(r.term).coreService.decPrivateModes.cursorStyle, "bar");
    assert.equal(core(r.term).coreService.decPrivateModes.cursorBlink, true);
  }],
  ["cursor style: steady underline (DECSCUSR 4)", `${ESC}[4 q`, (r) => {
    assert.equal(core(r.term).coreService.decPrivateModes.cursorStyle, "underline");
    assert.equal(core(r.term).coreService.decPrivateModes.cursorBlink, false);
  }],
  [
    "window title (OSC 2)",
    `${ESC}]2;build: 3 errors\\007`,
    (r) => assert.equal(r.title, "build: 3 errors"),
  ],
  [
    "window title (OSC 0)",
    `${ESC}]0;vim notes.txt\\007`,
    (r) => assert.equal(r.title, "vim notes.txt"),
  ],
  ["scroll region (DECSTBM)", `${ESC}[3;12r`, (r) => {
    assert.equal(core(r.term).buffer.scrollTop, 2);
    assert.equal(core(r.term).buffer.scrollBottom, 11);
    // The cursor is where the program left it (after MARK), not homed by DECSTBM.
    assert.equal(r.term.buffer.active.cursorX, 4);
  }],
  ["origin mode (DECOM) inside a region", `${ESC}[4;10r${ESC}[?6h${ESC}[2;3H`, (r) => {
    assert.equal(r.term.modes.originMode, true);
    assert.equal(core(r.term).buffer.scrollTop, 3);
    // Row 2 of the region is screen row 5 (0-based 4); MARK moved the cursor 4 on.
    assert.equal(r.term.buffer.active.cursorY, 4);
    assert.equal(r.term.buffer.active.cursorX, 6);
  }],
  [
    "application keypad (DECKPAM)",
    `${ESC}=`,
    (r) => assert.equal(r.term.modes.applicationKeypadMode, true),
  ],
  [
    "application cursor keys (DECCKM)",
    `${ESC}[?1h`,
    (r) => assert.equal(r.term.modes.applicationCursorKeysMode, true),
  ],
  ["bracketed paste", `${ESC}[?2004h`, (r) => assert.equal(r.term.modes.bracketedPasteMode, true)],
  ["focus reporting", `${ESC}[?1004h`, (r) => assert.equal(r.term.modes.sendFocusMode, true)],
  ["mouse: buttons, SGR encoding", `${ESC}[?1000h${ESC}[?1006h`, (r) => {
    assert.equal(r.term.modes.mouseTrackingMode, "vt200");
    assert.equal(core(r.term).coreMouseService.activeEncoding, "SGR");
  }],
  ["mouse: drag", `${ESC}[?1002h`, (r) => assert.equal(r.term.modes.mouseTrackingMode, "drag")],
  ["mouse: any motion, SGR pixels", `${ESC}[?1003h${ESC}[?1016h`, (r) => {
    assert.equal(r.term.modes.mouseTrackingMode, "any");
    assert.equal(core(r.term).coreMouseService.activeEncoding, "SGR_PIXELS");
  }],
  [
    "mouse: urxvt and UTF-8 encodings (xterm.js ignores them; the bytes are sent)",
    `${ESC}[?1000h${ESC}[?1015h${ESC}[?1005h`,
    (r) => {
      assert.match(r.snapshot, /\x1b\[\?1015h/);
      assert.match(r.snapshot, /\x1b\[\?1005h/);
    },
  ],
  ["insert mode (IRM)", `${ESC}[4h`, (r) => assert.equal(r.term.modes.insertMode, true)],
  ["autowrap off (DECAWM)", `${ESC}[?7l`, (r) => assert.equal(r.term.modes.wraparoundMode, false)],
  [
    "reverse wraparound",
    `${ESC}[?45h`,
    (r) => assert.equal(r.term.modes.reverseWraparoundMode, true),
  ],
  ["kitty keyboard flags (pushed)", `${ESC}[>1u${ESC}[>5u`, (r) => {
    // xterm.js does not implement the kitty protocol: the restored pushes are in the bytes.
    assert.match(r.snapshot, /\x1b\[>1u\x1b\[>5u/);
  }],
  ["kitty keyboard flags (set, then popped to none)", `${ESC}[>1u${ESC}[<u`, (r) => {
    assert.doesNotMatch(r.snapshot, /\x1b\[>\d+u/);
  }],
];

Deno.test("each mode a program sets is restored on re-attach", async (t) => {
  const svc = createPtyService();
  try {
    await t.step("a program that sets nothing restores to the defaults", async () => {
      const plain = await restored(svc, "plain");
      assert.equal(core(plain.term).coreService.isCursorHidden, false);
      assert.equal(plain.term.modes.mouseTrackingMode, "none");
      assert.equal(plain.title, "");
      assert.equal(core(plain.term).coreService.decPrivateModes.cursorStyle, undefined);
    });
    for (const [name, seq, check] of MODES) {
      await t.step(name, async () => {
        const r = await restored(svc, seq);
        try {
          check(r);
        } catch (e) {
          throw new Error(
            `${(e as Error).message}\nsnapshot: ${JSON.stringify(r.snapshot.slice(-200))}`,
          );
        } finally {
          r.term.dispose();
        }
      });
    }
  } finally {
    await svc.close();
  }
});

Deno.test("the alternate screen is restored with the primary screen kept underneath", async () => {
  const svc = createPtyService();
  try {
    const r = await restored(
      svc,
      `${ESC}[31mPRIMARY-1${ESC}[0m\\r\\nPRIMARY-2 ${ESC}[?1049h${ESC}[H${ESC}[2JALT-SCREEN `,
    );
    const t = r.term;
    assert.equal(t.buffer.active.type, "alternate");
    assert.equal(t.buffer.active.getLine(0)!.translateToString(true), "ALT-SCREEN MARK");
    // Leaving the alternate screen shows the primary one, cursor where it was.
    await new Promise<void>((done) => t.write("\x1b[?1049l", done));
    assert.equal(t.buffer.active.type, "normal");
    assert.equal(t.buffer.active.getLine(0)!.translateToString(true), "PRIMARY-1");
    assert.equal(t.buffer.active.getLine(1)!.translateToString(true).trimEnd(), "PRIMARY-2");
    assert.equal(t.buffer.active.cursorY, 1);
    assert.equal(t.buffer.active.cursorX, 10);
    // Colors of the primary screen survive too.
    const cell = t.buffer.active.getLine(0)!.getCell(0)!;
    assert.equal(cell.getFgColor(), 1);
  } finally {
    await svc.close();
  }
});
