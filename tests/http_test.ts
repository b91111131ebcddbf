/**
 * HTTP on the daemon's socket and on `--http`, driven by clients we did not write: the
 * official `openai` and `ollama` npm packages, curl over the Unix socket, Python's
 * http.client; and a framed client streaming beside an HTTP one on the same socket.
 */
import { deferred, delay } from "../src/protocol/async.ts";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { Ollama } from "ollama";
import { RawClient } from "./_daemon.ts";
import { type HttpDaemon, metricsOf, startHttpDaemon, unixFetch } from "./_http.ts";
import { tinyModel } from "./llm_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TINY = () => ["--model", tinyModel(), "--threads", "1", "--parallel", "4", "--ctx", "4096"];
const CHAT = [{ role: "user" as const, content: "Hello there" }];

/** A test against one model-serving daemon with `--http`. */
function withHttpDaemon(
  name: string,
  fn: (d: HttpDaemon, t: Deno.TestContext) => Promise<void>,
  opts: { ignore?: boolean; args?: string[]; model?: () => Promise<string[]> } = {},
) {
  Deno.test({
    name,
    ignore: opts.ignore,
    // The npm clients keep pooled keep-alive connections past a step.
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async (t) => {
      const model = opts.model ? await opts.model() : TINY();
      const d = await startHttpDaemon([...model, ...(opts.args ?? [])], { withModel: true });
      try {
        await fn(d, t);
      } catch (e) {
        console.error(d.stderr());
        throw e;
      } finally {
        await d.stop();
      }
    },
  });
}

