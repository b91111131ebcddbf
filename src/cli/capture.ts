import { connect } from "../client/client.ts";
import { capture } from "../client/capture.ts";
import { intOption, parse, UsageError } from "./_args.ts";

export const CAPTURE_HELP = `umad capture — print a terminal session's screen

Usage: umad capture SESSION [--ansi] [--start N] [--end M] [--socket PATH]

Prints the session's screen as plain text (each line's trailing blanks trimmed), as
\`tmux capture-pane -p\` does. Lines are numbered from 0 at the top of the screen;
negative numbers are scrollback (-1 is the line just above the screen).

  --ansi       keep colors and attributes (escape sequences), like capture-pane -e
  --start N    first line (default 0); e.g. --start -100 adds 100 lines of scrollback
  --end M      last line, inclusive (default the bottom row)

Exit codes: 0 ok, 1 runtime error (e.g. no such session), 2 usage error.`;

/** `-S -100` as tmux takes it: parseArgs would read "-100" as an option. */
function joinNegativeValues(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const long = a === "-S" ? "--start" : a === "-E" ? "--end" : a;
    if ((long === "--start" || long === "--end") && /^-\d+$/.test(args[i + 1] ?? "")) {
      out.push(`${long}=${args[++i]}`);
    } else {
      out.push(a);
    }
  }
  return out;
}

/** `umad capture`. */
export async function captureCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(joinNegativeValues(args), {
    ansi: { type: "boolean", short: "e" },
    start: { type: "string", short: "S" },
    end: { type: "string", short: "E" },
    socket: { type: "string" },
  });
  if (values.help) {
    console.log(CAPTURE_HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(positionals.length ? "Too many arguments" : "SESSION is required");
  }
  const line = { min: -1_000_000, max: 1_000_000 };
  const start = intOption("start", values.start, line);
  const end = intOption("end", values.end, line);
  if (start !== undefined && end !== undefined && end < start) {
    throw new UsageError(`--end (${end}) is before --start (${start})`);
  }
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-capture" });
  try {
    const r = await capture(client, positionals[0], {
      format: values.ansi ? "ansi" : "text",
      start,
      end,
    });
    await writeOut(r.data);
    return 0;
  } finally {
    await client.close();
  }
}

async function writeOut(text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  try {
    while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
  } catch (e) {
    if (!(e instanceof Deno.errors.BrokenPipe)) throw e; // `| head` is not an error
  }
}
