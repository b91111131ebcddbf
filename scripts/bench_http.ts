// The HTTP benchmark: the same 8-stream load through umad's framed protocol, through its
// HTTP (OpenAI's streaming /v1/completions, server-sent events) on the Unix socket and on
// --http TCP, and through llama-server's HTTP, in interleaved rounds. What it shows: what
// HTTP costs over frames (tokens/s, inter-token p99 at the client), and umad's HTTP beside
// llama-server's on one load. `deno run -A scripts/bench_http.ts` prints the Markdown
// section (about 2 minutes on a quiet 2-core machine, 9 under a load of 5); scripts/bench.ts
// calls benchHttp().
import { cpuMsOf } from "../tests/_proc.ts";
import { type Client, connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { BENCH_MODEL, ensureSyntheticModel } from "../src/llm/mod.ts";
import { fmt, pct, startBenchDaemon } from "./_bench_util.ts";
import {
  builtLlamaServer,
  type LlamaServer,
  startLlamaServer as startLlama,
  umadCpuLibDir,
} from "./_llama_server.ts";

const THREADS = 2;
const STREAMS = 8;
const TOKENS = 64;
const ROUNDS = 5;
/** The built llama-server (null: not built; its row is left out). */
const LLAMA_BIN = builtLlamaServer();

function log(msg: string) {
  console.error(`bench http: ${msg}`);
}

/** Children to stop if the bench is interrupted (Ctrl-C) rather than left running. */
const running = new Set<() => Promise<void>>();
if (import.meta.main) {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, async () => {
      await Promise.allSettled([...running].map((stop) => stop()));
      Deno.exit(130);
    });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function promptOf(i: number): string {
  const pool = ["the", "water", "people", "world", "and", "sun", "time", "house", "light", "music"];
  return Array.from({ length: 12 }, (_, k) => pool[(k * 7 + i * 3) % pool.length]).join(" ");
}

/** One stream's token arrival times at the client. */
type Arrivals = number[];

interface Round {
  tokens: number;
  seconds: number;
  gaps: number[];
  ttft: number[];
  /** CPU time of the daemon's event-loop thread during the round (ms), if known. */
  loopCpuMs?: number;
}

/**
 * CPU time (ms) the main thread of process `pid` has used: the thread that parses
 * frames and HTTP and writes every event (decoding runs on worker threads). Other load
 * on the machine barely moves it, unlike wall-clock rates.
 */
function mainThreadCpuMs(pid: number): number {
  return cpuMsOf(`/proc/${pid}/task/${pid}/stat`);
}

async function round(run: (i: number) => Promise<Arrivals>, t0 = performance.now()) {
  const starts: number[] = [];
  const all = await Promise.all(Array.from({ length: STREAMS }, (_, i) => {
    starts.push(performance.now());
    return run(i);
  }));
  const seconds = (performance.now() - t0) / 1000;
  const gaps: number[] = [];
  const ttft: number[] = [];
  all.forEach((times, i) => {
    if (times.length) ttft.push(times[0] - starts[i]);
    for (let k = 1; k < times.length; k++) gaps.push(times[k] - times[k - 1]);
  });
  return { tokens: all.reduce((a, t) => a + t.length, 0), seconds, gaps, ttft } satisfies Round;
}

/** Reads an SSE stream of OpenAI completion chunks, noting when each token's text arrives. */
async function sseArrivals(res: Response): Promise<Arrivals> {
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const times: Arrivals = [];
  let tail = "";
  for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
    const now = performance.now();
    const parts = (tail + chunk).split("\n\n");
    tail = parts.pop()!;
    for (const p of parts) {
      if (!p.startsWith("data: {")) continue;
      const c = JSON.parse(p.slice(6));
      if (c.choices?.[0]?.text) times.push(now);
    }
  }
  return times;
}

