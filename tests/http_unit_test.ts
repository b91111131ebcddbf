/**
 * The pure parts of HTTP: the sniffing rule, `--http` addresses, status and error
 * shapes, the OpenAI/Ollama → `generate` mappings and their refusals, Prometheus text,
 * and UMA Serve's codes and counters.
 */
import assert from "node:assert/strict";
import { sniffProtocol } from "../src/http/sniff.ts";
import { isLoopback, parseHttpAddress } from "../src/http/tcp_listener.ts";
import { errorBody, failureOf, HttpError, statusOfCode } from "../src/http/http_errors.ts";
import {
  chatToGenerate as openaiChat,
  completionToGenerate,
  finishReason,
  float32Base64,
} from "../src/http/openai.ts";
import {
  chatToGenerate as ollamaChat,
  generateToGenerate,
  optionsToGenerate,
  timings,
} from "../src/http/ollama.ts";
import { renderPrometheus } from "../src/http/prometheus.ts";
import { parameterSize } from "../src/http/model_card.ts";
import { ERROR_CODES, UMA_ERROR_CODES, UmadError, validateRequest } from "../src/protocol/mod.ts";
import { hasLoneSurrogate, umaError, umaInvalidUtf8Id } from "../src/protocol/uma.ts";
import { Samples } from "../src/protocol/samples.ts";
import { UmaCounters } from "../src/llm/uma_metrics.ts";
import { HttpStream } from "../src/http/http_stream.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("the first four bytes decide HTTP or frames", () => {
  for (const m of ["GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS "]) {
    assert.equal(sniffProtocol(bytes(`${m}/ HTTP/1.1\r\n`)), "http", m);
    // Read as a frame length, those four bytes are above the largest --max-frame.
    const len = new DataView(bytes(m).buffer).getUint32(0, true);
    assert.ok(len > 256 * 1024 * 1024, `${m}: ${len}`);
    for (let n = 0; n < Math.min(4, m.length); n++) {
      assert.equal(sniffProtocol(bytes(m.slice(0, n))), "undecided", `${m} ${n}`);
    }
  }
  assert.equal(sniffProtocol(bytes("get ")), "framed");
  assert.equal(sniffProtocol(bytes("PUTS")), "framed");
  assert.equal(sniffProtocol(bytes("X")), "framed");
  assert.equal(sniffProtocol(new Uint8Array([2, 0, 0, 0, 123, 125])), "framed");
  // Every 4-byte header: HTTP only for the method prefixes.
  let http = 0;
  for (let i = 0; i < 100_000; i++) {
    const b = crypto.getRandomValues(new Uint8Array(4));
    if (sniffProtocol(b) === "http") http++;
  }
  assert.ok(http < 5);
});

Deno.test("--http takes HOST:PORT, [IPv6]:PORT or PORT on loopback", () => {
  assert.deepEqual(parseHttpAddress("127.0.0.1:11435"), { hostname: "127.0.0.1", port: 11435 });
  assert.deepEqual(parseHttpAddress("11435"), { hostname: "127.0.0.1", port: 11435 });
  assert.deepEqual(parseHttpAddress(":8080"), { hostname: "127.0.0.1", port: 8080 });
  assert.deepEqual(parseHttpAddress("[::1]:80"), { hostname: "::1", port: 80 });
  assert.deepEqual(parseHttpAddress("0.0.0.0:1"), { hostname: "0.0.0.0", port: 1 });
  for (const bad of ["", "x", "1.2.3.4", "host:99999", "::1:80", "a:b"]) {
    assert.throws(() => parseHttpAddress(bad), UmadError, bad);
  }
  assert.ok(isLoopback("127.0.0.1") && isLoopback("::1") && isLoopback("localhost"));
  assert.ok(!isLoopback("0.0.0.0") && !isLoopback("192.168.1.2") && !isLoopback("::"));
});

