/** The mirror of llama.cpp's unified KV cell allocation. */
import assert from "node:assert/strict";
import { KvCells } from "../src/llm/kv_cells.ts";

Deno.test("kv cells: shared prefixes take no cells, and stay while any sequence holds them", () => {
  const kv = new KvCells(1024);
  assert.ok(kv.place(new Array(100).fill(0)));
  kv.copy(0, 1, 60);
  kv.copy(0, 2, 100);
  assert.equal(kv.used, 100);
  assert.ok(kv.place([1, 1, 2]));
  assert.equal(kv.used, 103);
  assert.equal(kv.length(1), 62);
  assert.equal(kv.ownCells(0), 0, "every cell of 0 is shared");
  assert.equal(kv.ownCells(1), 2);
  kv.remove(0);
  assert.equal(kv.used, 103, "1 and 2 still hold the prefix");
  kv.remove(2);
  assert.equal(kv.used, 62);
  assert.equal(kv.ownCells(1), 62);
  kv.remove(1, 10);
  assert.equal(kv.used, 10);
  assert.equal(kv.free, 1014);
});

Deno.test("kv cells: a call finds no slot when fewer cells are free than rows, and places nothing", () => {
  const kv = new KvCells(256);
  assert.ok(kv.place(new Array(250).fill(0)));
  assert.equal(kv.place(new Array(7).fill(1)), false);
  assert.equal(kv.used, 250);
  assert.ok(kv.place(new Array(6).fill(1)));
  assert.equal(kv.free, 0);
});

Deno.test("kv cells: the span follows the highest cell in use, padded to 256, and holes are reused", () => {
  const kv = new KvCells(4096);
  assert.equal(kv.span, 256);
  kv.place(new Array(300).fill(0));
  kv.place(new Array(300).fill(1));
  assert.equal(kv.span, 768);
  // Removing the top sequence lowers the span; removing a low one leaves a hole...
  kv.remove(1);
  assert.equal(kv.span, 512);
  kv.place(new Array(300).fill(2));
  kv.remove(0);
  assert.equal(kv.span, 768);
  // ...that llama.cpp's search fills again from the start once the head is far past it.
  kv.place(new Array(100).fill(3));
  assert.equal(kv.span, 768);
  assert.equal(kv.used, 400);
  assert.equal(kv.spanAfter(10), 768);
});
