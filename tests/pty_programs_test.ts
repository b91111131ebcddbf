// deno-lint-ignore-file no-control-regex
// Terminals driven by programs, through a real daemon and the client library: capture
// the screen and scrollback as text, wait for output, follow sessions with watch.
import { delay } from "../src/protocol/async.ts";
import assert from "node:assert/strict";
import type { Client } from "../src/client/client.ts";
import { capture, waitFor } from "../src/client/capture.ts";
import { spawn } from "../src/client/terminal.ts";
import { watch, type WatchEvent } from "../src/client/watch.ts";
import { withPtyClient } from "./pty_helpers.ts";

const withClient = (fn: (c: Client) => Promise<void>, args: string[] = []) =>
  withPtyClient((c) => fn(c), args);

async function spawned(c: Client, script: string, cols = 80, rows = 24): Promise<string> {
  const r = await c.request({
    type: "pty.spawn",
    argv: ["/bin/sh", "-c", script],
    cols,
    rows,
  });
  return r.session as string;
}

Deno.test("capture gives the last screen and a scrollback range of a program that printed 10,000 lines", async () => {
  await withClient(async (c) => {
    const session = await spawned(c, "seq 1 10000; printf 'done> '; exec sleep 60", 100, 30);
    assert.equal((await waitFor(c, session, "done> ", { timeoutMs: 20_000 })).matched, true);
    const screen = await capture(c, session);
    const lines = screen.data.split("\n").slice(0, -1);
    assert.equal(lines.length, 30);
    assert.deepEqual(lines.slice(0, 3), ["9972", "9973", "9974"]);
    assert.deepEqual(lines.slice(-2), ["10000", "done>"]);
    assert.deepEqual([screen.cols, screen.rows], [100, 30]);
    assert.deepEqual(screen.cursor, { x: 6, y: 29 });
    // Scrollback: -1 is the line just above the screen.
    const back = await capture(c, session, { start: -500, end: -498 });
    assert.equal(back.data, "9472\n9473\n9474\n");
    // The default 1000 lines of scrollback: asking for more gives what is kept.
    const all = await capture(c, session, { start: -100_000, end: -1 });
    const kept = all.data.split("\n").slice(0, -1);
    assert.equal(kept.length, 1000);
    assert.equal(kept.at(-1), "9971");
  });
});

