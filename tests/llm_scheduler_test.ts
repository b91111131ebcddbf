/**
 * The scheduler alone, driven step by step with a fake cost model: no llama.cpp, no
 * clock. Each test plays the engine: plan, "decode" (commit), sample (push), end (finish).
 */
import assert from "node:assert/strict";
import type { CallShape, CostModel } from "../src/llm/cost_model.ts";
import {
  AGE_ORDER_EVERY,
  type DecodeCall,
  DETERMINISTIC_MAX_CHUNK,
  FOLLOW_MIN,
  type MemoryOp,
  Scheduler,
  type SchedulerOptions,
  type StepPlan,
} from "../src/llm/scheduler.ts";

/** ms = fixed + perToken·tokens + perKcell·tokens·min(nKv, spanCap)/1024; it learns nothing. */
class FakeCost implements CostModel {
  constructor(
    readonly fixed = 10,
    readonly perToken = 2,
    readonly perKcell = 0,
    readonly spanCap = Infinity,
  ) {}
  maxTokensSeen = 1e9;
  predict(s: CallShape): number {
    const nKv = Math.min(s.nKv, this.spanCap);
    return this.fixed + this.perToken * s.tokens + (this.perKcell * s.tokens * nKv) / 1024;
  }
  /** A call's shape as the scheduler would describe it (attention is not priced here). */
  static rows(tokens: number, nKv: number): CallShape {
    return { tokens, outputs: tokens, nKv, attended: 0 };
  }
  observe(): void {}
}

function scheduler(o: Partial<SchedulerOptions> = {}): Scheduler {
  return new Scheduler({
    deterministic: false,
    nCtx: 4096,
    nCtxSeq: 4096,
    nSeqMax: 16,
    maxLive: 8,
    nBatch: 512,
    latencyBudget: 1.5,
    prefixCache: true,
    lookup: false,
    cost: new FakeCost(),
    ...o,
  });
}

function tokens(n: number, salt = 0): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => 1 + ((i * 7 + salt * 13) % 300));
}

/** What the engine would do with a plan: commit every call and sample a token per output. */
function step(s: Scheduler, paused: (k: number) => boolean = () => false): StepPlan & {
  sampled: number[];
  ops: MemoryOp[];
} {
  const plan = s.plan(paused);
  const sampled: number[] = [];
  const ops = [...plan.memory];
  for (const call of plan.calls) {
    ops.push(...s.commit(call, 0));
    for (const r of call.rows) {
      if (!r.logits || r.kind === "filler" || r.kind === "draft") continue;
      if (!s.has(r.key)) continue;
      s.push(r.key, 500 + r.key);
      sampled.push(r.key);
      const draft = call.rows.find((x) => x.kind === "draft" && x.key === r.key);
      if (draft) ops.push(...s.draftResult(r.key, false));
    }
    s.observe(call, 1);
  }
  return { ...plan, sampled, ops };
}

function promptRows(call: DecodeCall | undefined, key?: number): number {
  return call?.rows.filter((r) => r.kind === "prompt" && (key === undefined || r.key === key))
    .length ?? 0;
}

function decodeRows(call: DecodeCall | undefined): number[] {
  return call?.rows.filter((r) => r.kind === "decode").map((r) => r.key) ?? [];
}

/** Starts n streams with short prompts and steps until all of them decode. */
function decoding(s: Scheduler, n: number, first = 0) {
  for (let k = first; k < first + n; k++) {
    s.add({ key: k, prompt: tokens(4, 100 + k), priority: "interactive", cachePrompt: false });
  }
  for (let i = 0; i < 10; i++) step(s);
}

