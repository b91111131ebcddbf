/**
 * The generate service driven directly with fake server streams, on a tiny generated
 * model and the real llama.cpp library.
 */
import { statFields } from "./_proc.ts";
import assert from "node:assert/strict";
import { DEMO_MODEL } from "../src/llm/mod.ts";
import { type FakeStream, generate, tinyModel, tinyService } from "./llm_helpers.ts";
import { delay } from "../src/protocol/async.ts";

// Streams meant to run until cancelled, disconnected or out of context use these
// prompts greedily (temperature 0): on the tiny model their greedy trajectories run
// thousands of tokens without an end-of-generation token, so no test depends on luck.
const PROMPTS = [
  "Hello world, the quick brown fox",
  "function return const let",
  "The daemon serves many programs at once.",
  "water sun earth father mother",
];

/** A long prompt (well over one 63-token chunk) so chunked prefill is exercised. */
const LONG = "the people of the world and the water and the sun ".repeat(12);

function ids(s: FakeStream): number[] {
  return s.tokens().map((t) => t.token_id);
}

async function until(cond: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await delay(2);
  }
}

Deno.test("a stream with max_tokens N produces exactly N token events then eos length", async () => {
  await using llm = await tinyService();
  for (const n of [1, 2, 17, 100]) {
    const s = await generate(llm, { prompt: PROMPTS[0], max_tokens: n, seed: 5 });
    await s.done();
    assert.equal(s.tokens().length, n);
    assert.equal(s.last().event, "eos");
    const eos = s.last().fields as { reason: string; usage: Record<string, number> };
    assert.equal(eos.reason, "length");
    assert.equal(eos.usage.completion_tokens, n);
    assert.ok(eos.usage.prompt_tokens >= 8);
    assert.ok(eos.usage.ttft_ms >= 0 && eos.usage.total_ms >= eos.usage.ttft_ms);
  }
});

Deno.test("four concurrent streams each get only their own events", async () => {
  await using llm = await tinyService();
  const streams = await Promise.all(
    PROMPTS.map((p, i) => generate(llm, { prompt: p, max_tokens: 20 + i * 5, seed: i })),
  );
  await Promise.all(streams.map((s) => s.done()));
  const alone = [];
  for (let i = 0; i < 4; i++) {
    assert.equal(streams[i].tokens().length, 20 + i * 5);
    assert.equal(streams[i].last().event, "eos");
    const a = await generate(llm, { prompt: PROMPTS[i], max_tokens: 20 + i * 5, seed: i });
    await a.done();
    alone.push(ids(a));
  }
  // Each stream's tokens are exactly what it produces alone: nothing leaked between them.
  assert.deepEqual(streams.map(ids), alone);
});

Deno.test("deterministic mode: the same seed gives the same tokens alone and beside three other streams started at other moments", async () => {
  await using llm = await tinyService({ deterministic: true });
  for (const prompt of [PROMPTS[0], LONG]) {
    const params = { prompt, max_tokens: 60, seed: 1234, temperature: 0.9 };
    const alone = await generate(llm, params);
    await alone.done();
    const greedyAlone = await generate(llm, { ...params, temperature: 0 });
    await greedyAlone.done();

    // Others start first, at different moments, with different prompts and lengths, and
    // are decoding when this one arrives, so its prompt is cut into time-budgeted chunks.
    const others: FakeStream[] = [];
    others.push(await generate(llm, { prompt: PROMPTS[3], max_tokens: 150, seed: 1 }));
    await until(() => others[0].tokens().length > 0);
    others.push(await generate(llm, { prompt: PROMPTS[1], max_tokens: 100, seed: 2 }));
    await until(() => others[1].tokens().length > 3);
    const beside = await generate(llm, params);
    await delay(2);
    others.push(await generate(llm, { prompt: PROMPTS[2] + LONG, max_tokens: 70, seed: 3 }));
    const greedyBeside = await generate(llm, { ...params, temperature: 0 });
    await Promise.all([beside.done(), greedyBeside.done(), ...others.map((s) => s.done())]);

    assert.equal(alone.tokens().length, 60);
    assert.deepEqual(ids(beside), ids(alone), `sampled, prompt of ${prompt.length} chars`);
    assert.deepEqual(
      ids(greedyBeside),
      ids(greedyAlone),
      `greedy, prompt of ${prompt.length} chars`,
    );
  }
});

