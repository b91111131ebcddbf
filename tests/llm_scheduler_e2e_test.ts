/**
 * The scheduler through the real engine (llama.cpp, the tiny generated model): mixed
 * steps, the prefix cache, eviction, full contexts, cancels. Progress is counted in
 * steps and tokens, never in milliseconds.
 */
import { delay } from "../src/protocol/async.ts";
import assert from "node:assert/strict";
import { type FakeStream, generate, tinyService } from "./llm_helpers.ts";
import type { LlmService } from "../src/llm/mod.ts";

/** Greedy prompts whose trajectories run long on the tiny model (see llm_service_test.ts). */
const PROMPTS = [
  "Hello world, the quick brown fox",
  "function return const let",
  "The daemon serves many programs at once.",
  "water sun earth father mother",
];
const LONG = "the people of the world and the water and the sun ".repeat(12);

interface Metrics {
  decode_steps: number;
  prefill_tokens: number;
  prefill_ms: number;
  kv_cells_used: number;
  kv_cells_total: number;
  kv_cells_span: number;
  active_streams: number;
  requests: Record<string, number>;
  prefix_cache: {
    hits: number;
    tokens_reused: number;
    evictions: number;
    sequences: number;
    cells: number;
  };
}

function metrics(llm: LlmService): Metrics {
  return llm.metrics!().llm as unknown as Metrics;
}

function ids(s: FakeStream): number[] {
  return s.tokens().map((t) => t.token_id);
}

function usage(s: FakeStream): { prompt_tokens: number; cached_tokens: number } {
  return (s.last().fields as { usage: { prompt_tokens: number; cached_tokens: number } }).usage;
}

async function until(cond: () => boolean, what: string) {
  for (let i = 0; !cond(); i++) {
    if (i > 20000) throw new Error(`timed out waiting: ${what}`);
    await delay(1);
  }
}

/** Engine figures arrive with each step's events; wait until the active count settles. */
async function settled(llm: LlmService) {
  await until(() => metrics(llm).active_streams === 0, "no active stream");
  await delay(20);
}

Deno.test("a prompt arriving while 4 streams decode is prefilled inside their steps: they never stop", async () => {
  await using llm = await tinyService({ parallel: 8, ctx: 8192 });
  const streams = await Promise.all(
    PROMPTS.map((p) => generate(llm, { prompt: p, max_tokens: 100000, temperature: 0 })),
  );
  await until(() => streams.every((s) => s.tokens().length > 3), "4 streams decoding");
  const before = streams.map((s) => s.tokens().length);
  const m0 = metrics(llm);
  const late = await generate(llm, { prompt: LONG, max_tokens: 1, temperature: 0 });
  await late.done();
  const after = streams.map((s) => s.tokens().length);
  const m1 = metrics(llm);
  const steps = m1.decode_steps - m0.decode_steps;
  const prompt = usage(late).prompt_tokens;
  assert.ok(prompt > 100);
  assert.ok(steps >= 2, `the prompt took ${steps} steps`);
  for (let i = 0; i < 4; i++) {
    // A row in every step while the prompt was prefilled (the first and last may fall
    // either side of the counters' reads).
    assert.ok(
      after[i] - before[i] >= steps - 2,
      `stream ${i}: ${after[i] - before[i]} tokens in ${steps} steps`,
    );
    assert.ok(!streams[i].ended);
  }
  // Every prompt token rode in the decode calls: no prompt-only pass.
  assert.ok(m1.prefill_tokens - m0.prefill_tokens >= prompt - 1);
  assert.equal(m1.prefill_ms, m0.prefill_ms);
  for (const s of streams) s.abort("cancelled");
  await Promise.all(streams.map((s) => s.done()));
});

Deno.test("a cached prefix is reused: cached_tokens, only the rest prefilled, the same greedy tokens as without the cache", async () => {
  await using llm = await tinyService({ parallel: 4, ctx: 2048 });
  // Under 64 tokens in all, so both runs take the same kernel paths (see engine.ts).
  const system = "You are a terse assistant. The water and the sun.";
  const first = await generate(llm, {
    prompt: `${system} Say hello`,
    max_tokens: 8,
    temperature: 0,
  });
  await first.done();
  const question = `${system} What is the time in the world`;
  const cached = await generate(llm, { prompt: question, max_tokens: 24, temperature: 0 });
  await cached.done();
  const uncached = await generate(llm, {
    prompt: question,
    max_tokens: 24,
    temperature: 0,
    cache_prompt: false,
  });
  await uncached.done();
  const u = usage(cached);
  assert.ok(u.cached_tokens >= 10 && u.cached_tokens < u.prompt_tokens, JSON.stringify(u));
  assert.equal(usage(uncached).cached_tokens, 0);
  assert.equal(usage(uncached).prompt_tokens, u.prompt_tokens);
  assert.deepEqual(ids(cached), ids(uncached));
  const m = metrics(llm);
  assert.ok(m.prefix_cache.hits >= 1);
  assert.ok(m.prefix_cache.tokens_reused >= u.cached_tokens);
});

