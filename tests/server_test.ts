import assert from "node:assert/strict";
import { encodeFrame, encodePayload } from "../src/protocol/mod.ts";
import { concat } from "../src/protocol/bytes.ts";
import { RawClient, rssOf, runUmad, startDaemon } from "./_daemon.ts";
import { delay } from "../src/protocol/async.ts";

Deno.test("hello, ping and metrics answer in the codec of the request", async () => {
  const d = await startDaemon();
  const c = await RawClient.connect(d.socket);
  try {
    const hello = await c.request({ type: "hello", id: "h", client: "test" });
    assert.equal(hello.event, "hello");
    assert.equal(hello.server, "umad");
    assert.equal(hello.protocol, 1);
    assert.equal(hello.pid, d.pid);
    const pong = await c.request({ type: "ping", id: "p", t: 42 }, "msgpack");
    assert.deepEqual(pong, { event: "pong", id: "p", t: 42 });
    const m = await c.request({ type: "metrics", id: "m" });
    const metrics = m.metrics as Record<string, Record<string, number>>;
    assert.equal(metrics.connections.now, 1);
    assert.ok((metrics.frames_in as unknown as number) >= 3);
  } finally {
    c.close();
    await d.stop();
  }
});

Deno.test("many requests in one write are all answered, by id", async () => {
  const d = await startDaemon();
  const c = await RawClient.connect(d.socket);
  try {
    const frames = Array.from(
      { length: 500 },
      (_, i) => encodeFrame(encodePayload({ type: "ping", id: `p${i}`, t: i }, "json")),
    );
    const joined = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let off = 0;
    for (const f of frames) {
      joined.set(f, off);
      off += f.length;
    }
    await c.writeRaw(joined);
    for (let i = 0; i < 500; i++) assert.equal((await c.nextFor(`p${i}`)).t, i);
  } finally {
    c.close();
    await d.stop();
  }
});

Deno.test("a zero-length frame gets E_PROTO_INVALID_LEN and the connection closes", async () => {
  const d = await startDaemon();
  const c = await RawClient.connect(d.socket);
  try {
    await c.writeRaw(new Uint8Array([0, 0, 0, 0]));
    const err = await c.next();
    assert.equal(err.event, "error");
    assert.equal(err.code, "E_PROTO_INVALID_LEN");
    await c.done;
    assert.ok(c.closed);
  } finally {
    c.close();
    await d.stop();
  }
});

Deno.test("an oversize frame is refused from its header, before any payload is sent", async () => {
  const d = await startDaemon(["--max-frame", "1024"]);
  const c = await RawClient.connect(d.socket);
  try {
    await c.writeRaw(new Uint8Array([0x01, 0x04, 0, 0])); // 1025 bytes announced, none sent
    const err = await c.next();
    assert.equal(err.code, "E_PROTO_FRAME_TOO_LARGE");
    await c.done;
    assert.ok(c.closed);
  } finally {
    c.close();
    await d.stop();
  }
});

Deno.test("request errors leave the connection usable", async () => {
  const d = await startDaemon();
  const c = await RawClient.connect(d.socket);
  try {
    await c.writeRaw(encodeFrame(new TextEncoder().encode("{not json")));
    assert.equal((await c.next()).code, "E_PROTO_INVALID_JSON");
    await c.writeRaw(encodeFrame(new Uint8Array([0xc1, 0x00])));
    assert.equal((await c.next()).code, "E_PROTO_INVALID_JSON");
    const unknown = await c.request({ type: "teleport", id: "u" });
    assert.equal(unknown.code, "E_PROTO_BAD_REQUEST");
    assert.match(unknown.message as string, /teleport/);
    const missing = await c.request({ type: "pty.attach", id: "m" });
    assert.equal(missing.code, "E_PROTO_BAD_REQUEST");
    assert.match(missing.message as string, /session/);
    const noModel = await c.request({ type: "generate", id: "g", prompt: "hi" });
    assert.equal(noModel.code, "E_NO_MODEL");
    const cancel = await c.request({ type: "cancel", id: "c", target: "nothing" });
    assert.equal(cancel.code, "E_NOT_FOUND");
    assert.equal((await c.request({ type: "ping", id: "still" })).event, "pong");
  } finally {
    c.close();
    await d.stop();
  }
});

