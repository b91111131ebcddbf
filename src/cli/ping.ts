import { connect } from "../client/client.ts";
import { percentile } from "../protocol/samples.ts";
import { intOption, parse, UsageError } from "./_args.ts";

export const PING_HELP = `umad ping — measure the round trip to the daemon

Usage: umad ping [--count N] [--socket PATH] [--json]

Sends N pings one after another (default 10) and prints n, p50 and p99 in milliseconds.`;

/** `umad ping`. */
export async function pingCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    count: { type: "string", short: "c" },
    socket: { type: "string" },
    json: { type: "boolean" },
  }, false);
  if (values.help) {
    console.log(PING_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const count = intOption("count", values.count, { min: 1, max: 10_000_000 }) ?? 10;
  const client = await connect({ socket: values.socket, reconnect: false, client: "umad-ping" });
  try {
    const times: number[] = [];
    for (let i = 0; i < count; i++) times.push(await client.ping());
    times.sort((a, b) => a - b);
    const r = (x: number) => Math.round(x * 1000) / 1000;
    const result = {
      n: count,
      p50_ms: r(percentile(times, 0.5)),
      p99_ms: r(percentile(times, 0.99)),
    };
    console.log(
      values.json
        ? JSON.stringify(result)
        : `n=${result.n} p50=${result.p50_ms} ms p99=${result.p99_ms} ms`,
    );
    return 0;
  } finally {
    await client.close();
  }
}