Deno.test("different seeds give different samples", async () => {
  await using llm = await tinyService();
  const a = await generate(llm, { prompt: PROMPTS[0], max_tokens: 30, seed: 1, temperature: 1 });
  const b = await generate(llm, { prompt: PROMPTS[0], max_tokens: 30, seed: 2, temperature: 1 });
  await Promise.all([a.done(), b.done()]);
  assert.notDeepEqual(ids(a), ids(b));
});

Deno.test("a stop string ends the stream with stop_string and never appears in the text", async () => {
  await using llm = await tinyService();
  const params = { prompt: PROMPTS[2], max_tokens: 80, seed: 7, temperature: 0.7 };
  const full = await generate(llm, params);
  await full.done();
  const text = full.text();
  assert.ok(text.length > 40, "the model produced text to cut");
  // A stop string taken from the middle of what the same seed produces.
  const stop = text.slice(20, 24);
  const cut = text.indexOf(stop);
  const s = await generate(llm, { ...params, stop: ["never-there", stop] });
  await s.done();
  const eos = s.last().fields as { reason: string };
  assert.equal(eos.reason, "stop_string");
  assert.equal(s.text(), text.slice(0, cut));
  assert.ok(!s.text().includes(stop));
  for (const t of s.tokens()) assert.ok(!t.text.includes(stop));
});

Deno.test("stream:false answers one result with the text the stream would have sent", async () => {
  await using llm = await tinyService();
  const params = { prompt: PROMPTS[1], max_tokens: 25, seed: 9 };
  const streamed = await generate(llm, params);
  const whole = await generate(llm, { ...params, stream: false });
  await Promise.all([streamed.done(), whole.done()]);
  assert.equal(whole.events.length, 1);
  assert.equal(whole.events[0].event, "result");
  const r = whole.events[0].fields as {
    text: string;
    reason: string;
    usage: Record<string, number>;
  };
  assert.equal(r.text, streamed.text());
  assert.equal(r.reason, "length");
  assert.equal(r.usage.completion_tokens, 25);
});

Deno.test("messages are rendered with the chat template before generation", async () => {
  await using llm = await tinyService();
  const s = await generate(llm, {
    messages: [
      { role: "system", content: "You are terse." },
      { role: "user", content: "Say hello" },
    ],
    max_tokens: 5,
    seed: 1,
  });
  await s.done();
  assert.equal(s.tokens().length, 5);
  const usage = (s.last().fields as { usage: { prompt_tokens: number } }).usage;
  const plain = await generate(llm, { prompt: "You are terse. Say hello", max_tokens: 1 });
  await plain.done();
  const plainTokens = (plain.last().fields as { usage: { prompt_tokens: number } }).usage;
  // chatml adds <|im_start|>role\n ... <|im_end|> around each message.
  assert.ok(usage.prompt_tokens >= plainTokens.prompt_tokens + 8, JSON.stringify(usage));
});

Deno.test("token text is always well-formed UTF-8, even from byte tokens", async () => {
  await using llm = await tinyService();
  const streams = await Promise.all(
    [1, 2, 3].map((seed) =>
      generate(llm, {
        prompt: "\u00e9\u00e8 \u{1F600} \u4e2d\u6587",
        max_tokens: 200,
        seed,
        temperature: 2,
        top_k: 0,
        top_p: 1,
        min_p: 0,
      })
    ),
  );
  await Promise.all(streams.map((s) => s.done()));
  let chars = 0;
  for (const s of streams) {
    for (const t of s.tokens()) {
      assert.ok(t.text.isWellFormed(), JSON.stringify(t.text));
      const round = new TextDecoder("utf-8", { fatal: true }).decode(
        new TextEncoder().encode(t.text),
      );
      assert.equal(round, t.text);
      chars += t.text.length;
    }
  }
  assert.ok(chars > 0);
});

