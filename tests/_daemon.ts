// The one daemon launcher of the tests and the benches (a real daemon process on a socket
// in a temporary directory), a raw framed client that speaks bytes (so tests can send
// anything, malformed too), and the CLI run to completion.
import { decodePayload, encodeFrame, encodePayload, FrameDecoder } from "../src/protocol/mod.ts";
import type { Codec, Message } from "../src/protocol/mod.ts";
import { deferred, withTimeout } from "../src/protocol/async.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** A daemon started for a test. */
export interface TestDaemon {
  socket: string;
  dir: string;
  pid: number;
  process: Deno.ChildProcess;
  /** Everything the daemon wrote to stderr so far ("" when inherited). */
  stderr(): string;
  /** SIGTERM, wait for exit (SIGKILL after 5 s), remove the temp dir. Idempotent. */
  stop(): Promise<Deno.CommandStatus>;
}

/** How {@linkcode startDaemon} starts the daemon. */
export interface DaemonOptions {
  /** Load the model `args` name, or the demo one (default: `--no-model` unless given). */
  withModel?: boolean;
  /** The temporary directory to use (kept on stop); default: a new one, removed on stop. */
  dir?: string;
  /** The socket path; default `<dir>/umad.sock`. */
  socket?: string;
  /** The daemon's environment (added to ours). */
  env?: Record<string, string>;
  /** Run under `ulimit <this>` in a child shell, e.g. "-n 128" (soft and hard), "-Sn 256". */
  ulimit?: string;
  /** "inherit": the daemon's log goes to ours (benches); default "piped": kept for `stderr()`. */
  stderr?: "piped" | "inherit";
  /** How long the daemon may take to listen (default 60 s; a big model loads longer). */
  startTimeoutMs?: number;
}

/**
 * The one daemon launcher of the tests and the benches (scripts/bench_*.ts).
 * Starts `deno run -A main.ts serve --socket <tmp>/umad.sock` plus `args` and waits
 * until it answers. Pass `--no-model` for tests that need no LLM (the default here is
 * to add it unless `withModel` is set).
 */
export async function startDaemon(
  args: string[] = [],
  opts: DaemonOptions = {},
): Promise<TestDaemon> {
  const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "umad-test-" });
  const socket = opts.socket ?? `${dir}/umad.sock`;
  const full = ["run", "-A", `${ROOT}main.ts`, "serve", "--socket", socket, ...args];
  if (!opts.withModel && !args.includes("--model") && !args.includes("--no-model")) {
    full.push("--no-model");
  }
  const [program, argv] = opts.ulimit === undefined
    ? [Deno.execPath(), full]
    : ["bash", ["-c", `ulimit ${opts.ulimit} && exec "$0" "$@"`, Deno.execPath(), ...full]];
  const process = new Deno.Command(program, {
    args: argv,
    stdin: "null",
    stdout: "null",
    stderr: opts.stderr ?? "piped",
    env: opts.env,
  }).spawn();
  let log = "";
  const logDone = opts.stderr === "inherit" ? Promise.resolve() : (async () => {
    const dec = new TextDecoder();
    for await (const chunk of process.stderr) log += dec.decode(chunk, { stream: true });
  })();
  let status: Promise<Deno.CommandStatus> | undefined;
  const daemon: TestDaemon = {
    socket,
    dir,
    pid: process.pid,
    process,
    stderr: () => log,
    stop() {
      status ??= (async () => {
        try {
          process.kill("SIGTERM");
        } catch { /* already gone */ }
        const timer = setTimeout(() => {
          try {
            process.kill("SIGKILL");
          } catch { /* gone */ }
        }, 5000);
        const s = await process.status;
        clearTimeout(timer);
        await logDone;
        if (!opts.dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
        return s;
      })();
      return status;
    },
  };
  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  while (true) {
    try {
      const c = await Deno.connect({ transport: "unix", path: socket });
      c.close();
      return daemon;
    } catch {
      // not up yet
    }
    const exited = await withTimeout(process.status, 50).then(() => true, () => false);
    if (exited || Date.now() > deadline) {
      await daemon.stop();
      throw new Error(`daemon did not start:\n${log}`);
    }
  }
}

/** A raw framed connection for tests. */
export class RawClient {
  readonly conn: Deno.UnixConn;
  readonly #decoder = new FrameDecoder(64 << 20);
  #queue: Message[] = [];
  #waiters: (() => void)[] = [];
  #closed = false;
  readonly done: Promise<void>;

  private constructor(conn: Deno.UnixConn) {
    this.conn = conn;
    this.done = this.#read();
  }

  static async connect(socket: string): Promise<RawClient> {
    return new RawClient(await Deno.connect({ transport: "unix", path: socket }));
  }

  async #read(): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    try {
      while (true) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        for (const p of this.#decoder.push(buf.slice(0, n))) {
          this.#queue.push(decodePayload(p).message);
        }
        this.#wake();
      }
    } catch {
      // closed
    } finally {
      this.#closed = true;
      this.#wake();
    }
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** True once the daemon closed the connection (and all frames were read). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Sends raw bytes. */
  async writeRaw(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** Sends one message as a frame in the given codec. */
  send(message: Message, codec: Codec = "json"): Promise<void> {
    return this.writeRaw(encodeFrame(encodePayload(message, codec)));
  }

  /** The next event matching `pred` (events before it that don't match stay queued). */
  async next(pred: (m: Message) => boolean = () => true, timeoutMs = 10_000): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const i = this.#queue.findIndex(pred);
      if (i >= 0) return this.#queue.splice(i, 1)[0];
      if (this.#closed) throw new Error("connection closed before the expected event");
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out waiting for an event; queued: ${JSON.stringify(this.#queue).slice(0, 500)}`,
        );
      }
      const woken = deferred();
      this.#waiters.push(woken.resolve);
      await withTimeout(woken.promise, left).catch(() => {});
    }
  }

  /** The next event with this id. */
  nextFor(id: string, timeoutMs?: number): Promise<Message> {
    return this.next((m) => m.id === id, timeoutMs);
  }

  /** Sends a request and waits for its first reply. */
  async request(message: Message, codec: Codec = "json"): Promise<Message> {
    await this.send(message, codec);
    return this.nextFor(message.id as string);
  }

  /** Events received and not yet taken. */
  get queued(): Message[] {
    return this.#queue;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // closed already
    }
  }
}

/**
 * Runs the umad CLI (`deno run -A main.ts ...args`) to completion (killed after
 * `timeoutMs`, default 2 minutes), with `stdin` as its input if given.
 */
export async function runUmad(
  args: string[],
  opts: { env?: Record<string, string>; stdin?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, ...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  // A command that should have failed but serves instead must not hang the test.
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
  const out = await child.output().finally(() => clearTimeout(timer));
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Reads /proc/<pid>/status VmRSS in bytes. */
export function rssOf(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = status.match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) * 1024 : 0;
}