Deno.test("every wire code has an HTTP status; busy and rate limits are 429", () => {
  for (const code of [...ERROR_CODES, ...UMA_ERROR_CODES]) {
    const s = statusOfCode(code);
    assert.ok(s >= 400 && s < 600, code);
  }
  assert.equal(statusOfCode("E_BUSY"), 429);
  assert.equal(statusOfCode("E_RATE_LIMITED"), 429);
  assert.equal(statusOfCode("E_PROTO_BAD_REQUEST"), 400);
  assert.equal(statusOfCode("E_LIMIT_PROMPT_TOO_LARGE"), 400);
  assert.equal(statusOfCode("E_NO_MODEL"), 503);
  assert.equal(statusOfCode("E_INTERNAL"), 500);
  const f = failureOf(new UmadError("E_LIMIT_PROMPT_TOO_LARGE", "long"));
  assert.deepEqual(errorBody("openai", f), {
    error: {
      message: "long",
      type: "invalid_request_error",
      param: null,
      code: "context_length_exceeded",
    },
  });
  assert.deepEqual(errorBody("ollama", f), { error: "long" });
  assert.deepEqual(errorBody("llama", failureOf(new HttpError(404, "no"))), {
    error: { code: 404, message: "no", type: "not_found_error" },
  });
  assert.equal(failureOf(new Error("bug")).status, 500);
});

Deno.test("an OpenAI chat request becomes a validated generate request", () => {
  const g = openaiChat({
    model: "gpt-4o",
    messages: [
      { role: "developer", content: "Be brief." },
      { role: "user", content: [{ type: "text", text: "Hi " }, { type: "text", text: "there" }] },
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: "{}" } }],
      },
      { role: "tool", tool_call_id: "c1", content: "42" },
    ],
    max_completion_tokens: 9,
    max_tokens: 3,
    temperature: 0.5,
    top_p: 0.9,
    seed: 7,
    stop: "END",
    n: 1,
    logprobs: false,
    frequency_penalty: 0,
    stream: true,
    response_format: { type: "json_object" },
    tools: [{ type: "function", function: { name: "f" } }],
    tool_choice: "auto",
    user: "someone",
  });
  const r = validateRequest({ ...g, id: "x" }, "json");
  assert.equal(r.type, "generate");
  if (r.type !== "generate") return;
  assert.equal(r.messages?.[0].role, "system");
  assert.equal(r.messages?.[1].content, "Hi there");
  assert.equal(r.messages?.[2].content, "");
  assert.equal(r.messages?.[3].tool_call_id, "c1");
  assert.equal(r.max_tokens, 9);
  assert.deepEqual(r.stop, ["END"]);
  assert.equal(r.seed, 7);
  assert.equal(r.stream, true);
  assert.deepEqual(r.json_schema, { type: "object" });
  assert.equal(r.tools?.[0].function.name, "f");
  assert.equal(r.tool_choice, "auto");
  const schema = { type: "object", properties: { a: { type: "integer" } } };
  const js = openaiChat({
    messages: [{ role: "user", content: "x" }],
    response_format: { type: "json_schema", json_schema: { name: "a", schema } },
  });
  assert.deepEqual(js.json_schema, schema);
  assert.equal(js.stream, false);
});

Deno.test("what the engine cannot do is refused by name, not ignored", () => {
  const chat = (extra: Record<string, unknown>) =>
    openaiChat({ messages: [{ role: "user", content: "x" }], ...extra });
  const refused = (extra: Record<string, unknown>, param: string) =>
    assert.throws(() => chat(extra), (e: unknown) => {
      assert.ok(e instanceof HttpError);
      assert.equal(e.status, 400);
      assert.equal(e.param, param);
      return true;
    });
  refused({ n: 2 }, "n");
  refused({ logprobs: true }, "logprobs");
  refused({ top_logprobs: 3 }, "top_logprobs");
  refused({ presence_penalty: 0.5 }, "presence_penalty");
  refused({ logit_bias: { "1": 5 } }, "logit_bias");
  refused({ response_format: { type: "xml" } }, "response_format");
  refused({ response_format: { type: "json_schema" } }, "response_format");
  refused({ stop: [1] }, "stop");
  assert.throws(() => openaiChat({ messages: [] }), HttpError);
  assert.throws(
    () =>
      openaiChat({
        messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }],
      }),
    HttpError,
  );
  assert.throws(() => completionToGenerate({ prompt: [1, 2, 3] }), HttpError);
  assert.throws(() => completionToGenerate({ prompt: ["a", "b"] }), HttpError);
  assert.throws(() => completionToGenerate({ prompt: "a", suffix: "b" }), HttpError);
  assert.equal(completionToGenerate({ prompt: ["a"] }).prompt, "a");
});

Deno.test("finish reasons are OpenAI's", () => {
  assert.equal(finishReason("stop"), "stop");
  assert.equal(finishReason("stop_string"), "stop");
  assert.equal(finishReason("length"), "length");
  assert.equal(finishReason("stop", [{ id: "c", name: "f", arguments: "{}" }]), "tool_calls");
  assert.equal(finishReason("cancelled"), null);
  assert.equal(finishReason("shutdown"), null);
});