/** Polls the daemon's metrics until `pred` holds (it must, or the test fails). */
async function metricsUntil(
  socket: string,
  pred: (llm: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 20_000;
  while (true) {
    const llm = (await metricsOf(socket)).llm as Record<string, unknown>;
    if (pred(llm)) return llm;
    if (Date.now() > deadline) throw new Error(`metrics never matched: ${JSON.stringify(llm)}`);
    await delay(50);
  }
}

withHttpDaemon("the openai npm client works over --http TCP with the token", async (d, t) => {
  const openai = new OpenAI({ baseURL: `${d.base}/v1`, apiKey: d.token!, maxRetries: 0 });
  await t.step("models", async () => {
    const models = await openai.models.list();
    assert.equal(models.data.length, 1);
    assert.equal(models.data[0].object, "model");
    const one = await openai.models.retrieve(models.data[0].id);
    assert.equal(one.id, models.data[0].id);
  });
  await t.step("chat, not streaming", async () => {
    const c = await openai.chat.completions.create({
      model: "anything",
      messages: CHAT,
      max_tokens: 6,
      seed: 1,
    });
    assert.equal(c.object, "chat.completion");
    assert.equal(c.model, "anything");
    assert.equal(c.choices.length, 1);
    assert.equal(c.choices[0].message.role, "assistant");
    assert.equal(typeof c.choices[0].message.content, "string");
    assert.equal(c.choices[0].finish_reason, "length");
    assert.equal(c.usage?.completion_tokens, 6);
    assert.ok((c.usage?.prompt_tokens ?? 0) > 0);
  });
  await t.step("chat, streaming with usage", async () => {
    const stream = await openai.chat.completions.create({
      model: "m",
      messages: CHAT,
      max_tokens: 7,
      stream: true,
      stream_options: { include_usage: true },
    });
    const finishes: (string | null)[] = [];
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    let role: string | undefined;
    for await (const chunk of stream) {
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        role ??= c.delta.role;
        text += c.delta.content ?? "";
        finishes.push(c.finish_reason);
      }
    }
    assert.equal(role, "assistant");
    assert.equal(finishes.at(-1), "length");
    assert.equal(finishes.filter((f) => f !== null).length, 1);
    assert.equal(usage?.completion_tokens, 7);
    assert.equal(usage?.total_tokens, (usage?.prompt_tokens ?? 0) + 7);
    assert.ok(text.length > 0);
  });
  await t.step("the same seed gives the same text streamed and not", async () => {
    const params = { model: "m", messages: CHAT, max_tokens: 8, seed: 42, temperature: 0.9 };
    const whole = await openai.chat.completions.create(params);
    let streamed = "";
    for await (const c of await openai.chat.completions.create({ ...params, stream: true })) {
      streamed += c.choices[0]?.delta.content ?? "";
    }
    assert.equal(streamed, whole.choices[0].message.content);
  });
  await t.step("completions, streaming and not", async () => {
    const c = await openai.completions.create({ model: "m", prompt: "Once upon", max_tokens: 5 });
    assert.equal(c.object, "text_completion");
    assert.equal(c.choices[0].finish_reason, "length");
    assert.equal(c.usage?.completion_tokens, 5);
    let n = 0;
    let last: string | null = null;
    for await (
      const chunk of await openai.completions.create({
        model: "m",
        prompt: "Once upon",
        max_tokens: 5,
        stream: true,
      })
    ) {
      n++;
      last = chunk.choices[0].finish_reason;
    }
    assert.ok(n >= 2);
    assert.equal(last, "length");
  });
  await t.step("a bad parameter is a 400 in OpenAI's error shape", async () => {
    await assert.rejects(
      openai.chat.completions.create({ model: "m", messages: CHAT, temperature: -1 }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError, String(e));
        assert.equal(e.status, 400);
        const err = e.error as { type: string; message: string };
        assert.equal(err.type, "invalid_request_error");
        assert.match(err.message, /temperature/);
        return true;
      },
    );
    await assert.rejects(
      openai.chat.completions.create({ model: "m", messages: CHAT, n: 2 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "n",
    );
    await assert.rejects(
      openai.chat.completions.create({ model: "m", messages: CHAT, logprobs: true }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "logprobs",
    );
    await assert.rejects(
      openai.models.retrieve("no-such-model"),
      (e: unknown) => e instanceof OpenAI.NotFoundError,
    );
  });
  await t.step("a wrong token is a 401", async () => {
    const bad = new OpenAI({ baseURL: `${d.base}/v1`, apiKey: "wrong", maxRetries: 0 });
    await assert.rejects(
      bad.models.list(),
      (e: unknown) => e instanceof OpenAI.AuthenticationError,
    );
  });
  await t.step("aborting the request cancels its generation", async () => {
    const before = (await metricsOf(d.socket)).llm as { requests: { disconnected: number } };
    const controller = new AbortController();
    const stream = await openai.chat.completions.create(
      { model: "m", messages: CHAT, max_tokens: 100_000, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _ of stream) if (++chunks === 3) controller.abort();
    } catch { /* the abort ends the iteration */ }
    assert.ok(chunks >= 3);
    // The stream ends as "disconnected" long before its 100,000 tokens.
    const llm = await metricsUntil(
      d.socket,
      (m) =>
        (m.requests as { disconnected: number }).disconnected > before.requests.disconnected &&
        m.active_streams === 0,
    );
    assert.equal(llm.active_streams, 0);
  });
});

withHttpDaemon(
  "the openai npm client works over the Unix socket with a fetch that dials it",
  async (d) => {
    const uf = unixFetch(d.socket);
    try {
      const openai = new OpenAI({
        baseURL: "http://localhost/v1",
        apiKey: "not-needed-on-the-socket",
        fetch: uf.fetch,
        maxRetries: 0,
      });
      assert.equal((await openai.models.list()).data.length, 1);
      const c = await openai.chat.completions.create({ model: "m", messages: CHAT, max_tokens: 4 });
      assert.equal(c.usage?.completion_tokens, 4);
      let finish: string | null = null;
      let chunks = 0;
      for await (
        const chunk of await openai.chat.completions.create({
          model: "m",
          messages: CHAT,
          max_tokens: 4,
          stream: true,
        })
      ) {
        chunks++;
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, "length");
      assert.ok(chunks >= 2);
    } finally {
      uf.close();
    }
  },
);

withHttpDaemon("the ollama npm client works over --http", async (d, t) => {
  const ollama = new Ollama({ host: d.base, headers: { Authorization: `Bearer ${d.token}` } });
  await t.step("version, tags, ps, show", async () => {
    assert.equal(typeof (await ollama.version()).version, "string");
    const tags = await ollama.list();
    assert.equal(tags.models.length, 1);
    assert.equal(tags.models[0].details.format, "gguf");
    assert.ok(tags.models[0].size > 0);
    const ps = await ollama.ps();
    assert.equal(ps.models[0].name, tags.models[0].name);
    const show = await ollama.show({ model: tags.models[0].name });
    assert.equal(show.details.format, "gguf");
  });
  await t.step("generate", async () => {
    const g = await ollama.generate({ model: "m", prompt: "Hi", options: { num_predict: 5 } });
    assert.equal(g.done, true);
    assert.equal(g.done_reason, "length");
    assert.equal(g.eval_count, 5);
    assert.ok(g.total_duration >= g.eval_duration && g.eval_duration > 0);
    let n = 0;
    let last;
    for await (
      const part of await ollama.generate({
        model: "m",
        prompt: "Hi",
        raw: true,
        stream: true,
        options: { num_predict: 5, num_ctx: 131072 },
      })
    ) {
      n++;
      last = part;
    }
    assert.ok(n >= 2);
    assert.equal(last?.done, true);
    assert.equal(last?.eval_count, 5);
  });
  await t.step("chat, streaming and not", async () => {
    const c = await ollama.chat({ model: "m", messages: CHAT, options: { num_predict: 4 } });
    assert.equal(c.message.role, "assistant");
    assert.equal(c.eval_count, 4);
    let text = "";
    let done = false;
    for await (
      const part of await ollama.chat({
        model: "m",
        messages: CHAT,
        stream: true,
        options: { num_predict: 4, temperature: 0, top_k: 1, seed: 3, stop: ["zzzz"] },
      })
    ) {
      text += part.message.content;
      done = part.done;
    }
    assert.ok(done);
    assert.ok(text.length > 0);
  });
  await t.step("a bad request is Ollama's {error}", async () => {
    await assert.rejects(
      ollama.generate({ model: "m", prompt: "Hi", images: ["aGk="] }),
      (e: unknown) => (e as { status_code?: number }).status_code === 400,
    );
  });
});

withHttpDaemon("curl --unix-socket streams a chat completion", async (d) => {
  const out = await new Deno.Command("curl", {
    args: [
      "-sSN",
      "--unix-socket",
      d.socket,
      "http://localhost/v1/chat/completions",
      "-H",
      "Content-Type: application/json",
      "-d",
      JSON.stringify({
        messages: CHAT,
        max_tokens: 6,
        stream: true,
        stream_options: { include_usage: true },
      }),
    ],
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const events = text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
  assert.equal(events.at(-1), "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
  assert.equal(chunks.at(-1).usage.completion_tokens, 6);
  assert.equal(chunks.at(-2).choices[0].finish_reason, "length");
});

withHttpDaemon(
  "Python's http.client over the Unix socket: a streamed chat, then keep-alive",
  async (d) => {
    const out = await new Deno.Command("python3", {
      args: [`${ROOT}tests/fixtures/http_unix_client.py`, d.socket],
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, `${stdout}\n${new TextDecoder().decode(out.stderr)}`);
    const r = JSON.parse(stdout);
    assert.deepEqual(r.failures, []);
    assert.equal(r.stream_finish, "length");
    assert.equal(r.keepalive_requests, 4);
    assert.equal(r.keepalive_same_socket, true);
  },
);

withHttpDaemon(
  "a framed client and an HTTP client stream on the same socket at once",
  async (d) => {
    const framed = await RawClient.connect(d.socket);
    const uf = unixFetch(d.socket);
    const order: string[] = [];
    try {
      // The tiny model decodes a token in well under a millisecond: 256 tokens each (seeded,
      // so the same run every time), and the framed request goes once the HTTP stream has its
      // first token, so both are live together.
      const httpStarted = deferred();
      const http = (async () => {
        const res = await uf.fetch("http://localhost/v1/chat/completions", {
          method: "POST",
          body: JSON.stringify({ messages: CHAT, max_tokens: 256, seed: 7, stream: true }),
        });
        assert.equal(res.status, 200);
        let tail = "";
        let done = false;
        for await (const chunk of res.body!.pipeThrough(new TextDecoderStream())) {
          const parts = (tail + chunk).split("\n\n");
          tail = parts.pop()!;
          for (const p of parts) {
            if (p === "data: [DONE]") done = true;
            else if (p.includes('"content"')) {
              order.push("h");
              httpStarted.resolve();
            }
          }
        }
        return done;
      })();
      await httpStarted.promise;
      await framed.send({ type: "generate", id: "f", prompt: "Hello", max_tokens: 256, seed: 7 });
      let framedTokens = 0;
      let framedUsage = -1;
      while (true) {
        const ev = await framed.nextFor("f", 30_000);
        if (ev.event === "token") {
          framedTokens++;
          order.push("f");
        } else {
          assert.equal(ev.event, "eos");
          framedUsage = (ev.usage as { completion_tokens: number }).completion_tokens;
          break;
        }
      }
      assert.equal(await http, true);
      assert.equal(framedTokens, framedUsage, "every framed token arrived");
      // Both streams advanced together: each saw a token before the other one ended.
      assert.ok(order.indexOf("f") < order.lastIndexOf("h"), order.join(""));
      assert.ok(order.indexOf("h") < order.lastIndexOf("f"), order.join(""));
    } finally {
      framed.close();
      uf.close();
    }
  },
);

withHttpDaemon(
  "GET /metrics is Prometheus text with TTFT and inter-token histograms",
  async (d) => {
    const uf = unixFetch(d.socket);
    try {
      const r = await uf.fetch("http://localhost/v1/completions", {
        method: "POST",
        body: JSON.stringify({ prompt: "Hi", max_tokens: 4 }),
      });
      assert.equal(r.status, 200);
      await r.body?.cancel();
      const res = await uf.fetch("http://localhost/metrics");
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      const value = (name: string) => {
        const line = text.split("\n").find((l) => l.startsWith(name + " "));
        return line ? Number(line.split(" ")[1]) : NaN;
      };
      assert.match(text, /# TYPE umad_llm_ttft_seconds histogram/);
      assert.ok(value('umad_llm_ttft_seconds_bucket{le="+Inf"}') >= 1, text);
      assert.ok(value("umad_llm_inter_token_seconds_count") >= 3);
      assert.equal(value("umad_llm_queue_depth"), 0);
      assert.equal(value("umad_llm_active_streams"), 0);
      assert.ok(Number.isFinite(value("umad_pty_sessions")));
      assert.ok(value("llamacpp:tokens_predicted_total") >= 4);
      assert.ok(value("umad_tokens_generated_total") >= 4);
      for (const line of text.split("\n")) {
        if (line === "" || line.startsWith("#")) continue;
        assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eInfNa]+$/, line);
      }
    } finally {
      uf.close();
    }
  },
);

withHttpDaemon("llama-server's /health and /props", async (d) => {
  const uf = unixFetch(d.socket);
  try {
    assert.deepEqual(await (await uf.fetch("http://localhost/health")).json(), { status: "ok" });
    const props = await (await uf.fetch("http://localhost/props")).json();
    assert.equal(props.total_slots, 4);
    assert.equal(props.default_generation_settings.params.n_predict, 9);
    // --max-tokens is the default of requests that give none.
    const c = await (await uf.fetch("http://localhost/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt: "Hi" }),
    })).json();
    assert.equal(c.usage.completion_tokens, 9);
  } finally {
    uf.close();
  }
}, { args: ["--max-tokens", "9"] });

// ---- Routes backed by the model's tokenizer, embeddings, grammars and tool calls. ----

withHttpDaemon("the openai and ollama clients get embeddings", async (d) => {
  const openai = new OpenAI({ baseURL: `${d.base}/v1`, apiKey: d.token!, maxRetries: 0 });
  // The client asks for base64 unless told otherwise, and decodes it.
  const e = await openai.embeddings.create({ model: "m", input: ["one", "two"] });
  assert.equal(e.data.length, 2);
  assert.ok(e.data[0].embedding.length > 0);
  const f = await openai.embeddings.create({ model: "m", input: "one", encoding_format: "float" });
  assert.deepEqual(
    f.data[0].embedding.map((x) => Math.fround(x)),
    e.data[0].embedding.map((x) => Math.fround(x)),
  );
  const ollama = new Ollama({ host: d.base, headers: { Authorization: `Bearer ${d.token}` } });
  const o = await ollama.embed({ model: "m", input: ["one", "two"] });
  assert.equal(o.embeddings.length, 2);
});

withHttpDaemon("a JSON-schema response_format gives JSON that matches the schema", async (d) => {
  const openai = new OpenAI({ baseURL: `${d.base}/v1`, apiKey: d.token!, maxRetries: 0 });
  const c = await openai.chat.completions.create({
    model: "m",
    messages: CHAT,
    max_tokens: 200,
    response_format: {
      type: "json_schema",
      json_schema: {
        name: "answer",
        schema: {
          type: "object",
          properties: { n: { type: "integer" } },
          required: ["n"],
          additionalProperties: false,
        },
      },
    },
  });
  const value = JSON.parse(c.choices[0].message.content ?? "");
  assert.equal(typeof value.n, "number");
});

withHttpDaemon("a forced tool call comes back as OpenAI's tool_calls", async (d) => {
  const openai = new OpenAI({ baseURL: `${d.base}/v1`, apiKey: d.token!, maxRetries: 0 });
  const tools: OpenAI.ChatCompletionTool[] = [{
    type: "function",
    function: {
      name: "get_weather",
      // An enum keeps a random-weight model's arguments short.
      parameters: {
        type: "object",
        properties: { city: { enum: ["Oslo", "Rome"] } },
        required: ["city"],
      },
    },
  }];
  const c = await openai.chat.completions.create({
    model: "m",
    messages: CHAT,
    max_tokens: 200,
    tools,
    tool_choice: { type: "function", function: { name: "get_weather" } },
  });
  assert.equal(c.choices[0].finish_reason, "tool_calls");
  const call = c.choices[0].message.tool_calls?.[0];
  assert.equal(call?.type, "function");
  assert.equal(call?.type === "function" && call.function.name, "get_weather");
  let streamed: string | undefined;
  for await (
    const chunk of await openai.chat.completions.create({
      model: "m",
      messages: CHAT,
      max_tokens: 200,
      tools,
      tool_choice: "required",
      stream: true,
    })
  ) {
    streamed = chunk.choices[0]?.delta.tool_calls?.[0]?.function?.name ?? streamed;
  }
  assert.equal(streamed, "get_weather");
}, {
  // A real tokenizer and a template with a tool-call format (Hermes, via Qwen 2.5).
  model: async () => {
    const { ensureVocabModel } = await import("../src/llm/vocab_models.ts");
    const { ensureLlamaSource } = await import("../src/llm/llama_source.ts");
    const templates = `${await ensureLlamaSource()}/models/templates`;
    return [
      "--model",
      await ensureVocabModel("qwen2"),
      "--chat-template",
      `${templates}/Qwen-Qwen2.5-7B-Instruct.jinja`,
      "--threads",
      "1",
      "--parallel",
      "2",
      "--ctx",
      "2048",
    ];
  },
});

withHttpDaemon("/tokenize and /detokenize round-trip text", async (d) => {
  const uf = unixFetch(d.socket);
  try {
    const t = await (await uf.fetch("http://localhost/tokenize", {
      method: "POST",
      body: JSON.stringify({ content: "Hello world", with_pieces: true }),
    })).json();
    assert.ok(t.tokens.length > 0);
    const ids = t.tokens.map((x: { id: number }) => x.id);
    const back = await (await uf.fetch("http://localhost/detokenize", {
      method: "POST",
      body: JSON.stringify({ tokens: ids }),
    })).json();
    assert.match(back.content, /Hello world/);
  } finally {
    uf.close();
  }
});

withHttpDaemon(
  "a full queue is a 429 with Retry-After; the stream in the way goes on",
  async (d) => {
    const uf = unixFetch(d.socket);
    const controller = new AbortController();
    try {
      // One stream, no queue: the stream below holds it until it is aborted.
      const long = await uf.fetch("http://localhost/v1/completions", {
        method: "POST",
        body: JSON.stringify({ prompt: "Hi", max_tokens: 100_000, stream: true }),
        signal: controller.signal,
      });
      const reader = long.body!.getReader();
      await reader.read(); // it is decoding
      const busy = await uf.fetch("http://localhost/v1/chat/completions", {
        method: "POST",
        body: JSON.stringify({ messages: CHAT, max_tokens: 2 }),
      });
      assert.equal(busy.status, 429);
      assert.equal(busy.headers.get("retry-after"), "1");
      const body = await busy.json();
      assert.equal(body.error.type, "rate_limit_error");
      assert.equal(body.error.code, "rate_limit_exceeded");
      assert.equal((await reader.read()).done, false); // the first stream was not disturbed
      controller.abort();
      await reader.cancel().catch(() => {});
    } finally {
      uf.close();
    }
  },
  { args: ["--parallel", "1", "--queue", "0"] },
);

withHttpDaemon("a daemon that stops ends an HTTP stream in-band and exits cleanly", async (d) => {
  const uf = unixFetch(d.socket);
  try {
    const res = await uf.fetch("http://localhost/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({ messages: CHAT, max_tokens: 100_000, stream: true, seed: 1 }),
    });
    let all = "";
    const text = (async () => {
      try {
        for await (const c of res.body!.pipeThrough(new TextDecoderStream())) all += c;
      } catch { /* the connection closed */ }
      return all;
    })();
    // Stop once tokens flow: a fixed wait let the tiny model fill its context and finish
    // the stream first on a fast moment.
    const deadline = Date.now() + 10_000;
    while (!all.includes('"content"') && Date.now() < deadline) await delay(5);
    const status = await d.stop();
    assert.equal(status.code, 0);
    await text;
    const last = all.trim().split("\n\n").at(-1) ?? "";
    assert.match(last, /^data: \{"error":\{"message":"The daemon is shutting down"/, last);
    assert.ok(!all.includes("[DONE]"));
  } finally {
    uf.close();
  }
});
