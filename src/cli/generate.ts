import { connect } from "../client/client.ts";
import { generate, type GenerateParams } from "../client/generate.ts";
import { intOption, numberOption, parse, UsageError } from "./_args.ts";

export const GENERATE_HELP = `umad generate — stream a completion from the daemon's model

Usage: umad generate [options] "prompt"      (no prompt: read it from stdin)

Options:
  --max-tokens N         tokens to generate at most (default 256)
  --temperature T        0 = greedy (default 0.8)
  --top-k N, --top-p P, --min-p P, --repeat-penalty R
  --seed N               same seed, same text (alone or beside other streams)
  --stop TEXT            stop before TEXT (repeatable)
  --priority P           interactive (default) or batch
  --json                 print each event as a JSON line instead of the text
  --socket PATH          daemon socket

Text goes to stdout as it arrives. Ctrl-C cancels the generation.
Exit codes: 0 done, 1 error (e.g. E_NO_MODEL, E_BUSY), 2 usage error, 130 cancelled.`;

/** `umad generate`: returns the exit code. */
export async function generateCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    "max-tokens": { type: "string", short: "n" },
    temperature: { type: "string", short: "t" },
    "top-k": { type: "string" },
    "top-p": { type: "string" },
    "min-p": { type: "string" },
    "repeat-penalty": { type: "string" },
    seed: { type: "string" },
    stop: { type: "string", multiple: true },
    priority: { type: "string" },
    json: { type: "boolean" },
    socket: { type: "string" },
  });
  if (values.help) {
    console.log(GENERATE_HELP);
    return 0;
  }
  let prompt = positionals.join(" ");
  if (positionals.length === 0) {
    if (Deno.stdin.isTerminal()) throw new UsageError("A prompt is required");
    prompt = await new Response(Deno.stdin.readable).text();
  }
  const priority = values.priority;
  if (priority !== undefined && priority !== "interactive" && priority !== "batch") {
    throw new UsageError(`--priority must be "interactive" or "batch", got "${priority}"`);
  }
  const params: GenerateParams = {
    prompt,
    max_tokens: intOption("max-tokens", values["max-tokens"], { min: 1 }),
    temperature: numberOption("temperature", values.temperature),
    top_k: intOption("top-k", values["top-k"]),
    top_p: numberOption("top-p", values["top-p"]),
    min_p: numberOption("min-p", values["min-p"]),
    repeat_penalty: numberOption("repeat-penalty", values["repeat-penalty"]),
    seed: intOption("seed", values.seed, { max: 0xffffffff }),
    stop: values.stop,
    priority,
  };
  for (const k of Object.keys(params) as (keyof GenerateParams)[]) {
    if (params[k] === undefined) delete params[k];
  }

  const client = await connect({
    socket: values.socket,
    reconnect: false,
    client: "umad-generate",
    codec: "json",
  });
  const gen = generate(client, params);
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
    gen.cancel();
  };
  Deno.addSignalListener("SIGINT", onSigint);
  const enc = new TextEncoder();
  const write = async (s: string) => {
    const bytes = enc.encode(s);
    for (let off = 0; off < bytes.length;) off += await Deno.stdout.write(bytes.subarray(off));
  };
  try {
    let last = "";
    for await (const ev of gen) {
      if (values.json) {
        await write(JSON.stringify(ev) + "\n");
        continue;
      }
      if (ev.event === "token") {
        if (ev.text) {
          await write(ev.text);
          last = ev.text;
        }
      } else {
        if (ev.event === "result") {
          await write(ev.text);
          last = ev.text || last;
        }
        if (last && !last.endsWith("\n") && Deno.stdout.isTerminal()) await write("\n");
        if (ev.reason === "cancelled" || ev.reason === "shutdown") {
          console.error(`umad generate: ${ev.reason}`);
        }
      }
    }
    return interrupted ? 130 : 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onSigint);
    await client.close();
  }
}
