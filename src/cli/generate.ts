import { type Client, connect } from "../client/client.ts";
import { generate, type GenerateParams } from "../client/generate.ts";
import type { ChatMessage } from "../protocol/messages.ts";
import { intOption, numberOption, parse, UsageError } from "./_args.ts";
import { escapeControlsKeepLines } from "./tty_text.ts";

/** The text of `umad generate --help`. */
export const GENERATE_HELP = `umad generate — stream a completion from the daemon's model

Usage: umad generate [options] "prompt"      (no prompt: read it from stdin)
       umad generate --system TEXT "question" (a chat: the model's template applies)
       umad generate --chat [--system TEXT]   (one user turn per line of stdin; a REPL on a terminal)
       umad generate --messages FILE [--chat] (a JSON array of {role, content} to start from)

Options:
  --max-tokens N         tokens to generate at most (default 256)
  --temperature T        0 = greedy (default 0.8)
  --top-k N, --top-p P, --min-p P, --repeat-penalty R
  --seed N               same seed, same text (alone or beside other streams)
  --stop TEXT            stop before TEXT (repeatable)
  --priority P           interactive (default) or batch
  --system TEXT          a system message before the conversation
  --chat                 read user turns from stdin, one per line, and print each answer
  --messages FILE        the conversation so far, as JSON [{"role": "user", "content": "..."}]
  --json                 print each event as a JSON line instead of the text
  --socket PATH          daemon socket

Text goes to stdout as it arrives and ends with a newline; on a terminal, control
characters in it are shown escaped (\\x1b), never obeyed. Ctrl-C cancels the generation.
Exit codes: 0 done (also when stdout closes early, as with | head), 1 error (e.g.
E_NO_MODEL, E_BUSY), 2 usage error, 130 cancelled.`;

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
    system: { type: "string" },
    chat: { type: "boolean" },
    messages: { type: "string" },
    json: { type: "boolean" },
    socket: { type: "string" },
  });
  if (values.help) {
    console.log(GENERATE_HELP);
    return 0;
  }
  const priority = values.priority;
  if (priority !== undefined && priority !== "interactive" && priority !== "batch") {
    throw new UsageError(`--priority must be "interactive" or "batch", got "${priority}"`);
  }
  const sampling: GenerateParams = {
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
  for (const k of Object.keys(sampling) as (keyof GenerateParams)[]) {
    if (sampling[k] === undefined) delete sampling[k];
  }
  const history: ChatMessage[] = values.messages ? readMessages(values.messages) : [];
  if (values.system !== undefined) history.unshift({ role: "system", content: values.system });
  const isChat = values.chat || values.messages !== undefined || values.system !== undefined;
  let prompt: string | undefined = positionals.length ? positionals.join(" ") : undefined;
  if (prompt === undefined && !values.chat && !(values.messages && history.length)) {
    if (Deno.stdin.isTerminal()) throw new UsageError("A prompt is required");
    prompt = await new Response(Deno.stdin.readable).text();
  }

  const client = await connect({
    socket: values.socket,
    reconnect: false,
    client: "umad-generate",
    codec: "json",
  });
  const printer = new Printer(values.json ?? false);
  try {
    if (!isChat) return await printer.answer(client, { ...sampling, prompt: prompt ?? "" });
    if (prompt !== undefined) history.push({ role: "user", content: prompt });
    if (!values.chat) return await printer.answer(client, { ...sampling, messages: history });
    // --chat: the turns given so far are answered first, then one turn per line of stdin.
    if (history.at(-1)?.role === "user") {
      const code = await printer.chatTurn(client, sampling, history);
      if (code !== 0) return code;
    }
    const repl = Deno.stdin.isTerminal();
    for await (const line of readLines(Deno.stdin.readable, repl ? "> " : undefined)) {
      if (line.trim() === "") continue;
      history.push({ role: "user", content: line });
      const code = await printer.chatTurn(client, sampling, history);
      if (code !== 0 && !(repl && code === 130)) return code;
    }
    if (repl) await writeAll(Deno.stdout, new TextEncoder().encode("\n")); // after the last "> "
    return 0;
  } finally {
    await client.close();
  }
}

/** Reads `--messages FILE`: a JSON array of `{role, content}`. */
function readMessages(path: string): ChatMessage[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new UsageError(`--messages "${path}" cannot be read: ${(e as Error).message}`, {
      cause: e,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--messages "${path}" is not JSON: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const ok = Array.isArray(value) &&
    value.every((m) =>
      m !== null && typeof m === "object" && typeof m.role === "string" &&
      typeof m.content === "string"
    );
  if (!ok) {
    throw new UsageError(
      `--messages "${path}" must be a JSON array of {"role": string, "content": string}`,
    );
  }
  return (value as ChatMessage[]).map((m) => ({ role: m.role, content: m.content }));
}

/** Lines of a byte stream (without their `\n`), writing `prompt` before each when given. */
async function* readLines(
  input: ReadableStream<Uint8Array>,
  prompt?: string,
): AsyncGenerator<string> {
  const show = async () => {
    if (prompt !== undefined) await writeAll(Deno.stdout, new TextEncoder().encode(prompt));
  };
  let buffered = "";
  await show();
  for await (const chunk of input.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      const line = buffered.slice(0, nl).replace(/\r$/, "");
      buffered = buffered.slice(nl + 1);
      yield line;
      await show();
    }
  }
  if (buffered !== "") yield buffered;
}

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  for (let off = 0; off < bytes.length;) off += await w.write(bytes.subarray(off));
}

/** Streams answers to stdout: escaped on a terminal, each ending with a newline. */
class Printer {
  readonly #json: boolean;
  readonly #tty = Deno.stdout.isTerminal();
  readonly #enc = new TextEncoder();

  constructor(json: boolean) {
    this.#json = json;
  }

  #write(text: string): Promise<void> {
    return writeAll(
      Deno.stdout,
      this.#enc.encode(this.#tty ? escapeControlsKeepLines(text) : text),
    );
  }

  /** A chat turn: answers `history`, then adds the answer to it as the assistant's. */
  async chatTurn(client: Client, sampling: GenerateParams, history: ChatMessage[]) {
    const parts: string[] = [];
    const code = await this.answer(client, { ...sampling, messages: [...history] }, parts);
    history.push({ role: "assistant", content: parts.join("") });
    return code;
  }

  /** One generation; returns the exit code (130 when Ctrl-C cancelled it). */
  async answer(client: Client, params: GenerateParams, parts: string[] = []): Promise<number> {
    const gen = generate(client, params);
    let interrupted = false;
    const onSigint = () => {
      interrupted = true;
      gen.cancel();
    };
    Deno.addSignalListener("SIGINT", onSigint);
    try {
      let last = "";
      for await (const ev of gen) {
        if (this.#json) {
          await writeAll(Deno.stdout, this.#enc.encode(JSON.stringify(ev) + "\n"));
          continue;
        }
        const text = ev.event === "token" || ev.event === "result" ? ev.text : "";
        if (text) {
          parts.push(text);
          await this.#write(text);
          last = text;
        }
        if (ev.event !== "token") {
          if (!last.endsWith("\n")) await this.#write("\n");
          if (ev.reason === "cancelled" || ev.reason === "shutdown") {
            console.error(`umad generate: ${ev.reason}`);
          }
        }
      }
      return interrupted ? 130 : 0;
    } finally {
      Deno.removeSignalListener("SIGINT", onSigint);
    }
  }
}
