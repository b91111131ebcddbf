import { connect } from "../client/client.ts";
import type { Message } from "../protocol/codec.ts";
import { parse, UsageError } from "./_args.ts";
import { escapeControls } from "./tty_text.ts";

export const STATUS_HELP = `umad status — show the daemon's state and counters

Usage: umad status [--json | --token-file] [--socket PATH]

Prints the daemon's version, pid, model, HTTP endpoints (the socket itself, and the
--http address with where its bearer token is), connections, traffic, errors and the
services' counters and latency percentiles. --json prints hello and metrics as JSON.
--token-file prints only the path of the bearer token --http clients send (exit 1
when the daemon serves no --http with a token), for scripts:
  export OPENAI_API_KEY=$(cat "$(umad status --token-file)")`;

function flatten(prefix: string, value: unknown, out: [string, string][]): void {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value as Message)) {
      // Histogram buckets are for Prometheus (GET /metrics); the percentiles say it here.
      if (k === "buckets") continue;
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
    "token-file": { type: "boolean" },
    socket: { type: "string" },
  }, false);
  if (values.help) {
    console.log(STATUS_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-status" });
  try {
    const hello = client.hello;
    if (values["token-file"]) {
      const file = (hello.http as Message | undefined)?.token_file;
      if (typeof file !== "string") {
        console.error("umad status: the daemon serves no --http with a bearer token");
        return 1;
      }
      console.log(file);
      return 0;
    }
    const metrics = await client.metrics();
    if (values.json) {
      console.log(JSON.stringify({ hello, metrics }, null, 2));
      return 0;
    }
    const rows: [string, string][] = [];
    flatten("", { server: `${hello.server} ${hello.version}`, socket: client.socketPath }, rows);
    if (hello.model) flatten("model", hello.model, rows);
    const http = hello.http as Message | undefined;
    if (http) {
      rows.push(["http.socket", `http://localhost (curl --unix-socket ${http.socket})`]);
      rows.push(["http.tcp", http.tcp ? String(http.tcp) : "off (umad serve --http HOST:PORT)"]);
      if (http.tcp) rows.push(["http.auth", String(http.auth)]);
      if (http.token_file) rows.push(["http.token_file", String(http.token_file)]);
    }
    flatten("", metrics, rows);
    const width = Math.max(...rows.map(([k]) => k.length));
    // Values such as the model's name come from files: shown, never obeyed, on a terminal.
    const show = Deno.stdout.isTerminal() ? escapeControls : (v: string) => v;
    for (const [k, v] of rows) console.log(`${show(k.padEnd(width))}  ${show(v)}`);
    return 0;
  } finally {
    await client.close();
  }
}
