import assert from "node:assert/strict";
import {
  BadRequestError,
  type Client,
  connect,
  ConnectionClosedError,
  NoModelError,
  NotFoundError,
  UmadError,
} from "../src/client/mod.ts";
import { startDaemon } from "./_daemon.ts";
import { delay } from "../src/protocol/async.ts";

Deno.test("the client says hello, pings and reads metrics in both codecs", async () => {
  const d = await startDaemon();
  try {
    for (const codec of ["json", "msgpack"] as const) {
      const c = await connect({ socket: d.socket, codec, reconnect: false });
      assert.equal(c.hello.server, "umad");
      assert.equal(c.hello.protocol, 1);
      assert.equal(c.hello.pid, d.pid);
      const pong = await c.request({ type: "ping", t: codec });
      assert.deepEqual([pong.event, pong.t], ["pong", codec]);
      const m = await c.metrics();
      assert.ok((m.connections as Record<string, number>).now >= 1);
      await c.close();
    }
  } finally {
    await d.stop();
  }
});

Deno.test("daemon errors reject with typed errors carrying the protocol code", async () => {
  const d = await startDaemon();
  const c = await connect({ socket: d.socket, reconnect: false });
  try {
    await assert.rejects(c.rawRequest({ type: "nope" }), (e: unknown) => {
      return e instanceof BadRequestError && e.code === "E_PROTO_BAD_REQUEST";
    });
    await assert.rejects(c.request({ type: "cancel", target: "ghost" }), NotFoundError);
    await assert.rejects(
      c.request({ type: "generate", prompt: "x" }),
      (e: unknown) => e instanceof UmadError && e.code === "E_NO_MODEL",
    );
    await assert.rejects(c.tokenize("x"), NoModelError);
    await assert.rejects(c.embed("x"), NoModelError);
    // Many requests in flight at once on one connection, answered by id.
    const pongs = await Promise.all(
      Array.from({ length: 200 }, (_, i) => c.request({ type: "ping", t: i })),
    );
    pongs.forEach((p, i) => assert.equal(p.t, i));
  } finally {
    await c.close();
    await d.stop();
  }
});

Deno.test("connecting to a full daemon rejects with E_BUSY, and the connected client goes on", async () => {
  const d = await startDaemon(["--max-clients", "1"]);
  // The readiness probe of startDaemon may still hold the one place for a moment.
  let first: Client | undefined;
  for (let i = 0; first === undefined; i++) {
    try {
      first = await connect({ socket: d.socket, reconnect: false });
    } catch (e) {
      if (i === 100 || !(e instanceof UmadError && e.code === "E_BUSY")) throw e;
      await delay(20);
    }
  }
  try {
    await assert.rejects(
      connect({ socket: d.socket, reconnect: false }),
      (e: unknown) => e instanceof UmadError && e.code === "E_BUSY",
    );
    assert.ok(await first.ping() > 0);
  } finally {
    await first.close();
    await d.stop();
  }
});

Deno.test("connecting to a socket with no daemon fails with a clear error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      connect({ socket: `${dir}/none.sock`, reconnect: false }),
      (e: unknown) => e instanceof ConnectionClosedError && /Cannot connect/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the client reconnects by itself with backoff after the daemon restarts", async () => {
  const first = await startDaemon();
  const dir = first.dir;
  const c = await connect({
    socket: first.socket,
    reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
  });
  let second: Awaited<ReturnType<typeof startDaemon>> | undefined;
  try {
    const firstPid = c.hello.pid;
    const reconnected = new Promise<void>((r) => c.onReconnect(r));
    const dropped = new Promise<Error>((r) => c.onDisconnect(r));
    first.process.kill("SIGKILL");
    await first.process.status;
    assert.ok((await dropped) instanceof ConnectionClosedError);
    // A request made while disconnected waits for the new connection.
    const pending = c.request({ type: "ping", t: "waited" });
    await delay(300);
    second = await startDaemon([], { dir, socket: first.socket });
    await reconnected;
    assert.equal((await pending).t, "waited");
    assert.equal(c.hello.pid, second.pid);
    assert.notEqual(c.hello.pid, firstPid);
  } finally {
    await c.close();
    await second?.stop();
    await first.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("requests in flight fail with ConnectionClosedError when the daemon goes away", async () => {
  const d = await startDaemon();
  const c = await connect({ socket: d.socket, reconnect: false });
  try {
    // A stream that stays open: a terminal attach (the daemon always has terminals).
    const spawned = await c.request({ type: "pty.spawn", argv: ["sleep", "30"] });
    const attach = c.stream(
      { type: "pty.attach", session: spawned.session },
      (ev) => ev.event === "pty.exit",
    );
    const first = await attach.next();
    assert.equal((first.value as Record<string, unknown>).event, "pty.snapshot");
    d.process.kill("SIGKILL");
    await assert.rejects(
      (async () => {
        for await (const _ of attach) { /* drain */ }
      })(),
      ConnectionClosedError,
    );
    await assert.rejects(c.request({ type: "ping" }), ConnectionClosedError);
  } finally {
    await c.close();
    await d.stop();
  }
});
