/**
 * The kernel facts the scheduler's batch invariance rests on, checked bit for bit on
 * logits with the real library (see the module comment of src/llm/engine.ts):
 * prompt chunks under 64 tokens give the same KV whatever their sizes, and a decode
 * row gives the same logits among other sequences as beside a filler row, or as the
 * second row of its own sequence (a lookup draft).
 */
import assert from "node:assert/strict";
import { findLibDir, openLibraries } from "../src/llm/ffi.ts";
import { Batch, LlamaContext, LlamaModel } from "../src/llm/llama.ts";
import { DEMO_MODEL } from "../src/llm/mod.ts";
import { tinyModel } from "./llm_helpers.ts";

/** A small model wide enough (head size 64) to take the same kernel paths as real ones. */
function openContext(nSeqMax: number, perSeq: number) {
  const model = LlamaModel.load(
    openLibraries(findLibDir()),
    tinyModel({ ...DEMO_MODEL, name: "umad-inv", nLayer: 2, nEmbd: 128, nHead: 2, nFf: 256 }),
  );
  const ctx = new LlamaContext(model, {
    nCtx: nSeqMax * perSeq,
    nBatch: 64,
    nSeqMax,
    threads: 1,
    kvUnified: false,
  });
  return { model, ctx, b: new Batch(64) };
}

Deno.test("prompt chunking and batch neighbours leave a sequence's logits bit-identical", () => {
  const { model, ctx, b } = openContext(6, 512);
  try {
    const prompt = Array.from({ length: 150 }, (_, i) => 300 + ((i * 7919) % 3000));
    const otherPrompt = (k: number) =>
      Array.from({ length: 5 + 9 * k }, (_, i) => 400 + ((i * 31 + k) % 2000));
    const partner = Array.from({ length: 150 }, (_, i) => 700 + ((i * 104729) % 3000));
    const run = (chunks: number[], seq: number, others: number, paired = false) => {
      for (let s = 0; s < 6; s++) ctx.seqRm(s);
      let pos = 0;
      let ci = 0;
      const body = prompt.slice(0, -1);
      while (pos < body.length) {
        const n = Math.min(chunks[ci++ % chunks.length], body.length - pos);
        b.clear();
        for (let i = 0; i < n; i++) b.add(body[pos + i], pos + i, seq, false);
        // Paired: the next sequence's prompt rides in the same call with as many tokens.
        if (paired) {
          for (let i = 0; i < n; i++) b.add(partner[pos + i], pos + i, seq + 1, false);
        }
        if (n === 1 && !paired) b.add(0, pos + 1, seq, false);
        assert.equal(ctx.decode(b), 0);
        if (n === 1 && !paired) ctx.seqRm(seq, pos + 1, -1);
        pos += n;
      }
      if (paired) ctx.seqRm(seq + 1);
      const live = new Map<number, number>([[seq, pos]]);
      for (let k = 0, s = 0; k < others; k++, s++) {
        if (s === seq) s++;
        const p = otherPrompt(k);
        b.clear();
        p.forEach((t, i) => b.add(t, i, s, false));
        assert.equal(ctx.decode(b), 0);
        live.set(s, p.length);
      }
      const logits: Float32Array[] = [];
      let tok = prompt[prompt.length - 1];
      for (let step = 0; step < 8; step++) {
        const ids = [...live.keys()];
        let lo = Math.min(...ids);
        let hi = Math.max(...ids);
        if (lo === hi) hi + 1 < 6 ? hi++ : lo--;
        b.clear();
        let mine = -1;
        const fillers: number[] = [];
        for (let s = lo; s <= hi; s++) {
          if (live.has(s)) {
            const r = b.add(s === seq ? tok : 500 + s, live.get(s)!, s, true);
            if (s === seq) mine = r;
          } else {
            b.add(0, 0, s, true);
            fillers.push(s);
          }
        }
        assert.equal(ctx.decode(b), 0);
        for (const s of fillers) ctx.seqRm(s);
        const l = ctx.logits(mine).slice();
        logits.push(l);
        let best = 0;
        for (let i = 1; i < l.length; i++) if (l[i] > l[best]) best = i;
        tok = best;
        for (const [s, p] of live) live.set(s, p + 1);
      }
      return logits;
    };
    const ref = run([63], 0, 0);
    const cases: [string, number[], number, number, boolean?][] = [
      ["chunks of 7", [7], 0, 0],
      ["prompt chunks shared with another sequence", [1, 9, 30], 2, 0, true],
      ["chunks of 1, 2, 5, 30", [1, 2, 5, 30], 0, 0],
      ["another sequence id", [63], 3, 0],
      ["three other sequences beside it", [13], 2, 3],
      ["five other sequences, holes filled", [40, 9], 5, 1],
    ];
    for (const [name, chunks, seq, others, paired] of cases) {
      const got = run(chunks, seq, others, paired);
      for (let i = 0; i < ref.length; i++) {
        assert.ok(got[i].every((v, j) => Object.is(v, ref[i][j])), `${name}: step ${i} differs`);
      }
    }
  } finally {
    ctx.free();
    model.free();
  }
});

Deno.test("a lookup draft's row gives the logits the next step computes, bit for bit", () => {
  const { model, ctx, b } = openContext(2, 256);
  try {
    const prompt = Array.from({ length: 40 }, (_, i) => 300 + ((i * 7919) % 3000));
    const prefill = () => {
      ctx.seqRm(0);
      ctx.seqRm(1);
      b.clear();
      prompt.slice(0, -1).forEach((t, i) => b.add(t, i, 0, false));
      assert.equal(ctx.decode(b), 0);
    };
    const p = prompt.length - 1;
    const next = [prompt[p], 1234, 77, 2500];
    // Step by step: each decode is the stream's row plus a filler row on sequence 1.
    prefill();
    const steps: Float32Array[] = [];
    for (let i = 0; i < next.length; i++) {
      b.clear();
      const r = b.add(next[i], p + i, 0, true);
      b.add(0, 0, 1, true);
      assert.equal(ctx.decode(b), 0);
      ctx.seqRm(1);
      steps.push(ctx.logits(r).slice());
    }
    // Two rows of the stream per decode: the token, then the next one as a draft.
    prefill();
    const drafted: Float32Array[] = [];
    for (let i = 0; i < next.length; i += 2) {
      b.clear();
      const r0 = b.add(next[i], p + i, 0, true);
      const r1 = b.add(next[i + 1], p + i + 1, 0, true);
      assert.equal(ctx.decode(b), 0);
      drafted.push(ctx.logits(r0).slice(), ctx.logits(r1).slice());
    }
    // A rejected draft: its cell is trimmed and the step redone as the next one.
    prefill();
    b.clear();
    b.add(next[0], p, 0, true);
    b.add(999, p + 1, 0, true);
    assert.equal(ctx.decode(b), 0);
    ctx.seqRm(0, p + 1, -1);
    b.clear();
    const r = b.add(next[1], p + 1, 0, true);
    b.add(0, 0, 1, true);
    assert.equal(ctx.decode(b), 0);
    const afterReject = ctx.logits(r).slice();

    for (let i = 0; i < steps.length; i++) {
      assert.ok(steps[i].every((v, j) => Object.is(v, drafted[i][j])), `row ${i} differs`);
    }
    assert.ok(afterReject.every((v, j) => Object.is(v, steps[1][j])), "after a rejected draft");
  } finally {
    ctx.free();
    model.free();
  }
});
