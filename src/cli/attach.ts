import { type Client, connect } from "../client/client.ts";
import { attach, type Terminal } from "../client/terminal.ts";
import type { ExitReason } from "../protocol/events.ts";
import { rawOutput } from "../pty/termios.ts";
import { parse, UsageError } from "./_args.ts";
import { ModeTracker, SAVE_TITLE } from "./terminal_modes.ts";

export const ATTACH_HELP = `umad attach — attach to a terminal session

Usage: umad attach SESSION [--readonly] [--socket PATH]

SESSION is an id from \`umad ls\` (or a name, when only one session has it).
Puts this terminal in raw mode and forwards keys to the session; the session
takes this terminal's size (on start and whenever the window changes).

Ctrl-\\ detaches (the session keeps running; \`umad attach\` it again later).
--readonly   watch only: keys other than Ctrl-\\ are ignored, the size is not sent.

Exit codes: 0 detached or the program ended, 1 runtime error, 2 usage error.`;

/** The detach key: Ctrl-\ (FS, 0x1c), as in dtach. */
export const DETACH_KEY = 0x1c;

/** How an attached session ended. */
export type AttachEnd =
  | { kind: "detached" }
  | { kind: "exit"; exitCode: number; signal?: string; reason: ExitReason }
  | { kind: "error"; error: Error };

/** The line printed when an attached session ends, saying what happened. */
export function endLine(session: string, end: AttachEnd): string {
  if (end.kind === "detached") return `[detached from session ${session}]`;
  if (end.kind === "error") {
    const code = (end.error as { code?: string }).code;
    if (code === "E_CLOSED" || code === "E_TIMEOUT") {
      return `[lost the connection to the daemon; session ${session} may still be running ` +
        `(umad attach ${session})]`;
    }
    return `[session ${session}: ${end.error.message}]`;
  }
  const how = end.signal ? `on ${end.signal}` : `with code ${end.exitCode}`;
  if (end.reason === "shutdown") return `[session ${session} ended: the daemon shut down]`;
  if (end.reason === "killed") return `[session ${session} was killed (${end.signal ?? how})]`;
  return `[session ${session} exited ${how}]`;
}

function writeAll(bytes: Uint8Array): void {
  try {
    let off = 0;
    while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
  } catch {
    // the outer terminal is gone
  }
}

function terminalSize(): { cols: number; rows: number } | undefined {
  try {
    const { columns, rows } = Deno.consoleSize();
    return columns > 0 && rows > 0 ? { cols: columns, rows } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Attaches this process's terminal to `session`: raw mode, input forwarded, size sent
 * on start and on SIGWINCH, Ctrl-\ detaches, the terminal restored at the end.
 */
export async function attachTerminal(
  client: Client,
  session: string,
  opts: { readonly?: boolean; fresh?: boolean } = {},
): Promise<AttachEnd> {
  const readonly = opts.readonly ?? false;
  const tty = Deno.stdin.isTerminal();
  const size = readonly ? undefined : terminalSize();
  const term: Terminal = await attach(client, session, {
    readonly,
    cols: size?.cols,
    rows: size?.rows,
    reattach: false,
    reset: !opts.fresh, // a session just started has nothing to redraw: keep the screen
  });
  const enc = new TextEncoder();
  let end: AttachEnd | undefined;
  let finish!: () => void;
  const finished = new Promise<void>((r) => finish = r);

  // What the session changes in this terminal, to undo exactly that when leaving.
  const modes = new ModeTracker();
  // Synchronous writes: the echo reaches the screen without another hop. A slow outer
  // terminal then holds up this client's reading, and the daemon drops its backlog and
  // redraws it with a snapshot (as tmux does) rather than letting it build up.
  term.onBinary((bytes) => {
    if (modes.scan(bytes)) writeAll(enc.encode(SAVE_TITLE));
    writeAll(bytes);
  });
  term.onExit((e) => {
    end ??= { kind: "exit", exitCode: e.exitCode, signal: e.signal, reason: e.reason ?? "exited" };
    finish();
  });
  term.onError((e) => {
    end ??= { kind: "error", error: e };
    finish();
  });
  void term.closed.then(() => {
    end ??= { kind: "detached" };
    finish();
  });

  const onWinch = () => {
    const s = terminalSize();
    if (s && !readonly && end === undefined) term.resize(s.cols, s.rows);
  };
  if (tty) Deno.stdin.setRaw(true);
  // Output raw too (setRaw leaves OPOST on: slow, and it adds a CR to every CR-LF).
  const restoreOutput = Deno.stdout.isTerminal() ? rawOutput(1) : undefined;
  if (!readonly && Deno.build.os !== "windows") Deno.addSignalListener("SIGWINCH", onWinch);

  // Keys: everything before Ctrl-\ goes to the session; Ctrl-\ detaches.
  void (async () => {
    const buf = new Uint8Array(16 * 1024);
    while (end === undefined) {
      let n: number | null;
      try {
        n = await Deno.stdin.read(buf);
      } catch {
        n = null;
      }
      if (n === null) {
        // stdin closed: without a terminal that is the end of input, not a detach.
        if (!tty) return;
        break;
      }
      const chunk = buf.subarray(0, n);
      const k = chunk.indexOf(DETACH_KEY);
      const keys = k >= 0 ? chunk.subarray(0, k) : chunk;
      if (!readonly && keys.length > 0 && end === undefined) {
        term.write(keys.slice());
        // Let the client's flush (a microtask) send the keys before the next read is
        // issued: that read wakes a blocking-pool thread, which would otherwise come first.
        await Promise.resolve();
      }
      if (k >= 0) break;
    }
    if (end === undefined) {
      end = { kind: "detached" };
      await term.detach().catch(() => {});
      finish();
    }
  })();

  try {
    await finished;
  } finally {
    if (!readonly && Deno.build.os !== "windows") Deno.removeSignalListener("SIGWINCH", onWinch);
    writeAll(enc.encode(modes.restore()));
    restoreOutput?.();
    if (tty) {
      try {
        Deno.stdin.setRaw(false);
      } catch {
        // not a terminal any more
      }
    }
  }
  const result = end ?? { kind: "detached" };
  console.error(`\r\n${endLine(term.session, result)}`);
  return result;
}

/** `umad attach`. */
export async function attachCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    readonly: { type: "boolean", short: "r" },
    socket: { type: "string" },
  });
  if (values.help) {
    console.log(ATTACH_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length ? "Too many arguments" : "SESSION is required");
  }
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-attach" });
  try {
    const end = await attachTerminal(client, positionals[0], { readonly: values.readonly });
    return end.kind === "error" ? 1 : 0;
  } finally {
    await client.close();
  }
}