Deno.test("float32 base64 is little-endian float32 bytes", () => {
  const v = [0.5, -1, 3.25];
  const b64 = float32Base64(v);
  const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  assert.deepEqual([...new Float32Array(raw.buffer)], v);
});

Deno.test("Ollama requests and options map onto generate; num_ctx changes nothing", () => {
  assert.deepEqual(
    optionsToGenerate({
      num_predict: 5,
      temperature: 0.1,
      top_k: 2,
      top_p: 0.3,
      min_p: 0.01,
      seed: 9,
      stop: "x",
      repeat_penalty: 1.1,
      num_ctx: 65536,
      num_thread: 3,
      mirostat: 2,
    }),
    {
      max_tokens: 5,
      temperature: 0.1,
      top_k: 2,
      top_p: 0.3,
      min_p: 0.01,
      seed: 9,
      stop: ["x"],
      repeat_penalty: 1.1,
    },
  );
  assert.deepEqual(optionsToGenerate({ num_predict: -1 }), {});
  const g = generateToGenerate({ prompt: "Hi", system: "Terse.", stream: false, format: "json" });
  assert.deepEqual(g.messages, [{ role: "system", content: "Terse." }, {
    role: "user",
    content: "Hi",
  }]);
  assert.equal(g.stream, false);
  assert.deepEqual(g.json_schema, { type: "object" });
  assert.equal(generateToGenerate({ prompt: "Hi", raw: true }).prompt, "Hi");
  assert.throws(() => generateToGenerate({ prompt: "Hi", images: ["x"] }), HttpError);
  assert.throws(() => generateToGenerate({ prompt: "Hi", context: [1, 2] }), HttpError);
  const c = ollamaChat({
    messages: [{
      role: "assistant",
      content: "",
      tool_calls: [{ function: { name: "f", arguments: { a: 1 } } }],
    }],
  });
  const r = validateRequest({ ...c, id: "x" }, "json");
  assert.ok(r.type === "generate");
  assert.equal(r.messages?.[0].tool_calls?.[0].function.arguments, '{"a":1}');
  assert.equal(r.stream, true);
  const t = timings({
    prompt_tokens: 3,
    cached_tokens: 0,
    completion_tokens: 4,
    ttft_ms: 10,
    total_ms: 30,
  });
  assert.deepEqual(t, {
    total_duration: 30_000_000,
    load_duration: 0,
    prompt_eval_count: 3,
    prompt_eval_duration: 10_000_000,
    eval_count: 4,
    eval_duration: 20_000_000,
  });
});

Deno.test("Prometheus text: summaries become histograms in seconds, counts labelled", () => {
  const s = new Samples();
  for (const x of [0.5, 3, 30, 700, 100_000]) s.add(x);
  const text = renderPrometheus({
    uptime_s: 1.5,
    requests: { ping: 3, generate: 2 },
    errors: { E_BUSY: 1 },
    llm: { ttft_ms: s.summary(), queue_depth: 0, active_streams: 2, tokens_out: 7, tokens_in: 3 },
    pty: { running: 1 },
    tokens_generated_total: 7,
    flag: true,
    name: "skipped",
  });
  const lines = text.split("\n");
  assert.ok(lines.includes('umad_requests_total{type="ping"} 3'));
  assert.ok(lines.includes('umad_errors_total{code="E_BUSY"} 1'));
  assert.ok(lines.includes("# TYPE umad_llm_ttft_seconds histogram"));
  assert.ok(lines.includes('umad_llm_ttft_seconds_bucket{le="0.001"} 1'));
  assert.ok(lines.includes('umad_llm_ttft_seconds_bucket{le="0.005"} 2'));
  assert.ok(lines.includes('umad_llm_ttft_seconds_bucket{le="1"} 4'));
  assert.ok(lines.includes('umad_llm_ttft_seconds_bucket{le="60"} 4'));
  assert.ok(lines.includes('umad_llm_ttft_seconds_bucket{le="+Inf"} 5'));
  assert.ok(lines.includes("umad_llm_ttft_seconds_count 5"));
  assert.ok(lines.includes("umad_llm_active_streams 2"));
  assert.ok(lines.includes("# TYPE umad_tokens_generated_total counter"));
  assert.ok(lines.includes("umad_flag 1"));
  assert.ok(lines.includes("llamacpp:tokens_predicted_total 7"));
  assert.ok(!text.includes("skipped"));
  const sum = Number(lines.find((l) => l.startsWith("umad_llm_ttft_seconds_sum"))!.split(" ")[1]);
  assert.ok(Math.abs(sum - 100.7335) < 1e-6, String(sum));
  // Buckets never decrease.
  const counts = lines.filter((l) => l.startsWith("umad_llm_ttft_seconds_bucket"))
    .map((l) => Number(l.split(" ")[1]));
  assert.deepEqual(counts, [...counts].sort((a, b) => a - b));
});

