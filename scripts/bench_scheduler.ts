// The scheduler's benchmark (issue 10): umad against llama-server built from the same
// llama.cpp source and run on the same CPU library as umad, under the same loads,
// side by side in one run. Parts (`--only llm.physics,llm.storm,...`):
// - physics: what a decode row, a prompt token and a cached cell cost, in-process;
// - storm: 8 streams of 400 tokens (temperature 0.8) while a 512-letter prompt arrives
//   every 8, 4 or 2 s, or none, on both servers;
// - sweep: --latency-budget 1.2 / 1.5 / 2 / 4 / unlimited under the every-4-s storm,
//   plotted against llama-server's point (docs/latency_budget.svg);
// - chat: three turns over a 1200-token history, prefix cache vs llama-server's;
// - shared: 8 streams sharing a 1000-token system prompt: KV cells vs one stream.
import { delay } from "../src/protocol/async.ts";
import { xorshift } from "../tests/_random.ts";
import { type Client, connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { BENCH_MODEL, ensureSyntheticModel } from "../src/llm/mod.ts";
import { Batch, LlamaContext, LlamaModel } from "../src/llm/llama.ts";
import { fmt, libraryPatches, pct, prebuiltLibs, ROOT, startBenchDaemon } from "./_bench_util.ts";
import {
  ensureLlamaTools,
  type LlamaServer,
  loadedCpuVariant,
  prebuiltLibDir,
  serverCompletion,
  startLlamaServer,
} from "./_llama_server.ts";

/** Decode threads of both servers (`BENCH_THREADS=1` is steadier on a machine others use: a 2-thread pool waits at every barrier for a thread the OS took away). */
const THREADS = Number(Deno.env.get("BENCH_THREADS") ?? 2);
const PARALLEL = 16;
const CTX = 32768;
const STREAMS = 8;
const STREAM_TOKENS = 400;
/** Seconds a storm phase measures (`BENCH_PHASE_SECONDS` shortens a trial run). */
const PHASE_SECONDS = Number(Deno.env.get("BENCH_PHASE_SECONDS") ?? 20);
const TEMPERATURE = 0.8;
const STORM_LETTERS = 512;
/** The sweep's budgets (`BENCH_BUDGETS=4,unlimited` runs only those, and no --deterministic row). */
const BUDGETS =
  Deno.env.get("BENCH_BUDGETS")?.split(",").map((b) => b === "unlimited" ? Infinity : Number(b)) ??
    [1.2, 1.5, 2, 4, Infinity];

function log(msg: string) {
  console.error(`bench scheduler: ${msg}`);
}

const r1 = (x: number) => fmt(x, 1);
const r2 = (x: number) => fmt(x, 2);
const ms = (x: number) => `${Math.round(x)}`;

function letters(n: number, seed: number): string {
  const r = xorshift(seed);
  let out = "";
  for (let i = 0; i < n; i++) out += String.fromCharCode(97 + Math.floor(r() * 26));
  return out;
}

/** About n tokens of the bench model's vocabulary (one token per word). */
function words(n: number, seed: number): string {
  const pool = [
    "the",
    "water",
    "people",
    "world",
    "and",
    "sun",
    "time",
    "house",
    "light",
    "music",
    "father",
    "mother",
  ];
  const r = xorshift(seed);
  return Array.from({ length: n }, () => pool[Math.floor(r() * pool.length)]).join(" ");
}

/** One server under test, umad or llama-server, spoken to the same way. */
interface Target {
  label: string;
  /** Streams a completion; `times` are token arrival times. */
  complete(
    p: { prompt: string; maxTokens: number; temperature: number; seed: number; cache?: boolean },
    onToken?: (t: number) => void,
    signal?: AbortSignal,
  ): Promise<
    { times: number[]; sent: number; promptTokens: number; cachedTokens: number; text: string }
  >;
  /** KV cells in use (umad only). */
  kvCells?(): Promise<number>;
  stop(): Promise<void>;
}

interface Daemon {
  socket: string;
  client: Client;
  stop(): Promise<void>;
}

async function startUmad(model: string, extra: string[] = []): Promise<Daemon> {
  const d = await startBenchDaemon({
    model,
    threads: THREADS,
    parallel: PARALLEL,
    ctx: CTX,
    // The same thread priority as llama-server's: the machine may be shared.
    extra: ["--queue", "256", "--decode-priority", "normal", ...extra],
  });
  try {
    const client = await connect({ socket: d.socket, reconnect: false });
    return {
      socket: d.socket,
      client,
      stop: async () => {
        await client.close();
        await d.stop();
      },
    };
  } catch (e) {
    await d.stop();
    throw e;
  }
}

function umadTarget(label: string, d: Daemon): Target {
  return {
    label,
    async complete(p, onToken, signal) {
      const sent = performance.now();
      const gen = generate(d.client, {
        prompt: p.prompt,
        max_tokens: p.maxTokens,
        temperature: p.temperature,
        seed: p.seed,
        cache_prompt: p.cache ?? true,
      });
      if (signal?.aborted) gen.cancel();
      signal?.addEventListener("abort", () => gen.cancel(), { once: true });
      const times: number[] = [];
      let text = "";
      let promptTokens = 0;
      let cachedTokens = 0;
      for await (const ev of gen) {
        if (ev.event === "token") {
          const t = performance.now();
          times.push(t);
          text += ev.text;
          onToken?.(t);
        } else if (ev.event === "eos") {
          promptTokens = ev.usage.prompt_tokens;
          cachedTokens = ev.usage.cached_tokens;
        }
      }
      return { times, sent, promptTokens, cachedTokens, text };
    },
    async kvCells() {
      return ((await d.client.metrics()).llm as { kv_cells_used: number }).kv_cells_used;
    },
    stop: () => d.stop(),
  };
}

/**
 * llama-server. Its output parser rejects invalid UTF-8, which a random-weight model
 * emits as lone byte tokens, and ends the stream with an error: those tokens are banned
 * (`logit_bias`; a cost too small to measure), `bannedBytes` lists them.
 */
function serverTarget(label: string, s: LlamaServer, bannedBytes: number[]): Target {
  const logitBias = bannedBytes.map((t) => [t, false]);
  return {
    label,
    async complete(p, onToken, signal) {
      const sent = performance.now();
      const r = await serverCompletion(
        s.url,
        {
          prompt: p.prompt,
          n_predict: p.maxTokens,
          temperature: p.temperature,
          seed: p.seed,
          cache_prompt: p.cache ?? true,
          logit_bias: logitBias,
        },
        onToken,
        signal,
      );
      return { ...r, sent };
    },
    stop: () => s.stop(),
  };
}

// --- physics -----------------------------------------------------------------------

/**
 * A storm's step: a whole prompt beside 8 decode rows at 400 tokens (llama-server's way,
 * and umad's with an unlimited budget), on a unified cache and on one KV stream per
 * sequence (where llama.cpp splits the batch into a ubatch of decode rows and one of the
 * prompt, which scans only its own cells). Both contexts live at once and the calls
 * alternate, so a drift in the machine's speed hits both alike. Median ms of 5.
 */
function stormStep(model: LlamaModel): { true: number; false: number } {
  const L = 400;
  const P = 504;
  const b = new Batch(512);
  const ctxs = [true, false].map((unified) =>
    new LlamaContext(model, {
      nCtx: unified ? CTX : 2048 * 18,
      nBatch: 512,
      nSeqMax: 18,
      threads: THREADS,
      kvUnified: unified,
      poll: 0,
    })
  );
  try {
    for (const ctx of ctxs) {
      for (let s = 0; s < 8; s++) {
        b.clear();
        for (let i = 0; i < L; i++) b.add(100 + (i * 7) % 200, i, s, false);
        if (ctx.decode(b) !== 0) throw new Error("fill failed");
      }
    }
    const times: number[][] = [[], []];
    for (let r = 0; r < 5; r++) {
      ctxs.forEach((ctx, k) => {
        b.clear();
        for (let s = 0; s < 8; s++) b.add(5, L, s, true);
        for (let i = 0; i < P; i++) b.add(7, i, 16, i === P - 1);
        const t0 = performance.now();
        if (ctx.decode(b) !== 0) throw new Error("decode failed");
        times[k].push(performance.now() - t0);
        for (let s = 0; s < 8; s++) ctx.seqRm(s, L, -1);
        ctx.seqRm(16);
      });
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    return { true: med(times[0]), false: med(times[1]) };
  } finally {
    for (const ctx of ctxs) ctx.free();
  }
}

/**
 * Where llama.cpp's CPU flash attention changes kernel: a call of 63 tokens runs row by row,
 * one of 64 in 64-row tiles. 8 decode rows at 400 tokens beside 55 and 56 tokens of a prompt
 * that is 400 tokens in, on a unified cache. Median ms of 7.
 */
function tileThreshold(model: LlamaModel): { 55: number; 56: number } {
  const L = 400;
  const b = new Batch(512);
  const ctx = new LlamaContext(model, {
    nCtx: CTX,
    nBatch: 512,
    nSeqMax: 18,
    threads: THREADS,
    kvUnified: true,
    poll: 0,
  });
  try {
    for (const s of [0, 1, 2, 3, 4, 5, 6, 7, 16]) {
      b.clear();
      for (let i = 0; i < L; i++) b.add(100 + (i * 7) % 200, i, s, false);
      if (ctx.decode(b) !== 0) throw new Error("fill failed");
    }
    const times: Record<55 | 56, number[]> = { 55: [], 56: [] };
    for (let r = 0; r < 7; r++) {
      for (const k of [55, 56] as const) {
        b.clear();
        for (let s = 0; s < 8; s++) b.add(5, L, s, true);
        for (let i = 0; i < k; i++) b.add(7, L + i, 16, i === k - 1);
        const t0 = performance.now();
        if (ctx.decode(b) !== 0) throw new Error("decode failed");
        times[k].push(performance.now() - t0);
        for (let s = 0; s < 8; s++) ctx.seqRm(s, L, -1);
        ctx.seqRm(16, L, -1);
      }
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    return { 55: med(times[55]), 56: med(times[56]) };
  } finally {
    ctx.free();
  }
}

/** What rows, prompt tokens and cached cells cost, measured with raw llama_decode calls. */
function physics(modelPath: string): string {
  const model = LlamaModel.load(prebuiltLibs(), modelPath);
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const rows: string[] = [];
  const results: Record<string, number> = {};
  for (const unified of [true, false]) {
    const nSeq = 18;
    const ctx = new LlamaContext(model, {
      nCtx: unified ? CTX : 2048 * nSeq,
      nBatch: 512,
      nSeqMax: nSeq,
      threads: THREADS,
      kvUnified: unified,
      poll: 0,
    });
    const b = new Batch(512);
    const fill = (seq: number, n: number) => {
      for (let pos = 0; pos < n;) {
        b.clear();
        const k = Math.min(512, n - pos);
        for (let i = 0; i < k; i++) b.add(100 + ((pos + i) * 7) % 200, pos + i, seq, false);
        if (ctx.decode(b) !== 0) throw new Error("fill failed");
        pos += k;
      }
    };
    const time = (d: number, at: number, p: number, reps = 7) => {
      const t: number[] = [];
      for (let r = 0; r < reps; r++) {
        b.clear();
        for (let s = 0; s < d; s++) b.add(5, at, s, true);
        for (let i = 0; i < p; i++) b.add(7, i, 16, i === p - 1);
        const t0 = performance.now();
        if (ctx.decode(b) !== 0) throw new Error("decode failed");
        t.push(performance.now() - t0);
        for (let s = 0; s < d; s++) ctx.seqRm(s, at, -1);
        if (p) ctx.seqRm(16);
      }
      return med(t);
    };
    const L = 200;
    for (let s = 0; s < 8; s++) fill(s, L);
    const kind = unified ? "unified KV" : "one KV stream per sequence";
    const d1 = time(1, L, 0);
    const d8 = time(8, L, 0);
    results[`d8${unified}`] = d8;
    rows.push(`| ${kind} | 1 decode row | ${r1(d1)} |`);
    rows.push(`| ${kind} | 8 decode rows | ${r1(d8)} |`);
    if (unified) {
      for (const p of [8, 32, 64, 128]) {
        const t = time(8, L, p);
        rows.push(
          `| ${kind} | 8 decode rows + ${p} prompt tokens, one call | ${r1(t)} (+${
            r2((t - d8) / p)
          }/token) |`,
        );
        results[`mixed${p}`] = (t - d8) / p;
      }
    }
    for (const p of [64, 256]) {
      const t = time(0, 0, p);
      rows.push(`| ${kind} | a ${p}-token prompt alone | ${r1(t)} (${r2(t / p)}/token) |`);
      results[`prompt${p}${unified}`] = t / p;
    }

    if (unified) {
      fill(17, 8000);
      const t = time(8, L, 0);
      rows.push(`| ${kind} | 8 decode rows beside 8000 cached cells | ${r1(t)} (+${r2(t - d8)}) |`);
      results.cached8000 = t - d8;
    }
    ctx.free();
  }
  const big = stormStep(model);
  for (const unified of [true, false]) {
    const kind = unified ? "unified KV" : "one KV stream per sequence";
    rows.push(
      `| ${kind} | 8 decode rows at 400 tokens + a 504-token prompt, one call (interleaved) | ${
        r1(big[`${unified}`])
      } |`,
    );
  }
  results.bigtrue = big.true;
  results.bigfalse = big.false;
  const tiles = tileThreshold(model);
  for (const k of [55, 56] as const) {
    rows.push(
      `| unified KV | 8 decode rows at 400 tokens + ${k} prompt tokens at 400 (${
        k + 8
      }-token call) | ${r1(tiles[k])} |`,
    );
  }
  model.free();
  const perRow = results[`d8true`] / 8;
  const patches = libraryPatches() ?? [];
  return [
    "### Physics: what a step costs on this CPU",
    "",
    `Raw \`llama_decode\` calls in one process (the bench model, ${THREADS} threads, the library umad loads), ` +
    "8 sequences of 200 tokens, median of 7 calls; ms.",
    "",
    "| KV | call | ms |",
    "|---|---|---:|",
    ...rows,
    "",
    `A decode row costs ~${r2(perRow)} ms of an 8-row step (${
      r1(results[`d8true`])
    } ms) and a prompt token ` +
    `riding in the same call ~${
      r2(results.mixed32)
    } ms: a prompt token costs about one decode row, so a ` +
    "budget of R× the quiet step leaves (R−1) of it for prompt tokens. A prompt in a call of its own " +
    `pays the pass over the weights again. Under a unified KV cache every row scans every cell in use: ` +
    `8000 cached cells add ${
      r1(results.cached8000)
    } ms to each 8-row step, which is why a cached ` +
    "prefix pays rent to the cost model and is dropped once it has cost what recomputing it is " +
    "expected to save. The same scan makes a whole prompt beside 8 streams cost " +
    `${r1(results.bigtrue)} ms in one unified call against ${
      r1(results.bigfalse)
    } ms with one KV stream per ` +
    `sequence (${r2(results.bigtrue / results.bigfalse)}×). ` +
    (patches.includes("fa-masked-tiles")
      ? "The library here is a native build with umad's patches " +
        `(${patches.join(", ")}): \`fa-masked-tiles\` finds ` +
        "masked tiles and runs of masked cells from the mask's F16 bits; the shipped kernel " +
        "converts each row's mask over every cell in use, for every head, before it skips a tile " +
        "that is all masked (with it: 13–15 ms for the 8000 cells and 1.31–1.36× for the prompt " +
        "step, in earlier runs)."
      : "llama.cpp's tiled flash-attention kernel reads each prompt row's mask over every cell in " +
        "use, for every head, before it skips a tile that is all masked (`umad llama build` " +
        "applies umad's patch `fa-masked-tiles`, which skips them from the mask's bits)."),
    ` A call of 64 tokens or more runs llama.cpp's tiled kernel: ${r1(tiles[56])} ms for the ` +
    `64-token call against ${r1(tiles[55])} for 63 (${r2(tiles[56] / tiles[55])}×)` +
    (patches.includes("fa-rows-or-tiles")
      ? "; with `fa-rows-or-tiles` a tile whose rows belong to many sequences is computed " +
        "row by row (without it: 1.3–1.7× in earlier runs)."
      : ": a query tile holding the decode rows of 8 sequences opens all their KV tiles, and " +
        "its GEMM does dense work over cells most of its rows mask out (`fa-rows-or-tiles` " +
        "computes such a tile row by row)."),
    "",
  ].join("\n");
}

// --- storm -------------------------------------------------------------------------

interface StormResult {
  label: string;
  every: number | null;
  tokS: number;
  totalTokS: number;
  itl: number[];
  ttft: number[];
  promptTokens: number;
  seconds: number;
}

/**
 * 8 streams (each up to 400 tokens, a new one when one ends) for PHASE_SECONDS while a
 * 512-letter prompt arrives every `every` seconds.
 */
async function storm(t: Target, every: number | null, salt: number): Promise<StormResult> {
  const itl: number[] = [];
  let start = Infinity;
  let end = Infinity;
  let streamTokens = 0;
  const started: boolean[] = new Array(STREAMS).fill(false);
  const stop = new AbortController();
  let seed = salt * 1000;
  const slots = Array.from({ length: STREAMS }, async (_, i) => {
    while (!stop.signal.aborted) {
      let last = 0;
      await t.complete(
        { prompt: words(8, ++seed), maxTokens: STREAM_TOKENS, temperature: TEMPERATURE, seed },
        (now) => {
          started[i] = true;
          if (now >= start && now <= end) {
            streamTokens++;
            if (last >= start) itl.push(now - last);
          }
          last = now;
        },
        stop.signal,
      );
    }
  });
  while (!started.every(Boolean)) await delay(10);
  await delay(500);
  start = performance.now();
  end = start + PHASE_SECONDS * 1000;
  const ttft: number[] = [];
  let promptTokens = 0;
  const prompts: Promise<void>[] = [];
  while (performance.now() < end) {
    if (every !== null) {
      const k = ++seed;
      prompts.push(
        t.complete({
          prompt: letters(STORM_LETTERS, k),
          maxTokens: 1,
          temperature: TEMPERATURE,
          seed: k,
        })
          .then((r) => {
            if (!r.times.length) return;
            ttft.push(r.times[0] - r.sent);
            if (r.times[0] <= end) promptTokens += r.promptTokens;
          }),
      );
    }
    const next = Math.min(end, performance.now() + (every ?? PHASE_SECONDS) * 1000);
    while (performance.now() < next) await delay(10);
  }
  stop.abort();
  await Promise.all(slots);
  await Promise.all(prompts);
  const seconds = (end - start) / 1000;
  return {
    label: t.label,
    every,
    tokS: streamTokens / seconds,
    totalTokS: (streamTokens + promptTokens) / seconds,
    itl,
    ttft,
    promptTokens,
    seconds,
  };
}

function stormRow(r: StormResult, quiet?: StormResult): string {
  const p99 = pct(r.itl, 0.99);
  const ratio = quiet ? ` (${r2(p99 / pct(quiet.itl, 0.99))}×)` : "";
  const ttft = r.ttft.length ? r.ttft.map(ms).join(", ") : "—";
  return `| ${r.label} | ${r.every === null ? "none" : `every ${r.every} s`} | ${r1(r.tokS)} | ` +
    `${r1(pct(r.itl, 0.5))} | ${r1(pct(r.itl, 0.95))} | ${r1(p99)}${ratio} | ` +
    `${r1(Math.max(...r.itl))} | ${ttft} | ${r1(r.totalTokS)} |`;
}

// --- chat --------------------------------------------------------------------------

async function chat(
  t: Target,
  salt: number,
  cache: boolean,
): Promise<{ ttft: number[]; cached: number[] }> {
  let prompt = words(1200, salt);
  const ttft: number[] = [];
  const cached: number[] = [];
  for (let turn = 0; turn < 3; turn++) {
    const r = await t.complete({ prompt, maxTokens: 32, temperature: 0, seed: 1, cache });
    ttft.push(r.times[0] - r.sent);
    cached.push(r.cachedTokens);
    prompt += r.text + ` and the ${words(20, salt + turn + 1)}`;
  }
  return { ttft, cached };
}

// --- shared system prompt ------------------------------------------------------------

async function sharedCells(
  t: Target,
  n: number,
  salt: number,
): Promise<{ cells: number; ttft: number[] }> {
  const system = words(1000, salt);
  const base = await t.kvCells!();
  let peak = base;
  let done = false;
  const poll = (async () => {
    while (!done) {
      peak = Math.max(peak, await t.kvCells!());
      await delay(20);
    }
  })();
  const runs = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      t.complete({
        prompt: `${system} ${words(10, salt * 10 + i + 1)}`,
        maxTokens: 16,
        temperature: TEMPERATURE,
        seed: i + 1,
      })),
  );
  done = true;
  await poll;
  return { cells: peak - base, ttft: runs.map((r) => r.times[0] - r.sent) };
}

// --- the plot ----------------------------------------------------------------------

/** p99 ratio (x) against storm TTFT p50 (y, log scale): umad's budgets and llama-server. */
export function svgPlot(
  points: { label: string; x: number; y: number; ours: boolean }[],
  title: string,
): string {
  const W = 640;
  const H = 420;
  const m = { l: 70, r: 150, t: 40, b: 50 };
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const xMax = Math.max(2, ...xs) * 1.1;
  const yMin = Math.max(10, Math.min(...ys) / 2);
  const yMax = Math.max(...ys) * 2;
  const px = (x: number) => m.l + ((x - 1) / (xMax - 1)) * (W - m.l - m.r);
  const py = (y: number) =>
    H - m.b - ((Math.log10(y) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) *
      (H - m.t - m.b);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${
      H - 12
    }" text-anchor="middle">inter-token p99 under the storm ÷ quiet p99</text>`,
    `<text x="16" y="${(m.t + H - m.b) / 2}" text-anchor="middle" transform="rotate(-90 16 ${
      (m.t + H - m.b) / 2
    })">storm prompts' TTFT p50 (ms, log)</text>`,
  ];
  for (let x = 1; x <= xMax; x += xMax > 6 ? 2 : 0.5) {
    out.push(
      `<line x1="${px(x)}" y1="${H - m.b}" x2="${px(x)}" y2="${H - m.b + 4}" stroke="black"/>`,
      `<text x="${px(x)}" y="${H - m.b + 16}" text-anchor="middle">${x}</text>`,
    );
  }
  for (let e = Math.ceil(Math.log10(yMin)); e <= Math.log10(yMax); e++) {
    for (const k of [1, 3]) {
      const y = k * 10 ** e;
      if (y < yMin || y > yMax) continue;
      out.push(
        `<line x1="${m.l - 4}" y1="${py(y)}" x2="${W - m.r}" y2="${py(y)}" stroke="#ddd"/>`,
        `<text x="${m.l - 6}" y="${py(y) + 4}" text-anchor="end">${y}</text>`,
      );
    }
  }
  const ours = points.filter((p) => p.ours).sort((a, b) => a.x - b.x);
  out.push(
    `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="${
      ours.map((p) => `${px(p.x)},${py(p.y)}`).join(" ")
    }"/>`,
  );
  for (const p of points) {
    const color = p.ours ? "#1f77b4" : "#d62728";
    out.push(
      p.ours
        ? `<circle cx="${px(p.x)}" cy="${py(p.y)}" r="5" fill="${color}"/>`
        : `<rect x="${px(p.x) - 5}" y="${py(p.y) - 5}" width="10" height="10" fill="${color}"/>`,
      `<text x="${px(p.x) + 8}" y="${py(p.y) - 6}" fill="${color}">${p.label}</text>`,
    );
  }
  out.push("</svg>");
  return out.join("\n") + "\n";
}

// --- the section -------------------------------------------------------------------

/** Runs the parts named in `parts` (all when empty) and returns the Markdown section. */
export async function benchScheduler(parts: Set<string>): Promise<string> {
  const want = (p: string) => parts.size === 0 || parts.has(p);
  const modelPath = ensureSyntheticModel(BENCH_MODEL);
  const out: string[] = [];
  if (want("physics")) {
    log("physics");
    out.push(physics(modelPath));
  }
  const needServer = want("storm") || want("sweep") || want("chat");
  let server: LlamaServer | null = null;
  let libNote = "";
  if (needServer) {
    const bin = await ensureLlamaTools(log);
    // The same CPU library on both sides: the variant umad's loader picks.
    prebuiltLibs();
    const cpu = loadedCpuVariant();
    if (!cpu) throw new Error("could not tell which CPU library umad loads");
    server = await startLlamaServer({
      bin,
      model: modelPath,
      parallel: PARALLEL,
      ctx: CTX,
      threads: THREADS,
      libDir: prebuiltLibDir(cpu),
    });
    const patches = libraryPatches() ?? [];
    libNote = `Both servers run on the CPU library umad's loader picks on this machine, ` +
      `\`${cpu.split("/node_modules/").pop()?.split("/bins/")[0] ?? cpu}\` (umad loads it; ` +
      "llama-server, built from the matching source with `-DGGML_NATIVE=ON`, has it put in " +
      "place of its own `libggml-cpu.so.0`, with the package's `libggml-base.so`, on " +
      "`LD_LIBRARY_PATH`)" +
      (patches.length
        ? `; it is a native build with umad's patches (${patches.join(", ")}).`
        : ".");
  }
  const banned: number[] = [];
  if (server) {
    const model = LlamaModel.load(prebuiltLibs(), modelPath);
    for (let t = 0; t < model.nVocab; t++) {
      const piece = model.piece(t);
      if (piece.length === 1 && piece[0] >= 0x80) banned.push(t);
    }
    model.free();
  }
  const ls = server ? serverTarget("llama-server", server, banned) : null;
  try {
    let lsStorm4: StormResult | null = null;
    let lsQuiet: StormResult | null = null;
    if (want("storm")) {
      const d = await startUmad(modelPath);
      const umad = umadTarget("umad", d);
      try {
        const rows: string[] = [];
        const results: StormResult[] = [];
        let salt = 1;
        const intervals = (Deno.env.get("BENCH_STORMS") ?? "none,8,4,2").split(",")
          .map((x) => x === "none" ? null : Number(x));
        for (const every of intervals) {
          for (const t of [umad, ls!]) {
            log(`storm ${every ?? "none"}: ${t.label}`);
            results.push(await storm(t, every, salt++));
          }
        }
        for (const label of ["umad", "llama-server"]) {
          const mine = results.filter((r) => r.label === label);
          for (const r of mine) rows.push(stormRow(r, r.every === null ? undefined : mine[0]));
        }
        lsQuiet = results.find((r) => r.label === "llama-server" && r.every === null)!;
        lsStorm4 = results.find((r) => r.label === "llama-server" && r.every === 4)!;
        const uStorm4 = results.find((r) => r.label === "umad" && r.every === 4)!;
        const uQuiet = results.find((r) => r.label === "umad" && r.every === null)!;
        out.push(
          "### Storm: 8 streams decoding while long prompts arrive",
          "",
          `${STREAMS} streams of ${STREAM_TOKENS} tokens at temperature ${TEMPERATURE}, one ` +
            `${STORM_LETTERS}-letter prompt (max 1 token) every 8, 4 or 2 s; both servers with ` +
            `\`-np ${PARALLEL} -c ${CTX} -t ${THREADS}\` (umad: \`--parallel ${PARALLEL} --ctx ${CTX} ` +
            `--threads ${THREADS} --decode-priority normal\`, the default scheduler and latency ` +
            "budget 1.5), the phases interleaved " +
            `(umad, llama-server, umad, ...), ${PHASE_SECONDS} s each (a stream that ends is replaced). ` +
            libNote +
            ` llama-server gets \`logit_bias\` banning the ${banned.length} lone high-byte tokens: ` +
            "its output parser ends a stream with an error on the invalid UTF-8 a random model emits.",
          "",
          "| server | prompts | tok/s (8 streams) | ITL p50 ms | p95 | p99 (÷ quiet) | max | each storm prompt's TTFT, ms | prompt + generated tok/s |",
          "|---|---|---:|---:|---:|---:|---:|---|---:|",
          ...rows,
          "",
          `At the every-4-s storm: umad's TTFT p50 ${
            ms(pct(uStorm4.ttft, 0.5))
          } ms against llama-server's ` +
            `${ms(pct(lsStorm4.ttft, 0.5))} ms, p99 ratio ${
              r2(pct(uStorm4.itl, 0.99) / pct(uQuiet.itl, 0.99))
            }× against ` +
            `${
              r2(pct(lsStorm4.itl, 0.99) / pct(lsQuiet.itl, 0.99))
            }×; tokens processed per second ` +
            `${r2(uStorm4.totalTokS / lsStorm4.totalTokS)}× llama-server's.`,
          "",
        );
      } finally {
        await umad.stop();
      }
    }
    if (want("sweep")) {
      if (!lsStorm4 || !lsQuiet) {
        log("sweep: llama-server's point");
        lsQuiet = await storm(ls!, null, 90);
        lsStorm4 = await storm(ls!, 4, 91);
      }
      const points: { label: string; x: number; y: number; ours: boolean }[] = [];
      const rows: string[] = [];
      const configs: [string, string[]][] = [
        ...BUDGETS.map((b): [string, string[]] => [
          b === Infinity ? "unlimited" : String(b),
          ["--latency-budget", b === Infinity ? "unlimited" : String(b)],
        ]),
        ...(Deno.env.get("BENCH_BUDGETS") ? [] : [
          ["1.5, --deterministic", ["--deterministic"]] as [string, string[]],
        ]),
      ];
      let salt = 200;
      for (const [label, args] of configs) {
        log(`sweep: --latency-budget ${label}`);
        const d = await startUmad(modelPath, args);
        const t = umadTarget(`umad ${label}`, d);
        try {
          const quiet = await storm(t, null, salt++);
          const s4 = await storm(t, 4, salt++);
          const x = pct(s4.itl, 0.99) / pct(quiet.itl, 0.99);
          const y = pct(s4.ttft, 0.5);
          if (!label.includes("deterministic")) {
            points.push({ label: `R ${label}`, x, y, ours: true });
          }
          rows.push(
            `| ${label} | ${r1(pct(quiet.itl, 0.99))} | ${r1(pct(s4.itl, 0.99))} | ${r2(x)} | ${
              ms(y)
            } | ` +
              `${s4.ttft.map(ms).join(", ")} | ${r1(s4.tokS)} | ${r1(s4.totalTokS)} |`,
          );
        } finally {
          await t.stop();
        }
      }
      const lx = pct(lsStorm4.itl, 0.99) / pct(lsQuiet.itl, 0.99);
      const ly = pct(lsStorm4.ttft, 0.5);
      points.push({ label: "llama-server", x: lx, y: ly, ours: false });
      const svg = svgPlot(
        points,
        "Latency budget sweep: 8 streams + a 512-letter prompt every 4 s",
      );
      Deno.writeTextFileSync(`${ROOT}docs/latency_budget.svg`, svg);
      // deno fmt --check covers SVG files too.
      await new Deno.Command(Deno.execPath(), {
        args: ["fmt", "-q", `${ROOT}docs/latency_budget.svg`],
      })
        .output();
      out.push(
        "### Latency budget sweep (every-4-s storm)",
        "",
        "Each budget on a daemon of its own: a quiet phase, then the every-4-s storm; the p99 ratio " +
          "is against that daemon's quiet phase. ![p99 ratio against TTFT](latency_budget.svg)",
        "",
        "| --latency-budget | quiet p99 ms | storm p99 ms | p99 ratio | TTFT p50 ms | each TTFT, ms | tok/s | prompt + generated tok/s |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
        ...rows,
        `| llama-server | ${r1(pct(lsQuiet.itl, 0.99))} | ${r1(pct(lsStorm4.itl, 0.99))} | ${
          r2(lx)
        } | ${ms(ly)} | ` +
          `${lsStorm4.ttft.map(ms).join(", ")} | ${r1(lsStorm4.tokS)} | ${
            r1(lsStorm4.totalTokS)
          } |`,
        "",
      );
    }
    if (want("chat")) {
      log("chat");
      const d = await startUmad(modelPath);
      const umad = umadTarget("umad", d);
      try {
        const uncached = await chat(umad, 301, false);
        const u = await chat(umad, 302, true);
        const s = await chat(ls!, 302, true);
        const row = (label: string, r: { ttft: number[]; cached: number[] }) =>
          `| ${label} | ${r.ttft.map(ms).join(" | ")} | ${r.cached.join(", ")} |`;
        out.push(
          "### Chat: three turns over a 1200-token history",
          "",
          "Each turn sends the whole conversation again (history, the previous answers, ~20 new " +
            "words) and takes 32 tokens greedily; TTFT per turn, client to client.",
          "",
          "| | turn 1 TTFT ms | turn 2 | turn 3 | prompt tokens from cache |",
          "|---|---:|---:|---:|---|",
          row("umad, `cache_prompt: false`", uncached),
          row("umad (prefix cache)", u),
          row("llama-server (`cache_prompt: true`)", s),
          "",
          `Turns 2 and 3: umad/llama-server ${r2(u.ttft[1] / s.ttft[1])}× and ${
            r2(u.ttft[2] / s.ttft[2])
          }× (target ≤ 1.5×).`,
          "",
        );
      } finally {
        await umad.stop();
      }
    }
    if (want("shared")) {
      log("shared system prompt");
      const d = await startUmad(modelPath);
      const umad = umadTarget("umad", d);
      try {
        const one = await sharedCells(umad, 1, 401);
        const eight = await sharedCells(umad, 8, 402);
        out.push(
          "### Eight streams sharing a 1000-token system prompt",
          "",
          "All eight sent at once (system prompt + 10 words of their own, 16 tokens each: what each " +
            "stream holds alone is ~26 cells, so 8 streams can at best use (1000 + 8·26) / 1026 ≈ 1.18× " +
            "the cells of one); the most KV cells in use during the run, above what was in use before.",
          "",
          "| streams | KV cells | × one stream | TTFT ms |",
          "|---:|---:|---:|---|",
          `| 1 | ${one.cells} | 1.00 | ${one.ttft.map(ms).join(", ")} |`,
          `| 8 | ${eight.cells} | ${r2(eight.cells / one.cells)} | ${
            eight.ttft.map(ms).join(", ")
          } |`,
          "",
          "The first stream prefills the system prompt; the seven that arrived with it wait for " +
            "that part and share its cells (`llama_memory_seq_cp`), prefilling only their own words.",
          "",
        );
      } finally {
        await umad.stop();
      }
    }
  } finally {
    await ls?.stop();
  }
  return out.join("\n");
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--only");
  const parts = new Set(i >= 0 ? Deno.args[i + 1].split(",") : []);
  console.log(await benchScheduler(parts));
}
