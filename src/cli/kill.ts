import { connect } from "../client/client.ts";
import { parse, UsageError } from "./_args.ts";

export const KILL_HELP = `umad kill — end a terminal session

Usage: umad kill SESSION [--signal SIGNAL] [--socket PATH]

Sends SIGNAL (default HUP; a name like TERM, KILL or INT) to the session's program;
the session disappears from \`umad ls\` once it has exited. An exited session is
removed at once.`;

/** `umad kill`. */
export async function killCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    signal: { type: "string", short: "s" },
    socket: { type: "string" },
  });
  if (values.help) {
    console.log(KILL_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length ? "Too many arguments" : "SESSION is required");
  }
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-kill" });
  try {
    await client.request({ type: "pty.kill", session: positionals[0], signal: values.signal });
    return 0;
  } finally {
    await client.close();
  }
}
