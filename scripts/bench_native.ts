// The native-speed benchmark: every LLM figure for the prebuilt library (the npm package,
// with the CPU variant its loader picks on this machine) and for a native build
// (`umad llama build`, run here once and cached) side by side, with llama-bench,
// llama-batched-bench and llama-server built from the same llama.cpp source in the same
// run, and which compile flag the prebuilt's speed depends on.
// `deno run -A scripts/bench_native.ts` prints the Markdown section (about 25 minutes on 2
// cores, plus the builds the first time: the native libraries ~3-8 min, llama.cpp's tools
// ~10 min unless .bench/llama-tools has them, three libggml-cpu variants ~2 min each);
// scripts/bench.ts calls benchNative() for `deno task bench --only native`.
import { pathExists } from "../src/llm/fs.ts";
import { delay } from "../src/protocol/async.ts";
import { connect } from "../src/client/client.ts";
import { generate } from "../src/client/generate.ts";
import { BENCH_MODEL, ensureSyntheticModel } from "../src/llm/mod.ts";
import { ensureLlamaSource } from "../src/llm/llama_source.ts";
import { type LibraryCandidate, libraryCandidates } from "../src/llm/llama_lib.ts";
import { buildNative } from "../src/llm/native_build.ts";
import { ROOT, startBenchDaemon } from "./_bench_util.ts";
import { startLlamaServer } from "./_llama_server.ts";

const THREADS = 2;
const PARALLEL = 16;
const CTX = 1024 * PARALLEL;
const STREAMS = [1, 8, 16];
const TOKENS: Record<number, number> = { 1: 128, 8: 64, 16: 48 };
const PROMPT_WORDS = 480;
const ROUNDS = 3;

function log(msg: string) {
  console.error(`bench native: ${msg}`);
}

function median(xs: number[]): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function f0(x: number): string {
  return Number.isFinite(x) ? x.toFixed(0) : "n/a";
}

function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : "n/a";
}

/** Folders of library links made for LD_LIBRARY_PATH, removed when the section is done. */
const scratch: string[] = [];
function scratchDir(prefix: string): string {
  const dir = Deno.makeTempDirSync({ prefix });
  scratch.push(dir);
  return dir;
}

/** A prompt of about n tokens for the bench model's vocabulary (one token per word). */
function promptOf(words: number, salt: number): string {
  const pool = ["the", "water", "people", "world", "and", "sun", "time", "house", "light", "music"];
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(pool[(i * 7 + salt * 13 + (i >> 3)) % pool.length]);
  return out.join(" ");
}

// ---- the libraries -------------------------------------------------------------------

interface Lib {
  label: string;
  dir: string;
  /** The CPU variant npm's loader picks here, or null for a build with it linked in. */
  cpuVariant: string | null;
  detail: string;
}

async function describeLib(
  dir: string,
): Promise<{ cpuVariant: string | null; features: string[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, "devices", "--json", "--llama-lib", dir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`umad devices --llama-lib ${dir}: ${new TextDecoder().decode(out.stderr)}`);
  }
  const { library } = JSON.parse(new TextDecoder().decode(out.stdout));
  return { cpuVariant: library.cpuVariant, features: library.cpuFeatures };
}

