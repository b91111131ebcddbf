// The client's reconnect and settle guarantees against real sockets: one dial loop at a
// time, nothing left running after a failed connect(), every request settled by close().
import assert from "node:assert/strict";
import {
  type Client,
  connect,
  ConnectionClosedError,
  EventStream,
  UmadError,
} from "../src/client/mod.ts";
import { encodeMessageFrame, FrameDecoder } from "../src/protocol/mod.ts";
import { startDaemon } from "./_daemon.ts";
import { delay, withTimeout } from "../src/protocol/async.ts";

/** How `p` settles, or "pending" after `ms` (a hang guard, not a timing check). */
function settled(p: Promise<unknown>, ms = 5000): Promise<"fulfilled" | "rejected" | "pending"> {
  const outcome = p.then(() => "fulfilled" as const, () => "rejected" as const);
  return withTimeout(outcome, ms).catch(() => "pending" as const);
}

/**
 * A fake daemon that answers the first connection's `hello` and closes every later
 * connection as soon as its `hello` arrives; counts the connections it accepted.
 */
function helloThenHangUp(dir: string) {
  const path = `${dir}/fake.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  let accepted = 0;
  const conns = new Set<Deno.Conn>();
  const serving = (async () => {
    for await (const conn of listener) {
      const n = ++accepted;
      conns.add(conn);
      (async () => {
        const decoder = new FrameDecoder(1 << 20);
        const buf = new Uint8Array(4096);
        try {
          for (;;) {
            const got = await conn.read(buf);
            if (got === null) break;
            for (const payload of decoder.push(buf.slice(0, got))) {
              const msg = JSON.parse(new TextDecoder().decode(payload));
              if (msg.type !== "hello" || n > 1) throw new Error("hang up");
              const reply = {
                event: "hello",
                id: msg.id,
                server: "umad",
                version: "0",
                protocol: 1,
                pid: 1,
              };
              await conn.write(encodeMessageFrame(reply, "json"));
            }
          }
        } catch {
          // hang up
        }
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  })();
  return {
    path,
    get accepted() {
      return accepted;
    },
    /** Drops the connections open now (the first client's). */
    dropAll() {
      for (const c of conns) c.close();
      conns.clear();
    },
    async close() {
      listener.close();
      await serving.catch(() => {});
      for (const c of conns) c.close();
    },
  };
}

Deno.test("a socket that closes during hello does not start a second dial loop", async () => {
  const dir = await Deno.makeTempDir();
  const fake = helloThenHangUp(dir);
  let client: Client | undefined;
  try {
    client = await connect({
      socket: fake.path,
      codec: "json",
      reconnect: { initialDelayMs: 5, maxDelayMs: 5, jitter: 0, maxAttempts: 5 },
    });
    assert.equal(fake.accepted, 1);
    const dropped = new Promise<Error>((r) => client!.onDisconnect(r));
    fake.dropAll();
    await dropped;
    // A request made while reconnecting fails once the loop gives up.
    const pending = client.request({ type: "ping" });
    assert.equal(await settled(pending), "rejected");
    await delay(300);
    // One loop: five attempts after the drop, each hung up during hello, then none.
    assert.equal(fake.accepted, 1 + 5);
  } finally {
    await client?.close();
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a connect() rejected with E_BUSY leaves nothing dialing", async () => {
  const d = await startDaemon(["--max-clients", "1"]);
  let first: Client | undefined;
  try {
    for (let i = 0; first === undefined; i++) {
      try {
        first = await connect({ socket: d.socket, reconnect: false });
      } catch (e) {
        if (i === 100 || !(e instanceof UmadError && e.code === "E_BUSY")) throw e;
        await delay(20);
      }
    }
    const rejectedBefore = (await first.metrics()).connections as Record<string, number>;
    // Default options: reconnect on. The rejection must not leave a loop behind.
    await assert.rejects(
      connect({ socket: d.socket }),
      (e: unknown) => e instanceof UmadError && e.code === "E_BUSY",
    );
    await delay(500);
    const after = (await first.metrics()).connections as Record<string, number>;
    assert.equal(after.rejected, rejectedBefore.rejected + 1);
  } finally {
    await first?.close();
    await d.stop();
  }
});

Deno.test("a connect() to a socket with no daemon leaves no timer or socket behind", async () => {
  // Reconnect on (the default): Deno's op and resource sanitizers fail this test if the
  // rejected connect leaves a dial loop, a timer or an open socket.
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(connect({ socket: `${dir}/none.sock` }), ConnectionClosedError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("close() during the reconnect back-off settles every pending request", async () => {
  const d = await startDaemon();
  const client = await connect({
    socket: d.socket,
    reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
  });
  try {
    const dropped = new Promise<Error>((r) => client.onDisconnect(r));
    d.process.kill("SIGKILL");
    await dropped;
    const pending = [
      client.request({ type: "ping" }),
      client.request({ type: "metrics" }),
    ];
    const stream = client.stream({ type: "generate", prompt: "x" });
    const next = stream.next();
    await client.close();
    for (const p of [...pending, next] as Promise<unknown>[]) {
      assert.equal(await settled(p), "rejected");
      await p.catch((e) => assert.ok(e instanceof ConnectionClosedError, String(e)));
    }
  } finally {
    await client.close();
    await d.stop();
  }
});

Deno.test("leaving for await on a pty.attach stream detaches from the session", async () => {
  const d = await startDaemon();
  const client = await connect({ socket: d.socket, reconnect: false });
  try {
    const spawned = await client.request({ type: "pty.spawn", argv: ["sleep", "30"] });
    const session = spawned.session as string;
    for await (
      const ev of client.stream({ type: "pty.attach", session }, (e) => e.event === "pty.exit")
    ) {
      assert.equal(ev.event, "pty.snapshot");
      break;
    }
    let clients = -1;
    for (let i = 0; i < 100; i++) {
      const list = await client.request({ type: "pty.list" });
      clients = (list.sessions as { session: string; clients: number }[])
        .find((s) => s.session === session)!.clients;
      if (clients === 0) break;
      await delay(50);
    }
    assert.equal(clients, 0);
    await client.request({ type: "pty.kill", session, signal: "SIGKILL" });
  } finally {
    await client.close();
    await d.stop();
  }
});

Deno.test("two concurrent next() calls on an EventStream both settle", async () => {
  const stream = new EventStream("c1", (ev) => ev.event === "eos", () => {});
  const a = stream.next();
  const b = stream.next();
  stream.push({ event: "token", id: "c1", text: "x" });
  stream.push({ event: "eos", id: "c1" });
  assert.equal(await settled(a, 1000), "fulfilled");
  assert.equal(await settled(b, 1000), "fulfilled");
  assert.equal((await a).value?.event, "token");
  assert.equal((await b).value?.event, "eos");
  assert.equal((await stream.next()).done, true);
});
