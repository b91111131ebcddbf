// The LLM benchmark: umad (client to client, through a real daemon) beside raw llama.cpp
// decode loops in one process with the same shapes, node-llama-cpp when it runs, and
// (bench_scheduler.ts) llama-server under the same loads.
// `deno run -A scripts/bench_llm.ts [--only throughput,ping,nlc,physics,storm,sweep,chat,shared]`
// prints the Markdown section; scripts/bench.ts calls benchLlm().
import { delay } from "../src/protocol/async.ts";
import { type Client, connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { BENCH_MODEL, ensureSyntheticModel } from "../src/llm/mod.ts";
import { Batch, LlamaContext, LlamaModel, Sampler } from "../src/llm/llama.ts";
import { fmt, libraryPatches, pct, prebuiltLibs, ROOT, startBenchDaemon } from "./_bench_util.ts";
import { benchScheduler } from "./bench_scheduler.ts";

/** Decode threads of both servers (`BENCH_THREADS=1` is steadier on a machine others use: a 2-thread pool waits at every barrier for a thread the OS took away). */
const THREADS = Number(Deno.env.get("BENCH_THREADS") ?? 2);
const PARALLEL = 16;
const CTX_PER_STREAM = 1024;
const SINGLE_TOKENS = 256;
const AGG_TOKENS = 48;
const STREAM_COUNTS = [1, 4, 8, 16];
/** Length of the ping phase beside 8 decoding streams. */
const PING_SECONDS = 8;
/** Interleaved throughput rounds; each figure is the median over them. */
const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? 5);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function medianByCount(maps: Map<number, number>[]): Map<number, number> {
  return new Map(STREAM_COUNTS.map((n) => [n, median(maps.map((m) => m.get(n)!))]));
}

/** The parts of this file (the scheduler's are in bench_scheduler.ts). */
const OWN_PARTS = ["throughput", "ping", "nlc"];

function log(msg: string) {
  console.error(`bench llm: ${msg}`);
}

interface Daemon {
  socket: string;
  stop(): Promise<void>;
}

