// Test helpers for the PTY service: fake streams that record events, and waiting.
import type { ErrorCode, Message, Request } from "../src/protocol/mod.ts";
import { validateRequest } from "../src/protocol/mod.ts";
import type { Service, Stream } from "../src/protocol/service.ts";
import { delay } from "../src/protocol/async.ts";
import { type Client, connect } from "../src/client/client.ts";

/** One recorded event. */
export interface Recorded extends Message {
  event: string;
}

/** A Stream that records what it is sent; `writable` can be turned off to act slow. */
export class FakeStream implements Stream {
  readonly id: string;
  readonly connectionId: number;
  readonly codec = "msgpack" as const;
  events: Recorded[] = [];
  ended = false;
  failure: { code: ErrorCode; message: string } | undefined;
  #writable = true;
  #readyWaiters: (() => void)[] = [];
  #abort = new AbortController();
  #listeners: ((e: Recorded) => void)[] = [];
  /** Bytes "queued" while not writable (the fake has no real cap). */
  queuedBytes = 0;

  constructor(id: string, connectionId: number) {
    this.id = id;
    this.connectionId = connectionId;
  }
  send(event: string, fields: Message = {}): boolean {
    const e = { event, id: this.id, ...fields } as Recorded;
    this.events.push(e);
    for (const l of this.#listeners) l(e);
    return this.#writable;
  }
  fail(code: ErrorCode, message: string): void {
    this.failure = { code, message };
    this.send("error", { code, message });
    this.ended = true;
  }
  end(): void {
    this.ended = true;
  }
  get writable(): boolean {
    return this.#writable && !this.#abort.signal.aborted;
  }
  setWritable(w: boolean): void {
    this.#writable = w;
    if (w) {
      const ws = this.#readyWaiters;
      this.#readyWaiters = [];
      for (const r of ws) r();
    }
  }
  ready(): Promise<void> {
    if (this.writable || this.#abort.signal.aborted) return Promise.resolve();
    return new Promise((r) => this.#readyWaiters.push(r));
  }
  get signal(): AbortSignal {
    return this.#abort.signal;
  }
  abort(reason: "cancelled" | "disconnected" | "shutdown"): void {
    this.#abort.abort(reason);
    this.setWritable(true);
  }
  onEvent(l: (e: Recorded) => void): void {
    this.#listeners.push(l);
  }
  /** Output bytes after the snapshot (pty.output data concatenated). */
  output(): Uint8Array {
    const parts = this.events.filter((e) => e.event === "pty.output").map((e) =>
      e.data as Uint8Array
    );
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
  /** Snapshot text plus output text. */
  text(): string {
    const dec = new TextDecoder();
    return this.events.filter((e) => e.event === "pty.output" || e.event === "pty.snapshot")
      .map((e) => dec.decode(e.data as Uint8Array)).join("");
  }
  /** Waits until `pred` holds for the recorded events. */
  async until(pred: (events: Recorded[]) => boolean, ms = 5000, what = "condition"): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred(this.events)) {
      if (Date.now() > deadline) {
        throw new Error(
          `Timed out waiting for ${what}; events: ${
            JSON.stringify(this.events.map((e) => e.event)).slice(0, 500)
          }; text: ${JSON.stringify(this.text().slice(-300))}`,
        );
      }
      await delay(10);
    }
  }
}

let nextId = 1;

/** Sends a request (as a client would) to a service; returns its stream. */
export async function call(
  service: Service,
  message: Message,
  connectionId = 1,
): Promise<FakeStream> {
  const id = (message.id as string | undefined) ?? `r${nextId++}`;
  const stream = new FakeStream(id, connectionId);
  let req: Request;
  try {
    req = validateRequest({ ...message, id }, "msgpack");
    await service.handle(req, stream);
  } catch (e) {
    const err = e as { code?: ErrorCode; message: string };
    stream.fail(err.code ?? "E_INTERNAL", err.message);
  }
  return stream;
}

/** Polls `pred` until true or throws after `ms`. */
export async function waitUntil(pred: () => boolean, ms = 5000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await delay(10);
  }
}

/** Bytes of a string. */
export function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** A daemon with the PTY service, for end-to-end tests. */
export interface PtyDaemon {
  socket: string;
  pid: number;
  stderr(): string;
  stop(): Promise<unknown>;
}

/** Starts `main.ts serve --no-model` on a socket in a temporary directory. */
export async function startPtyDaemon(args: string[] = []): Promise<PtyDaemon> {
  const { startDaemon } = await import("./_daemon.ts");
  return startDaemon(args);
}

/** Runs `fn` with a fresh PTY daemon; on failure its stderr's tail is printed. Stops it after. */
export async function withPtyDaemon(
  fn: (d: PtyDaemon) => Promise<void>,
  args: string[] = [],
): Promise<void> {
  const d = await startPtyDaemon(args);
  try {
    await fn(d);
  } catch (e) {
    console.error(d.stderr().slice(-2000));
    throw e;
  } finally {
    await d.stop();
  }
}

/** {@linkcode withPtyDaemon} with a client library connection to it. */
export function withPtyClient(
  fn: (c: Client, d: PtyDaemon) => Promise<void>,
  args: string[] = [],
): Promise<void> {
  return withPtyDaemon(async (d) => {
    const c = await connect({ socket: d.socket, reconnect: false });
    try {
      await fn(c, d);
    } finally {
      await c.close();
    }
  }, args);
}

/** Descriptors in `dir` (a /proc/<pid>/fd) that are PTY masters or slaves. */
export function ptyFds(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    try {
      const target = Deno.readLinkSync(`${dir}/${e.name}`);
      if (/^\/dev\/(ptmx|pts\/)/.test(target)) out.push(`${e.name} -> ${target}`);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
