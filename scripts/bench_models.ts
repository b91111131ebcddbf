// Real vocabularies and structured output: tokens/s at 1 and 8 streams on a model with
// Qwen2's 151,936-token vocabulary beside the same weights' shape with umad's own
// 4,599-token vocabulary (sampling cost over a large vocabulary), grammar-constrained
// beside free generation, and llama-server on the same models and loads.
//
//   deno run -A scripts/bench_models.ts        # prints the Markdown section (~3 minutes)
//   deno task bench --only models              # the same, into docs/BENCHMARKS.md
//
// llama-server comes from `.bench/llama-tools/build/bin/` (built once by the scheduler
// benchmark from the llama.cpp source matching the prebuilt libraries); when it is not
// there, its rows say so and nothing is built here.
import { cpuMsOf } from "../tests/_proc.ts";
import { type Client, connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { ensureSyntheticModel, TINY_MODEL } from "../src/llm/mod.ts";
import { ensureVocabModel } from "../src/llm/vocab_models.ts";
import { jsonSchemaToGrammar } from "../src/llm/json_schema_grammar.ts";
import { fmt, startBenchDaemon } from "./_bench_util.ts";
import {
  builtLlamaServer,
  type LlamaServer,
  startLlamaServer as startLlama,
  umadCpuLibDir,
} from "./_llama_server.ts";
import { findLibDir, openLibraries } from "../src/llm/ffi.ts";
import { Batch, LlamaContext, LlamaModel, Sampler } from "../src/llm/llama.ts";

const THREADS = 2;
const PARALLEL = 8;
const FREE_TOKENS = 128;
/** Requests per stream slot in each measurement. */
const REPEAT = 2;

/** A bounded JSON object (~40 tokens): only the grammar keeps random weights inside it. */
const SCHEMA = {
  type: "object",
  properties: {
    id: { type: "integer", minimum: 0, maximum: 9999 },
    kind: { enum: ["cat", "dog", "bird"] },
    name: { type: "string", maxLength: 12 },
    tags: { type: "array", items: { type: "boolean" }, maxItems: 4 },
  },
  required: ["id", "kind", "name", "tags"],
};
const GRAMMAR = jsonSchemaToGrammar(SCHEMA);

function log(msg: string) {
  console.error(`bench models: ${msg}`);
}

/** One measurement: tokens/s over `streams` concurrent request loops, client to client. */
interface Rate {
  tokS: number;
  /** CPU time of the server process per generated token (ms): robust to a shared machine. */
  cpuMsPerToken: number;
  tokens: number;
}

/** User + system CPU time of a process (ms), from /proc (Linux). */
function cpuMs(pid: number): number {
  return cpuMsOf(`/proc/${pid}/stat`);
}

async function measure(
  pid: number,
  streams: number,
  once: () => Promise<number>,
): Promise<Rate> {
  await once(); // warm: first decode, grammar index
  const cpu0 = cpuMs(pid);
  const t0 = performance.now();
  const counts = await Promise.all(Array.from({ length: streams }, async () => {
    let n = 0;
    for (let i = 0; i < REPEAT; i++) n += await once();
    return n;
  }));
  const tokens = counts.reduce((a, b) => a + b, 0);
  return {
    tokS: tokens / ((performance.now() - t0) / 1000),
    cpuMsPerToken: (cpuMs(pid) - cpu0) / tokens,
    tokens,
  };
}

let seed = 1;

async function umadOnce(client: Client, grammar: boolean): Promise<number> {
  const r = await generate(client, {
    prompt: "Write the record:",
    max_tokens: grammar ? 400 : FREE_TOKENS,
    seed: seed++,
    ...(grammar ? { grammar: GRAMMAR } : {}),
  }).complete();
  return r.usage.completion_tokens;
}

async function startUmad(
  model: string,
): Promise<{ client: Client; pid: number; stop(): Promise<void> }> {
  const d = await startBenchDaemon({
    model,
    threads: THREADS,
    parallel: PARALLEL,
    ctx: 1024 * PARALLEL,
  });
  const client = await connect({ socket: d.socket, reconnect: false }).catch(async (e) => {
    await d.stop();
    throw e;
  });
  return {
    client,
    pid: d.pid,
    async stop() {
      await client.close();
      await d.stop();
    },
  };
}

/** The built llama-server (null: not built; its rows are left out). */
const LLAMA_BIN = builtLlamaServer();

/** llama-server on the same model, load and CPU library as umad. */
function startLlamaServer(model: string): Promise<LlamaServer> {
  return startLlama({
    bin: LLAMA_BIN!,
    model,
    parallel: PARALLEL,
    ctx: 1024 * PARALLEL,
    threads: THREADS,
    libDir: umadCpuLibDir(),
  });
}

/** llama-server requests it ended with an error (counted: their tokens still count). */
let llamaErrors = 0;

async function llamaOnce(url: string, grammar: boolean): Promise<number> {
  // Streamed: on random weights llama-server's output parser sometimes fails mid-stream
  // ("does not match the expected Content-only format"); the tokens it made up to there
  // count, as they were computed.
  const r = await fetch(`${url}/completion`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      prompt: "Write the record:",
      n_predict: grammar ? 400 : FREE_TOKENS,
      seed: seed++,
      temperature: 0.8,
      top_k: 40,
      top_p: 0.95,
      min_p: 0.05,
      cache_prompt: false,
      stream: true,
      ...(grammar ? { grammar: GRAMMAR } : {}),
    }),
  });
  const text = await r.text();
  let tokens = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("data: ")) continue;
    const ev = JSON.parse(line.slice(6)) as { tokens_predicted?: number; error?: unknown };
    if (ev.error) llamaErrors++;
    if (typeof ev.tokens_predicted === "number") tokens = Math.max(tokens, ev.tokens_predicted);
  }
  return tokens;
}

