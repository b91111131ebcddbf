/**
 * Structured output on random weights: only the grammar keeps the text valid, so every
 * output parsing and validating (with ajv, an independent validator) over many seeds is a
 * strong test of the JSON-Schema converter and of grammar sampling.
 */
import assert from "node:assert/strict";
import * as ajv2020 from "ajv/dist/2020.js";
import * as ajvFormats from "ajv-formats";
import { checkGrammar, GrammarError } from "../src/llm/grammar.ts";
import { jsonSchemaToGrammar, SchemaError } from "../src/llm/json_schema_grammar.ts";
import { generate, tinyService, vocabService } from "./llm_helpers.ts";
import type { LlmService } from "../src/llm/mod.ts";

// CommonJS packages: their classes are the default export under Deno.
const Ajv2020 = (ajv2020 as unknown as { default: typeof ajv2020.Ajv2020 }).default;
const addFormats = (ajvFormats as unknown as { default: (a: unknown) => void }).default;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);

/** Bounded schemas: random weights would write an unbounded string forever. */
const SCHEMAS: Record<string, Record<string, unknown>> = {
  "object with required, optional, enum, const, bounded array and nesting": {
    type: "object",
    properties: {
      id: { type: "integer", minimum: -40, maximum: 1234 },
      kind: { enum: ["cat", "dog", 3, null, true] },
      name: { type: "string", minLength: 1, maxLength: 6 },
      tags: { type: "array", items: { type: "boolean" }, minItems: 1, maxItems: 3 },
      meta: {
        type: "object",
        properties: { v: { const: "v1" }, ok: { type: "boolean" } },
        required: ["v"],
      },
    },
    required: ["id", "tags", "meta"],
  },
  "only optional properties": {
    type: "object",
    properties: {
      a: { type: "integer", minimum: 0, maximum: 9 },
      b: { type: "boolean" },
      c: { type: "null" },
    },
  },
  "anyOf, type lists and string formats": {
    type: "array",
    prefixItems: [
      { anyOf: [{ type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 10 }, { type: "null" }] },
      { type: "string", format: "date" },
      { type: "string", format: "time" },
      { type: "string", format: "date-time" },
      { type: "string", format: "uuid" },
      { type: ["boolean", "integer"], maximum: -1000 },
    ],
  },
  "numbers with bounds": {
    type: "array",
    items: { type: "number", minimum: -2.5, maximum: 3.75 },
    minItems: 2,
    maxItems: 4,
  },
  "$ref and $defs": {
    $defs: {
      point: {
        type: "object",
        properties: { x: { $ref: "#/$defs/coord" }, y: { $ref: "#/$defs/coord" } },
        required: ["x", "y"],
      },
      coord: { type: "integer", minimum: -99, maximum: 99 },
    },
    type: "object",
    properties: { from: { $ref: "#/$defs/point" }, to: { $ref: "#/$defs/point" } },
    required: ["from", "to"],
  },
  "allOf of objects": {
    allOf: [
      {
        type: "object",
        properties: { x: { type: "integer", minimum: 1, maximum: 3 } },
        required: ["x"],
      },
      { properties: { y: { enum: ["p", "q"] } }, required: ["y"] },
    ],
  },
};

async function generateValid(
  llm: LlmService,
  schema: Record<string, unknown>,
  seeds: number[],
  check: (value: unknown) => void = () => {},
) {
  const validate = ajv.compile(schema);
  const streams = await Promise.all(seeds.map((seed) =>
    generate(llm, {
      prompt: "Answer in JSON:",
      json_schema: schema,
      max_tokens: 400,
      seed,
      temperature: 1.2,
    })
  ));
  await Promise.all(streams.map((s) => s.done()));
  for (const [i, s] of streams.entries()) {
    const text = s.text();
    assert.equal(s.last().fields.reason, "stop", `seed ${seeds[i]}: ${text}`);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new Error(`seed ${seeds[i]}: not JSON: ${text} (${(e as Error).message})`);
    }
    assert.ok(validate(value), `seed ${seeds[i]}: ${text}: ${JSON.stringify(validate.errors)}`);
    check(value);
  }
}

const SEEDS = Array.from({ length: 16 }, (_, i) => i + 1);

Deno.test("json_schema output always parses and validates on a 152k-token vocabulary, over many seeds", async () => {
  await using llm = await vocabService("qwen2", { parallel: 4 });
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    await generateValid(llm, schema, SEEDS.slice(0, 6)).catch((e) => {
      throw new Error(`${name}: ${(e as Error).message}`);
    });
  }
});

Deno.test("json_schema output validates over many seeds on an SPM vocabulary, and extra properties never repeat declared ones", async () => {
  await using llm = await tinyService();
  for (const schema of Object.values(SCHEMAS)) await generateValid(llm, schema, SEEDS);
  const extra = {
    type: "object",
    properties: { a: { type: "integer", minimum: 0, maximum: 9 } },
    required: ["a"],
    additionalProperties: { type: "integer", minimum: 0, maximum: 9 },
    propertyNames: { maxLength: 2 },
  };
  await generateValid(llm, extra, SEEDS.slice(0, 6));
  const closed = { ...extra, additionalProperties: false };
  await generateValid(llm, closed, SEEDS.slice(0, 6), (v) => {
    assert.deepEqual(Object.keys(v as object), ["a"]);
  });
});

