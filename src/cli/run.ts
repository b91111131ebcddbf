import { connect } from "../client/client.ts";
import { SIGNALS } from "../pty/libc.ts";
import { parse } from "./_args.ts";
import { attachTerminal } from "./attach.ts";

export const RUN_HELP = `umad run — start a terminal session in the daemon and attach to it

Usage: umad run [--name NAME] [--detached] [--socket PATH] [-- COMMAND [ARGS...]]

Runs COMMAND (default: your shell) on a new pseudo-terminal owned by the daemon, in
this directory and with this environment, and attaches this terminal to it.
The session outlives this command: Ctrl-\\ detaches, \`umad attach SESSION\` comes back.

  --name NAME    a name for \`umad ls\` and \`umad attach NAME\`
  --detached     print the session id and return without attaching

Exit codes: the program's exit status (128+N when signal N ended it); 0 when
detached; 1 runtime error; 2 usage error.`;

/** Client environment variables not forwarded to the session. */
const LOCAL_ONLY = new Set(["TERM", "COLUMNS", "LINES", "UMAD_SESSION", "TMUX", "TMUX_PANE"]);

/** `umad run`. */
export async function runCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    name: { type: "string", short: "n" },
    detached: { type: "boolean", short: "d" },
    socket: { type: "string" },
  });
  if (values.help) {
    console.log(RUN_HELP);
    return 0;
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!LOCAL_ONLY.has(k)) env[k] = v;
  }
  let size: { cols: number; rows: number } | undefined;
  try {
    const s = Deno.consoleSize();
    if (s.columns > 0 && s.rows > 0) size = { cols: s.columns, rows: s.rows };
  } catch {
    // not a terminal: the daemon's default size
  }
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-run" });
  try {
    const { session } = await client.request({
      type: "pty.spawn",
      cwd: Deno.cwd(),
      env,
      ...size,
      argv: positionals.length > 0 ? positionals : undefined,
      name: values.name,
    });
    if (values.detached) {
      console.log(session);
      return 0;
    }
    const end = await attachTerminal(client, session, { fresh: true });
    if (end.kind === "error") return 1;
    if (end.kind === "detached") return 0;
    if (end.signal) return 128 + (SIGNALS[end.signal] ?? 0);
    return end.exitCode;
  } finally {
    await client.close();
  }
}
