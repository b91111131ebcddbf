/**
 * Terminals read by programs: `pty.capture` of a full 200×50 screen with 10,000 lines of
 * scrollback (beside tmux's `capture-pane` of the same content), and the CPU a pending
 * `pty.wait` costs the daemon while a session writes about 10 MB/s (none, 1 and 100 waits,
 * side by side in one run).
 *
 * `deno run -A scripts/bench_pty_programs.ts [--only capture|wait]` prints the Markdown
 * section (about 40 s); `scripts/bench.ts --only pty.capture,pty.wait` calls it.
 *
 * @module
 */
import { cpuMsOf } from "../tests/_proc.ts";
import { delay } from "../src/protocol/async.ts";
import { startDaemon, type TestDaemon } from "../tests/_daemon.ts";
import { connect } from "../src/client/client.ts";
import { percentile } from "../src/protocol/samples.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Options of {@linkcode benchPtyPrograms}. */
export interface BenchPtyProgramsOptions {
  /** Which parts (default both). */
  parts?: ("capture" | "wait")[];
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** A daemon without a model, its warnings on our stderr. */
function startBenchDaemon(args: string[]): Promise<TestDaemon> {
  return startDaemon(["--no-model", "--log-level", "warn", ...args], { stderr: "inherit" });
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  return cpuMsOf(`/proc/${pid}/stat`) / 1000;
}

function ms(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `${percentile(s, 0.5).toFixed(1)} | ${percentile(s, 0.9).toFixed(1)} | ${
    s.at(-1)!.toFixed(1)
  }`;
}

const FILL =
  `seq 1 10050 | sed 's/$/ the quick brown fox jumps over the lazy dog, line of a long build log/'; printf 'DONE> '; exec sleep 600`;

async function benchCapture(log: (l: string) => void): Promise<string[]> {
  const out: string[] = [];
  const daemon = await startBenchDaemon([
    "--scrollback",
    "10000",
    "--scrollback-bytes",
    "33554432",
  ]);
  const tmuxSock = `${await Deno.makeTempDir({ prefix: "umad-bench-tmux-" })}/t.sock`;
  const rows: [string, number[]][] = [];
  try {
    const c = await connect({ socket: daemon.socket, reconnect: false });
    try {
      const r = await c.request({
        type: "pty.spawn",
        argv: ["/bin/sh", "-c", FILL],
        cols: 200,
        rows: 50,
      });
      const session = r.session as string;
      await c.request({ type: "pty.wait", session, pattern: "DONE> ", timeout_ms: 60_000 });
      const time = async (msg: Record<string, unknown>, n: number) => {
        const samples: number[] = [];
        let bytes = 0;
        for (let i = 0; i < n; i++) {
          const t0 = performance.now();
          const reply = await c.request({ type: "pty.capture", session, ...msg });
          samples.push(performance.now() - t0);
          bytes = String(reply.data).length;
        }
        return { samples, bytes };
      };
      log("pty bench: capture");
      const screen = await time({}, 30);
      const back = await time({ start: -10_000 }, 10);
      const ansi = await time({ start: -10_000, format: "ansi" }, 10);
      rows.push([`umad \`pty.capture\`, text, the screen (${screen.bytes} chars)`, screen.samples]);
      rows.push([
        `umad \`pty.capture\`, text, screen + 10,000 lines (${
          (back.bytes / 1e6).toFixed(2)
        } M chars)`,
        back.samples,
      ]);
      rows.push([
        `umad \`pty.capture\`, ansi, screen + 10,000 lines (${
          (ansi.bytes / 1e6).toFixed(2)
        } M chars)`,
        ansi.samples,
      ]);
      const snaps: number[] = [];
      for (let i = 0; i < 6; i++) {
        const t0 = performance.now();
        const s = c.stream({ type: "pty.attach", session, readonly: true }, () => true);
        await s.next();
        if (i > 0) snaps.push(performance.now() - t0); // the first gets the raw output
        await c.request({ type: "pty.detach", session });
      }
      rows.push(["umad snapshot on attach (screen + 10,000 lines, with modes)", snaps]);
    } finally {
      await c.close();
    }
    // The same content in tmux, captured by its own client (a process start included).
    const tmux = (...a: string[]) =>
      new Deno.Command("tmux", {
        args: ["-S", tmuxSock, "-f", "/dev/null", ...a],
        stdout: "piped",
        stderr: "null",
      }).output();
    const started = await tmux(
      "new-session",
      "-d",
      "-x",
      "200",
      "-y",
      "50",
      ";",
      "set",
      "-g",
      "history-limit",
      "10000",
      ";",
      "new-window",
      "-d",
      "-n",
      "w",
      FILL,
    ).then((o) => o.success).catch(() => false);
    if (started) {
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const o = await tmux("capture-pane", "-p", "-t", ":w");
        if (new TextDecoder().decode(o.stdout).includes("DONE>")) break;
        await delay(100);
      }
      const tmuxTime = async (args: string[], n: number) => {
        const s: number[] = [];
        for (let i = 0; i < n; i++) {
          const t0 = performance.now();
          await tmux("capture-pane", "-p", "-t", ":w", ...args);
          s.push(performance.now() - t0);
        }
        return s;
      };
      rows.push([
        "tmux `capture-pane -p`, the screen (client process start included)",
        await tmuxTime([], 30),
      ]);
      rows.push([
        "tmux `capture-pane -p -S -10000` (client process start included)",
        await tmuxTime(["-S", "-10000"], 10),
      ]);
      rows.push([
        "tmux `capture-pane -p -e -S -10000` (client process start included)",
        await tmuxTime(["-e", "-S", "-10000"], 10),
      ]);
      await tmux("kill-server");
    }
  } finally {
    await daemon.stop();
    await Deno.remove(tmuxSock.slice(0, tmuxSock.lastIndexOf("/")), { recursive: true }).catch(
      () => {},
    );
  }
  out.push(
    "Capture of a 200×50 terminal holding 10,000 lines of scrollback (each line 90 characters), ms, one client request after another:",
  );
  out.push("");
  out.push("| what | p50 | p90 | max |");
  out.push("|---|---:|---:|---:|");
  for (const [name, s] of rows) out.push(`| ${name} | ${ms(s)} |`);
  out.push("");
  return out;
}

