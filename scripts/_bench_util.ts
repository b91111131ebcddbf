// Shared pieces of the benchmarks: percentiles, a framed ping client on raw Deno
// sockets (the same client for umad and for the baselines), and process helpers.
import { encodeFrame, encodePayload, FrameDecoder } from "../src/protocol/mod.ts";
import { percentileOf } from "../src/protocol/samples.ts";
import { delay } from "../src/protocol/async.ts";
import { startDaemon, type TestDaemon } from "../tests/_daemon.ts";
import { findLibDir, type NativeLibs, openLibraries } from "../src/llm/ffi.ts";

export const ROOT = new URL("..", import.meta.url).pathname;

/** Nearest-rank percentile of an unsorted sample, in the sample's unit. */
export function pct(sample: number[], q: number): number {
  return percentileOf(sample, q);
}

/** Rounds for tables. */
export function fmt(x: number, digits = 3): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "n/a";
}

/** One framed request/reply connection on a raw Deno Unix socket. */
export class PingConn {
  readonly #conn: Deno.UnixConn;
  readonly #dec = new FrameDecoder(1 << 20);
  readonly #buf = new Uint8Array(65536);
  readonly #frame: Uint8Array;
  constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#frame = encodeFrame(encodePayload({ type: "ping", id: "p" }, "json"));
  }
  static async open(path: string): Promise<PingConn> {
    return new PingConn(await Deno.connect({ transport: "unix", path }));
  }
  /** One round trip, in ms. */
  async ping(): Promise<number> {
    const t0 = performance.now();
    await this.#conn.write(this.#frame);
    while (true) {
      const n = await this.#conn.read(this.#buf);
      if (n === null) throw new Error("connection closed");
      for (const _ of this.#dec.push(this.#buf.subarray(0, n))) {
        return performance.now() - t0;
      }
    }
  }
  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** Starts a child process running a Deno script, returning it. */
export function spawnDeno(args: string[], env?: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
    env,
  }).spawn();
}

/** Waits until a Unix socket accepts connections. */
export async function waitForSocket(path: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      (await Deno.connect({ transport: "unix", path })).close();
      return;
    } catch {
      await delay(50);
    }
  }
  throw new Error(`nothing listening on ${path}`);
}

/** Stops a child with SIGTERM and waits. */
export async function stopChild(p: Deno.ChildProcess): Promise<void> {
  try {
    p.kill("SIGTERM");
  } catch { /* gone */ }
  await p.status;
}

let libs: NativeLibs | null = null;

/** The prebuilt llama.cpp libraries, opened once per process (backends register once). */
export function prebuiltLibs(): NativeLibs {
  return libs ??= openLibraries(findLibDir());
}

/**
 * umad's llama.cpp patches in the library {@linkcode prebuiltLibs} opens (a native build's
 * `build.json`), or null when it is not a native build (the prebuilt ones are unpatched).
 */
export function libraryPatches(): string[] | null {
  try {
    const manifest = JSON.parse(Deno.readTextFileSync(`${findLibDir()}/../build.json`));
    return Array.isArray(manifest.patches) ? manifest.patches : [];
  } catch {
    return null;
  }
}

/** What a bench daemon serves and how (`umad serve` flags). */
export interface BenchDaemonOptions {
  /** The GGUF model. */
  model: string;
  /** `--threads`. */
  threads: number;
  /** `--parallel`. */
  parallel: number;
  /** `--ctx`: KV cells in all. */
  ctx: number;
  /** More `umad serve` flags. */
  extra?: string[];
}

/**
 * `umad serve` on a model for a benchmark, through the tests' launcher
 * (`tests/_daemon.ts`), its warnings on our stderr.
 */
export function startBenchDaemon(o: BenchDaemonOptions): Promise<TestDaemon> {
  return startDaemon([
    "--model",
    o.model,
    "--threads",
    String(o.threads),
    "--parallel",
    String(o.parallel),
    "--ctx",
    String(o.ctx),
    "--log-level",
    "warn",
    ...(o.extra ?? []),
  ], { withModel: true, stderr: "inherit", startTimeoutMs: 120_000 });
}