Deno.test("scheduler: with nobody decoding a prompt goes at full speed, n_batch tokens a call", () => {
  const s = scheduler();
  s.add({ key: 0, prompt: tokens(1200), priority: "interactive", cachePrompt: true });
  const sizes: number[] = [];
  let sampled = false;
  while (!sampled) {
    const p = step(s);
    assert.equal(p.calls.length, 1, "one decode call per step");
    assert.ok(p.calls[0].promptOnly);
    sizes.push(promptRows(p.calls[0]));
    sampled = p.sampled.includes(0);
  }
  assert.deepEqual(sizes, [512, 512, 176]);
  // Then the stream decodes in one row: no padding in the default mode.
  assert.deepEqual(decodeRows(step(s).calls[0]), [0]);
});

Deno.test("scheduler: beside decoding streams, each step holds every row and the prompt tokens the budget allows", () => {
  const cost = new FakeCost(10, 2);
  const s = scheduler({ cost, latencyBudget: 1.5 });
  decoding(s, 4);
  s.add({ key: 9, prompt: tokens(100, 9), priority: "interactive", cachePrompt: false });
  let steps = 0;
  for (; steps < 100; steps++) {
    const p = step(s);
    assert.equal(p.calls.length, 1);
    const call = p.calls[0];
    // Every decoding stream got its row in this very call.
    for (const k of [0, 1, 2, 3]) assert.ok(decodeRows(call).includes(k), `step ${steps} row ${k}`);
    const quiet = cost.predict(FakeCost.rows(4, call.shape.nKv));
    assert.ok(cost.predict(call.shape) <= 1.5 * quiet + 1e-9, "within the latency budget");
    if (p.sampled.includes(9)) break;
    // The most that fits: 4 rows cost 18 ms, 1.5x leaves 9 ms, 4 tokens at 2 ms.
    assert.equal(promptRows(call, 9), 4);
  }
  assert.equal(steps, 24, "100 tokens at 4 a step: the first token in the 25th step");
});

Deno.test("scheduler: an unlimited budget takes the whole batch for prompts beside decoding", () => {
  const s = scheduler({ latencyBudget: Infinity });
  decoding(s, 2);
  s.add({ key: 5, prompt: tokens(700, 5), priority: "interactive", cachePrompt: false });
  const p = step(s);
  assert.equal(decodeRows(p.calls[0]).length, 2);
  assert.equal(promptRows(p.calls[0], 5), 510);
});

Deno.test("scheduler: a prompt never starves, even when one token breaks the budget", () => {
  const s = scheduler({ cost: new FakeCost(0, 10), latencyBudget: 1.05 });
  decoding(s, 1);
  s.add({ key: 3, prompt: tokens(5, 3), priority: "interactive", cachePrompt: false });
  const got: number[] = [];
  for (let i = 0; i < 5; i++) got.push(promptRows(step(s).calls[0], 3));
  assert.deepEqual(got, [1, 1, 1, 1, 1]);
});

Deno.test("scheduler: the oldest prompt gets 3/4 of a step, the next one the rest: none waits behind a whole other", () => {
  const s = scheduler({ latencyBudget: Infinity, nBatch: 100 });
  s.add({ key: 0, prompt: tokens(1000), priority: "interactive", cachePrompt: false });
  step(s);
  s.add({ key: 1, prompt: tokens(60, 1), priority: "interactive", cachePrompt: false });
  const p = step(s);
  assert.equal(promptRows(p.calls[0], 0), 75);
  assert.equal(promptRows(p.calls[0], 1), 25);
  // A third one waits for the second (in age order), not for the first.
  s.add({ key: 2, prompt: tokens(60, 2), priority: "interactive", cachePrompt: false });
  const q = step(s);
  assert.equal(promptRows(q.calls[0], 0), 75);
  assert.equal(promptRows(q.calls[0], 1), 25);
  assert.equal(promptRows(q.calls[0], 2), 0);
  // What the younger ones cannot use goes back to the oldest.
  const r = step(s);
  assert.equal(promptRows(r.calls[0], 1), 10, "the second one's last 10 tokens");
  assert.equal(promptRows(r.calls[0], 2), 15);
  assert.equal(promptRows(r.calls[0], 0), 75);
});

