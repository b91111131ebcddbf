/**
 * `Client`: one connection to umad, requests multiplexed by id, streams as async
 * iterators, one reconnect loop. Runtime-free: the socket comes from a
 * {@linkcode Dialer} (by default the runtime's Unix socket, `dial.ts`).
 *
 * @module
 */
import {
  backoff,
  type BackoffPolicy,
  type Clock,
  delay,
  systemClock,
  withTimeout,
} from "../protocol/async.ts";
import { decodeBase64 } from "../protocol/base64.ts";
import { concat } from "../protocol/bytes.ts";
import { type Codec, decodePayload, encodeMessageFrame, type Message } from "../protocol/codec.ts";
import type { Event, EventName, ReplyOf } from "../protocol/events.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import type { RequestInput, RequestType } from "../protocol/messages.ts";
import { defaultSocketPath, dialUnix } from "./dial.ts";
import { ConnectionClosedError, errorFromEvent, UmadError } from "./errors.ts";
import { EventStream } from "./event_stream.ts";
import type { Dialer, Transport } from "./transport.ts";
import { assertSafeSocket } from "./socket_check.ts";

/** Reconnect policy: exponential back-off with jitter ({@linkcode backoff}). */
export interface ReconnectOptions {
  /** First delay after a drop, ms (default 50). */
  initialDelayMs?: number;
  /** Largest delay, ms (default 5000). */
  maxDelayMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Random spread, 0..1, of each delay (default 0.2). */
  jitter?: number;
  /** Give up after this many failed attempts in a row (default: never). */
  maxAttempts?: number;
}

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /** Socket path; default by PROTOCOL.md's rules ($UMAD_SOCKET, $XDG_RUNTIME_DIR, /tmp). */
  socket?: string;
  /** Codec of requests (replies follow it): "msgpack" (default) or "json". */
  codec?: Codec;
  /** Name sent in `hello`. */
  client?: string;
  /** Reconnect by itself when the connection drops (default true). */
  reconnect?: boolean | ReconnectOptions;
  /** Time allowed to connect and get `hello`, ms (default 5000). */
  timeoutMs?: number;
  /** Opens the byte channel (default: the runtime's Unix socket). */
  dialer?: Dialer;
  /** Time for timeouts and back-off (default the system's; tests pass a manual one). */
  clock?: Clock;
}

/** The daemon's `hello` reply. */
export type ServerHello = Event<"hello">;

/** A request as a client writes it, for any request type (see {@linkcode RequestInput}). */
export type AnyRequest = RequestInput<RequestType>;

/** The events of a stream end at one of these, by request type; other requests get one reply. */
const STREAM_ENDS: { readonly [T in RequestType]?: readonly EventName[] } = {
  generate: ["eos", "result"],
  "pty.attach": ["pty.exit", "pty.detached"],
  watch: [],
};

/** Where the events of a request of this type end: see {@linkcode Client.stream}. */
function endOf(type: unknown): (ev: Message) => boolean {
  const ends = STREAM_ENDS[type as RequestType] as readonly unknown[] | undefined;
  return ends ? (ev) => ends.includes(ev.event) : () => true;
}

/**
 * True for the last event of a generation (`eos` or `result`).
 *
 * @example
 * ```ts
 * import { isEndOfGeneration } from "./client.ts";
 * console.log(isEndOfGeneration({ event: "eos" }), isEndOfGeneration({ event: "token" })); // true false
 * ```
 */
export const isEndOfGeneration = (ev: Message): boolean =>
  ev.event === "eos" || ev.event === "result";

type Policy = BackoffPolicy & { maxAttempts: number };

function resolveReconnect(r: ConnectOptions["reconnect"]): Policy | null {
  if (r === false) return null;
  const o = r === true || r === undefined ? {} : r;
  return {
    initialDelayMs: o.initialDelayMs ?? 50,
    maxDelayMs: o.maxDelayMs ?? 5000,
    factor: o.factor ?? 2,
    jitter: o.jitter ?? 0.2,
    maxAttempts: o.maxAttempts ?? Infinity,
  };
}

