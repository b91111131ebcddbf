// The PTY service driven directly with fake streams and real processes.
import { childrenOf } from "./_proc.ts";
import assert from "node:assert/strict";
import { createPtyService, liveChildren } from "../src/pty/mod.ts";
import { bytes, call, type FakeStream, ptyFds, waitUntil } from "./pty_helpers.ts";
import { delay } from "../src/protocol/async.ts";

type PtyService = ReturnType<typeof createPtyService>;

async function withService(
  fn: (svc: PtyService) => Promise<void>,
  opts: Parameters<typeof createPtyService>[0] = {},
): Promise<void> {
  const svc = createPtyService(opts);
  try {
    await fn(svc);
  } finally {
    await svc.close();
  }
}

async function spawn(svc: PtyService, msg: Record<string, unknown>): Promise<string> {
  const s = await call(svc, { type: "pty.spawn", ...msg });
  assert.equal(s.failure, undefined, s.failure?.message);
  assert.equal(s.events[0].event, "pty.spawned");
  return s.events[0].session as string;
}

function attach(svc: PtyService, session: string, conn: number, extra = {}) {
  return call(svc, { type: "pty.attach", session, ...extra }, conn);
}

function sh(script: string) {
  return { argv: ["/bin/sh", "-c", script] };
}

Deno.test("input sent to a session echoes back in its output", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, { argv: ["cat"] });
    const a = await attach(svc, id, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.snapshot"), 5000, "snapshot");
    await call(svc, { type: "pty.input", session: id, data: bytes("hello umad\r") }, 1);
    await a.until(() => a.text().split("hello umad").length >= 3, 5000, "echo and cat output");
  });
});

Deno.test("the child sees TERM, UMAD_SESSION, cwd, env and the requested size", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, {
      ...sh('read x; echo "T=$TERM S=$UMAD_SESSION D=$(pwd) E=$FOO Z=$(stty size)"'),
      cwd: "/tmp",
      env: { FOO: "bar" },
      cols: 100,
      rows: 30,
    });
    const a = await attach(svc, id, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    await call(svc, { type: "pty.input", session: id, data: bytes("\r") }, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.exit"));
    assert.match(a.text(), new RegExp(`T=xterm-256color S=${id} D=/tmp E=bar Z=30 100`));
  });
});

Deno.test("a resize shows in stty size", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, sh("stty size; read x; stty size; read x"));
    const a = await attach(svc, id, 1);
    await a.until(() => a.text().includes("24 80"), 5000, "first size");
    await call(svc, { type: "pty.resize", session: id, cols: 132, rows: 43 }, 1);
    await call(svc, { type: "pty.input", session: id, data: bytes("\r") }, 1);
    await a.until(() => a.text().includes("43 132"), 5000, "new size");
    const list = await call(svc, { type: "pty.list" });
    const entry = (list.events[0].sessions as { cols: number; rows: number }[])[0];
    assert.deepEqual([entry.cols, entry.rows], [132, 43]);
  });
});

Deno.test("Ctrl-C stops a foreground sleep", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, sh("echo START; sleep 30; echo AFTER $?; read x"));
    const a = await attach(svc, id, 1);
    await a.until(() => a.text().includes("START"), 5000, "START");
    await delay(100);
    await call(svc, { type: "pty.input", session: id, data: bytes("\x03") }, 1);
    // Without the signal, sleep 30 would outlast this wait.
    await a.until((ev) => ev.some((e) => e.event === "pty.exit"), 5000, "exit");
    const exit = a.events.find((e) => e.event === "pty.exit")!;
    assert.equal(exit.signal, "SIGINT");
  });
});

Deno.test("two clients see the same output", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, sh("read x; seq 1 2000; read x"));
    const a = await attach(svc, id, 1);
    const b = await attach(svc, id, 2);
    await a.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    await b.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    await call(svc, { type: "pty.input", session: id, data: bytes("\r") }, 1);
    await a.until(() => a.text().includes("2000\r\n"), 5000, "a's output");
    await b.until(() => b.text().includes("2000\r\n"), 5000, "b's output");
    assert.deepEqual(a.output(), b.output());
    const list = await call(svc, { type: "pty.list" });
    assert.equal((list.events[0].sessions as { clients: number }[])[0].clients, 2);
  });
});

