// Invalid UTF-8 in a MessagePack str is refused like JSON refuses it (hardening
// finding 3); bin keeps carrying raw bytes. Unit tests, then the real daemon.
import assert from "node:assert/strict";
import { Encoder } from "@msgpack/msgpack";
import { decodePayload, encodeFrame, UmadError } from "../src/protocol/mod.ts";
import { findInvalidUtf8Str, isUtf8 } from "../src/protocol/msgpack_strings.ts";
import { RawClient, startDaemon } from "./_daemon.ts";

const encoder = new Encoder();
const MARK = "\u0001MARK\u0001";
const markBytes = new TextEncoder().encode(MARK);

/** Sequences TextDecoder({fatal}) refuses: bad continuation, lone continuation, overlong, surrogate, above U+10FFFF, truncated. */
const INVALID = [
  [0xc3, 0x28, 0xff],
  [0x80],
  [0xc0, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xe2, 0x82],
];

/** `message` encoded with the MARK string's bytes replaced by `bad` (padded with ASCII). */
function withBytes(message: unknown, bad: number[]): Uint8Array {
  const bytes = encoder.encode(message).slice();
  const at = bytes.findIndex((_, i) => markBytes.every((b, j) => bytes[i + j] === b));
  assert.ok(at >= 0);
  const replacement = [...bad, ...Array(markBytes.length - bad.length).fill(0x61)];
  bytes.set(replacement, at);
  return bytes;
}

function randomValue(depth: number, rnd: () => number): unknown {
  const k = Math.floor(rnd() * (depth > 3 ? 6 : 9));
  switch (k) {
    case 0:
      return Math.floor(rnd() * 2 ** 40) - 2 ** 39;
    case 1:
      return rnd() * 1e6;
    case 2:
      return null;
    case 3:
      return rnd() < 0.5;
    case 4: {
      const len = Math.floor(rnd() * (rnd() < 0.1 ? 70_000 : 40));
      return crypto.getRandomValues(new Uint8Array(Math.min(len, 65536)));
    }
    case 5: {
      const chars = ["a", "é", "字", "😀", "\u0000", "\u07ff", "\uffff", "z"];
      const len = Math.floor(rnd() * (rnd() < 0.1 ? 300 : 20));
      return Array.from({ length: len }, () => chars[Math.floor(rnd() * chars.length)]).join("");
    }
    case 6:
      return Array.from({ length: Math.floor(rnd() * 5) }, () => randomValue(depth + 1, rnd));
    case 7:
    case 8: {
      const out: Record<string, unknown> = {};
      for (let i = Math.floor(rnd() * 20); i > 0; i--) {
        out[`k${i}${rnd() < 0.2 ? "é" : ""}`] = randomValue(depth + 1, rnd);
      }
      return out;
    }
  }
}

function seeded(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
}

Deno.test("isUtf8 agrees with TextDecoder({fatal: true}) on random and edge byte strings", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  const rnd = seeded(3);
  const pieces = [
    [0x61],
    [0x7f],
    [0xc3, 0xa9],
    [0xe5, 0xad, 0x97],
    [0xf0, 0x9f, 0x98, 0x80],
    [0xf4, 0x8f, 0xbf, 0xbf],
    [0xef, 0xbf, 0xbf],
    ...INVALID,
    [0xc1, 0xbf],
    [0xe0, 0x9f, 0xbf],
    [0xf0, 0x8f, 0xbf, 0xbf],
    [0xf5, 0x80, 0x80, 0x80],
    [0xff],
  ];
  for (let n = 0; n < 20_000; n++) {
    const parts: number[] = [];
    const count = Math.floor(rnd() * 12);
    for (let k = 0; k < count; k++) {
      if (rnd() < 0.3) parts.push(Math.floor(rnd() * 256));
      else if (rnd() < 0.2) parts.push(...Array(Math.floor(rnd() * 40)).fill(0x61));
      else parts.push(...pieces[Math.floor(rnd() * pieces.length)]);
    }
    // Unaligned views too: the ASCII fast path reads words.
    const pad = Math.floor(rnd() * 4);
    const bytes = new Uint8Array(pad + parts.length);
    bytes.set(parts, pad);
    let expected = true;
    try {
      fatal.decode(bytes.subarray(pad));
    } catch {
      expected = false;
    }
    assert.equal(
      isUtf8(bytes, pad, bytes.length),
      expected,
      `[${parts.map((b) => b.toString(16))}]`,
    );
  }
});

Deno.test("valid MessagePack of every shape has no invalid str", () => {
  const rnd = seeded(7);
  for (let i = 0; i < 200; i++) {
    const value = { type: "x", v: randomValue(0, rnd), big: 2 ** 60, neg: -(2 ** 40) };
    const bytes = encoder.encode(value);
    assert.equal(findInvalidUtf8Str(bytes), -1, JSON.stringify(value).slice(0, 200));
  }
});

Deno.test("an invalid UTF-8 str is found wherever it is: value, key, nested, long", () => {
  const rnd = seeded(11);
  for (const bad of INVALID) {
    const shapes = [
      { type: "generate", id: "1", prompt: MARK },
      { [MARK]: 1 },
      { a: [1, 2, { b: [null, MARK] }] },
      { pad: randomValue(0, rnd), s: MARK + "x".repeat(300) },
      { pad: "é".repeat(40_000), s: MARK },
    ];
    for (const shape of shapes) {
      const bytes = withBytes(shape, bad);
      assert.ok(findInvalidUtf8Str(bytes) >= 0, `${bad} in ${JSON.stringify(shape).slice(0, 80)}`);
      assert.throws(
        () => decodePayload(bytes),
        (e: unknown) => e instanceof UmadError && e.code === "E_PROTO_INVALID_JSON",
      );
    }
    // The same bytes as bin are raw bytes, byte-exact.
    const raw = encoder.encode({
      type: "pty.input",
      id: "1",
      session: "s",
      data: Uint8Array.from(bad),
    });
    assert.equal(findInvalidUtf8Str(raw), -1);
    assert.deepEqual(decodePayload(raw).message.data, Uint8Array.from(bad));
  }
});

Deno.test("the daemon refuses a MessagePack str that is not UTF-8 with E_PROTO_INVALID_JSON, as JSON", async () => {
  const d = await startDaemon();
  const c = await RawClient.connect(d.socket);
  try {
    // The probe: c3 28 ff in a str.
    const bad = withBytes({ type: "pty.spawn", id: "m1", name: MARK, argv: ["true"] }, [
      0xc3,
      0x28,
      0xff,
    ]);
    await c.writeRaw(encodeFrame(bad));
    const err = await c.next();
    assert.equal(err.code, "E_PROTO_INVALID_JSON");
    assert.match(err.message as string, /not valid UTF-8/);
    // JSON with the same bytes: the same code.
    const json = new TextEncoder().encode('{"type":"ping","id":"j1","t":"MARK"}');
    json.set([0xc3, 0x28, 0xff, 0x61], json.indexOf(0x4d));
    await c.writeRaw(encodeFrame(json));
    assert.equal((await c.next()).code, "E_PROTO_INVALID_JSON");
    // The connection goes on; valid non-ASCII text and bin still work.
    const ok = await c.request({ type: "ping", id: "m2", t: "héllo 字 😀" }, "msgpack");
    assert.equal(ok.event, "pong");
    assert.equal(ok.t, "héllo 字 😀");
    assert.equal(c.queued.length, 0);
  } finally {
    c.close();
    await d.stop();
  }
});