Deno.test("cancel mid-stream ends it at once with eos cancelled and frees its sequence", async () => {
  await using llm = await tinyService({ parallel: 1, ctx: 2048 });
  const s = await generate(llm, { prompt: PROMPTS[0], max_tokens: 1500, seed: 1 });
  await until(() => s.tokens().length >= 5);
  s.abort("cancelled");
  const atCancel = s.tokens().length;
  await s.done();
  const eos = s.last().fields as { reason: string; usage: { completion_tokens: number } };
  assert.equal(s.last().event, "eos");
  assert.equal(eos.reason, "cancelled");
  assert.equal(s.tokens().length, atCancel, "no token after the cancel");
  // The only sequence is free again: the next request runs.
  const next = await generate(llm, { prompt: PROMPTS[1], max_tokens: 3 });
  await next.done();
  assert.equal(next.tokens().length, 3);
  const m = llm.metrics!().llm as { requests: Record<string, number> };
  assert.equal(m.requests.cancelled, 1);
});

Deno.test("a disconnect mid-stream frees the sequence for the request waiting in the queue", async () => {
  await using llm = await tinyService({ parallel: 1, ctx: 2048 });
  const a = await generate(llm, { prompt: PROMPTS[0], max_tokens: 1500, seed: 1 });
  const b = await generate(llm, { prompt: PROMPTS[1], max_tokens: 4, seed: 1 });
  await until(() => a.tokens().length >= 3);
  assert.equal(b.tokens().length, 0, "b waits: the only sequence is a's");
  a.abort("disconnected");
  await b.done();
  assert.equal(b.tokens().length, 4);
  assert.equal((b.last().fields as { reason: string }).reason, "length");
  const m = llm.metrics!().llm as { requests: Record<string, number>; active_streams: number };
  assert.equal(m.requests.disconnected, 1);
  assert.equal(m.active_streams, 0);
});

Deno.test("a full queue answers E_BUSY and a cancelled waiting request leaves the queue", async () => {
  await using llm = await tinyService({ parallel: 1, queue: 1, ctx: 2048 });
  const a = await generate(llm, { prompt: PROMPTS[0], max_tokens: 1500, temperature: 0 });
  const b = await generate(llm, { prompt: PROMPTS[1], max_tokens: 2 });
  const c = await generate(llm, { prompt: PROMPTS[2], max_tokens: 2 });
  assert.equal(c.failure?.code, "E_BUSY");
  assert.match(c.failure!.message, /busy/);
  assert.equal((llm.metrics!().llm as { queue_depth: number }).queue_depth, 1);
  b.abort("cancelled");
  await b.done();
  assert.equal((b.last().fields as { reason: string }).reason, "cancelled");
  const d = await generate(llm, { prompt: PROMPTS[2], max_tokens: 2 });
  assert.equal(d.failure, null, "the queue has room again");
  a.abort("cancelled");
  await d.done();
  assert.equal(d.tokens().length, 2);
});

Deno.test("a prompt longer than a stream's context gets E_LIMIT_PROMPT_TOO_LARGE", async () => {
  // By default one stream may hold the whole context; deterministic mode splits it.
  for (const [deterministic, cells] of [[false, 512], [true, 256]] as const) {
    await using llm = await tinyService({ parallel: 2, ctx: 512, deterministic });
    const s = await generate(llm, { prompt: "the water ".repeat(300), max_tokens: 2 });
    await s.done();
    assert.equal(s.failure?.code, "E_LIMIT_PROMPT_TOO_LARGE");
    assert.match(s.failure!.message, new RegExp(`at most ${cells} `));
    // The service goes on.
    const ok = await generate(llm, { prompt: "the water", max_tokens: 2 });
    await ok.done();
    assert.equal(ok.tokens().length, 2);
  }
});

Deno.test("a stream that reaches its context ends with eos length", async () => {
  for (const [deterministic, cells] of [[false, 512], [true, 256]] as const) {
    await using llm = await tinyService({ parallel: 2, ctx: 512, deterministic });
    const s = await generate(llm, { prompt: PROMPTS[0], max_tokens: 100000, temperature: 0 });
    await s.done();
    const eos = s.last().fields as { reason: string; usage: { prompt_tokens: number } };
    assert.equal(eos.reason, "length");
    // The cells hold the prompt and every token but the last, which needs no cell.
    assert.equal(eos.usage.prompt_tokens + s.tokens().length, cells + 1);
  }
});