Deno.test("output produced while detached is in the snapshot after re-attach", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, sh("read x; echo WHILE-AWAY-$((6*7)); read x"));
    const a = await attach(svc, id, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    const d = await call(svc, { type: "pty.detach", session: id }, 1);
    assert.equal(d.events[0].event, "pty.detached");
    assert.ok(a.ended);
    assert.equal(a.events.at(-1)!.event, "pty.detached");
    // Input from a connection with no attachment is accepted.
    await call(svc, { type: "pty.input", session: id, data: bytes("\r") }, 3);
    await waitUntil(() => {
      const s = svc.metrics().pty.bytes_read as number;
      return s > 10;
    });
    await delay(200);
    const b = await attach(svc, id, 2);
    await b.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    const snap = new TextDecoder().decode(
      b.events.find((e) => e.event === "pty.snapshot")!.data as Uint8Array,
    );
    assert.match(snap, /WHILE-AWAY-42/);
    assert.equal(b.output().length, 0);
  });
});

Deno.test("exit code and signal are reported after the last output", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, sh("read x; seq 1 20000; exit 7"));
    const a = await attach(svc, id, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    await call(svc, { type: "pty.input", session: id, data: bytes("\r") }, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.exit"), 10000, "exit");
    const last = a.events.at(-1)!;
    assert.equal(last.event, "pty.exit");
    assert.equal(last.code, 7);
    assert.equal(last.signal, null);
    assert.ok(a.text().includes("19999\r\n20000\r\n"));
    assert.ok(a.ended);

    const id2 = await spawn(svc, sh("echo bye; kill -TERM $$"));
    const b = await attach(svc, id2, 1);
    await b.until((ev) => ev.some((e) => e.event === "pty.exit"), 5000, "exit");
    assert.equal(b.events.at(-1)!.signal, "SIGTERM");
    assert.equal(b.events.at(-1)!.code, null);
    assert.match(b.text(), /bye/);

    const list = await call(svc, { type: "pty.list" });
    const sessions = list.events[0].sessions as { session: string; state: string; code: number }[];
    const s1 = sessions.find((s) => s.session === id)!;
    assert.equal(s1.state, "exited");
    assert.equal(s1.code, 7);
  });
});

Deno.test("kill ends a running session and removes it from the list", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, { argv: ["sleep", "60"], name: "napper" });
    const a = await attach(svc, id, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    const k = await call(svc, { type: "pty.kill", session: "napper", signal: "TERM" });
    assert.equal(k.events[0].event, "pty.killed");
    await a.until((ev) => ev.some((e) => e.event === "pty.exit"));
    assert.equal(a.events.at(-1)!.signal, "SIGTERM");
    const list = await call(svc, { type: "pty.list" });
    assert.deepEqual(list.events[0].sessions, []);
    const missing = await call(svc, { type: "pty.attach", session: id });
    assert.equal(missing.failure?.code, "E_NOT_FOUND");
  });
});

Deno.test("an exited session is removed when its TTL passes", async () => {
  await withService(async (svc) => {
    await spawn(svc, { argv: ["true"] });
    // The first session of a process starts the emulator worker: seconds on a cold cache.
    await waitUntil(() => svc.metrics().pty.exited_total === 1, 30_000, "the warm-up exit");
    assert.equal(svc.metrics().pty.sessions, 1);
    await waitUntil(() => svc.metrics().pty.sessions === 0, 3000, "ttl removal");
  }, { exitedTtlMs: 200 });
});

Deno.test("a read-only client cannot write or resize", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, { argv: ["cat"] });
    const ro = await attach(svc, id, 5, { readonly: true });
    await ro.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    const w = await call(svc, { type: "pty.input", session: id, data: bytes("x") }, 5);
    assert.equal(w.failure?.code, "E_PROTO_BAD_REQUEST");
    assert.match(w.failure!.message, /read-only/);
    const r = await call(svc, { type: "pty.resize", session: id, cols: 10, rows: 10 }, 5);
    assert.equal(r.failure?.code, "E_PROTO_BAD_REQUEST");
    // Another, writable client types; the read-only one sees it.
    const rw = await attach(svc, id, 6);
    await rw.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    await call(svc, { type: "pty.input", session: id, data: bytes("from-rw\r") }, 6);
    await ro.until(() => ro.text().includes("from-rw"));
  });
});

