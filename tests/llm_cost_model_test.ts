/** The online cost model of decode calls and the prompt budget it gives. */
import assert from "node:assert/strict";
import { FittedCostModel, promptTokensWithin } from "../src/llm/cost_model.ts";

const truth = (tokens: number, outputs: number) => 12 + 1.6 * tokens + 0.3 * outputs;

Deno.test("cost model: learns a fixed pass plus a per-token cost from calls of mixed sizes", () => {
  const m = new FittedCostModel();
  for (let i = 0; i < 200; i++) {
    const prompt = [0, 0, 3, 20, 100, 400][i % 6];
    const d = 8;
    const out = d + (prompt ? 1 : 0);
    // ±5% noise, as on a shared machine.
    m.observe(
      { tokens: d + prompt, outputs: out, nKv: 512 },
      truth(d + prompt, out) * (1 + 0.05 * Math.sin(i)),
    );
  }
  for (const t of [8, 16, 64, 300]) {
    const got = m.predict({ tokens: t, outputs: 9, nKv: 512 });
    const want = truth(t, 9);
    assert.ok(
      Math.abs(got - want) / want < 0.1,
      `${t} tokens: ${got.toFixed(1)} vs ${want.toFixed(1)}`,
    );
  }
  const c = m.coefficients()!;
  assert.ok(c.fixed > 5 && c.fixed < 20, JSON.stringify(c));
  assert.ok(c.perToken > 1.3 && c.perToken < 1.9, JSON.stringify(c));
  for (const v of Object.values(c)) assert.ok(v >= 0);
});

Deno.test("cost model: calls of one size only are taken as proportional to tokens (the safe side)", () => {
  const m = new FittedCostModel();
  for (let i = 0; i < 20; i++) m.observe({ tokens: 8, outputs: 8, nKv: 256 }, 24);
  assert.equal(m.predict({ tokens: 8, outputs: 8, nKv: 256 }), 24);
  assert.equal(m.predict({ tokens: 12, outputs: 8, nKv: 256 }), 36);
  assert.equal(promptTokensWithin(m, 8, 256, 1.5, 512), 4);
});

Deno.test("cost model: what was learned about big calls survives many small ones", () => {
  const m = new FittedCostModel();
  for (let i = 0; i < 20; i++) m.observe({ tokens: 300, outputs: 9, nKv: 512 }, truth(300, 9));
  for (let i = 0; i < 5000; i++) m.observe({ tokens: 8, outputs: 8, nKv: 512 }, truth(8, 8));
  const got = m.predict({ tokens: 300, outputs: 9, nKv: 512 });
  assert.ok(Math.abs(got - truth(300, 9)) < 1, `${got}`);
});

Deno.test("cost model: attention over more cells costs more once calls show it", () => {
  const m = new FittedCostModel();
  // 0.5 ms per token per 1024 cells, with the span moving over the run.
  for (let i = 0; i < 400; i++) {
    const t = [8, 8, 40, 200][i % 4];
    const nKv = 256 * (1 + (i % 16));
    m.observe({ tokens: t, outputs: 8, nKv }, 10 + 2 * t + (0.5 * t * nKv) / 1024);
  }
  const small = m.predict({ tokens: 8, outputs: 8, nKv: 256 });
  const big = m.predict({ tokens: 8, outputs: 8, nKv: 4096 });
  assert.ok(big - small > 10, `${small} vs ${big}`);
});

Deno.test("prompt budget: the most tokens whose call stays within R times the rows alone", () => {
  const m = new FittedCostModel();
  for (const t of [1, 2, 8, 64, 256]) {
    for (let i = 0; i < 5; i++) m.observe({ tokens: t, outputs: 1, nKv: 256 }, 10 + 2 * t);
  }
  // 8 rows: ~26 ms; at 1.5x, 13 ms more: 6 tokens of 2 ms.
  assert.equal(promptTokensWithin(m, 8, 256, 1.5, 512), 6);
  assert.equal(promptTokensWithin(m, 8, 256, 3, 512), 26);
  assert.equal(promptTokensWithin(m, 8, 256, 3, 20), 20, "capped");
  assert.equal(promptTokensWithin(m, 8, 256, 1, 512), 0);
  assert.equal(promptTokensWithin(m, 0, 256, 1.5, 512), 512, "nobody decodes: full speed");
  assert.equal(promptTokensWithin(m, 8, 256, Infinity, 300), 300);
  assert.equal(promptTokensWithin(new FittedCostModel(), 8, 256, 1.5, 512), 0, "nothing known yet");
});
