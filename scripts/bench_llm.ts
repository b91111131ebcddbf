// The LLM benchmark: umad (client to client, through a real daemon) beside raw llama.cpp
// decode loops in one process with the same shapes, and node-llama-cpp when it runs.
// `deno run -A scripts/bench_llm.ts` prints the Markdown section; scripts/bench.ts
// calls benchLlm().
import { type Client, connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { BENCH_MODEL, ensureSyntheticModel } from "../src/llm/mod.ts";
import { findLibDir, openLibraries } from "../src/llm/ffi.ts";
import { Batch, LlamaContext, LlamaModel, Sampler } from "../src/llm/llama.ts";
import { fmt, pct, ROOT } from "./_bench_util.ts";

const THREADS = 2;
const PARALLEL = 16;
const CTX_PER_STREAM = 1024;
const SINGLE_TOKENS = 256;
const AGG_TOKENS = 48;
const STREAM_COUNTS = [1, 4, 8, 16];
const STORM_SECONDS = 8;
/** Interleaved throughput rounds; each figure is the median over them. */
const ROUNDS = 5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function medianByCount(maps: Map<number, number>[]): Map<number, number> {
  return new Map(STREAM_COUNTS.map((n) => [n, median(maps.map((m) => m.get(n)!))]));
}

/** Parts to run: `--only storm` or `--only throughput` while iterating (default: all). */
const ONLY = (() => {
  const i = Deno.args.indexOf("--only");
  return import.meta.main && i >= 0 ? Deno.args[i + 1] : null;
})();
const RUN_THROUGHPUT = ONLY === null || ONLY === "throughput";
const RUN_STORM = ONLY === null || ONLY === "storm";

function log(msg: string) {
  console.error(`bench llm: ${msg}`);
}

interface Daemon {
  socket: string;
  stop(): Promise<void>;
}

async function startDaemon(script: string, model: string, extra: string[] = []): Promise<Daemon> {
  const dir = await Deno.makeTempDir({ prefix: "umad-bench-llm-" });
  const socket = `${dir}/umad.sock`;
  const args = ["run", "-A", script, "serve"];
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      ...args,
      "--socket",
      socket,
      "--model",
      model,
      "--threads",
      String(THREADS),
      "--parallel",
      String(PARALLEL),
      "--ctx",
      String(CTX_PER_STREAM * PARALLEL),
      "--queue",
      "256",
      "--log-level",
      "warn",
      ...extra,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = Date.now() + 120_000;
  while (true) {
    try {
      (await Deno.connect({ transport: "unix", path: socket })).close();
      return { socket, stop };
    } catch { /* not yet */ }
    if (Date.now() > deadline) {
      await stop();
      throw new Error("daemon did not start");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `umad serve` with the model. */
async function startModelDaemon(model: string, extra: string[] = []): Promise<Daemon> {
  const d = await startDaemon(`${ROOT}main.ts`, model, extra);
  const c = await connect({ socket: d.socket, reconnect: false });
  const hasModel = Boolean((c.hello as { model?: unknown }).model);
  await c.close();
  if (!hasModel) {
    await d.stop();
    throw new Error("umad serve did not load the model");
  }
  return d;
}

/** A prompt of about n tokens for the bench model's vocabulary (one token per word). */
function promptOf(words: number, salt: number): string {
  const pool = ["the", "water", "people", "world", "and", "sun", "time", "house", "light", "music"];
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(pool[(i * 7 + salt * 3) % pool.length]);
  return out.join(" ");
}

interface StreamTiming {
  tokens: number;
  times: number[];
}

async function runStream(
  client: Client,
  prompt: string,
  maxTokens: number,
  onToken?: (t: number) => void,
  stopAt?: Promise<void>,
): Promise<StreamTiming> {
  const gen = generate(client, { prompt, max_tokens: maxTokens, temperature: 0 });
  stopAt?.then(() => gen.cancel());
  const times: number[] = [];
  for await (const ev of gen) {
    if (ev.event === "token") {
      const t = performance.now();
      times.push(t);
      onToken?.(t);
    }
  }
  return { tokens: times.length, times };
}

// A pinger in its own process, so the figure is the daemon's, not this busy client's.
const PINGER = `
const [path, ms] = Deno.args;
const conn = await Deno.connect({ transport: "unix", path });
const body = new TextEncoder().encode('{"type":"ping","id":"p"}');
const frame = new Uint8Array(4 + body.length);
new DataView(frame.buffer).setUint32(0, body.length, true);
frame.set(body, 4);
const buf = new Uint8Array(65536);
const out = [];
const end = performance.now() + Number(ms);
while (performance.now() < end) {
  const t0 = performance.now();
  await conn.write(frame);
  let have = 0;
  while (have < 4 || have < 4 + new DataView(buf.buffer).getUint32(0, true)) {
    const n = await conn.read(buf.subarray(have));
    if (n === null) throw new Error("closed");
    have += n;
  }
  out.push(performance.now() - t0);
  await new Promise((r) => setTimeout(r, 2));
}
console.log(JSON.stringify(out));
`;

async function pingFromAnotherProcess(socket: string, ms: number): Promise<number[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", PINGER, socket, String(ms)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

interface UmadResults {
  itlQuiet: number[];
  itlStorm: number[];
  stormTtft: number[];
  stormPromptTokens: number;
  ping: number[];
}

interface Throughput {
  /** Single stream, decode tokens/s (first to last token). */
  single: number;
  /** Aggregate tokens/s by number of concurrent streams. */
  aggregate: Map<number, number>;
  /** Lookup drafts of the single-stream run: decoded, and accepted. */
  drafts: [number, number];
}

async function draftCounts(client: Client): Promise<[number, number]> {
  const m = (await client.metrics()).llm as {
    lookup_drafts: { decoded: number; accepted: number };
  };
  return [m.lookup_drafts.decoded, m.lookup_drafts.accepted];
}

/** One throughput pass through a daemon: a single stream, then 1, 4, 8, 16 at once. */
async function umadThroughput(client: Client, label: string): Promise<Throughput> {
  const before = await draftCounts(client);
  const one = await runStream(client, promptOf(8, 1), SINGLE_TOKENS);
  const single = (one.tokens - 1) / ((one.times.at(-1)! - one.times[0]) / 1000);
  const after = await draftCounts(client);
  const aggregate = new Map<number, number>();
  for (const n of STREAM_COUNTS) {
    const t0 = performance.now();
    const runs = await Promise.all(
      Array.from({ length: n }, (_, i) => runStream(client, promptOf(8, i), AGG_TOKENS)),
    );
    const total = runs.reduce((a, r) => a + r.tokens, 0);
    aggregate.set(n, total / ((performance.now() - t0) / 1000));
  }
  log(
    `${label} tok/s: single ${fmt(single, 1)}, ` +
      STREAM_COUNTS.map((n) => `${n}: ${fmt(aggregate.get(n)!, 1)}`).join(", "),
  );
  return { single, aggregate, drafts: [after[0] - before[0], after[1] - before[1]] };
}

/** The 8-stream phases on a daemon of their own: quiet (with the pinger), then storm. */
async function benchUmad(
  model: string,
  extra: string[] = [],
  phases: "quiet" | "all" = "all",
): Promise<UmadResults> {
  const d = await startModelDaemon(model, extra);
  const client = await connect({ socket: d.socket, reconnect: false });
  try {
    await runStream(client, "warm up", 16);
    // Eight decoding streams, with and without 512-token prompts arriving every 2 s.
    const phase = async (storm: boolean) => {
      log(storm ? "8 streams + a 512-token prompt every 2 s" : "8 streams, no prompts arriving");
      const gaps: number[] = [];
      let stop!: () => void;
      const stopped = new Promise<void>((r) => (stop = r));
      let measuring = false;
      const streams = Array.from({ length: 8 }, (_, i) => {
        let last = 0;
        return runStream(client, promptOf(8, i + 20), CTX_PER_STREAM - 64, (t) => {
          if (measuring && last) gaps.push(t - last);
          last = t;
        }, stopped);
      });
      await new Promise((r) => setTimeout(r, 1500)); // all eight decoding
      measuring = true;
      const ttfts: number[] = [];
      let promptTokens = 0;
      const prompts: Promise<void>[] = [];
      const pings: number[] = [];
      const end = performance.now() + STORM_SECONDS * 1000;
      if (storm) {
        for (let k = 0; k < STORM_SECONDS / 2; k++) {
          prompts.push((async () => {
            await new Promise((r) => setTimeout(r, k * 2000));
            const r = await generate(client, {
              prompt: promptOf(511, k),
              max_tokens: 1,
              temperature: 0,
            }).complete();
            ttfts.push(r.usage.ttft_ms);
            promptTokens = r.usage.prompt_tokens;
          })());
        }
      } else {
        pings.push(...await pingFromAnotherProcess(d.socket, STORM_SECONDS * 1000 - 500));
      }
      while (performance.now() < end) await new Promise((r) => setTimeout(r, 50));
      measuring = false;
      await Promise.all(prompts);
      stop();
      await Promise.all(streams);
      return { gaps, ttfts, promptTokens, pings };
    };
    const none = { gaps: [], ttfts: [], promptTokens: 0, pings: [] };
    const quiet = await phase(false);
    const storm = phases === "all" ? await phase(true) : none;
    return {
      itlQuiet: quiet.gaps,
      itlStorm: storm.gaps,
      stormTtft: storm.ttfts,
      stormPromptTokens: storm.promptTokens,
      ping: quiet.pings,
    };
  } finally {
    await client.close();
    await d.stop();
  }
}

interface RawResults {
  singleDecode: number;
  singleDecodePadded: number;
  aggregate: Map<number, number>;
}

/** Raw llama.cpp decode loops in this process: the same model, threads and shapes. */
let rawLibs: ReturnType<typeof openLibraries> | null = null;

function benchRaw(modelPath: string): RawResults {
  // Backends register once per process.
  const libs = rawLibs ??= openLibraries(findLibDir());
  const model = LlamaModel.load(libs, modelPath);
  const nSeq = Math.max(...STREAM_COUNTS) + 1;
  const ctx = new LlamaContext(model, {
    nCtx: CTX_PER_STREAM * nSeq,
    nBatch: 512,
    nSeqMax: nSeq,
    threads: THREADS,
    kvUnified: false,
    poll: 0,
  });
  const batch = new Batch(512);
  const greedy = () =>
    new Sampler(
      libs,
      { temperature: 0, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, seed: 0 },
      model.nVocab,
    );
  const clear = () => {
    for (let s = 0; s < nSeq; s++) ctx.seqRm(s);
  };
  const prefill = (seq: number, tokens: Int32Array) => {
    batch.clear();
    tokens.forEach((t, i) => batch.add(t, i, seq, i === tokens.length - 1));
    if (ctx.decode(batch) !== 0) throw new Error("raw prefill failed");
    return batch.n - 1;
  };
  // Single stream, one row per decode; and padded with a second sequence's row, as umad
  // does for batch invariance.
  const single = (pad: boolean) => {
    clear();
    const s = greedy();
    const p = model.tokenize(promptOf(8, 1), true, false);
    let tok = s.sample(ctx, prefill(0, p));
    let pos = p.length;
    const t0 = performance.now();
    for (let i = 1; i < SINGLE_TOKENS; i++) {
      batch.clear();
      batch.add(tok, pos++, 0, true);
      if (pad) batch.add(0, 0, 1, true);
      if (ctx.decode(batch) !== 0) throw new Error("raw decode failed");
      if (pad) ctx.seqRm(1);
      tok = s.sample(ctx, 0);
    }
    const dt = (performance.now() - t0) / 1000;
    s.free();
    return (SINGLE_TOKENS - 1) / dt;
  };
  const singleDecode = single(false);
  const singleDecodePadded = single(true);
  const aggregate = new Map<number, number>();
  for (const n of STREAM_COUNTS) {
    clear();
    const t0 = performance.now();
    const samplers = Array.from({ length: n }, greedy);
    const toks: number[] = [];
    const pos: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = model.tokenize(promptOf(8, i), true, false);
      toks.push(samplers[i].sample(ctx, prefill(i, p)));
      pos.push(p.length);
    }
    for (let step = 1; step < AGG_TOKENS; step++) {
      batch.clear();
      for (let i = 0; i < n; i++) batch.add(toks[i], pos[i]++, i, true);
      if (ctx.decode(batch) !== 0) throw new Error("raw batched decode failed");
      for (let i = 0; i < n; i++) toks[i] = samplers[i].sample(ctx, i);
    }
    aggregate.set(n, (n * AGG_TOKENS) / ((performance.now() - t0) / 1000));
    samplers.forEach((s) => s.free());
  }
  ctx.free();
  model.free();
  return { singleDecode, singleDecodePadded, aggregate };
}

const NLC_SCRIPT = `
import { getLlama } from "node-llama-cpp";
const [modelPath, countsArg, tokensArg, threadsArg] = Deno.args;
const T = Number(tokensArg);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const out = {};
const words = ["the", "water", "people", "world", "and", "sun", "time", "house", "light", "music"];
for (const n of countsArg.split(",").map(Number)) {
  const ctx = await model.createContext({ sequences: n, contextSize: 1024 * n, threads: Number(threadsArg), batchSize: 512 });
  const t0 = performance.now();
  let count = 0;
  await Promise.all(Array.from({ length: n }, async (_, i) => {
    const seq = ctx.getSequence();
    const p = model.tokenize(Array.from({ length: 8 }, (_, j) => words[(j * 7 + i * 3) % 10]).join(" "));
    let k = 0;
    for await (const _t of seq.evaluate(p, { temperature: 0 })) if (++k >= T) break;
    count += k;
  }));
  out[n] = count / ((performance.now() - t0) / 1000);
  await ctx.dispose();
}
console.log(JSON.stringify(out));
`;

/** node-llama-cpp under Deno, installed with npm into .bench/ (it will not install through Deno). */
async function benchNodeLlamaCpp(modelPath: string): Promise<Map<number, number> | string> {
  const dir = `${ROOT}.bench/node-llama-cpp`;
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/deno.json`, '{ "nodeModulesDir": "manual" }\n');
    await Deno.writeTextFile(
      `${dir}/package.json`,
      '{ "name": "nlc-bench", "private": true, "type": "module" }\n',
    );
    await Deno.writeTextFile(`${dir}/run.ts`, NLC_SCRIPT);
    try {
      await Deno.stat(`${dir}/node_modules/node-llama-cpp/package.json`);
    } catch {
      log("installing node-llama-cpp@3.22.1 with npm");
      const npm = await new Deno.Command("npm", {
        args: ["install", "node-llama-cpp@3.22.1", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd: dir,
        stdout: "null",
        stderr: "piped",
        signal: AbortSignal.timeout(300_000),
      }).output();
      if (npm.code !== 0) {
        return `npm install failed: ${new TextDecoder().decode(npm.stderr).slice(-300)}`;
      }
    }
    log("node-llama-cpp");
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "run.ts",
        modelPath,
        STREAM_COUNTS.join(","),
        String(AGG_TOKENS),
        String(THREADS),
      ],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(300_000),
    }).output();
    if (out.code !== 0) {
      return `it failed under Deno: ${new TextDecoder().decode(out.stderr).slice(-300)}`;
    }
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    return new Map(Object.entries(r).map(([k, v]) => [Number(k), v as number]));
  } catch (err) {
    return `it could not run: ${(err as Error).message}`;
  }
}

/** Runs the LLM benchmark and returns its Markdown section. */
export async function benchLlm(): Promise<string> {
  log("generating the bench model (first run only)");
  const modelPath = ensureSyntheticModel(BENCH_MODEL);
  if (!RUN_THROUGHPUT) {
    const u = await benchUmad(modelPath);
    const q = (xs: number[], p: number) => fmt(pct(xs, p), 1);
    return [
      `storm only: ITL ms quiet p50 ${q(u.itlQuiet, 0.5)} p99 ${q(u.itlQuiet, 0.99)}; storm p50 ` +
      `${q(u.itlStorm, 0.5)} p99 ${q(u.itlStorm, 0.99)}; p99 ratio ` +
      `${fmt(pct(u.itlStorm, 0.99) / pct(u.itlQuiet, 0.99), 2)}; TTFT ms ` +
      u.stormTtft.map((t) => Math.round(t)).join(", "),
    ].join("\n");
  }
  // Throughput in interleaved rounds (raw loops, umad, umad --no-lookup, umad
  // --no-batch-invariance), the median of each figure counting: the machine is shared and
  // its speed drifts over a run by more than the differences measured.
  const dflt = await startModelDaemon(modelPath);
  const plain = await startModelDaemon(modelPath, ["--no-lookup"]);
  const free = await startModelDaemon(modelPath, ["--no-batch-invariance"]);
  const raws: RawResults[] = [];
  const dflts: Throughput[] = [];
  const plains: Throughput[] = [];
  const frees: Throughput[] = [];
  try {
    const cd = await connect({ socket: dflt.socket, reconnect: false });
    const cp = await connect({ socket: plain.socket, reconnect: false });
    const cf = await connect({ socket: free.socket, reconnect: false });
    try {
      await runStream(cd, "warm up", 16);
      await runStream(cp, "warm up", 16);
      await runStream(cf, "warm up", 16);
      for (let r = 1; r <= ROUNDS; r++) {
        const raw = benchRaw(modelPath);
        log(
          `round ${r} raw tok/s: single ${fmt(raw.singleDecode, 1)}, padded ${
            fmt(raw.singleDecodePadded, 1)
          }, ${STREAM_COUNTS.map((n) => `${n}: ${fmt(raw.aggregate.get(n)!, 1)}`).join(", ")}`,
        );
        raws.push(raw);
        dflts.push(await umadThroughput(cd, `round ${r} umad`));
        plains.push(await umadThroughput(cp, `round ${r} umad --no-lookup`));
        frees.push(await umadThroughput(cf, `round ${r} umad --no-batch-invariance`));
      }
    } finally {
      await cd.close();
      await cp.close();
      await cf.close();
    }
  } finally {
    await dflt.stop();
    await plain.stop();
    await free.stop();
  }
  const raw: RawResults = {
    singleDecode: median(raws.map((r) => r.singleDecode)),
    singleDecodePadded: median(raws.map((r) => r.singleDecodePadded)),
    aggregate: medianByCount(raws.map((r) => r.aggregate)),
  };
  const umad = {
    single: median(dflts.map((t) => t.single)),
    aggregate: medianByCount(dflts.map((t) => t.aggregate)),
  };
  const umadPlain = {
    single: median(plains.map((t) => t.single)),
    aggregate: medianByCount(plains.map((t) => t.aggregate)),
  };
  const umadFree = {
    single: median(frees.map((t) => t.single)),
    aggregate: medianByCount(frees.map((t) => t.aggregate)),
  };
  const draftsDecoded = dflts.reduce((a, t) => a + t.drafts[0], 0);
  const draftsAccepted = dflts.reduce((a, t) => a + t.drafts[1], 0);
  const span = (xs: number[]) => `${fmt(Math.min(...xs), 1)}–${fmt(Math.max(...xs), 1)}`;

  let storm: UmadResults | null = null;
  let idle: UmadResults | null = null;
  let ramp: UmadResults | null = null;
  if (RUN_STORM) {
    log("8 streams: quiet, then a 512-token prompt every 2 s");
    storm = await benchUmad(modelPath);
    log("pings beside 8 streams again, with --decode-priority idle");
    idle = await benchUmad(modelPath, ["--decode-priority", "idle"], "quiet");
    log("storm again, with --prefill-max-ratio 1");
    ramp = await benchUmad(modelPath, ["--prefill-max-ratio", "1"]);
  }
  const nlc = ONLY ? "skipped (--only)" : await benchNodeLlamaCpp(modelPath);

  const r1 = (x: number) => fmt(x, 1);
  const r2 = (x: number) => fmt(x, 2);
  const lines: string[] = [];
  lines.push(
    "## LLM inference",
    "",
    `Model: the generated bench model (${BENCH_MODEL.nEmbd} embd, ${BENCH_MODEL.nLayer} layers, ` +
      `${BENCH_MODEL.nHead} heads, ff ${BENCH_MODEL.nFf}, F16, random weights), ${THREADS} threads, ` +
      `greedy. umad: a daemon with --parallel ${PARALLEL}, measured by a client over the socket; ` +
      "raw: llama_decode loops in one process with the same library, model, threads and shapes. " +
      `Throughput was measured in ${ROUNDS} interleaved rounds (raw loops, umad, umad ` +
      "`--no-lookup`, umad `--no-batch-invariance`, the three daemons up throughout and idle " +
      "while not measured); each figure is the median over the rounds.",
    "",
    "### Single stream (decode tokens/s, first to last token)",
    "",
    "| | tokens/s (median) | rounds | vs raw |",
    "|---|---:|---:|---:|",
    `| raw decode loop (1 row per decode) | ${r1(raw.singleDecode)} | ${
      span(raws.map((r) => r.singleDecode))
    } | 1.00 |`,
    `| raw loop padded to 2 rows (umad's batch invariance) | ${r1(raw.singleDecodePadded)} | ${
      span(raws.map((r) => r.singleDecodePadded))
    } | ${r2(raw.singleDecodePadded / raw.singleDecode)} |`,
    `| umad (default: lookup drafts in the padding row), client to client | ${r1(umad.single)} | ${
      span(dflts.map((t) => t.single))
    } | ${r2(umad.single / raw.singleDecode)} |`,
    `| umad \`--no-lookup\` (padding row empty), client to client | ${r1(umadPlain.single)} | ${
      span(plains.map((t) => t.single))
    } | ${r2(umadPlain.single / raw.singleDecode)} |`,
    `| umad \`--no-batch-invariance\`, client to client | ${r1(umadFree.single)} | ${
      span(frees.map((t) => t.single))
    } | ${r2(umadFree.single / raw.singleDecode)} |`,
    "",
    "umad pads every decode to at least two rows so a stream's tokens do not depend on what " +
      "runs beside it (a one-row decode takes another kernel path); the padded raw row is " +
      "what that costs, and the fair baseline for umad's own overhead " +
      `(\`--no-lookup\` is ${r2(umadPlain.single / raw.singleDecodePadded)}× of it). By ` +
      "default a lone stream's second row carries a lookup draft (the token that followed " +
      "its last 3, 2 or 1 tokens earlier); when the sampled token matches, that row's " +
      "logits give the next token in the same decode, with the same tokens as without. " +
      `Over the rounds' single-stream runs ${draftsDecoded} drafts were decoded and ` +
      `${draftsAccepted} accepted (${
        fmt((100 * draftsAccepted) / Math.max(1, draftsDecoded), 0)
      }%` +
      `, ${
        fmt((ROUNDS * SINGLE_TOKENS) / Math.max(1, ROUNDS * SINGLE_TOKENS - draftsAccepted), 2)
      } ` +
      "tokens per decode call). **This model has random weights and its greedy output falls " +
      "into loops, which drafts predict well; real text repeats less** (edited code, quoted " +
      "passages and lists most), so a real model lands between the `--no-lookup` row and " +
      "the default row. A daemon started with `--no-batch-invariance` decodes a lone stream " +
      "in one row and gives the guarantee up.",
    "",
    `### Aggregate throughput (${AGG_TOKENS} tokens per stream, short prompts, wall clock)`,
    "",
    `| streams | umad tok/s | raw batched tok/s | umad/raw | umad \`--no-lookup\` | its /raw | umad \`--no-batch-invariance\` | its /raw |${
      typeof nlc === "string" ? "" : " node-llama-cpp tok/s | umad/nlc |"
    }`,
    `|---:|---:|---:|---:|---:|---:|---:|---:|${typeof nlc === "string" ? "" : "---:|---:|"}`,
  );
  for (const n of STREAM_COUNTS) {
    const u = umad.aggregate.get(n)!;
    const w = raw.aggregate.get(n)!;
    const p = umadPlain.aggregate.get(n)!;
    const f = umadFree.aggregate.get(n)!;
    let row = `| ${n} | ${r1(u)} | ${r1(w)} | ${r2(u / w)} | ${r1(p)} | ${r2(p / w)} | ${r1(f)} | ${
      r2(f / w)
    } |`;
    if (typeof nlc !== "string") {
      row += ` ${r1(nlc.get(n) ?? NaN)} | ${r2(u / (nlc.get(n) ?? NaN))} |`;
    }
    lines.push(row);
  }
  if (typeof nlc === "string") lines.push("", `node-llama-cpp 3.22.1 was not measured: ${nlc}`);
  if (!storm || !idle || !ramp) return lines.join("\n");
  const q99 = pct(storm.itlQuiet, 0.99);
  const s99 = pct(storm.itlStorm, 0.99);
  lines.push(
    "",
    `### Inter-token latency of 8 decoding streams while ${storm.stormPromptTokens}-token prompts arrive every 2 s`,
    "",
    "| | p50 ms | p95 ms | p99 ms | samples |",
    "|---|---:|---:|---:|---:|",
    `| no prompts arriving | ${r2(pct(storm.itlQuiet, 0.5))} | ${r2(pct(storm.itlQuiet, 0.95))} | ${
      r2(q99)
    } | ${storm.itlQuiet.length} |`,
    `| a prompt every 2 s | ${r2(pct(storm.itlStorm, 0.5))} | ${r2(pct(storm.itlStorm, 0.95))} | ${
      r2(s99)
    } | ${storm.itlStorm.length} |`,
    `| the same, \`--prefill-max-ratio 1\` (another daemon) | ${r2(pct(ramp.itlStorm, 0.5))} | ${
      r2(pct(ramp.itlStorm, 0.95))
    } | ${r2(pct(ramp.itlStorm, 0.99))} | ${ramp.itlStorm.length} |`,
    "",
    `p99 ratio with the default latency guard: **${r2(s99 / q99)}×** (target ≤ 1.5×); with ` +
      `\`--prefill-max-ratio 1\`: ${r2(pct(ramp.itlStorm, 0.99) / pct(ramp.itlQuiet, 0.99))}× ` +
      "(against that daemon's own quiet run).",
    "",
    "Time to first token of the arriving prompts: default " +
      `${storm.stormTtft.map((t) => `${Math.round(t)} ms`).join(", ")}; with ` +
      `\`--prefill-max-ratio 1\` ${ramp.stormTtft.map((t) => `${Math.round(t)} ms`).join(", ")}.`,
    "",
    "Prompts are cut into chunks sized by a time budget: 40% of a decode step by default " +
      "(the latency guard). Each prompt pass is a separate pass over the weights that costs " +
      "~30-40% of a decode step before its first token (mixing prompt rows into the decode " +
      "call would need a unified KV cache, whose cell placement breaks batch invariance), so " +
      "on this machine prompts arriving at 256 tokens/s outpace what the guard lets through " +
      "and their time to first token grows; `--prefill-max-ratio` lets a waiting prompt " +
      "raise the share (up to 2x slower decoding) in exchange for a shorter wait.",
    "",
    "### Control channel while 8 streams decode",
    "",
    `ping round trip from another process: p50 ${r2(pct(storm.ping, 0.5))} ms, p99 ` +
      `${r2(pct(storm.ping, 0.99))} ms, max ${
        r2(Math.max(...storm.ping))
      } ms over ${storm.ping.length} ` +
      "pings (target p99 < 5 ms). With `--decode-priority idle` (another daemon): p50 " +
      `${r2(pct(idle.ping, 0.5))} ms, p99 ${r2(pct(idle.ping, 0.99))} ms, max ${
        r2(Math.max(...idle.ping))
      } ms over ${idle.ping.length} pings.`,
    "",
    "Decoding runs in a worker thread with synchronous FFI; the event loop only forwards " +
      "tokens. By default the decode threads run at nice 5: a thread that wakes up while " +
      "they hold both cores gets one at the next scheduler tick (4 ms at this kernel's " +
      "HZ=250), which is the tail above. `--decode-priority idle` puts them in SCHED_IDLE, " +
      "where anything that wakes up preempts them at once, at the price of decoding " +
      "starving while other programs keep every core busy.",
    "",
  );
  return lines.join("\n");
}

if (import.meta.main) console.log(await benchLlm());
