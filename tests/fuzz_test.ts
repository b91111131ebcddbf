import assert from "node:assert/strict";
import { encode as msgpackEncode } from "@msgpack/msgpack";
import { encodeFrame, ERROR_CODES, UMA_ERROR_CODES } from "../src/protocol/mod.ts";
import { RawClient, startDaemon } from "./_daemon.ts";
import { delay } from "../src/protocol/async.ts";

/** A small seeded PRNG (mulberry32) so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TYPES = [
  "hello",
  "ping",
  "metrics",
  "generate",
  "cancel",
  "pty.attach",
  "pty.input",
  "pty.resize",
  "pty.detach",
  "pty.kill",
  "pty.list",
  "bogus",
];

function randomValue(rnd: () => number, depth = 0): unknown {
  const k = Math.floor(rnd() * (depth > 2 ? 6 : 9));
  switch (k) {
    case 0:
      return null;
    case 1:
      return rnd() < 0.5;
    case 2:
      return Math.floor((rnd() - 0.5) * 2 ** (rnd() * 40));
    case 3:
      return (rnd() - 0.5) * 1e6;
    case 4:
      return "x".repeat(Math.floor(rnd() * 20)) + String.fromCharCode(Math.floor(rnd() * 0xd7ff));
    case 5:
      return Uint8Array.from({ length: Math.floor(rnd() * 16) }, () => Math.floor(rnd() * 256));
    case 6:
      return Array.from({ length: Math.floor(rnd() * 4) }, () => randomValue(rnd, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rnd() * 5); i > 0; i--) o[`k${i}`] = randomValue(rnd, depth + 1);
      return o;
    }
  }
}

const FIELDS = ["id", "session", "prompt", "max_tokens", "cols", "rows", "data", "target", "t"];

function randomRequest(rnd: () => number, n: number): Record<string, unknown> {
  const m: Record<string, unknown> = { type: TYPES[Math.floor(rnd() * TYPES.length)] };
  if (rnd() < 0.9) m.id = `f${n}`;
  for (const f of FIELDS) if (rnd() < 0.3) m[f] = randomValue(rnd);
  if (m.type === "generate" && rnd() < 0.5) m.prompt = "hi";
  return m;
}

function payloadFor(rnd: () => number, n: number): Uint8Array {
  const req = randomRequest(rnd, n);
  const kind = rnd();
  let bytes: Uint8Array = rnd() < 0.5
    ? new TextEncoder().encode(JSON.stringify(req, (_k, v) => v instanceof Uint8Array ? [...v] : v))
    : msgpackEncode(req);
  if (kind < 0.25) {
    // Flip a few bytes.
    bytes = bytes.slice();
    for (let i = 0; i < 1 + Math.floor(rnd() * 4); i++) {
      bytes[Math.floor(rnd() * bytes.length)] = Math.floor(rnd() * 256);
    }
  } else if (kind < 0.4) {
    bytes = bytes.slice(0, Math.max(1, Math.floor(rnd() * bytes.length)));
  } else if (kind < 0.5) {
    bytes = Uint8Array.from({ length: 1 + Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256));
  }
  return bytes;
}

Deno.test("10,000 random and mutated frames never disturb the daemon or another client", async () => {
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? Date.now() % 1e9);
  const rnd = prng(seed);
  const d = await startDaemon(["--max-frame", "65536"]);
  const watcher = await RawClient.connect(d.socket);
  let fuzzer = await RawClient.connect(d.socket);
  let stopPinging = false;
  let pings = 0;
  const pinger = (async () => {
    while (!stopPinging) {
      const id = `w${pings}`;
      const reply = await watcher.request({ type: "ping", id, t: pings });
      assert.deepEqual(reply, { event: "pong", id, t: pings }, `seed ${seed}`);
      pings++;
      await delay(2);
    }
  })();
  // UMA Serve's form (a map with "prompt" and no "type") is answered with its own codes.
  const codes = new Set<string>([...ERROR_CODES, ...UMA_ERROR_CODES]);
  let replies = 0;
  let reconnects = 0;
  const check = (m: Record<string, unknown>) => {
    replies++;
    assert.equal(typeof m.event, "string", `seed ${seed}: ${JSON.stringify(m)}`);
    if (m.event === "error") {
      assert.ok(codes.has(m.code as string), `seed ${seed}: unknown code ${m.code}`);
      assert.equal(typeof m.message, "string");
      assert.notEqual(m.code, "E_INTERNAL", `seed ${seed}: ${m.message}`);
    }
  };
  try {
    for (let n = 0; n < 10_000; n++) {
      let frame: Uint8Array;
      const r = rnd();
      if (r < 0.003) frame = new Uint8Array([0, 0, 0, 0]);
      else if (r < 0.006) frame = new Uint8Array([0xff, 0xff, 0xff, 0x7f]);
      else frame = encodeFrame(payloadFor(rnd, n));
      try {
        await fuzzer.writeRaw(frame);
      } catch {
        // the daemon closed us after a framing error: the write raced the close
      }
      if (n % 200 === 0 || fuzzer.closed) {
        for (const m of fuzzer.queued.splice(0)) check(m);
      }
      if (fuzzer.closed || r < 0.006) {
        await fuzzer.done.catch(() => {});
        for (const m of fuzzer.queued.splice(0)) check(m);
        fuzzer.close();
        fuzzer = await RawClient.connect(d.socket);
        reconnects++;
      }
    }
    // Everything sent on the last connection is answered before this ping.
    await fuzzer.request({ type: "ping", id: "last" });
    for (const m of fuzzer.queued.splice(0)) check(m);
    stopPinging = true;
    await pinger;
    assert.ok(replies > 5000, `only ${replies} replies (seed ${seed})`);
    assert.ok(pings > 10, `only ${pings} pings went through (seed ${seed})`);
    assert.ok(reconnects > 0);
    const m = await watcher.request({ type: "metrics", id: "m" });
    assert.equal(m.event, "metrics");
  } finally {
    stopPinging = true;
    await pinger.catch(() => {});
    watcher.close();
    fuzzer.close();
    const status = await d.stop();
    assert.equal(status.code, 0, `daemon exited ${status.code} (seed ${seed})`);
  }
});
