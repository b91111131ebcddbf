/**
 * Terminal-session benchmark: output throughput and keystroke echo round trip, umad
 * side by side with direct PTY reading, dtach, tmux and `@lydell/node-pty`, in one run.
 *
 * `deno run -A scripts/bench_pty.ts` prints the Markdown section; `scripts/bench.ts`
 * calls {@linkcode benchPty}.
 *
 * @module
 */
import { startDaemon, type TestDaemon } from "../tests/_daemon.ts";
import { connect } from "../src/client/client.ts";
import {
  decodeBase64,
  decodePayload,
  encodeMessageFrame,
  FrameDecoder,
  type Message,
} from "../src/protocol/mod.ts";
import { type PtyProcess, spawnPty } from "../src/pty/mod.ts";
import { readFd, waitFds } from "../src/pty/unix_socket.ts";
import { percentile } from "../src/protocol/samples.ts";
import { delay } from "../src/protocol/async.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;

/** Options of {@linkcode benchPty}. */
export interface BenchPtyOptions {
  /** `seq 1 N` for throughput (default 10,000,000: 88.9 MB). */
  lines?: number;
  /** Echo round trips measured per path (default 1000). */
  echoSamples?: number;
  /** Extra arguments for `umad serve` (default `--no-model`). */
  daemonArgs?: string[];
  /**
   * Starts background work on the daemon (e.g. 8 LLM streams decoding) and returns a
   * function that stops it; echo is measured again while it runs.
   */
  backgroundLoad?: (socket: string) => Promise<() => Promise<void>>;
  /** Name of the background load for the report (default "background load"). */
  backgroundLabel?: string;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
  /** Run only the echo part (skip throughput): for iterating on latency. */
  echoOnly?: boolean;
  /** Skip the echo part (throughput only). */
  noEcho?: boolean;
}

interface Throughput {
  path: string;
  seconds: number;
  bytes: number;
  note?: string;
}

interface Echo {
  path: string;
  samples: number[];
  note?: string;
}