/** Where a step's time goes, in this process: llama_decode vs sampling, per row count. */
interface Split {
  rows: number;
  decodeMs: number;
  sampleMsPerRow: number;
}

function rawSplit(path: string): Split[] {
  const libs = openLibraries(findLibDir());
  const m = LlamaModel.load(libs, path);
  const ctx = new LlamaContext(m, {
    nCtx: 8192,
    nBatch: 512,
    nSeqMax: 8,
    threads: THREADS,
    kvUnified: false,
  });
  const b = new Batch(512);
  const params = { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05, repeatPenalty: 1 };
  const samplers = Array.from(
    { length: 8 },
    (_, i) => new Sampler(libs, { ...params, seed: i }, m.nVocab),
  );
  const out: Split[] = [];
  const STEPS = 40;
  try {
    for (const rows of [1, 8]) {
      let decode = 0;
      let sample = 0;
      for (let step = 0; step < STEPS; step++) {
        b.clear();
        for (let r = 0; r < rows; r++) b.add(1 + r, step, r, true);
        let t0 = performance.now();
        ctx.decode(b);
        decode += performance.now() - t0;
        t0 = performance.now();
        for (let r = 0; r < rows; r++) samplers[r].sample(ctx, r);
        sample += performance.now() - t0;
      }
      for (let r = 0; r < 8; r++) ctx.seqRm(r);
      out.push({ rows, decodeMs: decode / STEPS, sampleMsPerRow: sample / STEPS / rows });
    }
  } finally {
    for (const s of samplers) s.free();
    ctx.free();
    m.free();
    libs.close();
  }
  return out;
}

interface Row {
  model: string;
  vocab: number;
  server: string;
  free1: Rate;
  free8: Rate;
  grammar1: Rate;
  grammar8: Rate;
}

async function rows(model: string, name: string, vocab: number): Promise<Row[]> {
  const out: Row[] = [];
  log(`umad on ${name}`);
  const u = await startUmad(model);
  try {
    const once = (g: boolean) => () => umadOnce(u.client, g);
    out.push({
      model: name,
      vocab,
      server: "umad",
      free1: await measure(u.pid, 1, once(false)),
      free8: await measure(u.pid, 8, once(false)),
      grammar1: await measure(u.pid, 1, once(true)),
      grammar8: await measure(u.pid, 8, once(true)),
    });
  } finally {
    await u.stop();
  }
  if (!LLAMA_BIN) return out;
  log(`llama-server on ${name}`);
  const l = await startLlamaServer(model);
  try {
    const once = (g: boolean) => () => llamaOnce(l.url, g);
    out.push({
      model: name,
      vocab,
      server: "llama-server",
      free1: await measure(l.pid, 1, once(false)),
      free8: await measure(l.pid, 8, once(false)),
      grammar1: await measure(l.pid, 1, once(true)),
      grammar8: await measure(l.pid, 8, once(true)),
    });
  } finally {
    await l.stop();
  }
  return out;
}