/** One connection of the client's life: a transport, its frame decoder, why it closed. */
interface Link {
  readonly transport: Transport;
  readonly decoder: FrameDecoder;
  /** An error the daemon sent with no id (E_BUSY, E_IDLE_TIMEOUT...): why it will close. */
  serverError: UmadError | null;
  /** Resolves when its read loop has ended. */
  readEnded: Promise<void>;
}

/** A request waiting for events. */
interface Pending {
  readonly stream: EventStream<Message>;
  /** The link its frame went out on; null while queued for the next connection. */
  link: Link | null;
}

/** Events whose `data` is bytes (base64 text in JSON). */
const BYTE_EVENTS: ReadonlySet<unknown> = new Set(["pty.output", "pty.snapshot"]);

/** Flush at once past this many queued bytes instead of waiting for the microtask. */
const FLUSH_BYTES = 256 * 1024;
/** Time allowed to close a connection cleanly before it is dropped, ms. */
const CLOSE_GRACE_MS = 200;

/** Reports an error as uncaught without unwinding the caller (as EventTarget does). */
function reportListenerError(error: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (report) report(error);
  else {
    setTimeout(() => {
      throw error;
    }, 0);
  }
}

/** Calls each listener; one that throws does not stop the others nor the client. */
function emit<A extends unknown[]>(listeners: Set<(...args: A) => void>, ...args: A): void {
  for (const cb of [...listeners]) {
    try {
      cb(...args);
    } catch (e) {
      reportListenerError(e);
    }
  }
}

/**
 * A connection to umad. Requests are multiplexed by id; streams are async iterators.
 * When the connection drops, requests in flight fail with
 * {@linkcode ConnectionClosedError} and one reconnect loop redials with back-off;
 * requests made meanwhile wait for the new connection (or fail when the loop gives up
 * or the client is closed).
 */
export class Client {
  /** The socket this client dials. */
  readonly socketPath: string;
  /** The codec of its requests. */
  readonly codec: Codec;
  readonly #options: ConnectOptions;
  readonly #dialer: Dialer;
  readonly #clock: Clock;
  #policy: Policy | null;
  #link: Link | null = null;
  #hello: ServerHello | null = null;
  #pending = new Map<string, Pending>();
  #nextId = 1;
  /** Frames not yet written, and the requests they carry (to mark them sent). */
  #out: Uint8Array[] = [];
  #outBytes = 0;
  #unsent: Pending[] = [];
  #flushScheduled = false;
  /** The reconnect loop, while one runs (single flight). */
  #dialing: Promise<void> | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;
  /** Aborted by `close()`: stops a back-off wait or a handshake in progress. */
  readonly #stop = new AbortController();
  #onReconnect = new Set<() => void>();
  #onDisconnect = new Set<(e: Error) => void>();

  private constructor(options: ConnectOptions) {
    this.#options = options;
    this.socketPath = options.dialer && options.socket === undefined
      ? "(injected)"
      : defaultSocketPath(options.socket);
    this.codec = options.codec ?? "msgpack";
    this.#dialer = options.dialer ?? dialUnix;
    this.#clock = options.clock ?? systemClock;
    this.#policy = resolveReconnect(options.reconnect);
  }

  /**
   * Connects and says `hello`. A failed first connection leaves nothing behind: no
   * socket, no timer, no reconnect loop.
   */
  static async connect(options: ConnectOptions = {}): Promise<Client> {
    const client = new Client(options);
    await client.#handshake();
    return client;
  }

