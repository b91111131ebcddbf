// node-pty parity: the client's Terminal next to @lydell/node-pty (a peer we did not
// write), behaviour by behaviour, with real programs and a real daemon.
import { childrenOf } from "./_proc.ts";
import { delay } from "../src/protocol/async.ts";
import assert from "node:assert/strict";
import * as nodePty from "@lydell/node-pty";
import type { Client } from "../src/client/client.ts";
import { SpawnError } from "../src/client/errors.ts";
import { spawn, type Terminal } from "../src/client/terminal.ts";
import { type startPtyDaemon, waitUntil, withPtyClient } from "./pty_helpers.ts";

type Daemon = Awaited<ReturnType<typeof startPtyDaemon>>;

const withClient = (fn: (c: Client, d: Daemon) => Promise<void>) => withPtyClient(fn);

const env = () => Deno.env.toObject() as Record<string, string>;

function exitOf(t: { onExit(cb: (e: { exitCode: number; signal?: unknown }) => void): unknown }) {
  return new Promise<{ exitCode: number; signal?: unknown }>((r) => t.onExit(r));
}

function textOf(t: Terminal<string>): () => string {
  let text = "";
  t.onData((d) => text += d);
  return () => text;
}

Deno.test("kill() ends the program with exit code 0 and SIGHUP, as node-pty's does", async () => {
  const peer = nodePty.spawn("cat", [], { env: env() });
  const peerExit = exitOf(peer);
  await delay(200);
  peer.kill();
  const p = await peerExit;
  await withClient(async (c) => {
    const t = await spawn(c, "cat");
    const exited = exitOf(t);
    await delay(200);
    await t.kill();
    const e = await exited;
    assert.equal(e.exitCode, p.exitCode);
    assert.equal(e.exitCode, 0);
    assert.equal(e.signal, "SIGHUP");
    // node-pty reports the signal as a number: the client's old-style event does too.
    assert.equal(p.signal, 1);
    const t2 = await spawn(c, "cat");
    const old = new Promise<[number, number | undefined]>((r) =>
      t2.on("exit", (code, signal) => r([code, signal]))
    );
    await delay(200);
    await t2.kill();
    assert.deepEqual(await old, [0, 1]);
  });
});

Deno.test("a program that cannot be executed: E_SPAWN by default, node-pty's exit code 1 on request", async () => {
  const peer = nodePty.spawn("/bin/bogus.exe", [], { env: env() });
  let peerText = "";
  peer.onData((d) => peerText += d);
  const p = await exitOf(peer);
  assert.equal(p.exitCode, 1);
  assert.match(peerText, /execvp\(3\) failed/);
  await withClient(async (c) => {
    await assert.rejects(spawn(c, "/bin/bogus.exe"), (e: Error) => {
      assert.ok(e instanceof SpawnError);
      assert.equal((e as SpawnError).code, "E_SPAWN");
      assert.match(e.message, /"\/bin\/bogus\.exe": not found/);
      return true;
    });
    const t = await spawn(c, "/bin/bogus.exe", [], { spawnError: "exit" });
    const text = textOf(t);
    const e = await exitOf(t);
    assert.equal(e.exitCode, p.exitCode);
    assert.match(text(), /^execvp\(3\) failed\.: Cannot spawn "\/bin\/bogus\.exe": not found/);
    await t.closed;
  });
});

Deno.test("100 spawn/kill cycles leak no descriptors and no children in the daemon", async () => {
  await withClient(async (c, d) => {
    const fds = () => [...Deno.readDirSync(`/proc/${d.pid}/fd`)].length;
    const children = () => childrenOf(d.pid).length;
    // Warm up: the emulator worker and the poller open descriptors on first use.
    const w = await spawn(c, "cat");
    const wExit = exitOf(w);
    await w.kill();
    await wExit;
    await waitUntil(() => children() === 0, 5000, "warm-up reaped");
    // A leak stays; a descriptor the daemon has open for a moment (a /proc read) does not:
    // the fewest seen over a few looks is what is held, before and after.
    const held = async () => {
      let least = Infinity;
      for (let i = 0; i < 5; i++) {
        least = Math.min(least, fds());
        await delay(50);
      }
      return least;
    };
    const before = await held();
    for (let i = 0; i < 100; i++) {
      const t = await spawn(c, "cat");
      const exited = exitOf(t);
      await t.kill();
      assert.equal((await exited).exitCode, 0);
    }
    await waitUntil(() => children() === 0, 5000, "children reaped");
    await waitUntil(() => fds() <= before, 5000, `fds back to ${before} (now ${fds()})`);
    assert.equal(await held(), before);
    const m = (await c.metrics()).pty as Record<string, number>;
    assert.equal(m.live_children, 0);
    assert.equal(m.sessions, 0);
  });
});

Deno.test("spam and close: a burst written, then the end at once, loses nothing before exit", async () => {
  await withClient(async (c) => {
    // Input: 200 kB typed in one go, then EOF; the program counts what it got.
    const n = 200_000;
    const t = await spawn(c, "/bin/sh", ["-c", `stty raw -echo; printf R; head -c ${n} | wc -c`]);
    const text = textOf(t);
    await waitUntil(() => text().includes("R"), 5000, "ready");
    t.write("y".repeat(n));
    const e = await exitOf(t);
    assert.equal(e.exitCode, 0);
    assert.match(text(), new RegExp(`R\\s*${n}\\s`));
    // Output: a burst and exit right after; every byte arrives before onExit.
    const u = await spawn(c, "/bin/sh", ["-c", "seq 1 100000; exit 7"]);
    let bytes = 0;
    let atExit = -1;
    u.onBinary((b) => bytes += b.length);
    u.onExit(() => atExit = bytes);
    await u.closed;
    const expected = new TextEncoder().encode(
      Array.from({ length: 100000 }, (_, i) => `${i + 1}\r\n`).join(""),
    ).length;
    assert.equal(atExit, expected);
  });
});

