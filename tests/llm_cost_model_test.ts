/** The online cost model of decode calls and the prompt budget it gives. */
import assert from "node:assert/strict";
import { type CallShape, FittedCostModel, promptTokensWithin } from "../src/llm/cost_model.ts";

const truth = (s: CallShape) => 12 + 1.6 * s.tokens + 0.3 * s.outputs + (3 * s.attended) / 1024;

/** d decode rows at position L beside p prompt tokens at positions 0..p-1. */
function shape(d: number, L: number, p: number, nKv = 1024): CallShape {
  return {
    tokens: d + p,
    outputs: d + (p ? 1 : 0),
    nKv,
    attended: d * (L + 1) + (p * (p + 1)) / 2,
  };
}

Deno.test("cost model: learns a fixed pass, a per-token cost and attention from calls of mixed shapes", () => {
  const m = new FittedCostModel();
  for (let i = 0; i < 300; i++) {
    const s = shape(8, 50 + (i % 40) * 20, [0, 0, 3, 20, 100, 400][i % 6]);
    // ±5% noise, as on a shared machine.
    m.observe(s, truth(s) * (1 + 0.05 * Math.sin(i)));
  }
  for (const s of [shape(8, 100, 0), shape(8, 700, 16), shape(8, 300, 64), shape(0, 0, 300)]) {
    const got = m.predict(s);
    const want = truth(s);
    assert.ok(
      Math.abs(got - want) / want < 0.1,
      `${JSON.stringify(s)}: ${got.toFixed(1)} vs ${want.toFixed(1)}`,
    );
  }
  const c = m.coefficients()!;
  assert.ok(c.fixed > 5 && c.fixed < 20, JSON.stringify(c));
  assert.ok(c.perToken > 1.2 && c.perToken < 2, JSON.stringify(c));
  for (const v of Object.values(c)) assert.ok(v >= 0);
});

Deno.test("cost model: calls of one size only are taken as proportional to tokens (the safe side)", () => {
  const m = new FittedCostModel();
  for (let i = 0; i < 20; i++) m.observe(shape(8, 10, 0, 256), 24);
  assert.equal(m.predict(shape(8, 10, 0, 256)), 24);
  assert.equal(m.predict(shape(12, 10, 0, 256)), 36);
  assert.equal(
    promptTokensWithin(m, shape(8, 10, 0, 256), (p) => shape(8, 10, p, 256), 1.5, 512),
    4,
  );
});

Deno.test("cost model: what was learned about big calls survives many small ones", () => {
  const m = new FittedCostModel();
  for (let i = 0; i < 20; i++) m.observe(shape(8, 100, 300), truth(shape(8, 100, 300)));
  for (let i = 0; i < 5000; i++) m.observe(shape(8, 100, 0), truth(shape(8, 100, 0)));
  const got = m.predict(shape(8, 100, 300));
  assert.ok(Math.abs(got - truth(shape(8, 100, 300))) < 2, `${got}`);
});

Deno.test("cost model: a bigger span of cells costs every row more once calls show it", () => {
  const m = new FittedCostModel();
  // 0.5 ms per token per 1024 cells scanned, with the span moving over the run.
  for (let i = 0; i < 400; i++) {
    const s = shape(8, 64, [0, 0, 40, 200][i % 4], 256 * (1 + (i % 16)));
    m.observe(s, 10 + 2 * s.tokens + (0.5 * s.tokens * s.nKv) / 1024);
  }
  const small = m.predict(shape(8, 64, 0, 256));
  const big = m.predict(shape(8, 64, 0, 4096));
  assert.ok(big - small > 10, `${small} vs ${big}`);
});

Deno.test("prompt budget: the most tokens whose call stays within R times the rows alone", () => {
  const m = new FittedCostModel();
  const flat = (t: number): CallShape => ({ tokens: t, outputs: 1, nKv: 256, attended: t });
  for (const t of [1, 2, 8, 64, 256]) for (let i = 0; i < 5; i++) m.observe(flat(t), 10 + 2 * t);
  const within = (budget: number, max: number) =>
    promptTokensWithin(m, flat(8), (p) => flat(8 + p), budget, max);
  // 8 rows: ~26 ms; at 1.5x, 13 ms more: 6 tokens of 2 ms.
  assert.equal(within(1.5, 512), 6);
  assert.equal(within(3, 512), 26);
  assert.equal(within(3, 20), 20, "capped");
  assert.equal(within(1, 512), 0);
  assert.equal(promptTokensWithin(m, flat(0), flat, 1.5, 512), 512, "nobody decodes: full speed");
  assert.equal(within(Infinity, 300), 300);
  assert.equal(
    promptTokensWithin(new FittedCostModel(), flat(8), (p) => flat(8 + p), 1.5, 512),
    0,
    "nothing known yet",
  );
});
