import { connect } from "../client/client.ts";
import { watch, type WatchEvent } from "../client/watch.ts";
import { parse, UsageError } from "./_args.ts";
import { escapeControls } from "./tty_text.ts";

export const LS_HELP = `umad ls — list terminal sessions

Usage: umad ls [--json] [--watch] [--socket PATH]

Columns: SESSION (id), NAME, PID, SIZE, CLIENTS (attached now), STATE (running, or
exited with its code or signal), CREATED.

  --watch   after the list, print a line each time a session is created, exits, is
            resized or changes its title, until interrupted (with --json: one JSON
            object per line)`;

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

/** One line of `umad ls --watch`. */
export function formatWatchEvent(ev: WatchEvent, at = new Date()): string {
  const time = at.toTimeString().slice(0, 8);
  const detail = ev.kind === "created"
    ? `${escapeControls(ev.name ?? "")}  pid ${ev.pid}  ${ev.cols}x${ev.rows}`
    : ev.kind === "resized"
    ? `${ev.cols}x${ev.rows}`
    : ev.kind === "title"
    ? JSON.stringify(escapeControls(ev.title ?? ""))
    : ev.signal
    ? `${ev.signal} (${ev.reason ?? "exited"})`
    : `code ${ev.code ?? "?"} (${ev.reason ?? "exited"})`;
  return `${time}  ${ev.kind.padEnd(7)}  ${ev.session}  ${detail}`;
}

/** `umad ls`. */
export async function lsCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    json: { type: "boolean" },
    watch: { type: "boolean", short: "w" },
    socket: { type: "string" },
  }, false);
  if (values.help) {
    console.log(LS_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-ls" });
  try {
    // Watch first, so that nothing between the list and the first event is missed.
    const events = values.watch ? watch(client) : undefined;
    const reply = await client.request({ type: "pty.list" });
    const sessions = (reply.sessions ?? []) as SessionInfo[];
    if (values.json && !values.watch) console.log(JSON.stringify(sessions, null, 2));
    else if (values.json) { for (const s of sessions) console.log(JSON.stringify(s)); }
    else if (sessions.length === 0) console.log("no sessions");
    else {
      console.log(formatSessions(sessions));
    }
    if (events === undefined) return 0;
    for await (const ev of events) {
      console.log(values.json ? JSON.stringify(ev) : formatWatchEvent(ev));
    }
    return 0;
  } finally {
    await client.close();
  }
}