async function libraries(): Promise<{ prebuilt: Lib; native: Lib }> {
  const found = libraryCandidates();
  const npm = found.find((c) => c.source === "npm" && c.files);
  if (!npm) {
    throw new Error(
      "the @node-llama-cpp package for this platform is not installed (deno install)",
    );
  }
  let native: LibraryCandidate | undefined = found.find((c) =>
    c.source === "native" && c.files && c.files.backend === "cpu"
  );
  if (!native) {
    log("no native build yet: running umad llama build --gpu cpu (a few minutes, cached)");
    const { plan } = await buildNative({
      gpu: "cpu",
      jobs: THREADS,
      source: () => ensureLlamaSource({ log }),
      log,
    });
    native = libraryCandidates().find((c) => c.source === "native" && c.dir === plan.libDir);
    if (!native) throw new Error("the native build is not usable");
  }
  const p = await describeLib(npm.dir);
  const n = await describeLib(native.dir);
  return {
    prebuilt: {
      label: "prebuilt",
      dir: npm.dir,
      cpuVariant: p.cpuVariant,
      detail: `npm @node-llama-cpp package, CPU code ${p.cpuVariant} (${p.features.join(" ")})`,
    },
    native: {
      label: "native",
      dir: native.dir,
      cpuVariant: null,
      detail:
        `umad llama build (${
          native.manifest?.cmake_options.filter((o) => /NATIVE|OPENMP|_FLAGS/.test(o)).join(" ")
        }, ` +
        `${native.manifest?.compiler}), CPU code linked in (${n.features.join(" ")})`,
    },
  };
}

// ---- llama.cpp's own tools -----------------------------------------------------------

const TOOLS = `${ROOT}.bench/llama-tools/build/bin`;

