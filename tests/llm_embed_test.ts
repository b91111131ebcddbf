/**
 * `embed` on random-weight models: with random weights, similar texts are not closer than
 * others, so these tests check only what holds for any weights: shape, normalization,
 * determinism, the same vector alone or in a batch, usage, limits, and that embedding
 * shares the engine with token streams without stopping them.
 */
import { delay } from "../src/protocol/async.ts";
import assert from "node:assert/strict";
import { generate, request, tinyService, vocabService } from "./llm_helpers.ts";
import { EmbedBudget } from "../src/llm/embedder.ts";

const TEXTS = [
  "The quick brown fox jumps over the lazy dog.",
  "世界 and 😀, combining e\u0301.",
  "hello",
  "function return const let ".repeat(20),
];

function norm(v: number[]): number {
  return Math.sqrt(v.reduce((a, x) => a + x * x, 0));
}

Deno.test("embed returns one L2-normalized vector of n_embd floats per input, with usage", async () => {
  await using llm = await vocabService("qwen2");
  const nEmbd = llm.info.n_embd;
  const r = await request(llm, { type: "embed", input: TEXTS });
  const f = r.last().fields as {
    embeddings: number[][];
    usage: { prompt_tokens: number; total_tokens: number };
  };
  assert.equal(r.last().event, "embed");
  assert.equal(f.embeddings.length, TEXTS.length);
  let tokens = 0;
  for (const [i, v] of f.embeddings.entries()) {
    assert.equal(v.length, nEmbd);
    assert.ok(v.every(Number.isFinite));
    assert.ok(Math.abs(norm(v) - 1) < 1e-5, `|v${i}| = ${norm(v)}`);
    const t = await request(llm, { type: "tokenize", text: TEXTS[i], add_special: true });
    tokens += (t.last().fields.tokens as number[]).length;
  }
  assert.equal(f.usage.prompt_tokens, tokens);
  assert.equal(f.usage.total_tokens, tokens);
  // Different texts, different vectors (random weights still map texts apart).
  assert.notDeepEqual(f.embeddings[0], f.embeddings[1]);
  // A single string is one input.
  const one = await request(llm, { type: "embed", input: "hello" });
  assert.equal((one.last().fields.embeddings as number[][]).length, 1);
});

Deno.test("embed is deterministic, and a text gets the same vector alone or in a batch", async () => {
  await using llm = await tinyService();
  const batch = (await request(llm, { type: "embed", input: TEXTS })).last().fields
    .embeddings as number[][];
  const again = (await request(llm, { type: "embed", input: TEXTS })).last().fields
    .embeddings as number[][];
  assert.deepEqual(again, batch);
  for (const [i, text] of TEXTS.entries()) {
    const alone = (await request(llm, { type: "embed", input: [text] })).last().fields
      .embeddings as number[][];
    // Bit-identical: a text's rows never share a decode with another text's.
    assert.deepEqual(alone[0], batch[i], `text ${i}`);
  }
});

Deno.test("embed refuses empty and too-long inputs with the protocol's codes", async () => {
  await using llm = await tinyService();
  const empty = await request(llm, { type: "embed", input: ["ok", ""] });
  // The tiny vocabulary adds BOS, so "" has one token: it is embedded, not refused.
  if (empty.failure) assert.equal(empty.failure.code, "E_PROTO_BAD_REQUEST");
  const long = await request(llm, { type: "embed", input: ["word ".repeat(5000)] });
  assert.equal(long.failure?.code, "E_LIMIT_PROMPT_TOO_LARGE");
  const bad = await request(llm, { type: "embed", input: [] as string[] });
  assert.equal(bad.failure?.code, "E_PROTO_BAD_REQUEST");
  const after = await request(llm, { type: "embed", input: ["still works"] });
  assert.equal(after.last().event, "embed");
});

Deno.test("an embedding batch runs beside a token stream: the stream keeps producing tokens meanwhile", async () => {
  await using llm = await tinyService({ parallel: 2 });
  const stream = await generate(llm, {
    prompt: "Hello world, the quick brown fox",
    max_tokens: 100_000,
    temperature: 0,
  });
  while (stream.tokens().length < 5) await delay(5);
  const before = stream.tokens().length;
  const texts = Array.from({ length: 16 }, (_, i) => `text ${i} ` + "water sun earth ".repeat(40));
  const r = await request(llm, { type: "embed", input: texts });
  const during = stream.tokens().length - before;
  assert.equal((r.last().fields.embeddings as number[][]).length, 16);
  // 16 texts of ~120 tokens took many steps; tokens kept coming in each of them.
  assert.ok(during > 20, `only ${during} tokens while embedding`);
  stream.abort("cancelled");
  await stream.done();
  const m = llm.metrics!() as { llm: { model_requests: { embed: number; embed_inputs: number } } };
  assert.equal(m.llm.model_requests.embed, 1);
  assert.equal(m.llm.model_requests.embed_inputs, 16);
});

Deno.test("the embedding budget is the prefill share of a decode step at the measured cost per token", () => {
  const b = new EmbedBudget(0.4);
  assert.equal(b.tokens(), EmbedBudget.FIRST); // nothing measured yet
  b.decodeStep(20);
  b.embedded(10, 2); // 0.2 ms a token
  assert.equal(b.tokens(), 40); // 0.4 × 20 ms / 0.2 ms
  for (let i = 0; i < 50; i++) b.embedded(10, 40); // tokens got expensive: 4 ms each
  assert.equal(b.tokens(), 2);
  for (let i = 0; i < 50; i++) b.embedded(10, 400);
  assert.equal(b.tokens(), 1); // never zero: embeddings always progress
});