Deno.test("capture trims trailing blanks, handles wide characters, and keeps colors in ansi", async () => {
  await withClient(async (c) => {
    const session = await spawned(
      c,
      "printf '\\033[31mred\\033[0m and 你好 wide    \\r\\n  indented\\r\\n'; exec sleep 60",
      40,
      5,
    );
    assert.equal((await waitFor(c, session, "indented")).matched, true);
    const text = await capture(c, session);
    assert.equal(text.data, "red and 你好 wide\n  indented\n\n\n\n");
    const ansi = await capture(c, session, { format: "ansi", start: 0, end: 0 });
    assert.match(ansi.data, /\x1b\[31mred\x1b\[0m and 你好 wide/);
  });
});

Deno.test("wait resolves when a prompt appears after 2 s, and at the timeout without one", async () => {
  await withClient(async (c) => {
    const session = await spawned(c, "echo starting; sleep 2; printf 'db ready> '; exec sleep 60");
    const t0 = Date.now();
    const r = await waitFor(c, session, /ready> $/, { timeoutMs: 15_000 });
    assert.deepEqual(r, { matched: true, text: "ready> " });
    assert.ok(Date.now() - t0 >= 1500, "the prompt came after the sleep");
    // Already on the screen: matched at once.
    assert.equal((await waitFor(c, session, "starting")).matched, true);
    // Never printed: the timeout.
    const none = await waitFor(c, session, "never printed", { timeoutMs: 300 });
    assert.deepEqual(none, { matched: false });
  });
});

Deno.test("wait sees output that scrolled past, lines redrawn in place, and ends unmatched when the program exits", async () => {
  await withClient(async (c) => {
    const enter = new TextEncoder().encode("\r");
    const s1 = await spawned(c, "read x; seq 1 50000; read y; exit 0", 80, 10);
    const scrolled = waitFor(c, s1, "\n31337\n");
    const exited = waitFor(c, s1, "not there", { timeoutMs: 20_000 });
    c.send({ type: "pty.input", session: s1, data: enter });
    assert.deepEqual(await scrolled, { matched: true, text: "\n31337\n" });
    c.send({ type: "pty.input", session: s1, data: enter });
    assert.deepEqual(await exited, { matched: false });
    // A line rewritten in place with cursor movement, as TUIs do: only the screen row
    // ever holds "progress 100%"; the output stream never does.
    const s2 = await spawned(
      c,
      "printf 'progress 10%%'; sleep 0.3; printf '\\r\\033[Kprogress'; sleep 0.2; " +
        "printf '\\033[10G100%%'; exec sleep 60",
    );
    assert.equal((await waitFor(c, s2, "progress 100%", { timeoutMs: 10_000 })).matched, true);
    const m = (await c.metrics()).pty as Record<string, number>;
    assert.equal(m.waits, 0);
  });
});

Deno.test("watch reports sessions created, resized, retitled and exited, as an async iterator", async () => {
  await withClient(async (c) => {
    const events: WatchEvent[] = [];
    const it = watch(c);
    const reading = (async () => {
      for await (const ev of it) {
        events.push(ev);
        if (ev.kind === "exited") break; // leaving the loop cancels the watch
      }
    })();
    await delay(100);
    const term = await spawn(c, "/bin/sh", ["-c", "printf '\\033]2;my job\\007'; read x; exit 4"], {
      cols: 90,
      rows: 20,
      name: "job",
    });
    term.resize(100, 25);
    await delay(200);
    term.write("\r");
    await reading;
    const kinds = events.map((e) => e.kind);
    assert.deepEqual(kinds.filter((k) => k !== "title"), ["created", "resized", "exited"]);
    assert.ok(kinds.includes("title"));
    assert.deepEqual(events[0], {
      kind: "created",
      session: term.session,
      name: "job",
      pid: term.pid,
      cols: 90,
      rows: 20,
    });
    assert.deepEqual(events.find((e) => e.kind === "resized"), {
      kind: "resized",
      session: term.session,
      cols: 100,
      rows: 25,
    });
    assert.equal(events.find((e) => e.kind === "title")?.title, "my job");
    assert.deepEqual(events.at(-1), {
      kind: "exited",
      session: term.session,
      code: 4,
      signal: null,
      reason: "exited",
    });
    await delay(100);
    const m = (await c.metrics()).pty as Record<string, number>;
    assert.equal(m.watches, 0, "leaving the loop ended the watch in the daemon");
    // pty.list has the title and the foreground process.
    const list = await c.request({ type: "pty.list" });
    const row = (list.sessions as { title?: string; process?: string }[])[0];
    assert.equal(row.title, "my job");
  });
});

Deno.test("watch with sessions names follows only those", async () => {
  await withClient(async (c) => {
    const a = await c.request({ type: "pty.spawn", argv: ["sleep", "60"], name: "keep" });
    const it = watch(c, { sessions: ["keep"] });
    const got: WatchEvent[] = [];
    const reading = (async () => {
      for await (const ev of it) {
        got.push(ev);
        if (ev.kind === "exited") break;
      }
    })();
    await delay(100);
    const b = await c.request({ type: "pty.spawn", argv: ["true"], name: "other" });
    await delay(300);
    await c.request({ type: "pty.kill", session: a.session as string });
    await reading;
    assert.deepEqual(got.map((e) => [e.kind, e.session]), [["exited", a.session]]);
    assert.notEqual(b.session, a.session);
  });
});