Deno.test("bad generate parameters get E_PROTO_BAD_REQUEST", async () => {
  await using llm = await tinyService();
  const bad = [
    { prompt: "x", max_tokens: -1 },
    { prompt: "x", max_tokens: 1.5 },
    { prompt: "x", max_tokens: "10" },
    { prompt: "x", temperature: "hot" },
    { prompt: "x", temperature: -1 },
    { prompt: "x", top_p: 2 },
    { prompt: "x", seed: -3 },
    { prompt: "x", priority: "urgent" },
    { prompt: "x", stop: "END" },
    { prompt: 5 },
    {},
  ];
  for (const fields of bad) {
    const s = await generate(llm, fields);
    assert.equal(s.failure?.code, "E_PROTO_BAD_REQUEST", JSON.stringify(fields));
  }
});

Deno.test("a stream whose connection is full is left out of batches until it drains", async () => {
  await using llm = await tinyService();
  const slow = await generate(llm, { prompt: PROMPTS[0], max_tokens: 200, seed: 3 });
  slow.open = false;
  const fast = await generate(llm, { prompt: PROMPTS[1], max_tokens: 150, seed: 4 });
  await fast.done();
  const held = slow.tokens().length;
  assert.ok(held < 10, `a full connection stops getting tokens (got ${held})`);
  slow.drain();
  await slow.done();
  assert.equal(slow.tokens().length, 200);
  const ref = await generate(llm, { prompt: PROMPTS[0], max_tokens: 200, seed: 3 });
  await ref.done();
  assert.deepEqual(ids(slow), ids(ref), "pausing does not change the tokens");
});

Deno.test("interactive requests are admitted before batch ones, and batch ones are not starved", async () => {
  await using llm = await tinyService({ parallel: 1, ctx: 1024, queue: 32 });
  const order: string[] = [];
  const blocker = await generate(llm, { prompt: "x", max_tokens: 400 });
  const waiting: Promise<FakeStream>[] = [];
  for (let i = 0; i < 3; i++) {
    waiting.push(generate(llm, { prompt: "b", max_tokens: 1, priority: "batch" }));
  }
  for (let i = 0; i < 8; i++) waiting.push(generate(llm, { prompt: "i", max_tokens: 1 }));
  const streams = await Promise.all(waiting);
  streams.forEach((s, i) => s.done().then(() => order.push(i < 3 ? "b" : "i")));
  blocker.abort("cancelled");
  await Promise.all(streams.map((s) => s.done()));
  // 3 interactive, then a batch one; interactive first overall; every batch one ran.
  assert.deepEqual(order.join(""), "iiibiiibiib");
});

Deno.test("shutdown ends running and waiting streams with eos shutdown", async () => {
  const llm = await tinyService({ parallel: 1, ctx: 2048 });
  const a = await generate(llm, { prompt: PROMPTS[0], max_tokens: 1500, temperature: 0 });
  const b = await generate(llm, { prompt: PROMPTS[1], max_tokens: 5, stream: false });
  await until(() => a.tokens().length > 2);
  await llm.close!();
  await Promise.all([a.done(), b.done()]);
  assert.equal((a.last().fields as { reason: string }).reason, "shutdown");
  assert.equal(b.last().event, "result");
  assert.equal((b.last().fields as { reason: string }).reason, "shutdown");
});

