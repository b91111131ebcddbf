// The client's core against an in-memory pipe and a manual clock: multiplexing by id,
// one reconnect loop over the back-off table, what close() and a failed connect() leave
// behind, and what leaving a stream sends. No sockets, no sleeping.
import assert from "node:assert/strict";
import {
  type Client,
  connect,
  ConnectionClosedError,
  type Dialer,
  memoryPipe,
  type Message,
  TimeoutError,
  type Transport,
  UmadError,
  UnsafeSocketError,
} from "../src/client/mod.ts";
import { ManualClock } from "../src/protocol/async.ts";
import { decodePayload, encodeMessageFrame, FrameDecoder } from "../src/protocol/mod.ts";

/** How the fake daemon treats one connection. */
type Behaviour = (message: Message, conn: FakeConn) => void;

/** The daemon's end of one in-memory connection. */
class FakeConn {
  readonly received: Message[] = [];
  constructor(readonly end: Transport, readonly codec: "json" | "msgpack" = "json") {}
  reply(message: Message): void {
    this.end.send(encodeMessageFrame(message, this.codec));
  }
  hangUp(): void {
    this.end.destroy();
  }
}

const hello = (m: Message, c: FakeConn) =>
  c.reply({ event: "hello", id: m.id, server: "umad", version: "0", protocol: 1, pid: 42 });

/** Answers hello, ping (as pong with t), and nothing else unless `extra` does. */
const friendly = (extra?: Behaviour): Behaviour => (m, c) => {
  if (m.type === "hello") hello(m, c);
  else if (m.type === "ping") c.reply({ event: "pong", id: m.id ?? null, t: m.t });
  else extra?.(m, c);
};

/** A dialer whose connections are served by `behaviours[n]` (the last one repeats). */
function fakeDaemon(...behaviours: Behaviour[]) {
  const conns: FakeConn[] = [];
  const dialer: Dialer = () => {
    const [client, daemon] = memoryPipe();
    const conn = new FakeConn(daemon);
    const behaviour = behaviours[Math.min(conns.length, behaviours.length - 1)];
    conns.push(conn);
    (async () => {
      const decoder = new FrameDecoder(1 << 20);
      for await (const chunk of daemon) {
        for (const payload of decoder.push(chunk)) {
          const { message } = decodePayload(payload);
          conn.received.push(message);
          behaviour(message, conn);
        }
      }
    })();
    return Promise.resolve(client);
  };
  return { dialer, conns };
}

const noReconnect = { reconnect: false, codec: "json" } as const;

Deno.test("requests in flight at once are answered by id, in any order", async () => {
  const held: Message[] = [];
  const daemon = fakeDaemon(friendly((m, c) => {
    held.push(m);
    // Answer in reverse order once three are waiting.
    if (held.length === 3) {
      for (const r of held.reverse()) {
        c.reply({ event: "pty.list", id: r.id, sessions: [], n: r.n });
      }
    }
  }));
  const client = await connect({ dialer: daemon.dialer, ...noReconnect });
  try {
    const replies = await Promise.all(
      [1, 2, 3].map((n) => client.rawRequest({ type: "pty.list", n })),
    );
    assert.deepEqual(replies.map((r) => r.n), [1, 2, 3]);
    assert.equal(new Set(held.map((m) => m.id)).size, 3);
  } finally {
    await client.close();
  }
});

Deno.test("a failed first connect() leaves no timer and no connection behind", async () => {
  const clock = new ManualClock();
  const busy = fakeDaemon((_m, c) => {
    c.reply({ event: "error", id: null, code: "E_BUSY", message: "full" });
    c.hangUp();
  });
  await assert.rejects(
    connect({ dialer: busy.dialer, clock, codec: "json" }),
    (e: unknown) => e instanceof UmadError && e.code === "E_BUSY",
  );
  await clock.advance(60_000);
  assert.equal(busy.conns.length, 1);
  assert.equal(clock.pending, 0);

  // A daemon that never says hello: the hello deadline, on the injected clock.
  const silent = fakeDaemon(() => {});
  const connecting = connect({ dialer: silent.dialer, clock, timeoutMs: 1000, codec: "json" });
  const failed = assert.rejects(connecting, TimeoutError);
  await clock.advance(1000);
  await failed;
  assert.equal(clock.pending, 0);
  assert.equal(silent.conns.length, 1);
});

