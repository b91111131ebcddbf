import { type Client, connect } from "../client/client.ts";
import { rawOutput } from "../pty/termios.ts";
import { parse, UsageError } from "./_args.ts";
import { type AttachEnd, relay } from "./relay.ts";
import { ModeTracker } from "./terminal_modes.ts";

export const ATTACH_HELP = `umad attach — attach to a terminal session

Usage: umad attach SESSION [--readonly] [--socket PATH]

SESSION is an id from \`umad ls\` (or a name, when only one session has it).
Puts this terminal in raw mode and forwards keys to the session; the session
takes this terminal's size (on start and whenever the window changes).

Ctrl-\\ detaches (the session keeps running; \`umad attach\` it again later).
--readonly   watch only: keys other than Ctrl-\\ are ignored, the size is not sent.

Exit codes: 0 detached or the program ended, 1 runtime error, 2 usage error.`;

export { type AttachEnd, DETACH_KEY } from "./relay.ts";

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
 * Attaches this process's terminal to `session` (an id, or a name only one session has):
 * raw mode, keys forwarded, the size sent on start and when the window changes, Ctrl-\
 * detaches, and at the end the terminal gets back exactly what the session changed.
 * The relay itself is a synchronous loop on its own connection ({@linkcode relay});
 * `client` gives the socket path (it was checked when it connected).
 */
export function attachTerminal(
  client: Client,
  session: string,
  opts: { readonly?: boolean; fresh?: boolean } = {},
): Promise<AttachEnd> {
  const readonly = opts.readonly ?? false;
  const tty = Deno.stdin.isTerminal();
  const modes = new ModeTracker();
  if (tty) Deno.stdin.setRaw(true);
  // Output raw too (setRaw leaves OPOST on: slow, and it adds a CR to every CR-LF).
  const restoreOutput = Deno.stdout.isTerminal() ? rawOutput(1) : undefined;
  let end: AttachEnd;
  let id = session;
  try {
    ({ end, session: id } = relay({
      socketPath: client.socketPath,
      session,
      readonly,
      fresh: opts.fresh ?? false,
      keys: true,
      size: terminalSize,
      write: writeAll,
      modes,
    }));
  } catch (e) {
    end = { kind: "error", error: e as Error };
  } finally {
    writeAll(new TextEncoder().encode(modes.restore()));
    restoreOutput?.();
    if (tty) {
      try {
        Deno.stdin.setRaw(false);
      } catch {
        // not a terminal any more
      }
    }
  }
  // The session's own id, for the message (SESSION may have been a name).
  console.error(`\r\n${endLine(id, end)}`);
  return Promise.resolve(end);
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