Deno.test("deterministic mode: a chat's next turn reuses its history and gives the same tokens as an uncached run, bit for bit", async () => {
  await using llm = await tinyService({ deterministic: true, parallel: 2, ctx: 2048 });
  let history = "The daemon serves many programs at once. ".repeat(4);
  for (let turn = 0; turn < 3; turn++) {
    for (const temperature of [0, 0.9]) {
      const params = { prompt: history, max_tokens: 20, temperature, seed: 42 + turn };
      const uncached = await generate(llm, { ...params, cache_prompt: false });
      await uncached.done();
      const cached = await generate(llm, params);
      await cached.done();
      assert.deepEqual(ids(cached), ids(uncached), `turn ${turn}, temperature ${temperature}`);
      if (turn > 0 && temperature === 0) {
        assert.ok(usage(cached).cached_tokens > 40, JSON.stringify(usage(cached)));
      }
      if (temperature === 0) history += cached.text() + " And then the water. ";
    }
  }
});

Deno.test("a small context evicts cached prefixes for new requests, and every request completes", async () => {
  await using llm = await tinyService({ parallel: 2, ctx: 512 });
  for (let i = 0; i < 12; i++) {
    const s = await generate(llm, {
      prompt: `${i} ${PROMPTS[i % 4]} ${LONG.slice(0, 150 + 10 * i)}`,
      max_tokens: 20,
      temperature: 0,
    });
    await s.done();
    assert.equal(s.tokens().length, 20, `request ${i}`);
    assert.ok(metrics(llm).kv_cells_used <= 512);
  }
  const m = metrics(llm);
  assert.ok(m.prefix_cache.evictions > 0, JSON.stringify(m.prefix_cache));
  assert.equal(m.requests.length, 12);
});

Deno.test("when two streams fill the shared context, the younger ends with length, then the older", async () => {
  await using llm = await tinyService({ parallel: 2, ctx: 512, prefixCache: false });
  const old = await generate(llm, { prompt: PROMPTS[0], max_tokens: 100000, temperature: 0 });
  await until(() => old.tokens().length > 10, "the first stream decoding");
  const young = await generate(llm, { prompt: PROMPTS[1], max_tokens: 100000, temperature: 0 });
  await young.done();
  assert.equal((young.last().fields as { reason: string }).reason, "length");
  assert.ok(!old.ended, "the older one goes on");
  await old.done();
  assert.equal((old.last().fields as { reason: string }).reason, "length");
  // The older one then used every cell but the one its last token would need.
  const u = usage(old);
  assert.equal(u.prompt_tokens + old.tokens().length, 512 + 1);
});

Deno.test("cancel and disconnect free a stream's cells, shared prefix cells included, and leave nothing cached", async () => {
  await using llm = await tinyService({ parallel: 4, ctx: 2048 });
  const base = await generate(llm, { prompt: LONG, max_tokens: 4, temperature: 0 });
  await base.done();
  await settled(llm);
  const cells = metrics(llm).kv_cells_used;
  const sequences = metrics(llm).prefix_cache.sequences;
  assert.ok(cells >= 100);
  for (const reason of ["cancelled", "disconnected"] as const) {
    // One shares the cached prefix, one has a prompt of its own.
    const shared = await generate(llm, {
      prompt: LONG + " more",
      max_tokens: 100000,
      temperature: 0,
    });
    const own = await generate(llm, {
      prompt: PROMPTS[2].repeat(6),
      max_tokens: 100000,
      temperature: 0,
    });
    await until(() => shared.tokens().length > 5 && own.tokens().length > 5, "both decoding");
    const busy = metrics(llm);
    assert.ok(busy.kv_cells_used > cells);
    // Every row scans the span: at least the cells in use, padded as llama.cpp pads n_kv.
    assert.ok(busy.kv_cells_span >= busy.kv_cells_used, `span ${busy.kv_cells_span}`);
    assert.equal(busy.kv_cells_span % 256, 0);
    shared.abort(reason);
    own.abort(reason);
    await Promise.all([shared.done(), own.done()]);
    await settled(llm);
    const m = metrics(llm);
    assert.ok(usage(shared).cached_tokens > 100, "it did share the prefix");
    assert.equal(m.kv_cells_used, cells, `${reason}: back to the cached prefix alone`);
    assert.equal(m.prefix_cache.sequences, sequences);
  }
  assert.equal(metrics(llm).requests.cancelled, 2);
  assert.equal(metrics(llm).requests.disconnected, 2);
});