Deno.test("scheduler: interactive prompts go before batch ones, which still move every few steps", () => {
  const s = scheduler({ latencyBudget: Infinity, nBatch: 8 });
  s.add({ key: 0, prompt: tokens(400), priority: "batch", cachePrompt: false });
  s.add({ key: 1, prompt: tokens(400, 1), priority: "interactive", cachePrompt: false });
  s.add({ key: 2, prompt: tokens(400, 2), priority: "interactive", cachePrompt: false });
  const firstOf: number[] = [];
  for (let i = 0; i < 4 * AGE_ORDER_EVERY; i++) {
    const call = step(s).calls[0];
    const first = call.rows[0].key;
    firstOf.push(first);
    // Interactive first: the batch prompt leads only on the age-order steps.
    assert.equal(first === 0, (i + 1) % AGE_ORDER_EVERY === 0, `step ${i + 1}: led by ${first}`);
    assert.equal(promptRows(call), 8);
  }
  assert.ok(firstOf.filter((k) => k === 0).length === 4, "the batch prompt is not starved");
});

Deno.test("scheduler: a new stream reuses the longest cached prefix and prefills only the rest", () => {
  const s = scheduler();
  const system = tokens(300, 42);
  const turn1 = Int32Array.from([...system, ...tokens(20, 1)]);
  s.add({ key: 0, prompt: turn1, priority: "interactive", cachePrompt: true });
  while (!step(s).sampled.includes(0));
  for (let i = 0; i < 5; i++) step(s);
  const held = s.position(0);
  assert.deepEqual(s.finish(0, true), [], "kept as a cached sequence: nothing removed");
  assert.equal(s.cacheStats.sequences, 1);
  assert.equal(s.cacheStats.cells, held);
  // The next turn: the whole history, then more.
  const history = Int32Array.from([...turn1, 500, 500, 500, 500, 500]);
  const turn2 = Int32Array.from([...history, ...tokens(30, 2)]);
  s.add({ key: 1, prompt: turn2, priority: "interactive", cachePrompt: true });
  const p = step(s);
  assert.deepEqual(p.memory, [], "the cached sequence was taken over, not copied");
  assert.equal(s.cachedTokens(1), history.length);
  assert.equal(promptRows(p.calls[0], 1), turn2.length - history.length);
  assert.equal(s.cacheStats.hits, 1);
  assert.equal(s.cacheStats.tokensReused, history.length);
  // Another conversation with the same system prompt shares it: a copy, no new cells.
  s.add({
    key: 2,
    prompt: Int32Array.from([...system, ...tokens(40, 3)]),
    priority: "interactive",
    cachePrompt: true,
  });
  const used = s.kvCellsUsed;
  const q = step(s);
  const cp = q.memory.find((m) => m.op === "cp");
  assert.ok(cp && cp.op === "cp" && cp.n === system.length, JSON.stringify(q.memory));
  assert.equal(s.cachedTokens(2), system.length);
  assert.equal(
    s.kvCellsUsed - used,
    1 + promptRows(q.calls[0], 2),
    "only its own prompt tokens and the other's row took cells",
  );
});

Deno.test("scheduler: cache_prompt false neither reuses a prefix nor leaves one behind", () => {
  const s = scheduler();
  s.add({ key: 0, prompt: tokens(50), priority: "interactive", cachePrompt: true });
  while (!step(s).sampled.includes(0));
  s.finish(0, true);
  s.add({ key: 1, prompt: tokens(60), priority: "interactive", cachePrompt: false });
  step(s);
  assert.equal(s.cachedTokens(1), 0);
  while (!step(s).sampled.includes(1));
  const ops = s.finish(1, true);
  assert.deepEqual(ops, [{ op: "rm", seq: ops[0].op === "rm" ? ops[0].seq : -1, from: 0 }]);
  assert.equal(s.cacheStats.sequences, 1, "only the first stream's tokens are cached");
});

