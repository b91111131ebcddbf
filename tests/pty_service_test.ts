// The PTY service driven directly with fake streams and real processes.
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
    await waitUntil(() => svc.metrics().pty.exited_total === 1);
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

Deno.test("unknown sessions and programs are E_NOT_FOUND", async () => {
  await withService(async (svc) => {
    for (const type of ["pty.attach", "pty.detach", "pty.kill"]) {
      const s = await call(svc, { type, session: "nope" });
      assert.equal(s.failure?.code, "E_NOT_FOUND", type);
      assert.match(s.failure!.message, /"nope": not found/);
    }
    const i = await call(svc, { type: "pty.input", session: "nope", data: bytes("x") });
    assert.equal(i.failure?.code, "E_NOT_FOUND");
    const p = await call(svc, { type: "pty.spawn", argv: ["no-such-program-xyz"] });
    assert.equal(p.failure?.code, "E_NOT_FOUND");
    const c = await call(svc, { type: "pty.spawn", argv: ["true"], cwd: "/no/such/dir" });
    assert.equal(c.failure?.code, "E_NOT_FOUND");
  });
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
  const zombies = () => {
    const out: number[] = [];
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (fields[0] === "Z" && Number(fields[1]) === Deno.pid) out.push(Number(e.name));
      } catch {
        // gone
      }
    }
    return out;
  };
  // Warm up once so lazily opened descriptors (worker, eventfd) are not counted.
  await withService(async (svc) => {
    await spawn(svc, { argv: ["true"] });
    await waitUntil(() => svc.metrics().pty.exited_total === 1);
  });
  const fdsBefore = fds();
  await withService(async (svc) => {
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push(await spawn(svc, sh(`echo s${i}; exit $((${i} % 5))`)));
    await waitUntil(() => svc.metrics().pty.exited_total === 100, 30000, "100 exits");
    assert.equal(liveChildren(), 0);
    assert.deepEqual(zombies(), []);
    // Every master is closed.
    assert.deepEqual(fds(), []);
    const list = await call(svc, { type: "pty.list" });
    const sessions = list.events[0].sessions as { state: string; code: number }[];
    assert.equal(sessions.length, 100);
    assert.ok(sessions.every((s, i) => s.state === "exited" && s.code === i % 5));
  });
  assert.deepEqual(zombies(), []);
  assert.deepEqual(fds(), fdsBefore);
  assert.deepEqual(fdsBefore, []);
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
