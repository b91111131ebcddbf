import { connect } from "../client/client.ts";
import { parse, UsageError } from "./_args.ts";
import { escapeControls } from "./tty_text.ts";

export const LS_HELP = `umad ls — list terminal sessions

Usage: umad ls [--json] [--socket PATH]

Columns: SESSION (id), NAME, PID, SIZE, CLIENTS (attached now), STATE (running, or
exited with its code or signal), CREATED.`;

/** One row of `pty.list`. */
export interface SessionInfo {
  session: string;
  name: string;
  pid: number;
  cols: number;
  rows: number;
  clients: number;
  state: "running" | "exited";
  code?: number | null;
  signal?: string | null;
  created: number;
}

/** Formats sessions as an aligned table; control characters in names are shown escaped. */
export function formatSessions(sessions: SessionInfo[], now = Date.now()): string {
  const header = ["SESSION", "NAME", "PID", "SIZE", "CLIENTS", "STATE", "CREATED"];
  // Names come from whoever spawned the session: never let one drive the terminal.
  const rows = sessions.map((s) => [
    escapeControls(s.session),
    escapeControls(s.name),
    String(s.pid),
    `${s.cols}x${s.rows}`,
    String(s.clients),
    s.state === "running"
      ? "running"
      : s.signal
      ? `exited (${s.signal})`
      : `exited (${s.code ?? "?"})`,
    age(now - s.created),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd())
    .join("\n");
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** `umad ls`. */
export async function lsCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    json: { type: "boolean" },
    socket: { type: "string" },
  }, false);
  if (values.help) {
    console.log(LS_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-ls" });
  try {
    const reply = await client.request({ type: "pty.list" });
    const sessions = (reply.sessions ?? []) as SessionInfo[];
    if (values.json) console.log(JSON.stringify(sessions, null, 2));
    else if (sessions.length === 0) console.log("no sessions");
    else console.log(formatSessions(sessions));
    return 0;
  } finally {
    await client.close();
  }
}
