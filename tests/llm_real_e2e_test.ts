/**
 * A real-tokenizer model through a real daemon process and the client library (MessagePack
 * and JSON): `--chat-template`, hello's report, tokenize/detokenize/embed, structured
 * output, tool calls, and bad grammars answered on a connection that stays usable.
 */
import assert from "node:assert/strict";
import { connect } from "../src/client/client.ts";
import { ensureLlamaSource } from "../src/llm/llama_source.ts";
import { ensureVocabModel } from "../src/llm/vocab_models.ts";
import { startDaemon } from "./_daemon.ts";

Deno.test("a Qwen2-tokenizer model with --chat-template FILE serves chat, tokenizer, embeddings, JSON and tool calls", async () => {
  const template = `${await ensureLlamaSource()}/models/templates/Qwen-Qwen2.5-7B-Instruct.jinja`;
  const d = await startDaemon([
    "--model",
    await ensureVocabModel("qwen2"),
    "--chat-template",
    template,
    "--threads",
    "1",
    "--parallel",
    "2",
    "--ctx",
    "2048",
  ], { withModel: true });
  try {
    for (const codec of ["msgpack", "json"] as const) {
      const client = await connect({ socket: d.socket, reconnect: false, codec });
      try {
        const model = (client.hello as unknown as { model: Record<string, unknown> }).model;
        assert.equal(model.chat_template, `file:${template}`);
        assert.equal(model.chat_template_renderer, "jinja");
        assert.equal(model.tool_call_format, "hermes");
        assert.equal(model.vocab_type, "bpe");
        assert.equal(model.n_vocab, 151936);

        const tok = await client.request({
          type: "tokenize",
          text: "Hello<|im_end|>",
          pieces: true,
        });
        assert.deepEqual(tok.tokens, [9707, 27, 91, 318, 6213, 91, 29]);
        const special = await client.request({
          type: "tokenize",
          text: "Hello<|im_end|>",
          special: true,
        });
        assert.deepEqual(special.tokens, [9707, 151645]);
        const detok = await client.request({ type: "detokenize", tokens: special.tokens });
        assert.equal(detok.text, "Hello<|im_end|>");

        const emb = await client.request({ type: "embed", input: ["a", "b c"] });
        assert.equal((emb.embeddings as number[][]).length, 2);
        assert.equal((emb.embeddings as number[][])[0].length, model.n_embd);

        const json = await client.request({
          type: "generate",
          messages: [{ role: "user", content: "A point?" }],
          json_schema: {
            type: "object",
            properties: { x: { type: "integer", minimum: 0, maximum: 9 } },
            required: ["x"],
          },
          stream: false,
          max_tokens: 60,
          seed: 1,
        });
        assert.equal(json.event, "result");
        const x = (JSON.parse(json.text as string) as { x: number }).x;
        assert.ok(Number.isInteger(x) && x >= 0 && x <= 9, json.text as string);

        const call = await client.request({
          type: "generate",
          messages: [{ role: "user", content: "Weather in Oslo?" }],
          tools: [{
            type: "function",
            function: {
              name: "get_weather",
              parameters: {
                type: "object",
                properties: { city: { enum: ["Oslo", "Rome"] } },
                required: ["city"],
              },
            },
          }],
          tool_choice: "required",
          stream: false,
          max_tokens: 80,
          seed: 2,
        });
        if (call.event !== "result") throw new Error(`expected a result, got ${call.event}`);
        const calls = call.tool_calls!;
        assert.equal(calls.length, 1);
        assert.equal(calls[0].name, "get_weather");
        assert.ok(["Oslo", "Rome"].includes(JSON.parse(calls[0].arguments).city));

        await assert.rejects(
          client.request({ type: "generate", prompt: "x", grammar: "root ::= nope" }),
          (e: Error & { code?: string }) =>
            e.code === "E_PROTO_BAD_REQUEST" && /nope/.test(e.message),
        );
        await assert.rejects(
          client.request({ type: "detokenize", tokens: [999999] }),
          (e: Error & { code?: string }) => e.code === "E_PROTO_BAD_REQUEST",
        );
        assert.ok((await client.ping()) >= 0); // the connection goes on
      } finally {
        await client.close();
      }
    }
  } catch (err) {
    console.error(d.stderr());
    throw err;
  } finally {
    await d.stop();
  }
});

Deno.test("a model without a chat template falls back to llama.cpp's chatml and says so", async () => {
  const d = await startDaemon([
    "--model",
    await ensureVocabModel("llama-spm"),
    "--threads",
    "1",
    "--parallel",
    "1",
  ], { withModel: true });
  try {
    const client = await connect({ socket: d.socket, reconnect: false });
    try {
      const model = (client.hello as unknown as { model: Record<string, unknown> }).model;
      assert.equal(model.chat_template, "chatml");
      assert.equal(model.chat_template_renderer, "llama.cpp");
      const r = await client.request({
        type: "generate",
        messages: [{ role: "user", content: "hi" }],
        stream: false,
        max_tokens: 3,
      });
      if (r.event !== "result") throw new Error(`expected a result, got ${r.event}`);
      assert.equal(r.usage.completion_tokens, 3);
    } finally {
      await client.close();
    }
    assert.match(d.stderr(), /no chat template/);
  } finally {
    await d.stop();
  }
});

Deno.test("--chat-template with a name llama.cpp does not know, or a missing file, stops serve with a clear message", async () => {
  for (
    const [value, message] of [["no-such-template", /Unknown chat template "no-such-template"/], [
      "/nonexistent/t.jinja",
      /does not exist/,
    ]] as const
  ) {
    const d = await startDaemon(
      ["--model", await ensureVocabModel("llama-spm"), "--chat-template", value],
      { withModel: true },
    ).catch((e: Error) => e);
    if (!(d instanceof Error)) {
      await d.stop();
      assert.fail(`serve started with --chat-template ${value}`);
    }
    assert.match(d.message, message);
  }
});