Deno.test("scheduler: streams that start together with one system prompt compute it once and share it", () => {
  const s = scheduler({ latencyBudget: Infinity });
  const system = tokens(200, 7);
  for (let k = 0; k < 4; k++) {
    s.add({
      key: k,
      prompt: Int32Array.from([...system, ...tokens(10, k)]),
      priority: "interactive",
      cachePrompt: true,
    });
  }
  let prompt = 0;
  for (let i = 0; i < 10; i++) prompt += promptRows(step(s).calls[0]);
  assert.equal(prompt, system.length + 4 * 10, "the shared prefix was prefilled once");
  for (let k = 1; k < 4; k++) assert.equal(s.cachedTokens(k), system.length);
  assert.ok(s.kvCellsUsed < system.length + 4 * 30, `cells ${s.kvCellsUsed}`);
});

Deno.test("scheduler: a follower whose lead is cancelled prefills the shared part itself", () => {
  const s = scheduler({ latencyBudget: Infinity, nBatch: 64 });
  const system = tokens(300, 7);
  s.add({
    key: 0,
    prompt: Int32Array.from([...system, 1]),
    priority: "interactive",
    cachePrompt: true,
  });
  step(s);
  s.add({
    key: 1,
    prompt: Int32Array.from([...system, 2]),
    priority: "interactive",
    cachePrompt: true,
  });
  step(s);
  assert.equal(promptRows(step(s).calls[0], 1), 0, "it waits for the lead");
  s.finish(0, false);
  let got = 0;
  while (!s.full(1) && s.position(1) < system.length + 1) {
    const p = step(s);
    got += promptRows(p.calls[0], 1);
    if (p.sampled.includes(1)) break;
  }
  assert.ok(got > FOLLOW_MIN, `prefilled ${got} tokens itself`);
  assert.equal(s.cachedTokens(1), 0);
});

Deno.test("scheduler: when cells run out, cached sequences go least recently used first, then the youngest stream ends", () => {
  const s = scheduler({ nCtx: 1024, nCtxSeq: 1024, latencyBudget: Infinity });
  // Three finished streams leave 200-token cached sequences: A, then B, then C.
  for (const k of [0, 1, 2]) {
    s.add({ key: k, prompt: tokens(200, 10 + k), priority: "interactive", cachePrompt: true });
    while (!step(s).sampled.includes(k));
    s.finish(k, true);
  }
  assert.equal(s.cacheStats.sequences, 3);
  const seqOf = (p: StepPlan) =>
    p.memory.filter((m) => m.op === "rm").map((m) => m.op === "rm" && m.seq);
  // B is used again (a prompt starting with it), so A is the least recently used.
  s.add({
    key: 3,
    prompt: Int32Array.from([...tokens(200, 11), ...tokens(5, 99)]),
    priority: "interactive",
    cachePrompt: true,
  });
  while (!step(s).sampled.includes(3));
  // A 500-token prompt needs more than the 1024 - 3·200 - ... free cells: A goes first.
  s.add({ key: 4, prompt: tokens(500, 50), priority: "interactive", cachePrompt: true });
  const p = step(s);
  const evicted = seqOf(p);
  assert.equal(evicted.length, 1, JSON.stringify(p.memory));
  assert.equal(s.cacheStats.evictions, 1);
  // Fill up: both decoding streams grow until nothing is left; then the younger one ends.
  let ended: number[] = [];
  for (let i = 0; i < 2000 && ended.length === 0; i++) ended = step(s).ended.map((e) => e.key);
  assert.equal(s.cacheStats.sequences, 0, "every cached sequence went before any stream");
  assert.deepEqual(ended, [4], "the youngest stream cannot continue: it ends with length");
  assert.ok(s.has(3));
});

Deno.test("scheduler: a prompt that does not fit yet waits for cells, then starts", () => {
  const s = scheduler({ nCtx: 600, nCtxSeq: 600, prefixCache: false });
  s.add({ key: 0, prompt: tokens(400), priority: "interactive", cachePrompt: true });
  step(s);
  s.add({ key: 1, prompt: tokens(300, 1), priority: "interactive", cachePrompt: true });
  for (let i = 0; i < 5; i++) assert.equal(promptRows(step(s).calls[0], 1), 0);
  assert.equal(s.hasWork(() => true), false, "nothing to do but wait: no busy loop");
  s.finish(0, false);
  assert.ok(promptRows(step(s).calls[0], 1) > 0, "admitted once cells are free");
});

