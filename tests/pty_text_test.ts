// Pure units of the terminal work: output to text for pty.wait, and the mode tracker
// `umad attach` uses to undo what a session changed in the outer terminal.
import assert from "node:assert/strict";
import { AnsiStripper, TextMatcher } from "../src/pty/output_matcher.ts";
import { ModeTracker } from "../src/cli/terminal_modes.ts";

const enc = new TextEncoder();

Deno.test("the stripper removes CSI, OSC, DCS and ESC sequences, also split across chunks", () => {
  const s = new AnsiStripper();
  const parts = [
    "\x1b[1;3",
    "1mred\x1b[0m \x1b]0;ti",
    "tle\x07plain\x1bP1$r0m\x1b",
    "\\ \x1b(0q\x1b(B \x1b=\x1b[?2004hok",
  ];
  assert.equal(parts.map((p) => s.push(p)).join(""), "red plain q ok");
});

Deno.test("the stripper turns CR, LF and CR LF into one line break and drops other controls", () => {
  const s = new AnsiStripper();
  assert.equal(s.push("a\r\nb\rc\nd\x07\x08e\tf\r"), "a\nb\nc\nde\tf\n");
  assert.equal(s.push("\ng"), "g"); // the CR LF split across chunks is one break
});

Deno.test("a literal pattern is found across chunk boundaries, once", () => {
  const m = new TextMatcher("ready>", false);
  assert.equal(m.feed("boot... rea"), undefined);
  assert.equal(m.feed("dy> "), "ready>");
  const m2 = new TextMatcher("xyz", false);
  assert.equal(m2.feed("xy"), undefined);
  assert.equal(m2.feed("q z"), undefined); // "xyq z" does not hold it
});

Deno.test("a regex pattern matches lines (m flag) and across chunks within the kept tail", () => {
  const m = new TextMatcher("^\\$ $", true);
  assert.equal(m.feed("building\n"), undefined);
  assert.equal(m.feed("$ "), "$ ");
  const n = new TextMatcher("done in \\d+ ms", true);
  assert.equal(n.feed("done in 1"), undefined);
  assert.equal(n.feed("23 ms\n"), "done in 123 ms");
  assert.equal(new TextMatcher("a.c", true).test("xxabcxx"), "abc");
  assert.equal(new TextMatcher("a.c", false).test("xxabcxx"), undefined);
});

function restoreAfter(...chunks: string[]): string {
  const t = new ModeTracker();
  for (const c of chunks) t.scan(enc.encode(c));
  return t.restore();
}

Deno.test("the mode tracker undoes nothing when nothing was changed", () => {
  assert.equal(restoreAfter("plain text\r\nmore\r\n", "\x1b[1mbold\x1b[0m"), "");
});

Deno.test("the mode tracker leaves the alternate screen only if the program entered it", () => {
  assert.equal(restoreAfter("\x1b[?1049h", "full screen"), "\x1b[?1049l");
  assert.equal(restoreAfter("\x1b[?1049h", "x", "\x1b[?1049l"), "");
  assert.equal(restoreAfter("\x1b[?47h"), "\x1b[?47l");
});

Deno.test("the mode tracker undoes each mode still set, split sequences included", () => {
  assert.equal(restoreAfter("\x1b[?25", "l"), "\x1b[?25h");
  assert.equal(restoreAfter("\x1b[?1000;1006h"), "\x1b[?1000l\x1b[?1006l");
  assert.equal(restoreAfter("\x1b[?2004h\x1b[?1h\x1b="), "\x1b[?2004l\x1b[?1l\x1b>");
  assert.equal(restoreAfter("\x1b[?7l"), "\x1b[?7h");
  assert.equal(restoreAfter("\x1b[4h"), "\x1b[4l");
  assert.equal(restoreAfter("\x1b[5 q"), "\x1b[0 q");
  assert.equal(restoreAfter("\x1b[>1u\x1b[>3u"), "\x1b[<2u");
  assert.equal(restoreAfter("\x1b[2;20r"), "\x1b7\x1b[r\x1b8");
  assert.equal(restoreAfter("\x1b[31m"), "\x1b[0m");
  assert.equal(restoreAfter("\x1b[?1004h\x1b[?1004l"), "");
});

Deno.test("the mode tracker reports the first title so the caller can save the old one", () => {
  const t = new ModeTracker();
  assert.equal(t.scan(enc.encode("no title")), false);
  assert.equal(t.scan(enc.encode("\x1b]2;vim: a.txt\x07")), true);
  assert.equal(t.scan(enc.encode("\x1b]0;again\x1b\\")), false);
  assert.equal(t.restore(), "\x1b[23;0t");
});

Deno.test("a terminal reset (ESC c) clears what the tracker would undo", () => {
  assert.equal(restoreAfter("\x1b[?25l\x1b[?1049h", "\x1bc"), "");
});

Deno.test("the unfinished UTF-8 character at the end of output is found, across chunks", async () => {
  const { incompleteUtf8 } = await import("../src/pty/session.ts");
  const none = new Uint8Array(0);
  const b = (...x: number[]) => new Uint8Array(x);
  assert.deepEqual(incompleteUtf8(none, enc.encode("abc")), none);
  assert.deepEqual(incompleteUtf8(none, enc.encode("a你")), none);
  assert.deepEqual(incompleteUtf8(none, b(0x61, 0xe4, 0xbd)), b(0xe4, 0xbd));
  assert.deepEqual(incompleteUtf8(b(0xe4), b(0xbd)), b(0xe4, 0xbd));
  assert.deepEqual(incompleteUtf8(b(0xe4, 0xbd), b(0xa0)), none);
  assert.deepEqual(incompleteUtf8(none, b(0xf0, 0x9f, 0x98)), b(0xf0, 0x9f, 0x98));
});

Deno.test("the stripper says when output may have drawn elsewhere than the stream shows", () => {
  const s = new AnsiStripper();
  s.push("plain\r\nlines \x1b[32mgreen\x1b[0m\r\n");
  assert.equal(s.takeMotion(), false);
  for (const moving of ["\x1b[5;1H", "a\rb", "x\x08y", "\x1b[K", "\x1bM", "\x1b[2A"]) {
    s.push(moving);
    assert.equal(s.takeMotion(), true, JSON.stringify(moving));
  }
  assert.equal(s.takeMotion(), false);
});

Deno.test("a matcher set finds many literals in one pass, regexes each, and forgets what matched", async () => {
  const { MatcherSet } = await import("../src/pty/output_matcher.ts");
  const set = new MatcherSet<number>();
  for (let i = 0; i < 100; i++) set.add(i, `never-${i}`, false);
  set.add(100, "a.b", false); // a literal: the dot is a dot
  set.add(101, "^done \\d+$", true);
  assert.deepEqual(set.feed("x".repeat(10_000)), []);
  assert.deepEqual(set.feed("axb never-4"), [[4, "never-4"]]);
  // "never-4" and "2" were split across chunks: together they are "never-42".
  assert.deepEqual(set.feed("2 and a."), [[42, "never-42"]]);
  assert.deepEqual(set.feed("b\ndone 7\n"), [[101, "done 7"], [100, "a.b"]]);
  assert.equal(set.size, 98);
  assert.deepEqual(set.test("a line with never-99 in it"), [[9, "never-9"], [99, "never-99"]]);
  set.delete(0);
  assert.equal(set.size, 95);
});
