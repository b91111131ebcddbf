import { connect } from "../client/client.ts";
import type { Message } from "../protocol/codec.ts";
import { parse, UsageError } from "./_args.ts";

export const STATUS_HELP = `umad status — show the daemon's state and counters

Usage: umad status [--json] [--socket PATH]

Prints the daemon's version, pid, model, connections, traffic, errors and the
services' counters and latency percentiles. --json prints hello and metrics as JSON.`;

function flatten(prefix: string, value: unknown, out: [string, string][]): void {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value as Message)) {
      flatten(prefix ? `${prefix}.${k}` : k, v, out);
    }
  } else if (Array.isArray(value) && value.some((v) => v !== null && typeof v === "object")) {
    // Lists of records (model.devices): one line per field, indexed.
    value.forEach((v, i) => flatten(`${prefix}[${i}]`, v, out));
  } else if (Array.isArray(value) && value.every((v) => typeof v === "string")) {
    out.push([prefix, value.join(" ")]);
  } else {
    out.push([prefix, Array.isArray(value) ? JSON.stringify(value) : String(value)]);
  }
}

/** `umad status`. */
export async function statusCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    json: { type: "boolean" },
    socket: { type: "string" },
  }, false);
  if (values.help) {
    console.log(STATUS_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-status" });
  try {
    const metrics = await client.metrics();
    const hello = client.hello;
    if (values.json) {
      console.log(JSON.stringify({ hello, metrics }, null, 2));
      return 0;
    }
    const rows: [string, string][] = [];
    flatten("", { server: `${hello.server} ${hello.version}`, socket: client.socketPath }, rows);
    if (hello.model) flatten("model", hello.model, rows);
    flatten("", metrics, rows);
    const width = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
    return 0;
  } finally {
    await client.close();
  }
}
