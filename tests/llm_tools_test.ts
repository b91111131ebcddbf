/**
 * Tool calls: the formats' parsers, the format each real template teaches, and calls
 * forced by a grammar (`tool_choice` "required" or named) or written by a scripted grammar
 * on random-weight models with real tokenizers and templates.
 */
import assert from "node:assert/strict";
import * as ajv2020 from "ajv/dist/2020.js";
import { checkGrammar } from "../src/llm/grammar.ts";
import { ensureLlamaSource } from "../src/llm/llama_source.ts";
import {
  detectToolCallFormat,
  parseToolCalls,
  type ToolCallFormat,
  toolCallGrammar,
} from "../src/llm/tool_calls.ts";
import type { ToolSpec } from "../src/protocol/messages.ts";
import { generate, vocabService } from "./llm_helpers.ts";
import type { VocabModelName } from "../src/llm/vocab_models.ts";

const Ajv2020 = (ajv2020 as unknown as { default: typeof ajv2020.Ajv2020 }).default;
const ajv = new Ajv2020({ strict: false });

const TOOLS: ToolSpec[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Weather in a city",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", maxLength: 8 },
          unit: { enum: ["celsius", "fahrenheit"] },
        },
        required: ["city"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "add",
      // gpt-oss's template needs a description (it fails without, as under transformers).
      description: "Add two integers",
      parameters: {
        type: "object",
        properties: {
          a: { type: "integer", minimum: -99, maximum: 99 },
          b: { type: "integer", minimum: -99, maximum: 99 },
        },
        required: ["a", "b"],
      },
    },
  },
];

const ARGS = { city: "Oslo", unit: "celsius" };

Deno.test("Hermes/Qwen <tool_call> blocks are parsed, several of them, text around them kept", () => {
  const out = parseToolCalls(
    'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>\n' +
      '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
    "hermes",
    TOOLS,
  );
  assert.equal(out.content, "Checking.");
  assert.deepEqual(out.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)]), [
    ["get_weather", ARGS],
    ["add", { a: 1, b: 2 }],
  ]);
  assert.ok(out.toolCalls.every((c) => /^call_[0-9a-f]{12}$/.test(c.id)));
  // Unknown functions and broken JSON stay text.
  const bad = parseToolCalls(
    '<tool_call>{"name": "rm", "arguments": {}}</tool_call>',
    "hermes",
    TOOLS,
  );
  assert.equal(bad.toolCalls.length, 0);
  assert.ok(bad.content.includes("rm"));
  assert.equal(parseToolCalls("<tool_call>{oops</tool_call>", "hermes").toolCalls.length, 0);
});

Deno.test("Llama 3 JSON calls are parsed with or without <|python_tag|>; other JSON is content", () => {
  for (
    const text of [
      '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}',
      '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}',
    ]
  ) {
    const out = parseToolCalls(text, "llama3", TOOLS);
    assert.deepEqual(out.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)]), [[
      "get_weather",
      ARGS,
    ]]);
    assert.equal(out.content, "");
  }
  const two = parseToolCalls(
    '{"name": "add", "parameters": {"a": 1, "b": 2}}; {"name": "add", "parameters": {"a": 3, "b": 4}}',
    "llama3",
    TOOLS,
  );
  assert.equal(two.toolCalls.length, 2);
  const answer = '{"answer": 42}';
  assert.deepEqual(parseToolCalls(answer, "llama3", TOOLS), { content: answer, toolCalls: [] });
});

Deno.test("Mistral [TOOL_CALLS] arrays are parsed and keep their ids", () => {
  const out = parseToolCalls(
    '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}, "id": "abc123DEF"}]</s>',
    "mistral",
    TOOLS,
  );
  assert.deepEqual(out.toolCalls, [{
    id: "abc123DEF",
    name: "get_weather",
    arguments: JSON.stringify(ARGS),
  }]);
});

Deno.test("gpt-oss harmony calls are parsed in both orders, and the final channel is the content", () => {
  const a = parseToolCalls(
    '<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Oslo", "unit": "celsius"}<|call|>',
    "gpt-oss",
    TOOLS,
  );
  assert.deepEqual(a.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)]), [[
    "get_weather",
    ARGS,
  ]]);
  const b = parseToolCalls(
    ' to=functions.add<|channel|>commentary json<|message|>{"a": 1, "b": 2}<|call|>',
    "gpt-oss",
    TOOLS,
  );
  assert.deepEqual(b.toolCalls.map((c) => c.name), ["add"]);
  const final = parseToolCalls(
    "<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>Hi!<|return|>",
    "gpt-oss",
  );
  assert.deepEqual(final, { content: "Hi!", toolCalls: [] });
});

Deno.test("each real template's tool-call format is recognized", async () => {
  const dir = `${await ensureLlamaSource()}/models/templates`;
  const expect: Record<string, ToolCallFormat> = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
    "openai-gpt-oss-120b.jinja": "gpt-oss",
    "google-gemma-2-2b-it.jinja": "json",
  };
  for (const [file, format] of Object.entries(expect)) {
    assert.equal(detectToolCallFormat(Deno.readTextFileSync(`${dir}/${file}`)), format, file);
  }
});

Deno.test("forced-call grammars of every format pass the grammar checker", () => {
  for (const f of ["hermes", "llama3", "mistral", "gpt-oss", "json"] as const) {
    checkGrammar(toolCallGrammar(f, TOOLS, "required"));
    checkGrammar(toolCallGrammar(f, TOOLS, { type: "function", function: { name: "add" } }));
  }
});

