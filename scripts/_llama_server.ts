// llama.cpp's own tools for the benchmarks: llama-server, llama-bench and
// llama-batched-bench built once from the source matching the prebuilt libraries
// (`ensureLlamaSource()`) into .bench/llama-tools/ (shared by every checkout), and a
// small streaming client for llama-server's /completion.
import { pathExists } from "../src/llm/fs.ts";
import { delay } from "../src/protocol/async.ts";
import { ensureLlamaSource } from "../src/llm/llama_source.ts";
import { prebuiltLibs, ROOT } from "./_bench_util.ts";

/** Where the tools are built (a cmake tree; binaries and shared libs in build/bin). */
export const LLAMA_TOOLS = `${ROOT}.bench/llama-tools`;
const TARGETS = ["llama-server", "llama-bench", "llama-batched-bench"];

/**
 * The directory of the built tools, building them first when the cache is empty (~10
 * min on 2 cores). `BUILDING` marks a build in progress, so a second caller waits for
 * it instead of starting another.
 */
export async function ensureLlamaTools(log: (m: string) => void): Promise<string> {
  const bin = `${LLAMA_TOOLS}/build/bin`;
  const marker = `${LLAMA_TOOLS}/BUILDING`;
  const built = () => TARGETS.every((t) => pathExists(`${bin}/${t}`));
  for (let waited = 0; pathExists(marker); waited++) {
    if (waited % 60 === 0) log(`waiting for the llama.cpp tools build in ${LLAMA_TOOLS}`);
    await delay(5000);
  }
  if (built()) return bin;
  const src = await ensureLlamaSource({ log });
  Deno.mkdirSync(LLAMA_TOOLS, { recursive: true });
  Deno.writeTextFileSync(marker, `${Deno.pid}\n`);
  try {
    log(`building ${TARGETS.join(", ")} from ${src} (once; ~10 min on 2 cores)`);
    const run = async (args: string[]) => {
      const out = await new Deno.Command("cmake", { args, stdout: "null", stderr: "piped" })
        .output();
      if (!out.success) {
        throw new Error(
          `cmake ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).slice(-800)}`,
        );
      }
    };
    await run([
      "-S",
      src,
      "-B",
      `${LLAMA_TOOLS}/build`,
      "-DCMAKE_BUILD_TYPE=Release",
      "-DGGML_NATIVE=ON",
      "-DGGML_OPENMP=OFF",
      "-DBUILD_SHARED_LIBS=ON",
      "-DLLAMA_BUILD_TESTS=OFF",
      "-DLLAMA_BUILD_EXAMPLES=OFF",
      "-DLLAMA_BUILD_TOOLS=ON",
      "-DLLAMA_BUILD_SERVER=ON",
      "-DLLAMA_CURL=OFF",
      "-DLLAMA_OPENSSL=OFF",
    ]);
    await run(["--build", `${LLAMA_TOOLS}/build`, "-j2", "--target", ...TARGETS]);
  } finally {
    Deno.removeSync(marker);
  }
  if (!built()) throw new Error(`the llama.cpp tools build left no binaries in ${bin}`);
  return bin;
}

/**
 * A directory that makes the built tools run on the prebuilt library umad loads: its CPU
 * variant as `libggml-cpu.so.0` and its `libggml-base.so`, ahead of the native ones on
 * `LD_LIBRARY_PATH`. `cpuLib` is the variant file this process mapped.
 */
export function prebuiltLibDir(cpuLib: string): string {
  const libDir = cpuLib.slice(0, cpuLib.lastIndexOf("/"));
  const tag = libDir.replace(/[^A-Za-z0-9.]+/g, "_").slice(-80) + "_" +
    cpuLib.split("/").pop()!.replace(/\W+/g, "_");
  const dir = `${LLAMA_TOOLS}/prebuilt-${tag}`;
  Deno.mkdirSync(dir, { recursive: true });
  const link = (target: string, name: string) => {
    try {
      Deno.removeSync(`${dir}/${name}`);
    } catch { /* none */ }
    Deno.symlinkSync(target, `${dir}/${name}`);
  };
  link(cpuLib, "libggml-cpu.so.0");
  link(`${libDir}/libggml-base.so`, "libggml-base.so.0");
  link(`${libDir}/libggml-base.so`, "libggml-base.so");
  return dir;
}