Deno.test("the most recently active writable client decides the size", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, { argv: ["cat"] });
    const a = await attach(svc, id, 1, { cols: 100, rows: 40 });
    const b = await attach(svc, id, 2, { cols: 90, rows: 20 });
    await a.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    await b.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    const size = async () => {
      const l = await call(svc, { type: "pty.list" });
      const s = (l.events[0].sessions as { cols: number; rows: number }[])[0];
      return [s.cols, s.rows];
    };
    assert.deepEqual(await size(), [90, 20]);
    await call(svc, { type: "pty.input", session: id, data: bytes("a") }, 1);
    assert.deepEqual(await size(), [100, 40]);
    await call(svc, { type: "pty.detach", session: id }, 1);
    assert.deepEqual(await size(), [90, 20]);
    await call(svc, { type: "pty.attach", session: id, readonly: true, cols: 50, rows: 10 }, 3);
    assert.deepEqual(await size(), [90, 20]);
  });
});

Deno.test("unknown sessions are E_NOT_FOUND", async () => {
  await withService(async (svc) => {
    for (const type of ["pty.attach", "pty.detach", "pty.kill", "pty.capture", "pty.pause"]) {
      const s = await call(svc, { type, session: "nope" });
      assert.equal(s.failure?.code, "E_NOT_FOUND", type);
      assert.match(s.failure!.message, /"nope": not found/);
    }
    const i = await call(svc, { type: "pty.input", session: "nope", data: bytes("x") });
    assert.equal(i.failure?.code, "E_NOT_FOUND");
  });
});