Deno.test("metrics count tokens, outcomes and latency percentiles", async () => {
  await using llm = await tinyService();
  const streams = await Promise.all(
    PROMPTS.map((p) => generate(llm, { prompt: p, max_tokens: 10 })),
  );
  await Promise.all(streams.map((s) => s.done()));
  const m = llm.metrics!().llm as Record<string, unknown>;
  assert.equal(m.tokens_out, 40);
  assert.ok((m.tokens_in as number) > 20);
  assert.equal((m.requests as Record<string, number>).length, 4);
  assert.equal(m.active_streams, 0);
  assert.equal(m.queue_depth, 0);
  // What the finished streams left is kept as cached prefixes, and nothing else.
  const cache = m.prefix_cache as {
    sequences: number;
    cells: number;
    reuse_rate: { chat: number; prompt: number };
  };
  assert.equal(cache.sequences, 4);
  assert.equal(m.kv_cells_used, cache.cells);
  // Four prompts cached and none reused yet: their rate fell from the prior of 1; no chat
  // was cached, so the chats' rate is untouched.
  const rate = cache.reuse_rate;
  assert.ok(rate.prompt > 0 && rate.prompt < 1, `reuse_rate ${JSON.stringify(rate)}`);
  assert.equal(rate.chat, 1);
  const ttft = m.ttft_ms as { count: number; p50: number; p99: number };
  assert.equal(ttft.count, 4);
  assert.ok(ttft.p99 >= ttft.p50 && ttft.p50 > 0);
  const itl = m.inter_token_ms as { count: number };
  assert.equal(itl.count, 36);
  assert.ok((m.batch_rows as { max: number }).max >= 2);
  const hello = llm.hello!() as { model: { n_ctx: number; n_ctx_total: number; parallel: number } };
  assert.equal(hello.model.parallel, 4);
  // One stream may use the whole (unified) context.
  assert.equal(hello.model.n_ctx, 1024);
  assert.equal(hello.model.n_ctx_total, 1024);
});

Deno.test("deterministic mode pads a lone stream's decodes to two rows; the default mode does not", async () => {
  for (const deterministic of [true, false]) {
    await using llm = await tinyService({ deterministic, lookup: false });
    const hello = llm.hello!() as { model: { batch_invariant: boolean; mode: string } };
    assert.equal(hello.model.batch_invariant, deterministic);
    assert.equal(hello.model.mode, deterministic ? "deterministic" : "default");
    // A prompt longer than the invariant chunk cap, so larger chunks are exercised too.
    const s = await generate(llm, { prompt: LONG, max_tokens: 20, temperature: 0 });
    await s.done();
    assert.equal(s.tokens().length, 20);
    assert.equal(s.last().fields.reason, "length");
    const m = llm.metrics!().llm as { batch_rows: { max: number }; prefill_tokens: number };
    assert.equal(m.batch_rows.max, deterministic ? 2 : 1);
    assert.ok(m.prefill_tokens > 63);
  }
});

Deno.test("deterministic mode: lookup drafts fill a lone stream's padding row, more tokens per decode, the same tokens", async () => {
  const runs = new Map<boolean, number[][]>();
  for (const lookup of [true, false]) {
    await using llm = await tinyService({ deterministic: true, lookup });
    const hello = llm.hello!() as { model: { lookup_drafts: boolean } };
    assert.equal(hello.model.lookup_drafts, lookup);
    const out: number[][] = [];
    for (
      const [prompt, temperature, n] of [[LONG, 0, 80], [PROMPTS[0], 0.9, 61], [
        PROMPTS[3],
        0,
        3,
      ]] as const
    ) {
      const s = await generate(llm, { prompt, max_tokens: n, temperature, seed: 99 });
      await s.done();
      assert.equal(s.tokens().length, n, "exactly max_tokens, drafts or not");
      out.push(ids(s));
    }
    const m = llm.metrics!().llm as {
      decode_steps: number;
      tokens_out: number;
      lookup_drafts: { decoded: number; accepted: number };
    };
    if (lookup) {
      // The tiny model's greedy output repeats itself, so drafts are accepted.
      assert.ok(m.lookup_drafts.accepted > 0, JSON.stringify(m.lookup_drafts));
      assert.ok(m.lookup_drafts.accepted <= m.lookup_drafts.decoded);
      assert.equal(m.decode_steps, m.tokens_out - m.lookup_drafts.accepted);
    } else {
      assert.deepEqual(m.lookup_drafts, { decoded: 0, accepted: 0 });
      assert.equal(m.decode_steps, m.tokens_out);
    }
    runs.set(lookup, out);
  }
  assert.deepEqual(runs.get(true), runs.get(false));
});