Deno.test("one reconnect loop walks the back-off table, whatever fails during hello", async () => {
  const clock = new ManualClock();
  // First connection: a friendly daemon. Then four that hang up during hello. Then friendly.
  const hangUp: Behaviour = (_m, c) => c.hangUp();
  const daemon = fakeDaemon(friendly(), hangUp, hangUp, hangUp, hangUp, friendly());
  const client = await connect({
    dialer: daemon.dialer,
    clock,
    codec: "json",
    reconnect: { initialDelayMs: 100, maxDelayMs: 800, factor: 2, jitter: 0 },
  });
  try {
    let reconnects = 0;
    client.onReconnect(() => reconnects++);
    daemon.conns[0].hangUp();
    await clock.advance(0);
    const waiting = client.request({ type: "ping", t: "after" });
    // Each step: one timer pending (the next back-off), one dial when it fires.
    for (const [i, expected] of [100, 200, 400, 800, 800].entries()) {
      assert.deepEqual(clock.pendingDelays, [expected], `step ${i}`);
      assert.equal(daemon.conns.length, 1 + i);
      await clock.advance(expected);
    }
    assert.equal(daemon.conns.length, 6);
    assert.equal((await waiting).t, "after");
    assert.equal(reconnects, 1);
    assert.ok(client.connected);
    assert.equal(clock.pending, 0);
  } finally {
    await client.close();
  }
});

Deno.test("the reconnect loop gives up after maxAttempts and fails what waits", async () => {
  const clock = new ManualClock();
  const hangUp: Behaviour = (_m, c) => c.hangUp();
  const daemon = fakeDaemon(friendly(), hangUp);
  const client = await connect({
    dialer: daemon.dialer,
    clock,
    codec: "json",
    reconnect: { initialDelayMs: 10, maxDelayMs: 10, jitter: 0, maxAttempts: 3 },
  });
  try {
    daemon.conns[0].hangUp();
    await clock.advance(0);
    const gaveUp = assert.rejects(client.request({ type: "ping" }), ConnectionClosedError);
    await clock.advance(1000);
    await gaveUp;
    assert.equal(daemon.conns.length, 1 + 3);
    assert.equal(clock.pending, 0);
    await assert.rejects(client.request({ type: "ping" }), /Not connected/);
  } finally {
    await client.close();
  }
});

Deno.test("close() during the back-off settles every request and stops the loop", async () => {
  const clock = new ManualClock();
  const daemon = fakeDaemon(friendly());
  const client = await connect({
    dialer: daemon.dialer,
    clock,
    codec: "json",
    reconnect: { initialDelayMs: 5000, jitter: 0 },
  });
  const dropped = new Promise((r) => client.onDisconnect(r));
  daemon.conns[0].hangUp();
  await dropped;
  const waiting = [
    client.request({ type: "ping" }),
    client.stream({ type: "generate", prompt: "x" }).next(),
    client.stream({ type: "watch" }).next(),
  ].map((p) => assert.rejects(p as Promise<unknown>, ConnectionClosedError));
  assert.equal(clock.pending, 1);
  await client.close();
  await Promise.all(waiting);
  assert.equal(clock.pending, 0);
  await clock.advance(60_000);
  assert.equal(daemon.conns.length, 1);
});

Deno.test("requests sent on a dropped connection fail; requests queued meanwhile go out after the reconnect", async () => {
  const clock = new ManualClock();
  const daemon = fakeDaemon(friendly(() => {/* holds every other request */}));
  const client = await connect({
    dialer: daemon.dialer,
    clock,
    codec: "json",
    reconnect: { initialDelayMs: 10, jitter: 0 },
  });
  try {
    const inFlight = assert.rejects(client.request({ type: "pty.list" }), ConnectionClosedError);
    await clock.advance(0);
    daemon.conns[0].hangUp();
    await inFlight;
    const queued = client.request({ type: "ping", t: 7 });
    await clock.advance(10);
    assert.equal((await queued).t, 7);
    assert.deepEqual(daemon.conns[1].received.map((m) => m.type), ["hello", "ping"]);
  } finally {
    await client.close();
  }
});

Deno.test("leaving a stream early cancels generations, attaches and watches, not one-shot requests", async () => {
  const daemon = fakeDaemon(friendly((m, c) => {
    if (m.type === "generate") c.reply({ event: "token", id: m.id, text: "a", token_id: 1 });
    if (m.type === "pty.attach") {
      c.reply({ event: "pty.snapshot", id: m.id, session: "s1", data: "aGk=", cols: 80, rows: 24 });
    }
    if (m.type === "watch") {
      c.reply({ event: "watch.event", id: m.id, kind: "created", session: "s1" });
    }
    if (m.type === "pty.capture") {
      const screen = { session: "s1", data: "aGk=", cols: 80, rows: 24, cursor: { x: 0, y: 0 } };
      c.reply({ event: "pty.capture", id: m.id, ...screen });
    }
  }));
  const client = await connect({ dialer: daemon.dialer, ...noReconnect });
  try {
    const ids: string[] = [];
    for await (const ev of client.stream({ type: "generate", prompt: "x" })) {
      ids.push(ev.id!);
      break;
    }
    for await (const ev of client.stream({ type: "pty.attach", session: "s1" })) {
      ids.push(ev.id!);
      // JSON carries bytes as base64; the client hands them over as bytes.
      assert.ok(ev.event === "pty.snapshot" && ev.data instanceof Uint8Array);
      assert.deepEqual([...ev.data], [0x68, 0x69]);
      break;
    }
    for await (const ev of client.stream({ type: "watch" })) {
      ids.push(ev.id!);
      break;
    }
    // A capture's data is text, which stays text (base64-looking or not).
    const capture = await client.request({ type: "pty.capture", session: "s1" });
    assert.equal(capture.data, "aGk=");
    const pong = client.stream({ type: "ping" });
    await pong.next();
    await pong.return();
    await client.request({ type: "ping" }); // everything before it has been sent
    const cancels = daemon.conns[0].received.filter((m) => m.type === "cancel");
    assert.deepEqual(cancels.map((m) => m.target), ids);
  } finally {
    await client.close();
  }
});

