import assert from "node:assert/strict";
import { Detokenizer } from "../src/llm/detokenizer.ts";

const enc = (s: string) => new TextEncoder().encode(s);

Deno.test("text assembler holds back a character split across tokens until it is complete", () => {
  const t = new Detokenizer([]);
  const bytes = enc("é😀");
  const out: string[] = [];
  for (const b of bytes) out.push(t.push(Uint8Array.of(b)).text);
  assert.deepEqual(out, ["", "é", "", "", "", "😀"]);
  assert.equal(t.flush(), "");
});

Deno.test("text assembler turns an invalid byte sequence into U+FFFD instead of broken text", () => {
  const t = new Detokenizer([]);
  const a = t.push(Uint8Array.of(0xe2)).text;
  const b = t.push(enc("x")).text;
  assert.equal(a + b, "\ufffdx");
  assert.equal(t.push(Uint8Array.of(0xf0, 0x9f)).text, "");
  assert.equal(t.flush(), "\ufffd");
});

Deno.test("text assembler never emits a stop string and ends right before it", () => {
  const t = new Detokenizer(["STOP"]);
  assert.deepEqual(t.push(enc("hello S")), { text: "hello ", stopped: false });
  assert.deepEqual(t.push(enc("T")), { text: "", stopped: false });
  assert.deepEqual(t.push(enc("OP and more")), { text: "", stopped: true });
});

Deno.test("text assembler releases held text once it cannot start a stop string", () => {
  const t = new Detokenizer(["STOP", "END"]);
  assert.deepEqual(t.push(enc("a ST")), { text: "a ", stopped: false });
  assert.deepEqual(t.push(enc("ART")), { text: "START", stopped: false });
  assert.deepEqual(t.push(enc("E")), { text: "", stopped: false });
  assert.equal(t.flush(), "E");
});

Deno.test("text assembler finds a stop string inside one token and keeps the text before it", () => {
  const t = new Detokenizer(["\n\n"]);
  assert.deepEqual(t.push(enc("line one\n\nline two")), { text: "line one", stopped: true });
});

Deno.test("text assembler never splits a surrogate pair when holding back a stop prefix", () => {
  const t = new Detokenizer(["😀!"]);
  const r = t.push(enc("a😀"));
  assert.equal(r.text, "a");
  assert.ok(r.text.isWellFormed());
  assert.deepEqual(t.push(enc("?")), { text: "😀?", stopped: false });
});