  /** The daemon's latest `hello` reply. */
  get hello(): ServerHello {
    if (!this.#hello) throw new ConnectionClosedError("Not connected");
    return this.#hello;
  }

  /** True while a connection is up. */
  get connected(): boolean {
    return this.#link !== null;
  }

  /** Dials and says hello; on success the link becomes the client's connection. */
  async #handshake(): Promise<Link> {
    // PROTOCOL.md's client-side check of a real socket, before a byte is sent.
    if (!this.#options.dialer) assertSafeSocket(this.socketPath, this.#options.socket);
    const timeoutMs = this.#options.timeoutMs ?? 5000;
    const timing = { clock: this.#clock, signal: this.#stop.signal };
    const dialing = this.#dialer(this.socketPath);
    let transport: Transport;
    try {
      transport = await withTimeout(dialing, timeoutMs, {
        ...timing,
        message: `Connecting to umad at "${this.socketPath}" timed out`,
      });
    } catch (e) {
      // A connection that completes after the timeout is closed at once.
      dialing.then((t) => t.destroy(), () => {});
      // Timeouts, close(), and a dialer's own refusals (an unsafe socket) keep their class.
      if (e instanceof UmadError) throw e;
      throw new ConnectionClosedError(
        `Cannot connect to umad at "${this.socketPath}": ${(e as Error).message}`,
        { cause: e },
      );
    }
    const link: Link = {
      transport,
      decoder: new FrameDecoder(64 << 20),
      serverError: null,
      readEnded: Promise.resolve(),
    };
    link.readEnded = this.#read(link);
    const id = `c${this.#nextId++}`;
    const stream = new EventStream<Message>(id, () => true, () => {});
    this.#pending.set(id, { stream, link });
    const hello = { type: "hello", id, client: this.#options.client ?? "umad-client" };
    transport.send(encodeMessageFrame(hello, this.codec));
    try {
      const { value } = await withTimeout(stream.next(), timeoutMs, {
        ...timing,
        message: `No hello from umad at "${this.socketPath}"`,
      });
      if (value?.event !== "hello") throw new ConnectionClosedError("No hello from umad");
      this.#hello = value as ServerHello;
    } catch (e) {
      this.#pending.delete(id);
      transport.destroy();
      await link.readEnded;
      throw link.serverError ?? e;
    }
    this.#link = link;
    this.#flush();
    return link;
  }

  /** Reads one link until it closes, routing events to their requests. */
  async #read(link: Link): Promise<void> {
    try {
      for await (const chunk of link.transport) {
        for (const payload of link.decoder.push(chunk)) this.#route(link, payload);
      }
    } catch {
      // A stream that cannot be decoded cannot be resynchronised: drop the connection.
      link.transport.destroy();
    }
    this.#lost(link);
  }

  #route(link: Link, payload: Uint8Array): void {
    const { message } = decodePayload(payload);
    const id = message.id;
    const pending = typeof id === "string" ? this.#pending.get(id) : undefined;
    if (pending?.link === link) {
      // JSON carries terminal bytes as base64; the events' types promise bytes.
      if (typeof message.data === "string" && BYTE_EVENTS.has(message.event)) {
        message.data = decodeBase64(message.data);
      }
      if (pending.stream.push(message)) this.#pending.delete(id as string);
    } else if (message.event === "error" && (id === null || id === undefined)) {
      link.serverError = errorFromEvent(message);
    }
  }

  /** A link closed: its requests fail; if it was the connection, reconnect. */
  #lost(link: Link): void {
    const err = link.serverError ??
      new ConnectionClosedError(`Connection to umad at "${this.socketPath}" closed`);
    for (const [id, p] of this.#pending) {
      if (p.link !== link) continue;
      this.#pending.delete(id);
      p.stream.fail(err);
    }
    if (this.#link !== link) return;
    this.#link = null;
    this.#hello = null;
    if (this.#closed) return;
    emit(this.#onDisconnect, err);
    if (this.#policy) void this.#reconnect();
    else this.#failAll(err);
  }

  /** The one reconnect loop: a second call returns the loop already running. */
  #reconnect(): Promise<void> {
    return this.#dialing ??= this.#dialLoop();
  }

  async #dialLoop(): Promise<void> {
    const policy = this.#policy!;
    let attempt = 0;
    while (!this.#closed) {
      if (attempt >= policy.maxAttempts) break;
      try {
        await delay(backoff(policy, attempt++), {
          clock: this.#clock,
          signal: this.#stop.signal,
        });
        const link = await this.#handshake();
        // The new link may already have dropped; then keep trying.
        if (this.#link !== link) continue;
        this.#dialing = null;
        emit(this.#onReconnect);
        return;
      } catch {
        // closed (the loop condition sees it), or this attempt failed: next delay
      }
    }
    this.#dialing = null;
    if (this.#closed) return;
    // Gave up: behave as a client without reconnect from now on.
    this.#policy = null;
    this.#failAll(
      new ConnectionClosedError(`Gave up reconnecting to umad at "${this.socketPath}"`),
    );
  }

  /** Fails every request, sent or queued, and drops queued frames. */
  #failAll(err: Error): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    this.#out = [];
    this.#outBytes = 0;
    this.#unsent = [];
    for (const p of all) p.stream.fail(err);
  }

  /** Calls `cb` after each successful reconnect; returns an unsubscribe function. */
  onReconnect(cb: () => void): () => void {
    this.#onReconnect.add(cb);
    return () => this.#onReconnect.delete(cb);
  }

  /**
   * Calls `cb` when the connection drops (not after {@linkcode Client.close}); returns
   * an unsubscribe function.
   */
  onDisconnect(cb: (error: Error) => void): () => void {
    this.#onDisconnect.add(cb);
    return () => this.#onDisconnect.delete(cb);
  }

  #unavailable(): Error | null {
    if (this.#closed) return new ConnectionClosedError("Client is closed");
    if (!this.#link && !this.#policy) {
      return new ConnectionClosedError(`Not connected to umad at "${this.socketPath}"`);
    }
    return null;
  }

  #open(message: Message, isLast: (ev: Message) => boolean): EventStream<Message> {
    const err = this.#unavailable();
    if (err) {
      const failed = new EventStream<Message>("", isLast, () => {});
      failed.fail(err);
      return failed;
    }
    const id = typeof message.id === "string" ? message.id : `c${this.#nextId++}`;
    if (this.#pending.has(id)) {
      const failed = new EventStream<Message>(id, isLast, () => {});
      failed.fail(
        new UmadError("E_USAGE", `Request id ${JSON.stringify(id)} is already in flight`),
      );
      return failed;
    }
    const cancellable = STREAM_ENDS[message.type as RequestType] !== undefined;
    const stream = new EventStream<Message>(id, isLast, () => {
      // Leaving a stream early stops it at the daemon: a generation is cancelled, an
      // attach detaches, a watch ends.
      if (this.#pending.delete(id) && cancellable) this.#send({ type: "cancel", target: id });
    });
    const pending: Pending = { stream, link: null };
    this.#pending.set(id, pending);
    this.#unsent.push(pending);
    this.#write({ ...message, id });
    return stream;
  }

  /**
   * Sends a request and resolves with its first reply (rejects on `error`). While the
   * client is reconnecting, the request waits for the new connection.
   *
   * @example
   * ```ts ignore
   * const { sessions } = await client.request({ type: "pty.list" });
   * const { tokens } = await client.request({ type: "tokenize", text: "Hello" });
   * ```
   */
  async request<T extends RequestType>(
    request: RequestInput<T> & { type: T },
  ): Promise<ReplyOf<T>> {
    return await this.rawRequest(request as Message) as ReplyOf<T>;
  }

  /**
   * Sends a request whose reply is a stream of events. It ends after the request
   * type's last event (`generate`: `eos` or `result`; `pty.attach`: `pty.exit` or
   * `pty.detached`; `watch`: never, until left; others: the first reply), at an
   * `error` (thrown), or where `isLast` says. Leaving the loop early cancels the
   * request (a generation stops, an attach detaches, a watch ends).
   *
   * @example
   * ```ts ignore
   * for await (const ev of client.stream({ type: "generate", prompt: "Hi", max_tokens: 8 })) {
   *   if (ev.event === "token") console.log(ev.text);
   * }
   * ```
   */
  stream<T extends RequestType>(
    request: RequestInput<T> & { type: T },
    isLast?: (event: ReplyOf<T>) => boolean,
  ): EventStream<ReplyOf<T>> {
    const last = (isLast as ((ev: Message) => boolean) | undefined) ?? endOf(request.type);
    return this.#open(request as Message, last) as unknown as EventStream<ReplyOf<T>>;
  }

  /** Sends a request that gets no reply unless it fails (`pty.input`, `cancel`). */
  send<T extends RequestType>(request: RequestInput<T> & { type: T }): void {
    this.rawSend(request as Message);
  }

  /**
   * {@linkcode Client.request} without the contract's types: any map goes out as it
   * is (for tests that send malformed requests on purpose).
   */
  async rawRequest(message: Message): Promise<Message> {
    const { value } = await this.#open(message, () => true).next();
    return value as Message;
  }

  /**
   * {@linkcode Client.stream} without the contract's types. Without `isLast` the
   * stream ends where the request type's events end.
   */
  rawStream(message: Message, isLast?: (event: Message) => boolean): EventStream<Message> {
    return this.#open(message, isLast ?? endOf(message.type));
  }

  /** {@linkcode Client.send} without the contract's types. */
  rawSend(message: Message): void {
    if (!this.#unavailable()) this.#send(message);
  }

  #send(message: Message): void {
    this.#write(message);
  }

  /**
   * Round trip of one `ping`, in ms.
   *
   * @example
   * ```ts ignore
   * console.log(await client.ping(), "ms");
   * ```
   */
  async ping(): Promise<number> {
    const t0 = performance.now();
    await this.request({ type: "ping" });
    return performance.now() - t0;
  }

  /** The daemon's counters and histograms (`metrics.metrics`). */
  async metrics(): Promise<Record<string, unknown>> {
    return (await this.request({ type: "metrics" })).metrics;
  }

  /**
   * The model's tokens for `text` (control-token text stays text unless `special`).
   *
   * @example
   * ```ts ignore
   * const { tokens, pieces } = await client.tokenize("Hello world", { pieces: true });
   * ```
   */
  tokenize(
    text: string,
    options: Omit<RequestInput<"tokenize">, "type" | "id" | "text"> = {},
  ): Promise<ReplyOf<"tokenize">> {
    return this.request({ ...options, type: "tokenize", text });
  }

  /**
   * The text of `tokens`.
   *
   * @example
   * ```ts ignore
   * const { text } = await client.detokenize([15043, 3186]);
   * ```
   */
  async detokenize(tokens: number[]): Promise<string> {
    return (await this.request({ type: "detokenize", tokens })).text;
  }

  /**
   * One embedding per input string.
   *
   * @example
   * ```ts ignore
   * const { embeddings } = await client.embed(["a cat", "a dog"]);
   * ```
   */
  embed(input: string | string[]): Promise<ReplyOf<"embed">> {
    return this.request({ type: "embed", input });
  }

  #write(message: Message): void {
    const frame = encodeMessageFrame(message, this.codec);
    this.#out.push(frame);
    this.#outBytes += frame.length;
    if (this.#outBytes >= FLUSH_BYTES) this.#flush();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => {
        this.#flushScheduled = false;
        this.#flush();
      });
    }
  }