function which(cmd: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return `${dir}/${cmd}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

function baseEnv(): Record<string, string> {
  return { ...Deno.env.toObject(), TERM: "xterm-256color" };
}

function toBytes(v: unknown): Uint8Array {
  return typeof v === "string" ? decodeBase64(v) : (v as Uint8Array);
}

/** A daemon for the benchmark, with the PTY service (its warnings on our stderr). */
function startPtyBenchDaemon(args: string[]): Promise<TestDaemon> {
  return startDaemon(["--log-level", "warn", ...args], {
    withModel: true,
    stderr: "inherit",
    startTimeoutMs: 120_000,
  });
}

/** argv (looked up on PATH) on a new 80x24 PTY that this process reads. */
function spawnTerminal(argv: string[]): PtyProcess {
  return spawnPty({
    file: which(argv[0]) ?? argv[0],
    argv,
    env: baseEnv(),
    cols: 80,
    rows: 24,
  });
}

/** Runs argv on a PTY we read directly; resolves with bytes and seconds until exit. */
function readDirect(argv: string[]): Promise<{ bytes: number; seconds: number }> {
  const t0 = performance.now();
  const p = spawnTerminal(argv);
  let bytes = 0;
  p.onData = (b) => bytes += b.length;
  return new Promise((resolve) => {
    p.onExit = () => resolve({ bytes, seconds: (performance.now() - t0) / 1000 });
  });
}

/**
 * An "outer terminal": argv (a terminal client such as tmux or `umad run`) on a PTY we
 * read. Waits until its output is quiet, presses Enter (the inner program starts on
 * it), and times until the client exits.
 */
async function throughOuterTerminal(argv: string[]): Promise<{ bytes: number; seconds: number }> {
  const p = spawnTerminal(argv);
  let bytes = 0;
  let last = performance.now();
  p.onData = (b) => {
    bytes += b.length;
    last = performance.now();
  };
  const exited = new Promise<void>((r) => p.onExit = () => r());
  const start = performance.now();
  while (performance.now() - last < 700 || performance.now() - start < 1000) await delay(50);
  bytes = 0;
  const t0 = performance.now();
  p.write(new TextEncoder().encode("\r"));
  await exited;
  return { bytes, seconds: (performance.now() - t0) / 1000 };
}

/** Throughput to one client of the library, in this process. */
async function throughUmadClient(socket: string, lines: number) {
  const c = await connect({ socket, reconnect: false, client: "bench-pty" });
  try {
    const spawned = await c.request({
      type: "pty.spawn",
      argv: ["/bin/sh", "-c", `read x; seq 1 ${lines}`],
      cols: 80,
      rows: 24,
    });
    const session = spawned.session as string;
    const stream = c.stream({ type: "pty.attach", session }, (e) => e.event === "pty.exit");
    const first = await stream.next();
    if ((first.value as Message)?.event !== "pty.snapshot") throw new Error("no snapshot");
    let bytes = 0;
    let snapshots = 0;
    const t0 = performance.now();
    c.send({ type: "pty.input", session, data: new TextEncoder().encode("\r") });
    for await (const ev of stream) {
      if (ev.event === "pty.output") bytes += toBytes(ev.data).length;
      else if (ev.event === "pty.snapshot") snapshots++;
    }
    const seconds = (performance.now() - t0) / 1000;
    const metrics = (await c.metrics()).pty as Record<string, number>;
    await c.request({ type: "pty.kill", session });
    return { bytes, seconds, snapshots, paused: metrics.emulator_pauses };
  } finally {
    await c.close();
  }
}

/** Echo round trips: `send` one key, wait until `received` reports output. */
async function measureEcho(
  n: number,
  send: (key: Uint8Array) => void,
  waitOutput: () => Promise<void>,
): Promise<number[]> {
  const keys = "abcdefgijknopqrstuvwxyz";
  const samples: number[] = [];
  for (let i = 0; i < n + 50; i++) {
    const key = new TextEncoder().encode(keys[i % keys.length]);
    const t0 = performance.now();
    const got = waitOutput();
    send(key);
    await got;
    if (i >= 50) samples.push(performance.now() - t0);
  }
  return samples.sort((a, b) => a - b);
}

/**
 * Echo round trips on a PTY this process owns, measured the same way for every terminal
 * client: the PTY is taken from the poller (paused) and each echo is waited for in a
 * blocking `poll` here, so the harness adds no hop of its own and no adaptive wait whose
 * behaviour would depend on the path being measured.
 */
function measureEchoBlocking(p: PtyProcess, n: number): number[] {
  const keys = "abcdefgijknopqrstuvwxyz";
  const buf = new Uint8Array(64 * 1024);
  const samples: number[] = [];
  p.pause();
  // Whatever arrived before the pause.
  while (waitFds([p.fd], 50)[0].readable) readFd(p.fd, buf);
  for (let i = 0; i < n + 50; i++) {
    const key = new TextEncoder().encode(keys[i % keys.length]);
    const t0 = performance.now();
    p.write(key);
    const [r] = waitFds([p.fd], 5000);
    if (!r.readable) throw new Error("no echo within 5 s");
    readFd(p.fd, buf);
    if (i >= 50) samples.push(performance.now() - t0);
  }
  p.resume();
  return samples.sort((a, b) => a - b);
}

/** A waiter that resolves at the next output chunk. */
function outputSignal() {
  let resolve: (() => void) | undefined;
  return {
    next: () => new Promise<void>((r) => resolve = r),
    fire: () => {
      const r = resolve;
      resolve = undefined;
      r?.();
    },
  };
}

const RAW_CAT = ["/bin/sh", "-c", "stty raw -echo; printf READY; exec cat"];

async function echoDirect(n: number): Promise<number[]> {
  const p = spawnTerminal(RAW_CAT);
  const sig = outputSignal();
  let text = "";
  p.onData = (b) => {
    text += new TextDecoder().decode(b);
    sig.fire();
  };
  while (!text.includes("READY")) await delay(10);
  const samples = measureEchoBlocking(p, n);
  await closeProcess(p);
  return samples;
}

async function closeProcess(p: PtyProcess): Promise<void> {
  const done = new Promise<void>((r) => p.onExit = () => r());
  p.kill("SIGKILL");
  await done;
}

async function echoUmadClient(socket: string, n: number): Promise<number[]> {
  const c = await connect({ socket, reconnect: false, client: "bench-pty-echo" });
  try {
    const spawned = await c.request({ type: "pty.spawn", argv: RAW_CAT });
    const session = spawned.session as string;
    const stream = c.stream({ type: "pty.attach", session }, (e) => e.event === "pty.exit");
    const sig = outputSignal();
    let text = "";
    const reading = (async () => {
      for await (const ev of stream) {
        if (ev.event === "pty.output" || ev.event === "pty.snapshot") {
          text += new TextDecoder().decode(toBytes(ev.data));
          sig.fire();
        }
      }
    })();
    while (!text.includes("READY")) await delay(10);
    const samples = await measureEcho(
      n,
      (k) => c.send({ type: "pty.input", session, data: k }),
      sig.next,
    );
    await c.request({ type: "pty.kill", session, signal: "SIGKILL" });
    await reading;
    return samples;
  } finally {
    await c.close();
  }
}

/**
 * Echo through the daemon with a bare `Deno.connect` client (no client library): the
 * difference to the library row is the library's own cost, the rest is the daemon's.
 */
async function echoRawConn(socket: string, n: number): Promise<number[]> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  const dec = new FrameDecoder(64 << 20);
  const waiters = new Map<string, (m: Message) => void>();
  let onOutput: (m: Message) => void = () => {};
  const buf = new Uint8Array(64 * 1024);
  const reading = (async () => {
    while (true) {
      let r: number | null;
      try {
        r = await conn.read(buf);
      } catch {
        return;
      }
      if (r === null) return;
      for (const payload of dec.push(buf.subarray(0, r))) {
        const { message } = decodePayload(payload.slice());
        const w = waiters.get(String(message.id));
        if (message.id === "att") onOutput(message);
        else if (w) {
          waiters.delete(String(message.id));
          w(message);
        }
      }
    }
  })();
  const write = (m: Message) => conn.write(encodeMessageFrame(m, "msgpack"));
  const request = (m: Message) =>
    new Promise<Message>((resolve) => {
      waiters.set(String(m.id), resolve);
      void write(m);
    });
  try {
    await request({ type: "hello", id: "h", client: "bench-pty-raw" });
    const spawned = await request({ type: "pty.spawn", id: "s", argv: RAW_CAT });
    const session = spawned.session as string;
    const sig = outputSignal();
    let text = "";
    onOutput = (ev) => {
      if (ev.event === "pty.output" || ev.event === "pty.snapshot") {
        text += new TextDecoder().decode(toBytes(ev.data));
        sig.fire();
      }
    };
    void write({ type: "pty.attach", id: "att", session });
    while (!text.includes("READY")) await delay(10);
    const samples = await measureEcho(
      n,
      (k) => void write({ type: "pty.input", session, data: k }),
      sig.next,
    );
    await request({ type: "pty.kill", id: "k", session, signal: "SIGKILL" });
    return samples;
  } finally {
    conn.close();
    await reading;
  }
}

/**
 * Echo round trips through a terminal client (tmux, `umad run`) running on a PTY this
 * process owns: `n` keys one after another, sorted samples in ms.
 *
 * @example
 * ```ts ignore
 * const ms = await echoOuterTerminal(["tmux", "new", "sh -c 'stty raw -echo; echo READY; cat'"], 200);
 * ```
 */
export async function echoOuterTerminal(argv: string[], n: number): Promise<number[]> {
  const p = spawnTerminal(argv);
  const sig = outputSignal();
  let text = "";
  p.onData = (b) => {
    text += new TextDecoder().decode(b);
    if (text.length > 10000) text = text.slice(-100);
    sig.fire();
  };
  const deadline = Date.now() + 20000;
  while (!text.includes("READY")) {
    if (Date.now() > deadline) throw new Error(`${argv[0]}: no READY`);
    await delay(10);
  }
  await delay(300);
  const samples = measureEchoBlocking(p, n);
  await closeProcess(p);
  return samples;
}

/** The program's output rate: its whole output over the time until the reader was done. */
let programBytes = 0;
function mbps(t: Throughput): number {
  return (programBytes || t.bytes) / 1e6 / t.seconds;
}

/** A tmux client starting a server on `sock` with an 80×24 session running `command`, no status line. */
function tmuxSession(tmux: string, sock: string, command: string): string[] {
  return [
    tmux,
    "-S",
    sock,
    "-f",
    "/dev/null",
    "new-session",
    "-x",
    "80",
    "-y",
    "24",
    command,
    ";",
    "set",
    "status",
    "off",
  ];
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : "n/a";
}

/**
 * A background load for {@linkcode benchPty}: `streams` generate requests decoding at
 * once on the daemon, each restarted when it ends, from a client in another process
 * (as other programs' streams would be: its token traffic is not this process's), until
 * the returned function is called. Needs a daemon with a model.
 *
 * @example
 * ```ts ignore
 * await benchPty({ daemonArgs: [], backgroundLoad: llmDecodeLoad(8) });
 * ```
 */
export function llmDecodeLoad(
  streams = 8,
  maxTokens = 256,
): (socket: string) => Promise<() => Promise<void>> {
  return async (socket: string) => {
    const proc = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}scripts/llm_load.ts`, socket, String(streams), String(maxTokens)],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    // Every stream past its prompt before measuring.
    const reader = proc.stdout.getReader();
    const { value } = await reader.read();
    if (!new TextDecoder().decode(value).includes("ready")) {
      throw new Error("the LLM load client did not start");
    }
    return async () => {
      reader.releaseLock();
      try {
        proc.kill("SIGKILL");
      } catch { /* gone */ }
      await proc.status;
      await proc.stdout.cancel().catch(() => {});
    };
  };
}