Deno.test("programs that cannot start are E_SPAWN with the cause in the message", async () => {
  const dir = await Deno.makeTempDir({ prefix: "umad-spawn-" });
  try {
    await Deno.writeTextFile(`${dir}/no-x.sh`, "echo hi\n");
    await Deno.writeFile(`${dir}/garbage`, new Uint8Array([0x7f, 0x00, 0x01, 0x02]), {
      mode: 0o755,
    });
    await Deno.writeTextFile(`${dir}/file`, "");
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ argv: ["no-such-program-xyz"] }, /"no-such-program-xyz": not found in PATH/],
      [{ argv: [`${dir}/missing`] }, /not found/],
      [{ argv: [`${dir}/no-x.sh`] }, /not executable/],
      [{ argv: [`${dir}/garbage`] }, /not executable \(not a binary, and no #! line\)/],
      [{ argv: [dir] }, /is a directory/],
      [{ argv: ["true"], cwd: "/no/such/dir" }, /in "\/no\/such\/dir": no such directory/],
      [{ argv: ["true"], cwd: `${dir}/file` }, /not a directory/],
      // One argument over the kernel's 128 KiB per-string limit: E2BIG from exec.
      [{ argv: ["/bin/echo", "x".repeat(200_000)] }, /argument list too long/],
    ];
    await withService(async (svc) => {
      for (const [msg, re] of cases) {
        const s = await call(svc, { type: "pty.spawn", ...msg });
        assert.equal(s.failure?.code, "E_SPAWN", JSON.stringify(msg).slice(0, 100));
        assert.match(s.failure!.message, re);
      }
      assert.equal(svc.metrics().pty.sessions, 0);
      assert.equal(liveChildren(), 0);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("maxSessions refuses spawns past the limit with E_BUSY, forgetting exited ones first", async () => {
  await withService(async (svc) => {
    const a = await spawn(svc, { argv: ["sleep", "30"] });
    const b = await spawn(svc, { argv: ["true"] });
    await waitUntil(() => svc.metrics().pty.exited_total === 1);
    // The exited one makes room; the running one does not.
    const c = await spawn(svc, { argv: ["sleep", "30"] });
    const full = await call(svc, { type: "pty.spawn", argv: ["true"] });
    assert.equal(full.failure?.code, "E_BUSY");
    assert.match(full.failure!.message, /2 terminal sessions are running already/);
    const ids = ((await call(svc, { type: "pty.list" })).events[0].sessions as {
      session: string;
    }[]).map((s) => s.session);
    assert.deepEqual(ids.sort(), [a, c].sort());
    assert.ok(!ids.includes(b));
    const m = svc.metrics().pty;
    assert.equal(m.max_sessions, 2);
    assert.equal(m.spawns_refused, 1);
  }, { maxSessions: 2 });
});

Deno.test("out of file descriptors at spawn is E_BUSY, not E_INTERNAL, and the service recovers", async () => {
  // A child process with a low descriptor limit runs the service and spawns until it fails.
  const script = `
    import { createPtyService } from "${new URL("../src/pty/mod.ts", import.meta.url).href}";
    import { call } from "${new URL("./pty_helpers.ts", import.meta.url).href}";
    const svc = createPtyService({ maxSessions: 10000 });
    const codes = new Set();
    let ok = 0;
    for (let i = 0; i < 200; i++) {
      const s = await call(svc, { type: "pty.spawn", argv: ["sleep", "30"] });
      if (s.failure) { codes.add(s.failure.code); break; }
      ok++;
    }
    const list = (await call(svc, { type: "pty.list" })).events[0].sessions;
    await call(svc, { type: "pty.kill", session: list[0].session, signal: "KILL" });
    await new Promise((r) => setTimeout(r, 300));
    const again = await call(svc, { type: "pty.spawn", argv: ["true"] });
    console.log(JSON.stringify({ ok, codes: [...codes], again: again.failure?.code ?? "ok",
      refused: svc.metrics().pty.spawns_refused }));
    await svc.close();
  `;
  const out = await new Deno.Command("/bin/sh", {
    args: ["-c", `ulimit -n 64 && exec "$0" eval "$1"`, Deno.execPath(), script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const r = JSON.parse(text.trim().split("\n").at(-1)!);
  assert.ok(r.ok > 0 && r.ok < 200, text);
  assert.deepEqual(r.codes, ["E_BUSY"]);
  assert.equal(r.again, "ok");
  assert.ok(r.refused >= 1);
});

Deno.test("all 256 byte values pass through a raw session byte-exact", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, sh("stty raw -echo; printf READY; exec cat"));
    const a = await attach(svc, id, 1);
    await a.until(() => a.text().includes("READY"), 5000, "READY");
    const all = new Uint8Array(256).map((_, i) => i);
    const before = a.output().length;
    await call(svc, { type: "pty.input", session: id, data: all }, 1);
    await a.until(() => a.output().length >= before + 256, 5000, "256 bytes");
    assert.deepEqual(a.output().subarray(before), all);
  });
});

Deno.test("a client that stops reading does not stop another client's output", async () => {
  await withService(async (svc) => {
    const id = await spawn(svc, sh("read x; seq 1 300000; read x"));
    const slow = await attach(svc, id, 1);
    const fast = await attach(svc, id, 2);
    await slow.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    await fast.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
    slow.setWritable(false);
    await call(svc, { type: "pty.input", session: id, data: bytes("\r") }, 2);
    await fast.until(() => fast.text().includes("300000\r\n"), 20000, "fast client output");
    const slowBytes = slow.output().length;
    assert.ok(slowBytes < 300000, `slow client got ${slowBytes} bytes while not reading`);
    assert.ok(svc.metrics().pty.dropped_backlogs >= 1);
    // Once it drains it gets a fresh snapshot with the end of the output.
    const snapsBefore = slow.events.filter((e) => e.event === "pty.snapshot").length;
    slow.setWritable(true);
    await slow.until(
      (ev) => ev.filter((e) => e.event === "pty.snapshot").length > snapsBefore,
      5000,
      "fresh snapshot",
    );
    const snap = new TextDecoder().decode(
      slow.events.findLast((e) => e.event === "pty.snapshot")!.data as Uint8Array,
    );
    assert.match(snap, /299999\r\n300000/);
  });
});

Deno.test("100 sessions spawned and exited leave no zombies and no leaked fds", async () => {
  const fds = () => ptyFds("/proc/self/fd");
  const zombies = () => childrenOf(Deno.pid).filter((c) => c.state === "Z").map((c) => c.pid);
  // Warm up once so lazily opened descriptors (worker, eventfd) are not counted.
  await withService(async (svc) => {
    await spawn(svc, { argv: ["true"] });
    // The first session of a process starts the emulator worker: seconds on a cold cache.
    await waitUntil(() => svc.metrics().pty.exited_total === 1, 30_000, "the warm-up exit");
  });
  const fdsBefore = fds();
  await withService(async (svc) => {
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push(await spawn(svc, sh(`echo s${i}; exit $((${i} % 5))`)));
    await waitUntil(() => svc.metrics().pty.exited_total === 100, 30000, "100 exits");
    assert.equal(liveChildren(), 0);
    assert.deepEqual(zombies(), []);
    // Every master is closed: the PTY descriptors are the ones this process had before
    // (a test run from a terminal has its own stdin on a pts).
    assert.deepEqual(fds(), fdsBefore);
    const list = await call(svc, { type: "pty.list" });
    const sessions = list.events[0].sessions as { state: string; code: number }[];
    assert.equal(sessions.length, 100);
    assert.ok(sessions.every((s, i) => s.state === "exited" && s.code === i % 5));
  });
  assert.deepEqual(zombies(), []);
  assert.deepEqual(fds(), fdsBefore);
});

Deno.test("closing the service hangs up running sessions and reaps them", async () => {
  const svc = createPtyService();
  let stream: FakeStream | undefined;
  try {
    const id = await spawn(svc, { argv: ["sleep", "100"] });
    stream = await attach(svc, id, 1);
    await stream.until((ev) => ev.some((e) => e.event === "pty.snapshot"));
  } finally {
    await svc.close();
  }
  assert.equal(liveChildren(), 0);
  assert.equal(stream!.events.at(-1)!.event, "pty.exit");
});

Deno.test("the leak test passes when the test runner's own stdin is a terminal", async () => {
  // Run the 100-session test with a PTY as stdin, stdout and stderr (as from a shell).
  await withService(async (svc) => {
    const id = await spawn(svc, {
      argv: [
        Deno.execPath(),
        "test",
        "-A",
        new URL(import.meta.url).pathname,
        "--filter",
        "100 sessions spawned and exited",
      ],
      cwd: new URL("..", import.meta.url).pathname,
      cols: 200,
      rows: 50,
    });
    const a = await attach(svc, id, 1);
    await a.until((ev) => ev.some((e) => e.event === "pty.exit"), 120_000, "the nested run");
    const exit = a.events.find((e) => e.event === "pty.exit")!;
    assert.equal(exit.code, 0, a.text().slice(-3000));
    assert.match(a.text(), /1 passed/);
  }, { exitedTtlMs: 60_000 });
});

Deno.test("scrollback is capped in bytes: a wide terminal keeps fewer lines", async () => {
  // 100 columns × 12 bytes a cell: 120,000 bytes hold 100 lines.
  await withService(async (svc) => {
    const id = await spawn(svc, {
      ...sh("seq 1 3000; printf END; exec sleep 60"),
      cols: 100,
      rows: 10,
    });
    const w = await call(svc, { type: "pty.wait", session: id, pattern: "END", timeout_ms: 10000 });
    await w.until((e) => e.length > 0, 12000, "END");
    const c = await call(svc, { type: "pty.capture", session: id, start: -100000 });
    await c.until((e) => e.length > 0);
    const lines = (c.events[0].data as string).split("\n").slice(0, -1);
    assert.equal(lines.length, 100 + 10);
    assert.equal(lines[0], String(3000 - 9 - 100 + 1));
    const m = svc.metrics().pty;
    assert.equal(m.scrollback_lines, 1000);
    assert.equal(m.scrollback_bytes_max, 120_000);
    assert.ok(m.screen_bytes > 0 && m.screen_bytes <= 110 * 100 * 12, String(m.screen_bytes));
  }, { scrollbackBytes: 120_000 });
});
