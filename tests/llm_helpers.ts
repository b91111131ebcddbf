/** Shared pieces of the LLM tests: tiny models in temp dirs and a fake server Stream. */
import type { Codec, ErrorCode, Message } from "../src/protocol/mod.ts";
import type { Stream } from "../src/protocol/service.ts";
import { type SyntheticModelSpec, TINY_MODEL, writeSyntheticModel } from "../src/llm/mod.ts";
import { createLlmService, type LlmService, type LlmServiceOptions } from "../src/llm/mod.ts";
import { validateRequest } from "../src/protocol/mod.ts";
import { ensureVocabModel, type VocabModelName } from "../src/llm/vocab_models.ts";

let tinyPath: string | null = null;

/** A tiny model written once per test process into a temp dir (removed at exit). */
export function tinyModel(spec: SyntheticModelSpec = TINY_MODEL): string {
  if (tinyPath && spec === TINY_MODEL) return tinyPath;
  const dir = Deno.makeTempDirSync({ prefix: "umad-llm-test-" });
  const path = `${dir}/${spec.name}.gguf`;
  writeSyntheticModel(path, spec);
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* gone */ }
  });
  if (spec === TINY_MODEL) tinyPath = path;
  return path;
}

/** An event a fake stream received. */
export interface Received {
  event: string;
  fields: Message;
}

/** A Stream as the server gives one to a service, recording what is sent. */
export class FakeStream implements Stream {
  readonly id: string;
  readonly connectionId: number;
  readonly codec: Codec = "json";
  readonly events: Received[] = [];
  readonly #controller = new AbortController();
  #ended = false;
  #done: Promise<void>;
  #resolveDone!: () => void;
  /** Simulated outbound cap: when false, send() reports the connection as full. */
  open = true;
  #waiters: (() => void)[] = [];
  failure: { code: ErrorCode; message: string } | null = null;

  constructor(id: string, connectionId = 1) {
    this.id = id;
    this.connectionId = connectionId;
    this.#done = new Promise((r) => (this.#resolveDone = r));
  }

  send(event: string, fields: Message = {}): boolean {
    this.events.push({ event, fields });
    return this.open;
  }
  fail(code: ErrorCode, message: string): void {
    this.failure = { code, message };
    this.events.push({ event: "error", fields: { code, message } });
    this.end();
  }
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#resolveDone();
  }
  get writable(): boolean {
    return this.open;
  }
  get queuedBytes(): number {
    return 0;
  }
  ready(): Promise<void> {
    if (this.open) return Promise.resolve();
    return new Promise((r) => this.#waiters.push(r));
  }
  /** Lets a "full" connection drain. */
  drain() {
    this.open = true;
    for (const w of this.#waiters.splice(0)) w();
  }
  get signal(): AbortSignal {
    return this.#controller.signal;
  }
  abort(reason: "cancelled" | "disconnected" | "shutdown") {
    this.#controller.abort(reason);
  }
  get ended(): boolean {
    return this.#ended;
  }
  /** Resolves when the request has ended (eos, result or error). */
  done(): Promise<void> {
    return this.#done;
  }
  tokens(): { text: string; token_id: number }[] {
    return this.events.filter((e) => e.event === "token").map((e) =>
      e.fields as { text: string; token_id: number }
    );
  }
  text(): string {
    return this.tokens().map((t) => t.text).join("");
  }
  last(): Received {
    return this.events[this.events.length - 1];
  }
}

let nextId = 1;

/** Validates a generate message as the server would and hands it to the service. */
export async function generate(
  llm: LlmService,
  fields: Message,
  stream = new FakeStream(`g${nextId++}`),
): Promise<FakeStream> {
  try {
    const req = validateRequest({ type: "generate", id: stream.id, ...fields }, "json");
    await llm.handle(req, stream);
  } catch (err) {
    const e = err as { code?: ErrorCode; message: string };
    stream.fail(e.code ?? "E_INTERNAL", e.message);
  }
  return stream;
}

/** A service on the tiny model; close it with `await using` or `.close()`. */
export async function tinyService(
  options: LlmServiceOptions = {},
): Promise<LlmService & AsyncDisposable> {
  const llm = await createLlmService({
    model: tinyModel(),
    threads: 1,
    parallel: 4,
    ctx: 4 * 256,
    ...options,
  });
  return Object.assign(llm, { [Symbol.asyncDispose]: () => llm.close!() });
}

/**
 * A service on a random-weight model carrying a real tokenizer (built once into the user
 * cache, from the llama.cpp source fetched once); close it with `await using`.
 */
export async function vocabService(
  name: VocabModelName,
  options: LlmServiceOptions = {},
): Promise<LlmService & AsyncDisposable> {
  const llm = await createLlmService({
    model: await ensureVocabModel(name),
    threads: 1,
    parallel: 4,
    ctx: 4 * 512,
    ...options,
  });
  return Object.assign(llm, { [Symbol.asyncDispose]: () => llm.close!() });
}

/** Sends any validated request (tokenize, detokenize, embed...) and waits for its end. */
export async function request(
  llm: LlmService,
  fields: Message & { type: string },
  stream = new FakeStream(`r${nextId++}`),
): Promise<FakeStream> {
  try {
    await llm.handle(validateRequest({ id: stream.id, ...fields }, "json"), stream);
  } catch (err) {
    const e = err as { code?: ErrorCode; message: string };
    stream.fail(e.code ?? "E_INTERNAL", e.message);
  }
  await stream.done();
  return stream;
}