Deno.test("scheduler: a cached sequence goes once it has cost decoding as much as recomputing it", () => {
  // Attention over 1024 cells costs a token 1 ms: holding a 1000-cell prefix costs each
  // step of 8 rows ~8 ms; recomputing it would take ~2000 ms + attention.
  const s = scheduler({ cost: new FakeCost(10, 2, 1), latencyBudget: Infinity });
  s.add({ key: 9, prompt: tokens(1000, 9), priority: "interactive", cachePrompt: true });
  while (!step(s).sampled.includes(9));
  s.finish(9, true);
  decoding(s, 8);
  let steps = 10;
  while (s.cacheStats.sequences > 0 && steps < 2000) {
    step(s);
    steps++;
  }
  assert.equal(s.cacheStats.evictions, 1);
  assert.ok(steps > 200 && steps < 600, `dropped after ${steps} steps`);
  // Idle, nothing pays rent: a cached sequence stays.
  const t = scheduler({ cost: new FakeCost(10, 2, 1) });
  t.add({ key: 0, prompt: tokens(1000, 9), priority: "interactive", cachePrompt: true });
  while (!step(t).sampled.includes(0));
  t.finish(0, true);
  for (let i = 0; i < 1000; i++) step(t);
  assert.equal(t.cacheStats.sequences, 1);
});

Deno.test("scheduler: once cached prompts go unused, a new one is dropped sooner; reuse brings the full rent back", () => {
  // Attention costs a token 1 ms per 1024 cells, however far the growing streams reach,
  // so recomputing a 1000-token prompt always costs the same.
  const cost = new FakeCost(10, 2, 1, 1024);
  const s = scheduler({ cost, latencyBudget: Infinity, nCtx: 65536 });
  decoding(s, 6);
  let key = 100;
  /** Caches a fresh 1000-token prompt; steps until it is dropped. */
  const lifetime = (salt: number, cacheClass: "chat" | "prompt" = "prompt") => {
    const k = key++;
    const prompt = tokens(1000, salt);
    s.add({ key: k, prompt, priority: "interactive", cachePrompt: true, cacheClass });
    while (!step(s).sampled.includes(k));
    s.finish(k, true);
    const before = s.cacheStats.evictions;
    let steps = 0;
    while (s.cacheStats.evictions === before && steps < 5000) {
      step(s);
      steps++;
    }
    return steps;
  };
  const first = lifetime(1);
  for (let i = 2; i < 6; i++) lifetime(i);
  const later = lifetime(6);
  assert.ok(s.cacheStats.reuseRate.prompt < 0.3, `rate ${s.cacheStats.reuseRate.prompt}`);
  assert.ok(later * 2 < first, `first held ${first} steps, after 5 unused ones ${later}`);
  // A chat's history is weighed by the chats' own rate: the unused prompts did not touch it.
  assert.equal(s.cacheStats.reuseRate.chat, 1);
  const chatLife = lifetime(40, "chat");
  assert.ok(chatLife > later * 2, `a chat's history held ${chatLife} steps, a prompt ${later}`);
  // A chat's turns: each new prompt extends the last one, which is reused whole.
  let history = tokens(1000, 50);
  for (let turn = 0; turn < 6; turn++) {
    const k = key++;
    history = Int32Array.from([...history, ...tokens(300, 60 + turn)]);
    s.add({ key: k, prompt: history, priority: "interactive", cachePrompt: true });
    while (!step(s).sampled.includes(k));
    if (turn > 0) {
      assert.ok(s.cachedTokens(k) >= history.length - 301, `turn ${turn}: ${s.cachedTokens(k)}`);
    }
    s.finish(k, true);
  }
  assert.ok(
    s.cacheStats.reuseRate.prompt > 0.5,
    `rate after reuse ${s.cacheStats.reuseRate.prompt}`,
  );
});