  #flush(): void {
    const link = this.#link;
    // While reconnecting, frames wait here for the new connection.
    if (!link || this.#out.length === 0) return;
    const parts = this.#out;
    this.#out = [];
    this.#outBytes = 0;
    for (const p of this.#unsent) p.link = link;
    this.#unsent = [];
    link.transport.send(parts.length === 1 ? parts[0] : concat(parts));
  }

  /**
   * Closes the client for good: queued frames are sent if connected, every request
   * still waiting fails with {@linkcode ConnectionClosedError}, a reconnect loop stops.
   * Resolves when the connection is closed; calling it again returns the same promise.
   */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    const link = this.#link;
    this.#flush();
    this.#stop.abort(new ConnectionClosedError("Client is closed"));
    this.#failAll(new ConnectionClosedError("Client is closed"));
    this.#closing = (async () => {
      await this.#dialing;
      if (link) {
        await link.transport.close(CLOSE_GRACE_MS);
        await link.readEnded;
      }
    })();
    return this.#closing;
  }
}

/**
 * Connects to umad and says `hello`.
 *
 * @example
 * ```ts ignore
 * const client = await connect({ socket: "/tmp/umad-1000/umad.sock" });
 * console.log(await client.ping());
 * await client.close();
 * ```
 */
export function connect(options: ConnectOptions = {}): Promise<Client> {
  return Client.connect(options);
}