/**
 * Runs the terminal benchmarks and returns a Markdown section.
 *
 * @example
 * ```ts ignore
 * console.log(await benchPty({ lines: 1_000_000 }));
 * ```
 */
export async function benchPty(options: BenchPtyOptions = {}): Promise<string> {
  const lines = options.lines ?? 10_000_000;
  const n = options.echoSamples ?? 1000;
  const log = options.log ?? ((l: string) => console.error(l));
  const tmux = which("tmux");
  const dtach = which("dtach");
  const deno = Deno.execPath();
  const tmp = await Deno.makeTempDir({ prefix: "umad-bench-peers-" });
  const daemon = await startPtyBenchDaemon(options.daemonArgs ?? ["--no-model"]);
  const umadCli = (sub: string[]) => [deno, "run", "-A", MAIN, ...sub];
  const seqGated = `read x; seq 1 ${lines}`;
  const tput: Throughput[] = [];
  const echo: Echo[] = [];
  const skipped: string[] = [];
  try {
    if (!options.echoOnly) {
      log(`pty bench: seq 1 ${lines}, direct`);
      const direct = await readDirect(["seq", "1", String(lines)]);
      tput.push({ path: "direct PTY read (umad's FFI shim, in process)", ...direct });

      try {
        log("pty bench: @lydell/node-pty");
        const nodePty = await import("@lydell/node-pty");
        const t0 = performance.now();
        const p = nodePty.spawn("seq", ["1", String(lines)], {
          cols: 80,
          rows: 24,
          env: baseEnv(),
        });
        let chars = 0;
        p.onData((d: string) => chars += d.length);
        await new Promise<void>((r) => p.onExit(() => r()));
        tput.push({
          path: "@lydell/node-pty under Deno (in process)",
          seconds: (performance.now() - t0) / 1000,
          bytes: chars,
        });
      } catch (e) {
        skipped.push(`@lydell/node-pty: ${(e as Error).message}`);
      }

      log("pty bench: umad, library client");
      const lib = await throughUmadClient(daemon.socket, lines);
      tput.push({
        path: "umad → one client (client library, separate process from the daemon)",
        seconds: lib.seconds,
        bytes: lib.bytes,
        note: lib.snapshots > 0
          ? `${lib.snapshots} backlog drop(s) → snapshot; ${
            ((1 - lib.bytes / direct.bytes) * 100).toFixed(0)
          }% of bytes skipped`
          : "every byte delivered",
      });

      log("pty bench: umad run in an outer terminal");
      const cli = await throughOuterTerminal(
        umadCli(["run", "--socket", daemon.socket, "--", "/bin/sh", "-c", seqGated]),
      );
      tput.push({ path: "`umad run` in an outer PTY (what a user sees)", ...cli });

      if (dtach) {
        log("pty bench: dtach");
        const r = await throughOuterTerminal([
          dtach,
          "-c",
          `${tmp}/dtach.sock`,
          "-E",
          "-z",
          "-r",
          "none",
          "/bin/sh",
          "-c",
          seqGated,
        ]);
        tput.push({ path: "dtach -c in an outer PTY", ...r });
      } else skipped.push("dtach: not installed");

      if (tmux) {
        log("pty bench: tmux");
        const r = await throughOuterTerminal(
          tmuxSession(tmux, `${tmp}/tmux.sock`, `/bin/sh -c '${seqGated}'`),
        );
        tput.push({ path: "tmux in an outer PTY", ...r, note: "tmux redraws instead of relaying" });
      } else skipped.push("tmux: not installed");
    }

    if (!options.noEcho) {
      log("pty bench: echo, direct");
      echo.push({ path: "direct PTY (in process)", samples: await echoDirect(n) });
      log("pty bench: echo, umad library");
      echo.push({ path: "umad, client library", samples: await echoUmadClient(daemon.socket, n) });
      log("pty bench: echo, umad raw Deno conn");
      echo.push({
        path: "umad, bare Deno.connect client (no library)",
        samples: await echoRawConn(daemon.socket, n),
      });
      // `umad run` and tmux side by side, in interleaved rounds (the machine's load moves).
      const rounds = 4;
      const runSamples: number[] = [];
      const tmuxSamples: number[] = [];
      for (let r = 0; r < rounds; r++) {
        log(`pty bench: echo, umad run and tmux, round ${r + 1} of ${rounds}`);
        runSamples.push(
          ...await echoOuterTerminal(
            umadCli(["run", "--socket", daemon.socket, "--", ...RAW_CAT]),
            Math.ceil(n / rounds),
          ),
        );
        if (tmux) {
          tmuxSamples.push(
            ...await echoOuterTerminal(
              tmuxSession(tmux, `${tmp}/tmux-echo.sock`, RAW_CAT.map((a) => `'${a}'`).join(" ")),
              Math.ceil(n / rounds),
            ),
          );
        }
      }
      echo.push({
        path: "`umad run` in an outer PTY",
        samples: runSamples.sort((a, b) => a - b),
      });
      if (tmux) {
        echo.push({ path: "tmux in an outer PTY", samples: tmuxSamples.sort((a, b) => a - b) });
      }
      if (options.backgroundLoad) {
        const label = options.backgroundLabel ?? "background load";
        log(`pty bench: echo, umad library, under ${label}`);
        const stop = await options.backgroundLoad(daemon.socket);
        try {
          echo.push({
            path: `umad, client library, while ${label}`,
            samples: await echoUmadClient(daemon.socket, n),
          });
        } finally {
          await stop();
        }
        // Again on a daemon whose decode threads are SCHED_IDLE.
        log(`pty bench: echo, umad library, under ${label}, --decode-priority idle`);
        const idle = await startPtyBenchDaemon([
          ...(options.daemonArgs ?? []),
          "--decode-priority",
          "idle",
        ]);
        try {
          const stopIdle = await options.backgroundLoad(idle.socket);
          try {
            echo.push({
              path: `umad, client library, while ${label}, \`--decode-priority idle\``,
              samples: await echoUmadClient(idle.socket, n),
            });
          } finally {
            await stopIdle();
          }
        } finally {
          await idle.stop();
        }
      }
    }
  } finally {
    await daemon.stop();
    // Both tmux servers (throughput and echo): killing a client leaves its server.
    for (const sock of ["tmux.sock", "tmux-echo.sock"]) {
      await new Deno.Command(tmux ?? "true", {
        args: tmux ? ["-S", `${tmp}/${sock}`, "kill-server"] : [],
        stderr: "null",
        stdout: "null",
      }).output().catch(() => {});
    }
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }

  const out: string[] = [];
  out.push("## Terminal sessions (PTY)");
  out.push("");
  if (tput.length > 0) {
    programBytes = tput[0].bytes;
    const directRate = mbps(tput[0]);
    const tmuxRow = tput.find((t) => t.path.startsWith("tmux"));
    out.push(
      `Output throughput of \`seq 1 ${lines}\` (${
        (tput[0].bytes / 1e6).toFixed(1)
      } MB) at 80x24, one run, all paths in the same run on this machine ` +
        `(${navigator.hardwareConcurrency} CPUs). Outer-PTY rows time from Enter to the ` +
        "client's exit, so they include the client drawing everything it receives. MB/s is " +
        "the program's output over that time; the bytes column is what reached the reader " +
        "(tmux and a dropped umad backlog send redraws instead of every byte).",
    );
    out.push("");
    out.push("| path | seconds | MB/s | × direct | bytes to the reader | note |");
    out.push("|---|---:|---:|---:|---:|---|");
    for (const t of tput) {
      out.push(
        `| ${t.path} | ${fmt(t.seconds)} | ${fmt(mbps(t), 1)} | ${fmt(mbps(t) / directRate)} | ${
          (t.bytes / 1e6).toFixed(1)
        } MB | ${t.note ?? ""} |`,
      );
    }
    out.push("");
    const umadRun = tput.find((t) => t.path.startsWith("`umad run`"));
    if (umadRun && tmuxRow) {
      out.push(
        `Targets: umad ≥ tmux (${fmt(umadRun.seconds)} s vs ${fmt(tmuxRow.seconds)} s), ` +
          `≥ 0.5× direct (library client: ${fmt(mbps(tput[2]) / directRate)}×; ` +
          `wall time to done: ${fmt(tput[0].seconds / tput[2].seconds)}×).`,
      );
      out.push("");
    }
  }
  if (echo.length > 0) {
    out.push(
      `Keystroke echo round trip (\`stty raw -echo; cat\`), ${n} keys one after another, ms. ` +
        "Outer-PTY rows (direct, `umad run`, tmux) wait for each echo in a blocking poll in " +
        "the bench process, the same way for every path; `umad run` and tmux run in four " +
        "interleaved rounds.",
    );
    out.push("");
    out.push("| path | p50 | p90 | p99 | max |");
    out.push("|---|---:|---:|---:|---:|");
  }
  for (const e of echo) {
    const s = e.samples;
    out.push(
      `| ${e.path} | ${fmt(percentile(s, 0.5), 3)} | ${fmt(percentile(s, 0.9), 3)} | ${
        fmt(percentile(s, 0.99), 3)
      } | ${fmt(s[s.length - 1], 3)} |`,
    );
  }
  if (!options.backgroundLoad && !options.noEcho) {
    out.push("");
    out.push(
      "Echo under LLM load: not measured in this run (pass `backgroundLoad` to `benchPty`).",
    );
  }
  if (skipped.length) {
    out.push("");
    out.push(`Skipped: ${skipped.join("; ")}.`);
  }
  return out.join("\n");
}

if (import.meta.main) {
  // deno run -A scripts/bench_pty.ts [LINES] [--llm] [--only echo|throughput] [--samples N]
  //   --llm: echo again under 8 streams; --only: one part; --samples: keys
  const args = [...Deno.args];
  const flag = (name: string): string | undefined => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const [, v] = args.splice(i, 2);
    return v;
  };
  const only = flag("--only");
  if (only !== undefined && only !== "echo" && only !== "throughput") {
    throw new Error(`--only: "echo" or "throughput" expected`);
  }
  const samples = flag("--samples");
  const llm = args.includes("--llm");
  const lines = Number(args.find((a) => !a.startsWith("--")) ?? 10_000_000);
  console.log(
    await benchPty({
      lines,
      echoOnly: only === "echo",
      noEcho: only === "throughput",
      echoSamples: samples === undefined ? undefined : Number(samples),
      ...(llm
        ? {
          daemonArgs: [],
          backgroundLoad: llmDecodeLoad(8),
          backgroundLabel: "8 LLM streams decode (demo model)",
        }
        : {}),
    }),
  );
}