/** Models and templates to run forced calls on, one per format. */
const CASES: [string, VocabModelName, string | undefined, ToolCallFormat][] = [
  ["Qwen 2.5 template on the Qwen2 tokenizer", "qwen2", "Qwen-Qwen2.5-7B-Instruct.jinja", "hermes"],
  ["Llama 3.1 template on the Llama 3 tokenizer", "llama3", undefined, "llama3"],
  [
    "Mistral Nemo template on the Llama 2 tokenizer",
    "llama-spm",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "mistral",
  ],
  ["gpt-oss template on the Llama 3 tokenizer", "llama3", "openai-gpt-oss-120b.jinja", "gpt-oss"],
];

for (const [what, model, template, format] of CASES) {
  Deno.test(`tool_choice "required" always yields a valid call: ${what}`, async () => {
    const dir = `${await ensureLlamaSource()}/models/templates`;
    await using llm = await vocabService(model, {
      chatTemplate: template ? `${dir}/${template}` : undefined,
    });
    assert.equal(llm.info.tool_call_format, format);
    const messages = [{ role: "user", content: "Weather in Oslo, and 2+3?" }];
    const runs = await Promise.all([1, 2, 3, 4, 5, 6].map((seed) =>
      generate(llm, {
        messages,
        tools: TOOLS,
        tool_choice: seed % 2 ? "required" : { type: "function", function: { name: "add" } },
        max_tokens: 300,
        seed,
        temperature: 1,
        stream: seed % 3 !== 0,
      })
    ));
    await Promise.all(runs.map((s) => s.done()));
    for (const [i, s] of runs.entries()) {
      const seed = i + 1;
      const end = s.last().fields as {
        reason: string;
        tool_calls?: { name: string; arguments: string }[];
      };
      assert.equal(end.reason, "stop", `${what}, seed ${seed}: ${s.text()} ${s.failure?.message}`);
      assert.equal(end.tool_calls?.length, 1, `${what}, seed ${seed}: ${s.text()}`);
      const call = end.tool_calls![0];
      if (seed % 2 === 0) assert.equal(call.name, "add");
      const tool = TOOLS.find((t) => t.function.name === call.name)!;
      const validate = ajv.compile(tool.function.parameters!);
      assert.ok(validate(JSON.parse(call.arguments)), call.arguments);
    }
  });
}

Deno.test("with tool_choice auto, a call the model writes is parsed; plain text gets no tool_calls", async () => {
  const dir = `${await ensureLlamaSource()}/models/templates`;
  await using llm = await vocabService("qwen2", {
    chatTemplate: `${dir}/Qwen-Qwen2.5-7B-Instruct.jinja`,
  });
  const written = await generate(llm, {
    messages: [{ role: "user", content: "Weather?" }],
    tools: TOOLS,
    // Scripted output: the random weights write exactly this.
    grammar: `root ::= ${
      JSON.stringify(
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
      )
    }`,
    max_tokens: 100,
    seed: 1,
  });
  await written.done();
  assert.deepEqual(
    (written.last().fields.tool_calls as { name: string; arguments: string }[])
      .map((c) => [c.name, c.arguments]),
    [["get_weather", '{"city":"Oslo"}']],
  );
  const plain = await generate(llm, {
    messages: [{ role: "user", content: "Weather?" }],
    tools: TOOLS,
    grammar: 'root ::= "It is sunny."',
    max_tokens: 50,
  });
  await plain.done();
  assert.equal(plain.last().fields.tool_calls, undefined);
  assert.equal(plain.text(), "It is sunny.");
});

Deno.test("tool results go back through the template, and tool_choice none leaves tools out", async () => {
  const dir = `${await ensureLlamaSource()}/models/templates`;
  await using llm = await vocabService("qwen2", {
    chatTemplate: `${dir}/Qwen-Qwen2.5-7B-Instruct.jinja`,
  });
  const promptTokens = async (fields: Record<string, unknown>) => {
    const s = await generate(llm, { max_tokens: 1, ...fields });
    await s.done();
    assert.equal(s.failure, null, s.failure?.message);
    return (s.last().fields.usage as { prompt_tokens: number }).prompt_tokens;
  };
  const user = { role: "user", content: "Weather in Oslo?" };
  const call = {
    role: "assistant",
    content: "",
    tool_calls: [{
      id: "c1",
      type: "function",
      function: { name: "get_weather", arguments: '{"city":"Oslo"}' },
    }],
  };
  const result = { role: "tool", tool_call_id: "c1", content: '{"temp": 18}' };
  const base = await promptTokens({ messages: [user], tools: TOOLS });
  const round = await promptTokens({ messages: [user, call, result], tools: TOOLS });
  assert.ok(round > base + 15, `${round} vs ${base}`);
  const none = await promptTokens({ messages: [user], tools: TOOLS, tool_choice: "none" });
  const without = await promptTokens({ messages: [user] });
  assert.equal(none, without);
  assert.ok(base > without + 50);
  // A forced call on a raw prompt has no template to show the tools.
  const raw = await generate(llm, { prompt: "x", tools: TOOLS, tool_choice: "required" });
  await raw.done();
  assert.equal(raw.failure?.code, "E_PROTO_BAD_REQUEST");
});