/** Scheduling policy and nice of each thread of this process (Linux /proc). */
function threadSched(): { policy: number; nice: number }[] {
  const out: { policy: number; nice: number }[] = [];
  for (const e of Deno.readDirSync("/proc/self/task")) {
    const f = statFields(`/proc/self/task/${e.name}/stat`);
    if (!f) continue; // the thread ended
    out.push({ nice: Number(f[19 - 3]), policy: Number(f[41 - 3]) });
  }
  return out;
}

Deno.test({
  name: "decode threads run at nice 5 by default, at SCHED_IDLE with decodePriority idle",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const SCHED_IDLE = 5;
    const before = threadSched().filter((t) => t.policy === SCHED_IDLE || t.nice === 5).length;
    {
      await using llm = await tinyService({ threads: 2 });
      const hello = llm.hello!() as { model: { decode_priority: string } };
      assert.equal(hello.model.decode_priority, "low");
      const s = await generate(llm, { prompt: PROMPTS[0], max_tokens: 5 });
      await s.done();
      // The engine worker and its pool thread.
      const now = threadSched();
      assert.ok(now.filter((t) => t.nice === 5 && t.policy !== SCHED_IDLE).length >= 2);
    }
    {
      await using llm = await tinyService({ threads: 2, decodePriority: "idle" });
      const hello = llm.hello!() as { model: { decode_priority: string } };
      assert.equal(hello.model.decode_priority, "idle");
      const s = await generate(llm, { prompt: PROMPTS[0], max_tokens: 5 });
      await s.done();
      assert.ok(threadSched().filter((t) => t.policy === SCHED_IDLE).length >= 2);
    }
    // Nothing else in the process was lowered (the test's own thread included); the
    // workers' threads end shortly after close.
    const lowered = () => threadSched().filter((t) => t.policy === SCHED_IDLE || t.nice === 5);
    for (let i = 0; i < 500 && lowered().length > before; i++) {
      await delay(20);
    }
    assert.equal(lowered().length, before);
  },
});

Deno.test("a request arriving while streams decode starts at once, not when they finish", async () => {
  // Steps of several milliseconds: long synchronous steps are what starve a worker's
  // message delivery.
  await using llm = await tinyService({
    parallel: 4,
    ctx: 8192,
    model: tinyModel({ ...DEMO_MODEL, name: "umad-mid", nEmbd: 512, nLayer: 4, nFf: 1536 }),
  });
  const long = await Promise.all(
    [1, 2].map((seed) => generate(llm, { prompt: LONG, max_tokens: 2000, seed })),
  );
  await until(() => long.every((s) => s.tokens().length > 5));
  const before = long[0].tokens().length;
  const late = await generate(llm, { prompt: PROMPTS[1], max_tokens: 3 });
  await late.done();
  assert.equal(late.tokens().length, 3);
  // Counted in decode steps of the running streams, not in ms: the late request's prompt
  // and three tokens take a few steps; a worker that starves its message port delivers
  // the request only after many (~670 ms of steps measured here, against ~60 ms).
  const steps = long[0].tokens().length - before;
  assert.ok(steps < 40, `the late request waited ${steps} steps of the running streams`);
  assert.ok(long.every((s) => !s.ended), "the long streams are still running");
  for (const s of long) s.abort("cancelled");
  await Promise.all(long.map((s) => s.done()));
});

Deno.test("sampling parameters reach the sampler chain: top_k 1 is greedy, repeat_penalty changes a greedy loop", async () => {
  await using llm = await tinyService();
  const run = async (fields: Record<string, unknown>) => {
    const s = await generate(llm, { prompt: PROMPTS[0], max_tokens: 40, seed: 8, ...fields });
    await s.done();
    return ids(s);
  };
  const greedy = await run({ temperature: 0 });
  assert.deepEqual(await run({ temperature: 1.5, top_k: 1 }), greedy);
  assert.deepEqual(await run({ temperature: 1.5, top_k: 0, top_p: 1e-6 }), greedy);
  assert.notDeepEqual(await run({ temperature: 1.5, top_k: 0, top_p: 1, min_p: 0 }), greedy);
  const penalized = await run({ temperature: 0, repeat_penalty: 3 });
  assert.notDeepEqual(penalized, greedy);
  const distinct = (xs: number[]) => new Set(xs).size;
  assert.ok(distinct(penalized) > distinct(greedy), "the penalty breaks repetition");
});
