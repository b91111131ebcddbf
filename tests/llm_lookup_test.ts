import assert from "node:assert/strict";
import { TokenHistory } from "../src/llm/lookup.ts";

Deno.test("a lookup draft is the token after the latest earlier match of the last 3, 2, or 1 tokens", () => {
  // The last token never occurred before: no draft.
  assert.equal(new TokenHistory([1, 2, 3, 4]).draft(), -1);
  assert.equal(new TokenHistory([]).draft(), -1);
  assert.equal(new TokenHistory([5]).draft(), -1);
  // "1 2" occurred before, followed by 3.
  assert.equal(new TokenHistory([1, 2, 3, 9, 1, 2]).draft(), 3);
  // The latest occurrence wins: "1 2" was followed by 3, then by 4.
  assert.equal(new TokenHistory([1, 2, 3, 1, 2, 4, 1, 2]).draft(), 4);
  // A 3-token match beats a later 2-token one: "7 1 2" was followed by 5.
  assert.equal(new TokenHistory([7, 1, 2, 5, 8, 1, 2, 6, 7, 1, 2]).draft(), 5);
  // Only the last token occurred before: what followed it then (the latest time).
  assert.equal(new TokenHistory([9, 3, 8, 3, 6, 1, 3]).draft(), 6);
  // A 2-token match beats a later 1-token one: "5 3" was followed by 8.
  assert.equal(new TokenHistory([5, 3, 8, 2, 3, 6, 5, 3]).draft(), 8);
  // A run of one token continues itself (the match overlaps the suffix).
  assert.equal(new TokenHistory([4, 4, 4]).draft(), 4);
  assert.equal(new TokenHistory([4, 4]).draft(), 4);
});

Deno.test("a token history grows past its capacity and keeps drafting from pushed tokens", () => {
  const h = new TokenHistory([10, 11], 2);
  for (let i = 0; i < 100; i++) h.push(20 + (i % 7));
  assert.equal(h.length, 102);
  // The cycle 20..26 repeats, so the draft is the cycle's next token.
  assert.equal(h.draft(), 20 + (100 % 7));
});