/** The Markdown section. */
export async function benchModels(): Promise<string> {
  const t0 = performance.now();
  const loadBefore = Deno.loadavg()[0];
  const small = ensureSyntheticModel(TINY_MODEL);
  const large = await ensureVocabModel("qwen2");
  log("raw decode and sampling split");
  const splits = [[4599, rawSplit(small)], [151936, rawSplit(large)]] as const;
  const all = [
    ...await rows(small, "umad-tiny (umad SPM vocab)", 4599),
    ...await rows(large, "qwen2-vocab (Qwen2 BPE vocab)", 151936),
  ];
  const cell = (x: Rate) => `${fmt(x.tokS, 0)} (${fmt(x.cpuMsPerToken, 1)})`;
  const line = (r: Row) =>
    `| ${r.model} | ${r.vocab.toLocaleString("en")} | ${r.server} | ${cell(r.free1)} | ${
      cell(r.free8)
    } | ${cell(r.grammar1)} | ${cell(r.grammar8)} |`;
  const ratio = (server: string, key: "free1" | "free8" | "grammar1" | "grammar8") => {
    const s = all.find((r) => r.server === server && r.vocab === 4599);
    const l = all.find((r) => r.server === server && r.vocab === 151936);
    return s && l ? fmt(l[key].cpuMsPerToken / s[key].cpuMsPerToken, 1) : "n/a";
  };
  const servers = [...new Set(all.map((r) => r.server))];
  const seconds = (performance.now() - t0) / 1000;
  return [
    "## Real vocabularies and structured output",
    "",
    `Tokens/s, client to client, and in parentheses the server process's CPU time per ` +
    `generated token in ms (user + system, from /proc: much less sensitive to other load on ` +
    `the machine than tokens/s; llama-server's threads spin-wait between graphs, umad's sleep, ` +
    `so compare CPU time within a server). ${THREADS} threads, \`--parallel ${PARALLEL}\`/\`-np ${PARALLEL}\`; ` +
    `the same random weights' shape (n_embd 64, 2 layers, F16) with two vocabularies. ` +
    `Free: ${FREE_TOKENS} tokens per request at temperature 0.8. Grammar: the GBNF of a bounded ` +
    `JSON schema (umad's converter; the same grammar text to both servers), about 40 tokens per ` +
    `request until the grammar ends it. ${REPEAT} requests per stream after a warm-up one.` +
    (LLAMA_BIN ? "" : " llama-server was not built (`.bench/llama-tools/`): its rows are missing."),
    "",
    "| model | vocabulary | server | free, 1 stream | free, 8 streams | grammar, 1 stream | grammar, 8 streams |",
    "|---|---:|---|---:|---:|---:|---:|",
    ...all.map(line),
    "",
    "Where a step goes (raw llama.cpp calls in the bench process, same library as umad): " +
    splits.map(([v, sp]) =>
      `${v.toLocaleString("en")} tokens: ` +
      sp.map((x) =>
        `${x.rows} row${x.rows > 1 ? "s" : ""} decode ${fmt(x.decodeMs, 2)} ms + sampling ` +
        `${fmt(x.sampleMsPerRow, 3)} ms per row`
      ).join(", ")
    ).join("; ") + ". The output matrix (n_vocab × n_embd) dominates a large vocabulary's step; " +
    "sampling (top-k over every logit) is the smaller part.",
    "",
    "CPU time per token, 152k vocabulary ÷ 4.6k vocabulary (same server): " +
    servers.map((s) =>
      `${s} free ${ratio(s, "free1")}× / ${ratio(s, "free8")}×, grammar ${
        ratio(s, "grammar1")
      }× / ${ratio(s, "grammar8")}× (1 / 8 streams)`
    ).join("; ") + " (×, from the CPU time per token).",
    "",
    `llama-server ended ${llamaErrors} requests early with an output-parser error on the ` +
    "random text (its tokens up to there are counted).",
    "",
    "Random weights make grammar sampling its worst case: the unconstrained pick is almost " +
    "never allowed, so every token takes the masked path (umad: the first-byte probe and top-k " +
    "preselection of `llama.ts`; llama-server: a mask of the whole vocabulary). A real model's " +
    "pick is usually allowed and costs one check.",
    "",
    `This section took ${fmt(seconds, 0)} s; the machine's load average was ${
      fmt(loadBefore, 1)
    } before it and ${
      fmt(Deno.loadavg()[0], 1)
    } after (with ${navigator.hardwareConcurrency} CPUs).`,
    "",
  ].join("\n");
}

if (import.meta.main) console.log(await benchModels());