Deno.test("encoding: utf8 strings by default, bytes with null, split characters held back", async () => {
  await withClient(async (c) => {
    const t = await spawn(c, "/bin/sh", [
      "-c",
      "printf '\\344\\275'; sleep 0.2; printf '\\240 ok'",
    ]);
    const chunks: string[] = [];
    t.onData((d) => chunks.push(d));
    await t.closed;
    assert.ok(chunks.every((d) => typeof d === "string"));
    assert.equal(chunks.join(""), "你 ok");
    const b = await spawn(c, "/bin/sh", ["-c", "printf '\\377\\000x'"], { encoding: null });
    const got: Uint8Array[] = [];
    b.onData((d) => got.push(d));
    await b.closed;
    assert.ok(got.every((d) => d instanceof Uint8Array));
    assert.deepEqual([...got.flatMap((x) => [...x])], [0xff, 0x00, 0x78]);
  });
});

Deno.test("on('data'), pid, cols, rows and process match what node-pty reports", async () => {
  const peer = nodePty.spawn("bash", ["--norc", "--noprofile"], { cols: 91, rows: 21, env: env() });
  await delay(400);
  const peerBefore = peer.process;
  peer.write("sleep 30\r");
  await delay(400);
  const peerDuring = peer.process;
  peer.kill();
  await withClient(async (c) => {
    const t = await spawn(c, "bash", ["--norc", "--noprofile"], { cols: 91, rows: 21 });
    let old = "";
    t.on("data", (d) => old += d);
    assert.ok(t.pid > 0);
    assert.deepEqual([t.cols, t.rows], [91, 21]);
    await waitUntil(() => old.length > 0, 5000, "prompt");
    assert.equal(t.process, peerBefore);
    t.write("sleep 30\r");
    await waitUntil(() => t.process === peerDuring, 5000, `process ${peerDuring}`);
    assert.equal(t.process, "sleep");
    t.write("\x03");
    await waitUntil(() => t.process === peerBefore, 5000, "back to bash");
    t.resize(100, 30);
    assert.deepEqual([t.cols, t.rows], [100, 30]);
    const listed = await c.request({ type: "pty.list" });
    assert.equal((listed.sessions as { process: string }[])[0].process, "bash");
    await t.kill();
  });
});

Deno.test("pause() holds output in the daemon, resume() delivers it in order, exit last", async () => {
  await withClient(async (c) => {
    const t = await spawn(c, "/bin/sh", [
      "-c",
      "read x; seq 1 2000; read y; seq 2001 2100; exit 3",
    ]);
    const text = textOf(t);
    let exited = false;
    t.onExit(() => exited = true);
    await delay(300);
    t.pause();
    t.write("\r");
    await delay(500);
    assert.doesNotMatch(text(), /2000/, "nothing arrives while paused");
    t.write("\r");
    await delay(500);
    assert.equal(exited, false, "the exit waits for the output");
    t.resume();
    await t.closed;
    assert.ok(exited);
    const lines = text().split("\r\n").filter((l) => /^\d+$/.test(l)).map(Number);
    assert.deepEqual(lines, Array.from({ length: 2100 }, (_, i) => i + 1));
  });
});

Deno.test("a paused terminal past the daemon's cap gets a snapshot on resume, bounded", async () => {
  await withClient(async (c) => {
    const t = await spawn(c, "/bin/sh", ["-c", "read x; seq 1 1000000; echo END; exec sleep 60"]);
    let snapshots = 0;
    t.onSnapshot(() => snapshots++);
    let bytes = 0;
    t.onBinary((b) => bytes += b.length);
    await waitUntil(() => snapshots === 1, 5000, "first snapshot");
    t.pause();
    t.write("\r");
    // The whole output (6.9 MB) goes by while paused: more than the 4 MiB held.
    await waitUntil(() => ((c as unknown as { x?: number }).x ?? 0) === 0, 100);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const cap = await c.request({ type: "pty.capture", session: t.session });
      if (String(cap.data).includes("END")) break;
      await delay(100);
    }
    const m = (await c.metrics()).pty as Record<string, number>;
    assert.ok(m.dropped_backlogs >= 1, JSON.stringify(m));
    const beforeResume = bytes;
    t.resume();
    await waitUntil(() => snapshots === 2, 5000, "snapshot after resume");
    assert.ok(bytes - beforeResume < 1_000_000, `${bytes - beforeResume} bytes after resume`);
    await t.kill();
  });
});

Deno.test("a listener that throws does not wedge the terminal: exit and closed still come", async () => {
  await withClient(async (c) => {
    const t = await spawn(c, "/bin/sh", ["-c", "echo one; sleep 0.2; echo two; exit 5"]);
    const errors: unknown[] = [];
    const origError = console.error;
    console.error = (...a: unknown[]) => errors.push(a);
    try {
      t.onData(() => {
        throw new Error("listener bug");
      });
      const good = textOf(t);
      const e = await exitOf(t);
      await t.closed;
      assert.equal(e.exitCode, 5);
      assert.match(good(), /one[\s\S]*two\r\n$/);
      assert.ok(errors.length >= 1, "the throw was reported");
    } finally {
      console.error = origError;
    }
  });
});