/** A producer of about `mbps` MB/s for `seconds`, ending with a marker line. */
const PRODUCER = (mbps: number, seconds: number) =>
  `exec python3 ${ROOT}scripts/pty_producer.py ${mbps} ${seconds}`;

async function benchWait(log: (l: string) => void): Promise<string[]> {
  const seconds = 5;
  const cases: [string, number][] = [["no wait pending", 0], ["1 wait pending", 1], [
    "100 waits pending",
    100,
  ]];
  const results: { name: string; cpu: number; mb: number; wall: number; matchMs?: number }[] = [];
  const daemon = await startBenchDaemon([]);
  try {
    const c = await connect({ socket: daemon.socket, reconnect: false });
    try {
      for (const [name, waits] of cases) {
        log(`pty bench: wait, ${name}`);
        const r = await c.request({
          type: "pty.spawn",
          argv: ["/bin/sh", "-c", `read x; ${PRODUCER(10, seconds)}`],
          cols: 120,
          rows: 40,
        });
        const session = r.session as string;
        await delay(300);
        const pending = Array.from(
          { length: waits },
          (_, i) =>
            c.request({
              type: "pty.wait",
              session,
              pattern: i === 0 ? "FINISHED-MARK" : `never-${i}`,
              timeout_ms: 60_000,
            }),
        );
        await delay(200);
        const m0 = (await c.metrics()).pty as Record<string, number>;
        const cpu0 = cpuSeconds(daemon.pid);
        const t0 = performance.now();
        c.send({ type: "pty.input", session, data: new TextEncoder().encode("\r") });
        let matchMs: number | undefined;
        if (waits > 0) {
          await pending[0];
          matchMs = performance.now() - t0 - seconds * 1000;
        } else {
          const w = await c.request({
            type: "pty.wait",
            session,
            pattern: "FINISHED-MARK",
            timeout_ms: 60_000,
            regex: false,
          });
          void w;
        }
        const wall = (performance.now() - t0) / 1000;
        const cpu = cpuSeconds(daemon.pid) - cpu0;
        const m1 = (await c.metrics()).pty as Record<string, number>;
        await c.request({ type: "pty.kill", session, signal: "KILL" });
        await Promise.allSettled(pending);
        results.push({ name, cpu, mb: (m1.bytes_read - m0.bytes_read) / 1e6, wall, matchMs });
      }
    } finally {
      await c.close();
    }
  } finally {
    await daemon.stop();
  }
  const base = results[0];
  const out: string[] = [];
  out.push(
    `\`pty.wait\` cost: a session writes about 10 MB/s for ${seconds} s (100-byte lines), the daemon's CPU (user + system, all threads, from /proc) over that time; the waits' patterns never match except the one on the last line. In the "no wait" row the marker is waited for once it was already printed (a screen check).`,
  );
  out.push("");
  out.push("| case | MB read | daemon CPU s | CPU vs no wait | match after the marker, ms |");
  out.push("|---|---:|---:|---:|---:|");
  for (const r of results) {
    out.push(
      `| ${r.name} | ${r.mb.toFixed(1)} | ${r.cpu.toFixed(2)} | ${
        r === base ? "1.00" : (r.cpu / base.cpu).toFixed(2)
      } | ${r.matchMs === undefined ? "" : Math.max(0, r.matchMs).toFixed(0)} |`,
    );
  }
  out.push("");
  return out;
}

/**
 * Runs the capture and wait benchmarks and returns a Markdown section.
 *
 * @example
 * ```ts ignore
 * console.log(await benchPtyPrograms({ parts: ["capture"] }));
 * ```
 */
export async function benchPtyPrograms(options: BenchPtyProgramsOptions = {}): Promise<string> {
  const parts = options.parts ?? ["capture", "wait"];
  const log = options.log ?? ((l: string) => console.error(l));
  const out = ["", "## Terminals read by programs (capture, wait)", ""];
  if (parts.includes("capture")) out.push(...await benchCapture(log));
  if (parts.includes("wait")) out.push(...await benchWait(log));
  return out.join("\n");
}

if (import.meta.main) {
  const i = Deno.args.indexOf("--only");
  const only = i >= 0 ? Deno.args[i + 1] : undefined;
  if (only !== undefined && only !== "capture" && only !== "wait") {
    throw new Error(`--only: "capture" or "wait" expected, got ${JSON.stringify(only)}`);
  }
  console.log(await benchPtyPrograms({ parts: only === undefined ? undefined : [only] }));
}