Deno.test("a recursive schema ($ref to itself) gives valid JSON whenever the output completes", async () => {
  // Random weights choose between recursing and stopping with no regard for depth, so some
  // outputs run to max_tokens; every one that completes must validate.
  await using llm = await tinyService();
  const schema = {
    $defs: {
      node: {
        type: "object",
        properties: {
          v: { type: "integer", minimum: 0, maximum: 9 },
          next: { type: "array", items: { $ref: "#/$defs/node" }, maxItems: 1 },
        },
        required: ["v", "next"],
      },
    },
    $ref: "#/$defs/node",
  };
  const validate = ajv.compile(schema);
  const streams = await Promise.all(
    SEEDS.map((seed) =>
      generate(llm, { prompt: "x", json_schema: schema, max_tokens: 300, seed, temperature: 1 })
    ),
  );
  await Promise.all(streams.map((s) => s.done()));
  let complete = 0;
  let nested = 0;
  for (const s of streams) {
    if (s.last().fields.reason !== "stop") continue;
    complete++;
    const value = JSON.parse(s.text()) as { next: unknown[] };
    assert.ok(validate(value), s.text());
    if (value.next.length > 0) nested++;
  }
  assert.ok(complete >= SEEDS.length / 2, `only ${complete} of ${SEEDS.length} completed`);
  assert.ok(nested > 0, "no output recursed");
});

Deno.test("a GBNF grammar constrains the output exactly", async () => {
  await using llm = await vocabService("llama3");
  const grammar = 'root ::= ("yes" | "no") ", " [0-9]{2,3} "!"';
  const streams = await Promise.all(
    SEEDS.slice(0, 6).map((seed) =>
      generate(llm, { prompt: "Decide:", grammar, max_tokens: 50, seed, temperature: 1.5 })
    ),
  );
  await Promise.all(streams.map((s) => s.done()));
  for (const s of streams) {
    assert.match(s.text(), /^(yes|no), [0-9]{2,3}!$/);
    assert.equal(s.last().fields.reason, "stop");
  }
});

Deno.test("an invalid grammar or schema is E_PROTO_BAD_REQUEST naming the problem, and the daemon goes on", async () => {
  await using llm = await tinyService();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ grammar: "root ::= foo" }, /undefined rule "foo"/],
    [{ grammar: 'root ::= "a" |' + "(".repeat(100) }, /nested deeper|unterminated|expecting/],
    [{ grammar: 'root ::= root "a"' }, /left-recursive/],
    [{ grammar: 'start ::= "a"' }, /no "root" rule/],
    [{ grammar: 'root ::= "a"{3000}' }, /repetition bound/],
    [{ grammar: 'root ::= "\\q"' }, /unknown escape/],
    // Passes our check, refused by llama.cpp (no such token): an error, not an abort.
    [{ grammar: "root ::= <|no-such-token|>" }, /llama\.cpp rejected the grammar/],
    [{ json_schema: { type: "string", pattern: "^a+$" } }, /"pattern" is not supported/],
    [{ json_schema: { type: "string", format: "email" } }, /format "email" is not supported/],
    [{ json_schema: { $ref: "#/$defs/missing" } }, /not found/],
    [{ json_schema: { type: "integer", minimum: 5, maximum: 2 } }, /no integer/],
    [{ json_schema: false }, /matches no value/],
    [{ json_schema: { type: "number", multipleOf: 3 } }, /"multipleOf" is not supported/],
    [
      { json_schema: JSON.parse('{"items":'.repeat(200) + "{}" + "}".repeat(200)) },
      /nests deeper than 64/,
    ],
  ];
  for (const [fields, message] of cases) {
    const s = await generate(llm, { prompt: "x", max_tokens: 5, ...fields });
    await s.done();
    assert.equal(s.failure?.code, "E_PROTO_BAD_REQUEST", JSON.stringify(fields));
    assert.match(s.failure!.message, message);
  }
  // A grammar that leaves the model no token at all ends the stream instead of aborting.
  const dead = await generate(llm, { prompt: "x", grammar: "root ::= [\\x00]", max_tokens: 5 });
  await dead.done();
  assert.equal(dead.last().fields.reason, "stop");
  const after = await generate(llm, { prompt: "x", max_tokens: 3 });
  await after.done();
  assert.equal(after.tokens().length, 3);
});

Deno.test("the grammar checker accepts llama.cpp's own example grammars", async () => {
  const { ensureLlamaSource } = await import("../src/llm/llama_source.ts");
  const dir = `${await ensureLlamaSource()}/grammars`;
  let n = 0;
  for (const f of Deno.readDirSync(dir)) {
    if (!f.name.endsWith(".gbnf")) continue;
    checkGrammar(Deno.readTextFileSync(`${dir}/${f.name}`));
    n++;
  }
  assert.ok(n >= 5);
  assert.throws(() => checkGrammar("root ::= a\na ::= b\nb ::= a"), GrammarError);
  // Left recursion through a rule that may be empty.
  assert.throws(() => checkGrammar('root ::= e\ne ::= o e "x"\no ::= "y"?'), /left-recursive/);
});

Deno.test("the converter's grammars pass the checker for every test schema", () => {
  for (const schema of Object.values(SCHEMAS)) checkGrammar(jsonSchemaToGrammar(schema));
  assert.throws(
    () => jsonSchemaToGrammar({ type: "array", minItems: 3, maxItems: 1 }),
    SchemaError,
  );
});