Deno.test("scheduler: paused streams get no row but keep their cells", () => {
  const s = scheduler();
  decoding(s, 3);
  const p = step(s, (k) => k === 1);
  assert.deepEqual(decodeRows(p.calls[0]).sort(), [0, 2]);
  assert.equal(s.hasWork((k) => k >= 0), false);
  assert.equal(s.hasWork(() => false), true);
});

Deno.test("scheduler: spare tokens are what a step leaves of the latency budget", () => {
  const s = scheduler({ cost: new FakeCost(10, 2), latencyBudget: 2 });
  step(s);
  assert.equal(s.spareTokens(), 512, "idle: no budget to break");
  decoding(s, 4);
  step(s);
  // 4 rows: 18 ms; 2x is 36 ms; another pass costs 10 + 2 t: 4 tokens.
  assert.equal(s.spareTokens(), 4);
});

Deno.test("deterministic scheduler: contiguous ids, fillers in holes, two rows at least, chunks under 64 in calls of their own", () => {
  const s = scheduler({ deterministic: true, nSeqMax: 4, maxLive: 4, nCtx: 4 * 512, nCtxSeq: 512 });
  s.add({ key: 0, prompt: tokens(3, 1), priority: "interactive", cachePrompt: false });
  s.add({ key: 1, prompt: tokens(3, 2), priority: "interactive", cachePrompt: false });
  s.add({ key: 2, prompt: tokens(3, 3), priority: "interactive", cachePrompt: false });
  for (let i = 0; i < 3; i++) step(s);
  s.finish(1, false);
  // Streams 0 and 2 decode: ids 0..2 with a filler on the free id 1.
  const p = step(s);
  const kinds = p.calls[0].rows.map((r) => `${r.kind}:${r.seq}`);
  assert.deepEqual(kinds, ["decode:0", "filler:1", "decode:2"]);
  assert.ok(p.calls[0].rows.every((r) => r.logits));
  assert.ok(p.ops.some((m) => m.op === "rm" && m.seq === 1), "the filler's cell is removed");
  // A lone stream: padded with a filler on a spare id (no lookup drafts here).
  s.finish(2, false);
  const q = step(s);
  assert.deepEqual(q.calls[0].rows.map((r) => r.kind), ["decode", "filler"]);
  // A long prompt beside it: one chunk of at most 63 tokens per step, in its own call.
  s.add({ key: 3, prompt: tokens(200, 4), priority: "interactive", cachePrompt: false });
  const r = step(s);
  assert.equal(r.calls.length, 2);
  assert.ok(r.calls[1].promptOnly);
  assert.ok(promptRows(r.calls[1]) <= DETERMINISTIC_MAX_CHUNK);
  assert.ok(promptRows(r.calls[1]) >= 2);
});

Deno.test("deterministic scheduler: a free sequence's own previous tokens are reused, the rest trimmed", () => {
  const s = scheduler({ deterministic: true, nSeqMax: 2, maxLive: 2, nCtx: 2 * 512, nCtxSeq: 512 });
  const history = tokens(100, 5);
  s.add({ key: 0, prompt: history, priority: "interactive", cachePrompt: true });
  for (let i = 0; i < 6; i++) step(s);
  const seqOfStream = (plan: StepPlan) => plan.calls[0].rows.find((r) => r.key === 0)?.seq;
  const seq = seqOfStream(step(s));
  const held = s.position(0);
  s.finish(0, true);
  s.add({
    key: 1,
    prompt: Int32Array.from([...history.subarray(0, 80), 7, 7, 7]),
    priority: "interactive",
    cachePrompt: true,
  });
  const p = step(s);
  assert.deepEqual(p.memory, [{ op: "rm", seq, from: 80 }], "trimmed to the shared 80 tokens");
  assert.ok(held > 80);
  assert.equal(s.cachedTokens(1), 80);
});