Deno.test("the socket's directory is 0700 and the socket 0600", async () => {
  const parent = await Deno.makeTempDir();
  const d = await startDaemon([], { socket: `${parent}/nested/umad.sock` });
  try {
    assert.equal(Deno.statSync(`${parent}/nested`).mode! & 0o777, 0o700);
    assert.equal(Deno.statSync(`${parent}/nested/umad.sock`).mode! & 0o777, 0o600);
  } finally {
    await d.stop();
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("a default socket directory open to group or others is refused with exit code 2", async () => {
  const runtime = await Deno.makeTempDir();
  try {
    Deno.mkdirSync(`${runtime}/umad`);
    Deno.chmodSync(`${runtime}/umad`, 0o755);
    const r = await runUmad(["serve", "--no-model"], {
      env: { XDG_RUNTIME_DIR: runtime, UMAD_SOCKET: "" },
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /must not grant group or other access/);
  } finally {
    await Deno.remove(runtime, { recursive: true });
  }
});

Deno.test("a second daemon on a live socket exits 2 and the first keeps serving", async () => {
  const d = await startDaemon();
  try {
    const r = await runUmad(["serve", "--no-model", "--socket", d.socket]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /already serving/);
    const c = await RawClient.connect(d.socket);
    assert.equal((await c.request({ type: "ping", id: "1" })).event, "pong");
    c.close();
  } finally {
    await d.stop();
  }
});

Deno.test("a stale socket left by a killed daemon is replaced", async () => {
  const first = await startDaemon();
  const dir = first.dir;
  first.process.kill("SIGKILL");
  await first.process.status;
  assert.ok(Deno.lstatSync(first.socket).isSocket, "kill -9 leaves the socket file");
  const second = await startDaemon([], { dir, socket: first.socket });
  try {
    const c = await RawClient.connect(second.socket);
    const hello = await c.request({ type: "hello", id: "h" });
    assert.equal(hello.pid, second.pid);
    c.close();
  } finally {
    await second.stop();
    await first.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("past --max-clients the next connection gets E_BUSY and is closed", async () => {
  const d = await startDaemon(["--max-clients", "3"]);
  const clients: RawClient[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const c = await RawClient.connect(d.socket);
      await c.request({ type: "ping", id: "x" });
      clients.push(c);
    }
    const extra = await RawClient.connect(d.socket);
    clients.push(extra);
    const err = await extra.next();
    assert.equal(err.code, "E_BUSY");
    await extra.done;
    assert.ok(extra.closed);
    // Room again once one leaves.
    clients[0].close();
    await delay(100);
    const again = await RawClient.connect(d.socket);
    clients.push(again);
    assert.equal((await again.request({ type: "ping", id: "y" })).event, "pong");
  } finally {
    for (const c of clients) c.close();
    await d.stop();
  }
});

Deno.test("a connection over its request rate gets E_RATE_LIMITED and stays open", async () => {
  const d = await startDaemon(["--rate-limit", "20"]);
  const c = await RawClient.connect(d.socket);
  try {
    for (let i = 0; i < 25_000; i++) await c.send({ type: "ping", id: `p${i}` });
    const limited = await c.next((m) => m.code === "E_RATE_LIMITED");
    assert.match(limited.message as string, /20 requests per second/);
    await delay(300);
    assert.equal((await c.request({ type: "ping", id: "after" })).event, "pong");
  } finally {
    c.close();
    await d.stop();
  }
});

Deno.test("--rate-limit 10 lets a burst of 10 through, --rate-burst raises it, not 20,002", async () => {
  const counts: Record<string, { pong: number; limited: number }> = {};
  for (const args of [["--rate-limit", "10"], ["--rate-limit", "10", "--rate-burst", "50"]]) {
    const d = await startDaemon(args);
    const c = await RawClient.connect(d.socket);
    try {
      // 1000 pings in one write: read in one go, so no refill to speak of between them.
      const frames = Array.from(
        { length: 1000 },
        (_, i) => encodeFrame(encodePayload({ type: "ping", id: `p${i}` }, "json")),
      );
      await c.writeRaw(concat(frames));
      const replies = [];
      for (let i = 0; i < 1000; i++) replies.push(await c.next());
      counts[args.join(" ")] = {
        pong: replies.filter((m) => m.event === "pong").length,
        limited: replies.filter((m) => m.code === "E_RATE_LIMITED").length,
      };
    } finally {
      c.close();
      await d.stop();
    }
  }
  const plain = counts["--rate-limit 10"];
  const burst = counts["--rate-limit 10 --rate-burst 50"];
  assert.equal(plain.pong + plain.limited, 1000);
  assert.ok(plain.pong >= 10 && plain.pong < 20, JSON.stringify(counts));
  assert.ok(burst.pong >= 50 && burst.pong < 60, JSON.stringify(counts));
});

Deno.test("a connection that sends nothing gets E_IDLE_TIMEOUT, then is closed", async () => {
  const d = await startDaemon(["--idle-timeout", "300"]);
  const quiet = await RawClient.connect(d.socket);
  const active = await RawClient.connect(d.socket);
  try {
    await active.request({ type: "ping", id: "1" });
    await quiet.done;
    assert.ok(quiet.closed);
    // Told why before the close, not dropped silently.
    assert.equal(quiet.queued.length, 1, JSON.stringify(quiet.queued));
    assert.equal(quiet.queued[0].code, "E_IDLE_TIMEOUT");
    assert.equal(quiet.queued[0].id, null);
    assert.match(quiet.queued[0].message as string, /No request within 300 ms/);
    await delay(400);
    assert.equal((await active.request({ type: "ping", id: "2" })).event, "pong");
  } finally {
    quiet.close();
    active.close();
    await d.stop();
  }
});

Deno.test("SIGTERM stops the daemon with exit 0 and removes its socket", async () => {
  const d = await startDaemon();
  const c = await RawClient.connect(d.socket);
  await c.request({ type: "ping", id: "1" });
  // stop() kills with SIGKILL after 5 s, which would not exit 0.
  const status = await d.stop();
  c.close();
  assert.equal(status.code, 0);
  assert.throws(() => Deno.lstatSync(d.socket), Deno.errors.NotFound);
});

Deno.test("a client that never reads costs bounded memory and others are still answered", async () => {
  const d = await startDaemon(["--max-queue", "262144"]);
  const hog = await Deno.connect({ transport: "unix", path: d.socket });
  const other = await RawClient.connect(d.socket);
  try {
    await other.request({ type: "ping", id: "warm" });
    const before = rssOf(d.pid);
    // 64 KiB of pings per write; each reply is queued for a reader that never reads.
    const ping = encodeFrame(encodePayload({ type: "ping", id: "x".repeat(200) }, "json"));
    const batch = new Uint8Array(ping.length * Math.floor(65536 / ping.length));
    for (let off = 0; off + ping.length <= batch.length; off += ping.length) batch.set(ping, off);
    let sent = 0;
    const pump = (async () => {
      try {
        while (sent < 512 << 20) sent += await hog.write(batch);
      } catch {
        // closed at the end of the test
      }
    })();
    const rtts: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t0 = performance.now();
      assert.equal((await other.request({ type: "ping", id: `o${i}` })).event, "pong");
      rtts.push(performance.now() - t0);
      await delay(10);
    }
    const after = rssOf(d.pid);
    // The daemon stopped reading the hog once its replies filled the cap: the hog's
    // writes stall, and the daemon's memory does not follow what it tried to send.
    assert.ok(sent < 64 << 20, `daemon kept reading from a client that never reads (${sent} B)`);
    assert.ok(
      after - before < 64 << 20,
      `daemon RSS grew by ${((after - before) / 1048576).toFixed(1)} MiB`,
    );
    hog.close();
    await pump;
  } finally {
    try {
      hog.close();
    } catch { /* closed */ }
    other.close();
    await d.stop();
  }
});

Deno.test("a duplicate id in flight is refused and the first request goes on", async () => {
  const d = await startDaemon(["--max-inflight", "2"]);
  const c = await RawClient.connect(d.socket);
  try {
    const spawned = await c.request({ type: "pty.spawn", id: "s", argv: ["cat"] });
    assert.equal(spawned.event, "pty.spawned");
    const session = spawned.session;
    const snap = await c.request({ type: "pty.attach", id: "a", session });
    assert.equal(snap.event, "pty.snapshot");
    const dup = await c.request({ type: "pty.list", id: "a" });
    assert.equal(dup.event, "error");
    assert.equal(dup.code, "E_PROTO_BAD_REQUEST");
    assert.match(dup.message as string, /already in flight/);
    // Two in flight (the attach and a second attach) is the limit set above.
    await c.request({ type: "pty.attach", id: "b", session, readonly: true });
    const over = await c.request({ type: "pty.list", id: "c" });
    assert.equal(over.code, "E_BUSY");
    // The first attach still streams.
    await c.send({ type: "pty.input", session, data: btoa("still here\n") });
    const out = await c.next((m) => m.id === "a" && m.event === "pty.output");
    assert.match(atob(out.data as string), /still here/);
  } finally {
    c.close();
    await d.stop();
  }
});

Deno.test("200 concurrent clients each get every reply, in order, with none lost", async () => {
  const d = await startDaemon();
  const clients = await Promise.all(
    Array.from({ length: 200 }, () => RawClient.connect(d.socket)),
  );
  try {
    await Promise.all(clients.map(async (c, k) => {
      const frames = Array.from(
        { length: 100 },
        (_, i) =>
          encodeFrame(
            encodePayload({ type: "ping", id: `${k}-${i}`, t: i }, k % 2 ? "json" : "msgpack"),
          ),
      );
      for (const f of frames) await c.writeRaw(f);
      for (let i = 0; i < 100; i++) {
        const m = await c.next();
        assert.deepEqual(m, { event: "pong", id: `${k}-${i}`, t: i });
      }
    }));
    const m = await clients[0].request({ type: "metrics", id: "m" });
    assert.equal((m.metrics as Record<string, Record<string, number>>).connections.now, 200);
  } finally {
    for (const c of clients) c.close();
    await d.stop();
  }
});