/** `umad serve` with the model, the daemon's warnings on our stderr. */
async function startModelDaemon(model: string, extra: string[] = []): Promise<Daemon> {
  const d = await startBenchDaemon({
    model,
    threads: THREADS,
    parallel: PARALLEL,
    ctx: CTX_PER_STREAM * PARALLEL,
    extra: ["--queue", "256", ...extra],
  });
  const stop = async () => {
    await d.stop();
  };
  const c = await connect({ socket: d.socket, reconnect: false });
  const hasModel = Boolean((c.hello as { model?: unknown }).model);
  await c.close();
  if (!hasModel) {
    await stop();
    throw new Error("umad serve did not load the model");
  }
  return { socket: d.socket, stop };
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

/** Pings from another process (scripts/ping_probe.ts), so the figure is the daemon's, not this busy client's. */
async function pingFromAnotherProcess(socket: string, ms: number): Promise<number[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}scripts/ping_probe.ts`, socket, String(ms)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout));
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

/** Pings from another process while 8 streams decode on a daemon of its own. */
async function pingsBesideDecoding(model: string, extra: string[] = []): Promise<number[]> {
  const d = await startModelDaemon(model, extra);
  const client = await connect({ socket: d.socket, reconnect: false });
  try {
    await runStream(client, "warm up", 16);
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const streams = Array.from(
      { length: 8 },
      (_, i) => runStream(client, promptOf(8, i + 20), CTX_PER_STREAM - 64, undefined, stopped),
    );
    await delay(1500); // all eight decoding
    const pings = await pingFromAnotherProcess(d.socket, PING_SECONDS * 1000);
    stop();
    await Promise.all(streams);
    return pings;
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
function benchRaw(modelPath: string): RawResults {
  const libs = prebuiltLibs();
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

/**
 * Runs the LLM benchmark and returns its Markdown section. `parts` names the parts to run
 * (throughput, ping, nlc here; physics, storm, sweep, chat, shared in bench_scheduler.ts);
 * empty: all of them.
 */
export async function benchLlm(parts: Set<string> = new Set()): Promise<string> {
  const want = (p: string) => parts.size === 0 || parts.has(p);
  log("generating the bench model (first run only)");
  const modelPath = ensureSyntheticModel(BENCH_MODEL);
  const r1 = (x: number) => fmt(x, 1);
  const r2 = (x: number) => fmt(x, 2);
  const span = (xs: number[]) => `${fmt(Math.min(...xs), 1)}–${fmt(Math.max(...xs), 1)}`;
  const lines: string[] = [
    "## LLM inference",
    "",
    `Model: the generated bench model (${BENCH_MODEL.nEmbd} embd, ${BENCH_MODEL.nLayer} layers, ` +
    `${BENCH_MODEL.nHead} heads, ff ${BENCH_MODEL.nFf}, F16, random weights), ${THREADS} threads. ` +
    `umad: a daemon with --parallel ${PARALLEL}, measured by a client over the socket; ` +
    "raw: llama_decode loops in one process with the same library, model, threads and shapes.",
    "",
  ];
  if (want("throughput")) {
    // Interleaved rounds (raw loops, umad, umad --deterministic), the median of each
    // figure counting: the machine is shared and its speed drifts over a run by more
    // than the differences measured.
    const dflt = await startModelDaemon(modelPath);
    const det = await startModelDaemon(modelPath, ["--deterministic"]);
    const raws: RawResults[] = [];
    const dflts: Throughput[] = [];
    const dets: Throughput[] = [];
    try {
      const cd = await connect({ socket: dflt.socket, reconnect: false });
      const ct = await connect({ socket: det.socket, reconnect: false });
      try {
        await runStream(cd, "warm up", 16);
        await runStream(ct, "warm up", 16);
        for (let r = 1; r <= ROUNDS; r++) {
          const raw = benchRaw(modelPath);
          log(
            `round ${r} raw tok/s: single ${fmt(raw.singleDecode, 1)}, padded ${
              fmt(raw.singleDecodePadded, 1)
            }, ${STREAM_COUNTS.map((n) => `${n}: ${fmt(raw.aggregate.get(n)!, 1)}`).join(", ")}`,
          );
          raws.push(raw);
          dflts.push(await umadThroughput(cd, `round ${r} umad`));
          dets.push(await umadThroughput(ct, `round ${r} umad --deterministic`));
        }
      } finally {
        await cd.close();
        await ct.close();
      }
    } finally {
      await dflt.stop();
      await det.stop();
    }
    const raw = {
      singleDecode: median(raws.map((r) => r.singleDecode)),
      singleDecodePadded: median(raws.map((r) => r.singleDecodePadded)),
      aggregate: medianByCount(raws.map((r) => r.aggregate)),
    };
    const med = (ts: Throughput[]) => ({
      single: median(ts.map((t) => t.single)),
      aggregate: medianByCount(ts.map((t) => t.aggregate)),
    });
    const umad = med(dflts);
    const umadDet = med(dets);
    const draftsDecoded = dets.reduce((a, t) => a + t.drafts[0], 0);
    const draftsAccepted = dets.reduce((a, t) => a + t.drafts[1], 0);
    const nlc = want("nlc") ? await benchNodeLlamaCpp(modelPath) : "not run (--only)";
    lines.push(
      `Throughput was measured in ${ROUNDS} interleaved rounds (raw loops, umad, umad ` +
        "`--deterministic`, both daemons up throughout and idle while not measured); each " +
        "figure is the median over the rounds. Greedy.",
      "",
      "### Single stream (decode tokens/s, first to last token)",
      "",
      "| | tokens/s (median) | rounds | vs raw |",
      "|---|---:|---:|---:|",
      `| raw decode loop (1 row per decode) | ${r1(raw.singleDecode)} | ${
        span(raws.map((r) => r.singleDecode))
      } | 1.00 |`,
      `| raw loop padded to 2 rows (what determinism costs the kernels) | ${
        r1(raw.singleDecodePadded)
      } | ${span(raws.map((r) => r.singleDecodePadded))} | ${
        r2(raw.singleDecodePadded / raw.singleDecode)
      } |`,
      `| umad (default: one row), client to client | ${r1(umad.single)} | ${
        span(dflts.map((t) => t.single))
      } | ${r2(umad.single / raw.singleDecode)} |`,
      `| umad \`--deterministic\` (two rows, a lookup draft in the second), client to client | ${
        r1(umadDet.single)
      } | ${span(dets.map((t) => t.single))} | ${r2(umadDet.single / raw.singleDecode)} |`,
      "",
      "The default scheduler decodes a lone stream in one row. `--deterministic` pads every " +
        "decode to two rows (a one-row decode takes another kernel path) and puts a lookup draft " +
        "in the second one (the token that followed the stream's last 3, 2 or 1 tokens earlier; " +
        "when the sampled token matches, that row's logits give the next token in the same " +
        `decode): ${draftsDecoded} drafts decoded and ${draftsAccepted} accepted over the rounds ` +
        `(${fmt((100 * draftsAccepted) / Math.max(1, draftsDecoded), 0)}%). **This model has ` +
        "random weights and its greedy output falls into loops, which drafts predict well; real " +
        "text repeats less.**",
      "",
      `### Aggregate throughput (${AGG_TOKENS} tokens per stream, short prompts, wall clock)`,
      "",
      `| streams | umad tok/s | raw batched tok/s | umad/raw | umad \`--deterministic\` | its /raw | deterministic/default |${
        typeof nlc === "string" ? "" : " node-llama-cpp tok/s | umad/nlc |"
      }`,
      `|---:|---:|---:|---:|---:|---:|---:|${typeof nlc === "string" ? "" : "---:|---:|"}`,
    );
    for (const n of STREAM_COUNTS) {
      const u = umad.aggregate.get(n)!;
      const w = raw.aggregate.get(n)!;
      const d = umadDet.aggregate.get(n)!;
      let row = `| ${n} | ${r1(u)} | ${r1(w)} | ${r2(u / w)} | ${r1(d)} | ${r2(d / w)} | ${
        r2(d / u)
      } |`;
      if (typeof nlc !== "string") {
        row += ` ${r1(nlc.get(n) ?? NaN)} | ${r2(u / (nlc.get(n) ?? NaN))} |`;
      }
      lines.push(row);
    }
    if (typeof nlc === "string") lines.push("", `node-llama-cpp 3.22.1 was not measured: ${nlc}`);
    lines.push(
      "",
      "The raw batched loop keeps one KV stream per sequence; umad's default mode uses one " +
        "unified KV cache, where every row scans the cells of every stream (see the physics " +
        (libraryPatches()?.includes("fa-masked-tiles")
          ? "below); this native build's patch `fa-masked-tiles` makes the other streams' cells " +
            "cheap to pass over."
          : "below), which costs it at 16 streams; a native build's patch `fa-masked-tiles` " +
            "makes the other streams' cells cheap to pass over."),
      "",
    );
  }
  if (want("ping")) {
    log("pings beside 8 decoding streams");
    const ping = await pingsBesideDecoding(modelPath);
    log("pings beside 8 streams again, with --decode-priority idle");
    const idle = await pingsBesideDecoding(modelPath, ["--decode-priority", "idle"]);
    lines.push(
      "### Control channel while 8 streams decode",
      "",
      `ping round trip from another process: p50 ${r2(pct(ping, 0.5))} ms, p99 ` +
        `${r2(pct(ping, 0.99))} ms, max ${r2(Math.max(...ping))} ms over ${ping.length} ` +
        "pings (target p99 < 5 ms). With `--decode-priority idle` (another daemon): p50 " +
        `${r2(pct(idle, 0.5))} ms, p99 ${r2(pct(idle, 0.99))} ms, max ${
          r2(Math.max(...idle))
        } ms over ${idle.length} pings.`,
      "",
      "Decoding runs in a worker thread with synchronous FFI; the event loop only forwards " +
        "tokens. By default the decode threads run at nice 5: a thread that wakes up while " +
        "they hold both cores gets one at the next scheduler tick (4 ms at this kernel's " +
        "HZ=250), which is the tail above. `--decode-priority idle` puts them in SCHED_IDLE, " +
        "where anything that wakes up preempts them at once, at the price of decoding " +
        "starving while other programs keep every core busy.",
      "",
    );
  }
  const schedulerParts = new Set([...parts].filter((p) => !OWN_PARTS.includes(p)));
  if (parts.size === 0 || schedulerParts.size > 0) {
    lines.push(
      "## Scheduler: umad beside llama-server (issue 10)",
      "",
      await benchScheduler(schedulerParts),
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--only");
  console.log(await benchLlm(new Set(i >= 0 ? Deno.args[i + 1].split(",") : [])));
}