/** llama-bench, llama-batched-bench, llama-server, built from the same source (shared). */
async function ensureTools(): Promise<boolean> {
  const want = ["llama-bench", "llama-batched-bench", "llama-server"];
  const lock = `${ROOT}.bench/llama-tools/BUILDING`;
  for (let waited = 0; pathExists(lock) && waited < 1800; waited += 10) {
    if (waited === 0) log("another session is building llama.cpp's tools; waiting");
    await delay(10_000);
  }
  if (want.every((t) => pathExists(`${TOOLS}/${t}`))) return true;
  const src = await ensureLlamaSource({ log });
  const build = `${ROOT}.bench/llama-tools/build`;
  Deno.mkdirSync(build, { recursive: true });
  Deno.writeTextFileSync(lock, String(Deno.pid));
  try {
    log(
      "building llama-bench, llama-batched-bench and llama-server (GGML_NATIVE; ~10 min on 2 cores)",
    );
    const opts = [
      "-DCMAKE_BUILD_TYPE=Release",
      "-DGGML_NATIVE=ON",
      "-DGGML_OPENMP=OFF",
      "-DBUILD_SHARED_LIBS=ON",
      "-DLLAMA_CURL=OFF",
      "-DLLAMA_OPENSSL=OFF",
      "-DLLAMA_BUILD_TESTS=OFF",
    ];
    for (
      const args of [["-S", src, "-B", build, ...opts], [
        "--build",
        build,
        "-j",
        String(THREADS),
        "--target",
        ...want,
      ]]
    ) {
      const out = await new Deno.Command("cmake", { args, stdout: "null", stderr: "piped" })
        .output();
      if (!out.success) {
        log(`cmake ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
        return false;
      }
    }
  } finally {
    Deno.removeSync(lock);
  }
  return want.every((t) => pathExists(`${TOOLS}/${t}`));
}

/**
 * An LD_LIBRARY_PATH that runs the tools on the prebuilt CPU code: its CPU variant as
 * `libggml-cpu.so.0` and its libggml-base (the tools' own libggml and libllama, from the
 * same source, stay), so the two sides differ only in the CPU backend.
 */
function prebuiltLdPath(lib: Lib, variantFile = lib.cpuVariant): string {
  const dir = scratchDir("umad-bench-swap-");
  Deno.symlinkSync(`${lib.dir}/${variantFile}`, `${dir}/libggml-cpu.so.0`);
  Deno.symlinkSync(`${lib.dir}/libggml-base.so`, `${dir}/libggml-base.so.0`);
  Deno.symlinkSync(`${lib.dir}/libggml-base.so`, `${dir}/libggml-base.so`);
  return dir;
}

async function tool(name: string, args: string[], ldPath?: string): Promise<string> {
  const out = await new Deno.Command(`${TOOLS}/${name}`, {
    args,
    env: ldPath ? { LD_LIBRARY_PATH: ldPath } : {},
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`${name} failed: ${new TextDecoder().decode(out.stderr).slice(-800)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function llamaBench(model: string, ldPath?: string): Promise<{ pp: number; tg: number }> {
  const json = JSON.parse(
    await tool("llama-bench", [
      "-m",
      model,
      "-t",
      String(THREADS),
      "-p",
      "512",
      "-n",
      "128",
      "-r",
      "3",
      "-o",
      "json",
    ], ldPath),
  ) as { n_prompt: number; n_gen: number; avg_ts: number }[];
  return {
    pp: json.find((r) => r.n_prompt > 0 && r.n_gen === 0)?.avg_ts ?? NaN,
    tg: json.find((r) => r.n_gen > 0 && r.n_prompt === 0)?.avg_ts ?? NaN,
  };
}

/** Prompt tokens/s of llama-bench with `ub`-row batches, one thread. */
async function promptRate(model: string, ub: number, ldPath?: string): Promise<number> {
  const json = JSON.parse(
    await tool("llama-bench", [
      "-m",
      model,
      "-t",
      "1",
      "-p",
      "252",
      "-n",
      "0",
      "-b",
      String(ub),
      "-ub",
      String(ub),
      "-r",
      "2",
      "-o",
      "json",
    ], ldPath),
  ) as { avg_ts: number }[];
  return json[0]?.avg_ts ?? NaN;
}

async function batchedBench(model: string, ldPath?: string): Promise<Map<number, number>> {
  const text = await tool("llama-batched-bench", [
    "-m",
    model,
    "-t",
    String(THREADS),
    "-c",
    String(CTX),
    "-b",
    "2048",
    "-ub",
    "512",
    "-npp",
    "128",
    "-ntg",
    "64",
    "-npl",
    STREAMS.join(","),
    "--output-format",
    "jsonl",
  ], ldPath);
  const out = new Map<number, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    const r = JSON.parse(line) as { pl: number; speed_tg: number };
    out.set(r.pl, r.speed_tg);
  }
  return out;
}

// ---- the servers, client to client ---------------------------------------------------

/** Prefill and decode rates of one server. */
export interface Figures {
  prefill: number;
  decode: Map<number, number>;
}

/** Tokens per second over the streams: all tokens, from the requests to the last token. */
async function aggregate(n: number, run: (i: number) => Promise<number>): Promise<number> {
  const t0 = performance.now();
  const counts = await Promise.all(Array.from({ length: n }, (_, i) => run(i)));
  const s = (performance.now() - t0) / 1000;
  return counts.reduce((a, b) => a + b, 0) / s;
}

/**
 * umad's prefill (a ${PROMPT_WORDS}-token prompt's TTFT) and 1/8/16-stream decode rates,
 * client to client, on library `libDir` (`extra`: more `umad serve` flags).
 */
export async function umadFigures(
  model: string,
  libDir: string,
  round: number,
  extra: string[] = [],
): Promise<Figures> {
  const d = await startBenchDaemon({
    model,
    threads: THREADS,
    parallel: PARALLEL,
    ctx: CTX,
    extra: ["--llama-lib", libDir, ...extra],
  });
  try {
    const client = await connect({ socket: d.socket, reconnect: false });
    try {
      await generate(client, { prompt: "warm up", max_tokens: 4 }).complete();
      const rates: number[] = [];
      for (let k = 0; k < 2; k++) {
        const t0 = performance.now();
        const r = await generate(client, {
          prompt: promptOf(PROMPT_WORDS, round * 10 + k),
          max_tokens: 1,
        }).complete();
        rates.push(r.usage.prompt_tokens / ((performance.now() - t0) / 1000));
      }
      const decode = new Map<number, number>();
      for (const n of STREAMS) {
        decode.set(
          n,
          await aggregate(n, async (i) => {
            const r = await generate(client, {
              prompt: promptOf(8, round * 100 + n * 17 + i),
              max_tokens: TOKENS[n],
              temperature: 0.8,
              seed: i + 1,
            }).complete();
            return r.usage.completion_tokens;
          }),
        );
      }
      return { prefill: median(rates), decode };
    } finally {
      await client.close();
    }
  } finally {
    await d.stop();
  }
}

/** Tokens of one streamed /completion (one SSE event per token). */
async function serverStream(
  base: string,
  prompt: string,
  n: number,
  temperature: number,
): Promise<number> {
  const res = await fetch(`${base}/completion`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt, n_predict: n, temperature, stream: true, cache_prompt: false }),
  });
  if (!res.ok || !res.body) throw new Error(`llama-server answered ${res.status}`);
  let tokens = 0;
  let rest = "";
  for await (const chunk of res.body.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const l of lines) {
      if (!l.startsWith("data: ")) continue;
      const ev = JSON.parse(l.slice(6));
      if (ev.stop) return tokens + (ev.content ? 1 : 0);
      tokens++;
    }
  }
  return tokens;
}

async function llamaServerFigures(model: string, round: number, ldPath?: string): Promise<Figures> {
  const server = await startLlamaServer({
    bin: TOOLS,
    model,
    parallel: PARALLEL,
    ctx: CTX,
    threads: THREADS,
    libDir: ldPath ?? null,
  });
  const base = server.url;
  try {
    await serverStream(base, "warm up", 4, 0.8);
    const rates: number[] = [];
    for (let k = 0; k < 2; k++) {
      const prompt = promptOf(PROMPT_WORDS, round * 10 + k);
      const t0 = performance.now();
      await serverStream(base, prompt, 1, 0.8);
      const tok = await fetch(`${base}/tokenize`, {
        method: "POST",
        body: JSON.stringify({ content: prompt }),
      });
      const n = ((await tok.json()).tokens as number[]).length + 1;
      rates.push(n / ((performance.now() - t0) / 1000));
    }
    const decode = new Map<number, number>();
    for (const n of STREAMS) {
      decode.set(
        n,
        await aggregate(
          n,
          (i) => serverStream(base, promptOf(8, round * 100 + n * 17 + i), TOKENS[n], 0.8),
        ),
      );
    }
    return { prefill: median(rates), decode };
  } finally {
    await server.stop();
  }
}

// ---- which flag ------------------------------------------------------------------------

const FLAGS_DIR = `${ROOT}.bench/native-flags`;
const HASWELL = [
  "-DGGML_NATIVE=OFF",
  "-DGGML_AVX=ON",
  "-DGGML_AVX2=ON",
  "-DGGML_FMA=ON",
  "-DGGML_F16C=ON",
  "-DGGML_BMI2=ON",
];
/**
 * CPU backends built from the same source with the prebuilt haswell variant's flags, one
 * toggled at a time.
 */
const FLAG_VARIANTS: Record<string, string[]> = {
  "haswell flags": HASWELL,
  "haswell flags + AVX512": [...HASWELL, "-DGGML_AVX512=ON"],
  "haswell flags, no llamafile (tinyBLAS)": [...HASWELL, "-DGGML_LLAMAFILE=OFF"],
};
/** Prompt batch sizes of the flag table: umad's batch-invariant chunk, llama.cpp's usual. */
const FLAG_UBATCHES = [63, 512];

/** Builds (once, cached) only libggml-cpu for each variant. */
async function flagVariants(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const src = await ensureLlamaSource({ log });
  for (const [name, flags] of Object.entries(FLAG_VARIANTS)) {
    const build = `${FLAGS_DIR}/${name.replace(/[^A-Za-z0-9]+/g, "-").replace(/-$/, "")}`;
    const lib = `${build}/bin/libggml-cpu.so.0`;
    if (!pathExists(lib)) {
      log(`building libggml-cpu with ${name}'s flags`);
      const common = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DGGML_OPENMP=OFF",
        "-DLLAMA_BUILD_COMMON=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
      ];
      for (
        const args of [["-S", src, "-B", build, ...common, ...flags], [
          "--build",
          build,
          "--target",
          "ggml-cpu",
          "-j",
          String(THREADS),
        ]]
      ) {
        const r = await new Deno.Command("cmake", { args, stdout: "null", stderr: "piped" })
          .output();
        if (!r.success) {
          throw new Error(
            `cmake for ${name} failed: ${new TextDecoder().decode(r.stderr).slice(-800)}`,
          );
        }
      }
    }
    const dir = scratchDir("umad-bench-flags-");
    Deno.symlinkSync(lib, `${dir}/libggml-cpu.so.0`);
    out.set(name, dir);
  }
  return out;
}

