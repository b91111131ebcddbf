import assert from "node:assert/strict";
import {
  decodeBase64,
  decodePayload,
  encodeBase64,
  encodeFrame,
  encodePayload,
  FrameDecoder,
  socketPathFor,
  UmadError,
  validateRequest,
} from "../src/protocol/mod.ts";

const allBytes = Uint8Array.from({ length: 256 }, (_, i) => i);

Deno.test("a message round-trips through both codecs with binary fields byte-exact", () => {
  const msg = { event: "pty.output", id: "a1", session: "s1", data: allBytes, n: 3.5 };
  for (const codec of ["json", "msgpack"] as const) {
    const bytes = encodePayload(msg, codec);
    const { codec: detected, message } = decodePayload(bytes);
    assert.equal(detected, codec);
    assert.equal(message.event, "pty.output");
    assert.equal(message.n, 3.5);
    const data = codec === "json" ? decodeBase64(message.data as string) : message.data;
    assert.deepEqual(data, allBytes);
  }
});

Deno.test("base64 encodes and decodes every byte value and rejects garbage", () => {
  assert.deepEqual(decodeBase64(encodeBase64(allBytes)), allBytes);
  assert.equal(encodeBase64(new Uint8Array([104, 105])), "aGk=");
  assert.throws(() => decodeBase64("not base64!"), SyntaxError);
});

Deno.test("frame decoder handles frames fed one byte at a time", () => {
  const payloads = ["{}", '{"type":"ping","id":"1"}', "x".repeat(1000)].map((s) =>
    new TextEncoder().encode(s)
  );
  const stream = payloads.map(encodeFrame);
  const all = new Uint8Array(stream.reduce((n, f) => n + f.length, 0));
  let off = 0;
  for (const f of stream) {
    all.set(f, off);
    off += f.length;
  }
  const dec = new FrameDecoder();
  const got: Uint8Array[] = [];
  for (let i = 0; i < all.length; i++) got.push(...dec.push(all.subarray(i, i + 1)));
  assert.deepEqual(got, payloads);
  assert.equal(dec.buffered, 0);
});

Deno.test("frame decoder returns many frames from one read and keeps a partial tail", () => {
  const frames = Array.from({ length: 50 }, (_, i) => encodeFrame(new Uint8Array([i + 1, i])));
  const joined = new Uint8Array(frames.length * 6 + 3);
  frames.forEach((f, i) => joined.set(f, i * 6));
  joined.set([5, 0, 0], frames.length * 6); // the start of one more header
  const dec = new FrameDecoder();
  const got = [...dec.push(joined)];
  assert.equal(got.length, 50);
  assert.deepEqual(got[49], new Uint8Array([50, 49]));
  assert.equal(dec.buffered, 3);
  const rest = [...dec.push(new Uint8Array([0, 1, 2, 3, 4, 5]))];
  assert.deepEqual(rest, [new Uint8Array([1, 2, 3, 4, 5])]);
});

Deno.test("frame decoder rejects a zero length", () => {
  const dec = new FrameDecoder();
  assert.throws(
    () => [...dec.push(new Uint8Array([0, 0, 0, 0]))],
    (e: unknown) => e instanceof UmadError && e.code === "E_PROTO_INVALID_LEN",
  );
});

Deno.test("frame decoder rejects an oversize length from the header alone", () => {
  const dec = new FrameDecoder(1024);
  const header = new Uint8Array([0x01, 0x04, 0, 0]); // 1025, little-endian
  assert.throws(
    () => [...dec.push(header)],
    (e: unknown) => e instanceof UmadError && e.code === "E_PROTO_FRAME_TOO_LARGE",
  );
  // Exactly at the limit is fine.
  const ok = new FrameDecoder(4);
  assert.equal([...ok.push(new Uint8Array([4, 0, 0, 0, 1, 2, 3, 4]))].length, 1);
});

Deno.test("payloads that are not maps or not decodable get the protocol's codes", () => {
  const codeOf = (bytes: Uint8Array) => {
    try {
      decodePayload(bytes);
      return "ok";
    } catch (e) {
      return (e as UmadError).code;
    }
  };
  assert.equal(codeOf(new TextEncoder().encode("{nope")), "E_PROTO_INVALID_JSON");
  assert.equal(codeOf(new Uint8Array([0xc1])), "E_PROTO_INVALID_JSON"); // never-used msgpack byte
  assert.equal(codeOf(encodePayload({ a: 1 }, "msgpack").subarray(0, 2)), "E_PROTO_INVALID_JSON");
  assert.equal(codeOf(new Uint8Array([0x93, 1, 2, 3])), "E_PROTO_BAD_REQUEST"); // an array
});

Deno.test("validation accepts UMA Serve's request and cancel forms", () => {
  const gen = validateRequest({ id: "r1", prompt: "hi", max_tokens: 4, stream: true }, "json");
  assert.equal(gen.type, "generate");
  const cancel = validateRequest({ event: "cancel", id: "r1" }, "json");
  assert.deepEqual(cancel, { type: "cancel", target: "r1" });
});

Deno.test("validation rejects ill-typed fields with E_PROTO_BAD_REQUEST", () => {
  const bad = [
    { type: "nope", id: "1" },
    { type: "ping", id: 5 },
    { type: "pty.list" },
    { type: "generate", id: "1" },
    { type: "generate", id: "1", prompt: "x", messages: [{ role: "user", content: "x" }] },
    { type: "generate", id: "1", prompt: "x", max_tokens: -1 },
    { type: "generate", id: "1", prompt: "x", max_tokens: 1.5 },
    { type: "generate", id: "1", prompt: "x", temperature: "hot" },
    { type: "generate", id: "1", prompt: "x", priority: "urgent" },
    { type: "generate", id: "1", prompt: "x", stop: [""] },
    { type: "pty.spawn", id: "1", argv: [] },
    { type: "pty.spawn", id: "1", argv: ["sh\0"] },
    { type: "pty.spawn", id: "1", cols: 0 },
    { type: "pty.spawn", id: "1", env: { "A=B": "x" } },
    { type: "pty.resize", session: "s", cols: 80 },
    { type: "pty.input", session: "s" },
    { type: "pty.kill", id: "1", session: "s", signal: "SIGNOPE" },
  ];
  for (const m of bad) {
    assert.throws(
      () => validateRequest(m as Record<string, unknown>, "json"),
      (e: unknown) => e instanceof UmadError && e.code === "E_PROTO_BAD_REQUEST",
      JSON.stringify(m),
    );
  }
});

Deno.test("NaN and infinite numbers are rejected in MessagePack requests", () => {
  for (const temperature of [NaN, Infinity]) {
    assert.throws(
      () =>
        validateRequest(
          { type: "generate", id: "1", prompt: "x", temperature },
          "msgpack",
        ),
      (e: unknown) => e instanceof UmadError && e.code === "E_PROTO_BAD_REQUEST",
    );
  }
});

Deno.test("socket path follows the contract's order of precedence", () => {
  assert.equal(socketPathFor("/x/s", { UMAD_SOCKET: "/y" }, 1), "/x/s");
  assert.equal(socketPathFor(undefined, { UMAD_SOCKET: "/y", XDG_RUNTIME_DIR: "/r" }, 1), "/y");
  assert.equal(socketPathFor(undefined, { XDG_RUNTIME_DIR: "/r/" }, 1), "/r/umad/umad.sock");
  assert.equal(socketPathFor(undefined, {}, 1000), "/tmp/umad-1000/umad.sock");
});