Deno.test("parameter sizes read as model lists print them", () => {
  assert.equal(parameterSize(5_800_000), "6M");
  assert.equal(parameterSize(7_241_732_096), "7.2B");
  assert.equal(parameterSize(1_000_000_000), "1B");
});

Deno.test("UMA Serve's form gets UMA's codes", () => {
  assert.deepEqual(umaError("E_LIMIT_PROMPT_TOO_LARGE", "9000 tokens").code, "E_LIMIT_001");
  assert.match(umaError("E_LIMIT_PROMPT_TOO_LARGE", "9000 tokens").message, /prompt too large/);
  assert.equal(umaError("E_INTERNAL", "x").code, "E_RUNTIME_DECODE");
  assert.equal(umaError("E_BUSY", "x").code, "E_BUSY");
  assert.ok(hasLoneSurrogate("a\udc00") && hasLoneSurrogate("\ud800") && !hasLoneSurrogate("é😀"));
  const bad = new Uint8Array([...bytes('{"id":"u","prompt":"a'), 0xc0, ...bytes('b"}')]);
  assert.equal(umaInvalidUtf8Id(bad), "u");
  const typed = new Uint8Array([
    ...bytes('{"type":"generate","id":"u","prompt":"'),
    0xc0,
    0x22,
    0x7d,
  ]);
  assert.equal(umaInvalidUtf8Id(typed), undefined);
  // A UMA-form request is marked, and a lone surrogate in its prompt is E_PROTO_001.
  const r = validateRequest({ id: "a", prompt: "Hi" }, "json");
  assert.ok(r.type === "generate" && r.uma === true);
  const t = validateRequest({ type: "generate", id: "a", prompt: "Hi" }, "json");
  assert.ok(t.type === "generate" && t.uma === undefined);
  assert.throws(
    () => validateRequest({ id: "a", prompt: "x\ud800" }, "json"),
    (e: unknown) => e instanceof UmadError && e.code === "E_PROTO_001",
  );
});

Deno.test("UMA Serve's flat decode counters", () => {
  const c = new UmaCounters();
  assert.equal(c.flat(0).decode_ms_mean, 0);
  const step = (rows: number, prefillTokens: number, decodeMs: number, prefillMs = 0) =>
    c.add({ rows, drafts: 0, draftsAccepted: 0, prefillTokens, kvCells: 0, decodeMs, prefillMs });
  step(0, 0, 0); // an idle step is no call
  step(2, 0, 10);
  step(2, 30, 10, 20);
  const m = c.flat(5);
  assert.equal(m.tokens_generated_total, 5);
  assert.equal(m.batch_calls_total, 2);
  assert.equal(m.decode_calls, 2);
  assert.equal(m.last_batch_size, 32);
  assert.equal(m.decode_tokens_total, 34);
  assert.equal(m.prefill_tokens_total, 30);
  assert.equal(m.decode_ns_total, 40_000_000);
  assert.equal(m.decode_ms_last, 30);
  assert.equal(m.decode_ms_min, 10);
  assert.equal(m.decode_ms_max, 30);
  assert.equal(m.decode_ms_mean, 20);
  assert.equal(m.decode_ms_ewma, 14);
  assert.equal(m.decode_tokens_per_call_mean, 17);
});

Deno.test("an HTTP stream hands its events to the handler in order, then ends", async () => {
  let writable = true;
  const sink = {
    get writable() {
      return writable;
    },
    queuedBytes: 0,
    ready: () => Promise.resolve(),
  };
  let ended = 0;
  const s = new HttpStream("h", 3, sink, () => ended++);
  assert.equal(s.send("token", { text: "a", token_id: 1 }), true);
  writable = false;
  assert.equal(s.send("token", { text: "b", token_id: 2 }), false);
  s.fail("E_BUSY", "full");
  s.fail("E_BUSY", "again"); // once only
  assert.equal(s.send("token", { text: "c", token_id: 3 }), false);
  const events = await s.all();
  assert.deepEqual(events.map((e) => e.event), ["token", "token", "error"]);
  assert.equal(ended, 1);
  s.abort("disconnected");
  assert.equal(s.signal.reason, "disconnected");
});