function completionBody(i: number, r: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    prompt: promptOf(i),
    max_tokens: TOKENS,
    temperature: 0.8,
    seed: 1000 * r + i,
    stream: true,
    cache_prompt: false,
    ...extra,
  });
}

async function framedArrivals(client: Client, i: number, r: number): Promise<Arrivals> {
  const times: Arrivals = [];
  const gen = generate(client, {
    prompt: promptOf(i),
    max_tokens: TOKENS,
    temperature: 0.8,
    seed: 1000 * r + i,
  });
  for await (const ev of gen) if (ev.event === "token" && ev.text) times.push(performance.now());
  return times;
}

interface Daemon {
  pid: number;
  socket: string;
  tcp: string;
  token: string;
  stop(): Promise<void>;
}

async function startUmad(model: string): Promise<Daemon> {
  const d = await startBenchDaemon({
    model,
    threads: THREADS,
    parallel: STREAMS,
    ctx: 1024 * STREAMS,
    extra: ["--http", "127.0.0.1:0"],
  });
  const stop = async () => {
    running.delete(stop);
    await d.stop();
  };
  running.add(stop);
  try {
    const c = await connect({ socket: d.socket, reconnect: false });
    const http = c.hello.http as { tcp: string; token_file: string };
    await c.close();
    return {
      pid: d.pid,
      socket: d.socket,
      tcp: http.tcp,
      token: Deno.readTextFileSync(http.token_file).trim(),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** llama-server on the same model, load and CPU library as umad. */
async function startLlamaServer(model: string): Promise<LlamaServer> {
  const server = await startLlama({
    bin: LLAMA_BIN!,
    model,
    parallel: STREAMS,
    ctx: 1024 * STREAMS,
    threads: THREADS,
    libDir: umadCpuLibDir(),
    extra: ["--log-disable"],
  });
  const stop = async () => {
    running.delete(stop);
    await server.stop();
  };
  running.add(stop);
  return { ...server, stop };
}

interface Side {
  label: string;
  /** The umad daemon's process, whose event-loop CPU is read around each round. */
  pid?: number;
  run(i: number, r: number): Promise<Arrivals>;
  rounds: Round[];
}

/** The Markdown section. */
export async function benchHttp(): Promise<string> {
  const started = performance.now();
  const model = ensureSyntheticModel(BENCH_MODEL);
  const umad = await startUmad(model);
  const client = await connect({ socket: umad.socket, reconnect: false });
  const unix = Deno.createHttpClient({ proxy: { transport: "unix", path: umad.socket } });
  const llama = LLAMA_BIN ? await startLlamaServer(model) : null;
  const auth = { Authorization: `Bearer ${umad.token}`, "Content-Type": "application/json" };
  const sides: Side[] = [
    {
      label: "umad, framed (Unix socket)",
      pid: umad.pid,
      run: (i, r) => framedArrivals(client, i, r),
      rounds: [],
    },
    {
      label: "umad, HTTP SSE on the Unix socket",
      pid: umad.pid,
      run: async (i, r) =>
        sseArrivals(
          await fetch("http://localhost/v1/completions", {
            method: "POST",
            body: completionBody(i, r),
            client: unix,
          }),
        ),
      rounds: [],
    },
    {
      label: "umad, HTTP SSE on --http TCP",
      pid: umad.pid,
      run: async (i, r) =>
        sseArrivals(
          await fetch(`${umad.tcp}/v1/completions`, {
            method: "POST",
            body: completionBody(i, r),
            headers: auth,
          }),
        ),
      rounds: [],
    },
  ];
  if (llama) {
    sides.push({
      label: "llama-server, HTTP SSE on TCP",
      run: async (i, r) =>
        sseArrivals(
          await fetch(`${llama.url}/v1/completions`, {
            method: "POST",
            // Random weights rarely end a stream early; this makes sure they never do.
            body: completionBody(i, r, { ignore_eos: true }),
            headers: { "Content-Type": "application/json" },
          }),
        ),
      rounds: [],
    });
  }
  try {
    for (const s of sides) await round((i) => s.run(i, 0)); // warm up each path
    for (let r = 1; r <= ROUNDS; r++) {
      for (const s of sides) {
        const cpu0 = s.pid ? mainThreadCpuMs(s.pid) : 0;
        const res: Round = await round((i) => s.run(i, r));
        if (s.pid) res.loopCpuMs = mainThreadCpuMs(s.pid) - cpu0;
        s.rounds.push(res);
        log(
          `round ${r} ${s.label}: ${fmt(res.tokens / res.seconds, 1)} tok/s, ` +
            `inter-token p99 ${fmt(pct(res.gaps, 0.99), 1)} ms`,
        );
      }
    }
  } finally {
    unix.close();
    await client.close();
    await umad.stop();
    await llama?.stop();
  }
  const rows = sides.map((s) => {
    const rates = s.rounds.map((r) => r.tokens / r.seconds);
    const p99s = s.rounds.map((r) => pct(r.gaps, 0.99));
    const p50s = s.rounds.map((r) => pct(r.gaps, 0.5));
    const ttfts = s.rounds.map((r) => pct(r.ttft, 0.5));
    const tokens = s.rounds.reduce((a, r) => a + r.tokens, 0);
    const cpu = s.pid ? s.rounds.reduce((a, r) => a + (r.loopCpuMs ?? 0), 0) : NaN;
    return { label: s.label, rates, p99s, p50s, ttfts, cpuPer1k: (cpu / tokens) * 1000 };
  });
  const base = rows[0];
  const range = (xs: number[], d = 1) =>
    `${fmt(median(xs), d)} (${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)})`;
  const lines = [
    "## HTTP beside the framed protocol, and beside llama-server",
    "",
    `${STREAMS} streams at once, ${TOKENS} tokens each, 12-word prompts, temperature 0.8, the ` +
    `85M-parameter bench model, ${THREADS} threads, \`--parallel ${STREAMS}\` / \`-np ${STREAMS}\`. ` +
    `HTTP clients use OpenAI's streaming \`/v1/completions\` (server-sent events) through ` +
    "`fetch`; the framed client is umad's own library. Times are taken where the client " +
    `receives each token. ${ROUNDS} interleaved rounds per path after a warm-up round; medians ` +
    "with the range over rounds. " +
    (llama
      ? `llama-server is built from the same llama.cpp source (\`.bench/llama-tools/\`)` +
        " and runs on the CPU library umad loads (its CPU backend and libggml-base first on " +
        "`LD_LIBRARY_PATH`), so the two differ in their servers, not their kernels."
      : "llama-server was not built (`.bench/llama-tools/`): its row is missing."),
    "",
    "| path | tokens/s | vs framed | inter-token p50 ms | inter-token p99 ms | TTFT p50 ms | " +
    "event-loop CPU ms per 1000 tokens |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) =>
      `| ${r.label} | ${range(r.rates)} | ${fmt(median(r.rates) / median(base.rates), 2)}× | ` +
      `${range(r.p50s)} | ${range(r.p99s)} | ${range(r.ttfts, 0)} | ` +
      `${Number.isFinite(r.cpuPer1k) ? fmt(r.cpuPer1k, 0) : "n/a"} |`
    ),
    "",
    "The last column is the CPU the daemon's main thread (frames, HTTP, every event " +
    "written; decoding runs on its worker threads) used per 1000 tokens streamed, over all " +
    "rounds: what the protocol costs, which the machine's other load barely moves, while " +
    "the wall-clock rates and gaps move with it.",
    "",
    "Run alone: `deno run -A scripts/bench_http.ts` prints this section; `deno task bench " +
    `--only http --out FILE\` writes it to FILE (${
      Math.round((performance.now() - started) / 1000)
    } s here).`,
    "",
  ];
  return lines.join("\n");
}

if (import.meta.main) console.log(await benchHttp());
