import { connect } from "../client/client.ts";
import { waitFor } from "../client/capture.ts";
import { intOption, parse, UsageError } from "./_args.ts";

export const WAIT_HELP = `umad wait — wait until a terminal session shows a pattern

Usage: umad wait SESSION PATTERN [--regex] [--timeout MS] [--socket PATH]

Returns as soon as the session's screen, or output it produces from now on, contains
PATTERN (a literal string; a JavaScript regular expression with --regex), and prints
the matched text. For scripts: \`umad wait build 'BUILD OK' --timeout 60000 && ...\`.

  --regex, -r      PATTERN is a regular expression (multi-line: ^ and $ match lines)
  --timeout MS     give up after MS milliseconds (default 30000)

Exit codes: 0 matched, 1 timed out, the program exited first, or a runtime error;
2 usage error.`;

/** `umad wait`. */
export async function waitCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    regex: { type: "boolean", short: "r" },
    timeout: { type: "string", short: "t" },
    socket: { type: "string" },
  });
  if (values.help) {
    console.log(WAIT_HELP);
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(
      positionals.length > 2 ? "Too many arguments" : "SESSION and PATTERN are required",
    );
  }
  const [session, pattern] = positionals;
  if (pattern === "") throw new UsageError("PATTERN must not be empty");
  if (values.regex) {
    try {
      new RegExp(pattern);
    } catch (e) {
      throw new UsageError(`PATTERN is not a valid regular expression: ${(e as Error).message}`);
    }
  }
  const timeoutMs = intOption("timeout", values.timeout, { max: 24 * 3600 * 1000 }) ?? 30_000;
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-wait" });
  try {
    const r = await waitFor(client, session, pattern, { regex: values.regex, timeoutMs });
    if (r.matched) {
      console.log(r.text ?? "");
      return 0;
    }
    console.error(`umad wait: no match for ${JSON.stringify(pattern)} in session "${session}"`);
    return 1;
  } finally {
    await client.close();
  }
}