Deno.test("a stream's error event rejects the reader with the typed error", async () => {
  const daemon = fakeDaemon(friendly((m, c) => {
    c.reply({ event: "error", id: m.id, code: "E_NOT_FOUND", message: "no session" });
  }));
  const client = await connect({ dialer: daemon.dialer, ...noReconnect });
  try {
    await assert.rejects(
      client.request({ type: "pty.kill", session: "ghost" }),
      (e: unknown) => e instanceof UmadError && e.code === "E_NOT_FOUND",
    );
    // A client-chosen id already in flight is refused before it is sent.
    const held = client.stream({ type: "watch", id: "w" });
    await assert.rejects(client.request({ type: "watch", id: "w" }), /already in flight/);
    await held.return();
  } finally {
    await client.close();
  }
});

Deno.test("a listener that throws does not stop the others nor the client", async () => {
  const clock = new ManualClock();
  const daemon = fakeDaemon(friendly());
  const client: Client = await connect({
    dialer: daemon.dialer,
    clock,
    codec: "json",
    reconnect: { initialDelayMs: 10, jitter: 0 },
  });
  const thrown: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    thrown.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    let seen = 0;
    client.onDisconnect(() => {
      throw new Error("listener bug");
    });
    client.onDisconnect(() => seen++);
    daemon.conns[0].hangUp();
    await clock.advance(10);
    assert.equal(seen, 1);
    assert.ok(client.connected);
    assert.equal((await client.request({ type: "ping", t: 1 })).t, 1);
    assert.equal((thrown[0] as Error).message, "listener bug");
  } finally {
    globalThis.removeEventListener("error", onError);
    await client.close();
  }
});

Deno.test("tokenize, detokenize and embed send the contract's requests and return its replies", async () => {
  const daemon = fakeDaemon(friendly((m, c) => {
    if (m.type === "tokenize") {
      c.reply({ event: "tokenize", id: m.id, tokens: [1, 2], pieces: ["a", "b"] });
    }
    if (m.type === "detokenize") c.reply({ event: "detokenize", id: m.id, text: "ab" });
    if (m.type === "embed") {
      const usage = { prompt_tokens: 2, total_tokens: 2 };
      c.reply({ event: "embed", id: m.id, embeddings: [[0.5], [0.25]], usage });
    }
  }));
  const client = await connect({ dialer: daemon.dialer, ...noReconnect });
  try {
    const t = await client.tokenize("ab", { pieces: true, special: true });
    assert.deepEqual([t.tokens, t.pieces], [[1, 2], ["a", "b"]]);
    assert.equal(await client.detokenize([1, 2]), "ab");
    const e = await client.embed(["a", "b"]);
    assert.deepEqual(e.embeddings, [[0.5], [0.25]]);
    const sent = daemon.conns[0].received.filter((m) => m.type !== "hello");
    assert.deepEqual(sent.map(({ id: _, ...m }) => m), [
      { type: "tokenize", text: "ab", pieces: true, special: true },
      { type: "detokenize", tokens: [1, 2] },
      { type: "embed", input: ["a", "b"] },
    ]);
  } finally {
    await client.close();
  }
});

Deno.test("a dialer's own refusal reaches connect() with its class; others say Cannot connect", async () => {
  const unsafe: Dialer = () => Promise.reject(new UnsafeSocketError("socket owned by uid 1001"));
  await assert.rejects(connect({ dialer: unsafe }), UnsafeSocketError);
  const refused: Dialer = () => Promise.reject(new Error("Connection refused"));
  await assert.rejects(
    connect({ dialer: refused, socket: "/tmp/x.sock" }),
    (e: unknown) =>
      e instanceof ConnectionClosedError &&
      /Cannot connect to umad at "\/tmp\/x.sock"/.test(e.message) &&
      (e.cause as Error).message === "Connection refused",
  );
});
