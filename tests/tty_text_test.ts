import assert from "node:assert/strict";
import { escapeControls, escapeControlsKeepLines } from "../src/cli/tty_text.ts";
import { formatSessions } from "../src/cli/ls.ts";

Deno.test("control sequences become visible escapes, printable text stays as it is", () => {
  assert.equal(escapeControls("\x1b]52;c;cHduZWQ=\x07"), "\\x1b]52;c;cHduZWQ=\\x07");
  assert.equal(escapeControls("a\nb\tc\rd\x7f\u009b2J"), "a\\nb\\tc\\rd\\x7f\\x9b2J");
  assert.equal(escapeControls("héllo 字 😀 ~"), "héllo 字 😀 ~");
  // Running text keeps its line breaks and tabs, nothing else.
  assert.equal(escapeControlsKeepLines("one\r\ntwo\tx\x1b[2J\x00"), "one\r\ntwo\tx\\x1b[2J\\x00");
  for (let c = 0; c < 0xa0; c++) {
    const ch = String.fromCharCode(c);
    const isControl = c < 0x20 || c >= 0x7f;
    assert.equal(escapeControls(ch) !== ch, isControl, `U+${c.toString(16)}`);
    const keeps = ch === "\n" || ch === "\t" || ch === "\r";
    assert.equal(escapeControlsKeepLines(ch) !== ch, isControl && !keeps, `U+${c.toString(16)}`);
  }
});

Deno.test("umad ls shows a session name with escapes escaped, in one row", () => {
  const table = formatSessions([{
    session: "a1",
    name: "evil\x1b[2J\x1b]0;title\x07\nrow",
    pid: 1,
    cols: 80,
    rows: 24,
    clients: 0,
    state: "running",
    created: 0,
  }], 0);
  assert.ok([...table.replaceAll("\n", "")].every((c) => c >= " " && c !== "\x7f"));
  assert.equal(table.split("\n").length, 2);
  assert.match(table, /evil\\x1b\[2J\\x1b\]0;title\\x07\\nrow/);
});