/** The CPU backend variant this process loaded (after `openLibraries`). */
export function loadedCpuVariant(): string | null {
  const maps = Deno.readTextFileSync("/proc/self/maps").split("\n");
  for (const l of maps) {
    const path = l.split(/\s+/).pop() ?? "";
    if (/libggml-cpu[-.]/.test(path)) return path;
  }
  return null;
}

/** A running llama-server. */
export interface LlamaServer {
  url: string;
  pid: number;
  /** The library directory put first on its `LD_LIBRARY_PATH`, or "its own build". */
  lib: string;
  stop(): Promise<void>;
}

/**
 * The directory that makes llama-server run on the CPU library umad's loader picks here
 * (a native build or the prebuilt package's variant): every bench compares the servers
 * on the same kernels.
 */
export function umadCpuLibDir(): string {
  prebuiltLibs();
  const cpu = loadedCpuVariant();
  if (!cpu) throw new Error("could not tell which CPU library umad loads");
  return prebuiltLibDir(cpu);
}

/** The llama-server binary when the tools were built, else null (`ensureLlamaTools`). */
export function builtLlamaServer(): string | null {
  const bin = `${LLAMA_TOOLS}/build/bin`;
  return pathExists(`${bin}/llama-server`) ? bin : null;
}

/** Starts llama-server on a free loopback port and waits until /health answers. */
export async function startLlamaServer(opts: {
  bin: string;
  model: string;
  parallel: number;
  ctx: number;
  threads: number;
  /** LD_LIBRARY_PATH head: `umadCpuLibDir()`, another library directory, or null for its own build. */
  libDir: string | null;
  extra?: string[];
}): Promise<LlamaServer> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const env = { LD_LIBRARY_PATH: [opts.libDir, opts.bin].filter(Boolean).join(":") };
  const child = new Deno.Command(`${opts.bin}/llama-server`, {
    args: [
      "-m",
      opts.model,
      "-np",
      String(opts.parallel),
      "-c",
      String(opts.ctx),
      "-t",
      String(opts.threads),
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--no-webui",
      ...(opts.extra ?? []),
    ],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  for (let i = 0; i < 1200; i++) {
    try {
      const r = await fetch(`${url}/health`);
      const ok = r.ok;
      await r.body?.cancel();
      if (ok) return { url, pid: child.pid, lib: opts.libDir ?? "its own build", stop };
    } catch { /* not yet */ }
    await delay(100);
  }
  await stop();
  throw new Error("llama-server did not start");
}

/** What one /completion stream gave. */
export interface ServerCompletion {
  /** Arrival time of each token chunk (performance.now()). */
  times: number[];
  promptTokens: number;
  /** Prompt tokens llama-server took from its cache (timings.cache_n). */
  cachedTokens: number;
  text: string;
}

/** Streams one completion from llama-server. */
export async function serverCompletion(
  url: string,
  body: Record<string, unknown>,
  onToken?: (t: number) => void,
  signal?: AbortSignal,
): Promise<ServerCompletion> {
  const out: ServerCompletion = { times: [], promptTokens: 0, cachedTokens: 0, text: "" };
  let res: Response;
  try {
    res = await fetch(`${url}/completion`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }),
      signal,
    });
  } catch (e) {
    if (signal?.aborted) return out;
    throw e;
  }
  if (!res.ok || !res.body) throw new Error(`llama-server answered ${res.status}`);
  const dec = new TextDecoder();
  let buf = "";
  try {
    for await (const chunk of res.body) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line.startsWith("data: ")) continue;
        const ev = JSON.parse(line.slice(6));
        if (ev.error) throw new Error(`llama-server: ${ev.error.message}`);
        if (ev.tokens?.length) {
          const t = performance.now();
          out.times.push(t);
          onToken?.(t);
          out.text += ev.content ?? "";
        }
        if (ev.stop) {
          out.promptTokens = ev.tokens_evaluated ?? ev.timings?.prompt_n ?? 0;
          out.cachedTokens = ev.timings?.cache_n ?? 0;
        }
      }
    }
  } catch (e) {
    if (!signal?.aborted) throw e;
  }
  return out;
}