// ---- the section ---------------------------------------------------------------------

/** Runs the native-speed benchmark and returns its Markdown section. */
export async function benchNative(): Promise<string> {
  try {
    return await nativeSection();
  } finally {
    for (const d of scratch.splice(0)) Deno.removeSync(d, { recursive: true });
  }
}

async function nativeSection(): Promise<string> {
  const model = ensureSyntheticModel(BENCH_MODEL);
  const { prebuilt, native } = await libraries();
  log(`prebuilt: ${prebuilt.detail}`);
  log(`native: ${native.detail}`);
  const haveTools = await ensureTools();
  const swap = prebuiltLdPath(prebuilt);
  const lines: string[] = ["## Native build vs prebuilt library", ""];
  type Side = {
    umad: Figures[];
    server: Figures[];
    bench: { pp: number; tg: number }[];
    batched: Map<number, number>[];
  };
  const sides: Record<"prebuilt" | "native", Side> = {
    prebuilt: { umad: [], server: [], bench: [], batched: [] },
    native: { umad: [], server: [], bench: [], batched: [] },
  };
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, lib] of [["prebuilt", prebuilt], ["native", native]] as const) {
      log(`round ${round + 1}/${ROUNDS}: umad on ${name}`);
      sides[name].umad.push(await umadFigures(model, lib.dir, round));
      if (haveTools) {
        // The tools' own libraries are a plain GGML_NATIVE build (AVX512-FP16 on where the
        // CPU has it): the native side runs them on umad's native build, the same files.
        const ld = name === "prebuilt" ? swap : native.dir;
        log(
          `round ${round + 1}/${ROUNDS}: llama-bench, llama-batched-bench, llama-server on ${name}`,
        );
        sides[name].bench.push(await llamaBench(model, ld));
        sides[name].batched.push(await batchedBench(model, ld));
        sides[name].server.push(await llamaServerFigures(model, round, ld));
      }
    }
  }
  const med = (fs: Figures[], pick: (f: Figures) => number) => median(fs.map(pick));
  const row = (label: string, pick: (s: Side) => number) => {
    const p = pick(sides.prebuilt);
    const n = pick(sides.native);
    return `| ${label} | ${f0(p)} | ${f0(n)} | ${ratio(n, p)} |`;
  };
  lines.push(
    `Model: the generated bench model (${BENCH_MODEL.nEmbd} embd, ${BENCH_MODEL.nLayer} layers, F16, random weights), ` +
      `${THREADS} threads; umad and llama-server with ${PARALLEL} parallel streams and ${CTX} tokens of context, ` +
      `client to client (umad over its socket, llama-server over HTTP with streaming). Medians of ${ROUNDS} interleaved rounds.`,
    "",
    `- **prebuilt**: ${prebuilt.detail}`,
    `- **native**: ${native.detail}`,
    "- llama-bench, llama-batched-bench and llama-server are built from the same llama.cpp source and " +
      "run on the same libraries as umad (LD_LIBRARY_PATH): on the native side umad's native build, on " +
      "the prebuilt side the prebuilt's CPU backend and libggml-base (the tools' own libllama and " +
      "libggml, same source, stay), so the two sides differ only in the CPU code.",
    "",
    "| tokens/s | prebuilt | native | native / prebuilt |",
    "|---|---:|---:|---:|",
    row("llama-bench prompt (pp512)", (s) => median(s.bench.map((b) => b.pp))),
    row("llama-bench generation (tg128)", (s) => median(s.bench.map((b) => b.tg))),
    ...STREAMS.map((n) =>
      row(
        `llama-batched-bench generation, ${n} streams`,
        (s) => median(s.batched.map((b) => b.get(n) ?? NaN)),
      )
    ),
    row(`umad prefill (${PROMPT_WORDS}-token prompt, TTFT)`, (s) => med(s.umad, (f) => f.prefill)),
    ...STREAMS.map((n) =>
      row(
        `umad decode, ${n} stream${n > 1 ? "s" : ""}`,
        (s) => med(s.umad, (f) => f.decode.get(n)!),
      )
    ),
    row(
      `llama-server prefill (${PROMPT_WORDS}-token prompt, TTFT)`,
      (s) => med(s.server, (f) => f.prefill),
    ),
    ...STREAMS.map((n) =>
      row(
        `llama-server decode, ${n} stream${n > 1 ? "s" : ""}`,
        (s) => med(s.server, (f) => f.decode.get(n)!),
      )
    ),
    "",
    "| umad / llama-server, same library | prebuilt | native |",
    "|---|---:|---:|",
    ...STREAMS.map((n) => {
      const r = (s: Side) =>
        ratio(med(s.umad, (f) => f.decode.get(n)!), med(s.server, (f) => f.decode.get(n)!));
      return `| decode, ${n} stream${n > 1 ? "s" : ""} | ${r(sides.prebuilt)} | ${
        r(sides.native)
      } |`;
    }),
    "",
  );
  if (haveTools) {
    log("which flag: llama-bench prompt speed with each CPU backend");
    const variants = await flagVariants();
    const runs: [string, string | undefined][] = [
      ["umad llama build (-march=native, AVX512-FP16 off)", native.dir],
      [
        "llama-bench's own build (GGML_NATIVE alone: AVX512-FP16 on where the CPU has it)",
        undefined,
      ],
      [`prebuilt ${prebuilt.cpuVariant} (what umad loads here)`, swap],
      ["prebuilt libggml-cpu-haswell.so", prebuiltLdPath(prebuilt, "libggml-cpu-haswell.so")],
      ...[...variants].map(([name, dir]) => [`built here: ${name}`, dir] as [string, string]),
    ];
    // One thread: a 2-thread spinning pool on a shared machine measures the neighbours.
    const rates = new Map<string, number[]>();
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, ld] of runs) {
        for (const ub of FLAG_UBATCHES) {
          const key = `${label}|${ub}`;
          rates.set(key, [...(rates.get(key) ?? []), await promptRate(model, ub, ld)]);
        }
      }
    }
    lines.push(
      "### Which flag",
      "",
      `llama-bench prompt tokens/s (252 tokens) in batches of ${
        FLAG_UBATCHES.join(" and ")
      } rows, ` +
        `1 thread, median of ${ROUNDS} interleaved rounds; the same llama-bench and source, only ` +
        "the CPU backend differs:",
      "",
      `| CPU backend | ${FLAG_UBATCHES.map((u) => `${u}-row batches`).join(" | ")} |`,
      `|---|${FLAG_UBATCHES.map(() => "---:").join("|")}|`,
      ...runs.map(([label]) =>
        `| ${label} | ${
          FLAG_UBATCHES.map((u) => f0(median(rates.get(`${label}|${u}`)!))).join(" | ")
        } |`
      ),
      "",
    );
  } else {
    lines.push("llama.cpp's tools could not be built here: their rows are n/a.", "");
  }
  return lines.join("\n");
}

if (import.meta.main) console.log(await benchNative());
