import process from "node:process";
import { type Codec, decodePayload, encodeMessageFrame, type Message } from "../protocol/codec.ts";
import { concat } from "../protocol/bytes.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { socketPathFor } from "../protocol/socket_path.ts";
import { ConnectionClosedError, errorFromEvent, TimeoutError, type UmadError } from "./errors.ts";
import { EventStream } from "./event_stream.ts";
import { dial, type Transport } from "./transport.ts";
import { assertSafeSocket } from "./socket_check.ts";

/** Reconnect policy: exponential backoff with jitter. */
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
}

/** The daemon's `hello` reply. */
export interface ServerHello extends Message {
  server: string;
  version: string;
  protocol: number;
  pid: number;
}

type Pending = { stream: EventStream };

const END_EVENTS = new Set(["eos", "result"]);
/** Default end of a stream: `eos` or `result` (an `error` always ends it). */
export const isEndOfGeneration = (ev: Message): boolean => END_EVENTS.has(ev.event as string);

function resolveReconnect(r: ConnectOptions["reconnect"]): Required<ReconnectOptions> | null {
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

/**
 * A connection to umad. Requests are multiplexed by id; streams are async iterators.
 * When the connection drops, requests in flight fail with
 * {@linkcode ConnectionClosedError} and the client redials with backoff; requests
 * made meanwhile wait for the new connection.
 */
export class Client {
  readonly socketPath: string;
  readonly codec: Codec;
  #hello: ServerHello | null = null;
  #socket: Transport | null = null;
  #decoder = new FrameDecoder(64 << 20);
  #pending = new Map<string, Pending>();
  #nextId = 1;
  #out: Uint8Array[] = [];
  #flushScheduled = false;
  #closed = false;
  #reconnect: Required<ReconnectOptions> | null;
  #onReconnect = new Set<() => void>();
  #onDisconnect = new Set<(e: Error) => void>();
  #lastServerError: UmadError | null = null;
  readonly #options: ConnectOptions;

  private constructor(options: ConnectOptions) {
    this.#options = options;
    this.socketPath = socketPathFor(
      options.socket,
      process.env,
      typeof process.getuid === "function" ? process.getuid() : 0,
    );
    this.codec = options.codec ?? "msgpack";
    this.#reconnect = resolveReconnect(options.reconnect);
  }

  /** Connects and says `hello`. */
  static async connect(options: ConnectOptions = {}): Promise<Client> {
    const client = new Client(options);
    await client.#dial();
    return client;
  }

  /** The daemon's latest `hello` reply. */
  get hello(): ServerHello {
    if (!this.#hello) throw new ConnectionClosedError("Not connected");
    return this.#hello;
  }

  /** True while a connection is up. */
  get connected(): boolean {
    return this.#socket !== null && this.#hello !== null;
  }

  async #dial(): Promise<void> {
    assertSafeSocket(this.socketPath, this.#options.socket); // before a byte is sent
    const timeoutMs = this.#options.timeoutMs ?? 5000;
    this.#decoder = new FrameDecoder(64 << 20);
    let socket: Transport | null = null;
    // What arrives before the transport is in place (an E_BUSY and the close after it).
    const early: Uint8Array[] = [];
    let closedEarly = false;
    const dialing = dial(this.socketPath, {
      onData: (chunk) => {
        if (socket === null) early.push(chunk);
        else if (this.#socket === socket) this.#onData(chunk);
      },
      onClose: () => {
        if (socket === null) closedEarly = true;
        else this.#onClose(socket);
      },
    });
    let dialTimer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      dialTimer = setTimeout(
        () => reject(new TimeoutError(`Connecting to "${this.socketPath}" timed out`)),
        timeoutMs,
      );
    });
    try {
      socket = await Promise.race([dialing, timedOut]);
    } catch (e) {
      // A connection that completes after the timeout is closed at once.
      dialing.then((t) => t.destroy(), () => {});
      if (e instanceof TimeoutError) throw e;
      throw new ConnectionClosedError(
        `Cannot connect to umad at "${this.socketPath}": ${(e as Error).message}`,
        { cause: e },
      );
    } finally {
      clearTimeout(dialTimer);
    }
    this.#socket = socket;
    this.#lastServerError = null;
    for (const chunk of early) this.#onData(chunk);
    if (closedEarly) {
      this.#socket = null;
      throw this.#lastServerError ??
        new ConnectionClosedError(`Connection to umad at "${this.socketPath}" closed`);
    }
    const stream = this.#open({ type: "hello", client: this.#options.client ?? "umad-client" });
    const timer = setTimeout(
      () => stream.fail(new TimeoutError("No hello from the daemon")),
      timeoutMs,
    );
    try {
      const { value } = await stream.next();
      this.#hello = value as ServerHello;
    } catch (e) {
      const err = this.#lastServerError ?? (e as Error);
      this.#socket = null;
      socket.destroy();
      this.#failPending(err);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  #failPending(err: Error): void {
    for (const [, p] of this.#pending) p.stream.fail(err);
    this.#pending.clear();
  }

  #onData(chunk: Uint8Array): void {
    try {
      for (const payload of this.#decoder.push(chunk)) {
        const { message } = decodePayload(payload);
        const id = message.id;
        const pending = typeof id === "string" ? this.#pending.get(id) : undefined;
        if (pending) {
          if (pending.stream.push(message)) this.#pending.delete(id as string);
        } else if (message.event === "error" && (id === null || id === undefined)) {
          this.#lastServerError = errorFromEvent(message);
        }
      }
    } catch {
      // A stream that cannot be decoded cannot be resynchronised: drop the connection.
      this.#socket?.destroy();
    }
  }

  #onClose(socket: Transport): void {
    if (this.#socket !== socket) return;
    this.#socket = null;
    this.#hello = null;
    this.#out = [];
    const err = this.#lastServerError ??
      new ConnectionClosedError(`Connection to umad at "${this.socketPath}" closed`);
    this.#failPending(err);
    for (const cb of this.#onDisconnect) cb(err);
    if (!this.#closed && this.#reconnect) void this.#dialLoop(this.#reconnect);
  }

  async #dialLoop(policy: Required<ReconnectOptions>): Promise<void> {
    for (let attempt = 0; attempt < policy.maxAttempts && !this.#closed; attempt++) {
      const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** attempt);
      const delay = base * (1 + policy.jitter * (2 * Math.random() - 1));
      await new Promise((r) => setTimeout(r, delay));
      if (this.#closed) return;
      try {
        await this.#dial();
        for (const cb of this.#onReconnect) cb();
        return;
      } catch {
        // try again after the next delay
      }
    }
    // Gave up: behave as a client without reconnect from now on.
    this.#reconnect = null;
    this.#out = [];
    this.#failPending(new ConnectionClosedError("Gave up reconnecting to umad"));
  }

  /** Calls `cb` after each successful reconnect; returns an unsubscribe function. */
  onReconnect(cb: () => void): () => void {
    this.#onReconnect.add(cb);
    return () => this.#onReconnect.delete(cb);
  }

  /** Calls `cb` when the connection drops; returns an unsubscribe function. */
  onDisconnect(cb: (error: Error) => void): () => void {
    this.#onDisconnect.add(cb);
    return () => this.#onDisconnect.delete(cb);
  }

  #open(message: Message, isLast: (ev: Message) => boolean = () => true): EventStream {
    const id = `c${this.#nextId++}`;
    const stream = new EventStream(id, isLast, () => {
      if (this.#pending.delete(id) && message.type === "generate") {
        this.send({ type: "cancel", target: id });
      }
    });
    this.#pending.set(id, { stream });
    this.#write({ ...message, id });
    return stream;
  }

  #check(): Error | null {
    if (this.#closed) return new ConnectionClosedError("Client is closed");
    if (!this.#socket && !this.#reconnect) {
      return new ConnectionClosedError(`Not connected to umad at "${this.socketPath}"`);
    }
    return null;
  }

  /**
   * Sends a request and resolves with its one reply (rejects on `error`). While the
   * client is reconnecting, the request waits for the new connection.
   */
  async request(message: Message): Promise<Message> {
    const { value } = await this.stream(message, () => true).next();
    return value as Message;
  }

  /**
   * Sends a request whose reply is a stream of events, ending at the first event
   * for which `isLast` is true (default: `eos` or `result`) or at an `error` (thrown).
   * Breaking out of the loop cancels a generation.
   *
   * @example
   * ```ts ignore
   * for await (const ev of client.stream({ type: "generate", prompt: "Hi", max_tokens: 8 })) {
   *   if (ev.event === "token") console.log(ev.text);
   * }
   * ```
   */
  stream(message: Message, isLast: (ev: Message) => boolean = isEndOfGeneration): EventStream {
    const err = this.#check();
    if (err) {
      const failed = new EventStream("", isLast, () => {});
      failed.fail(err);
      return failed;
    }
    return this.#open(message, isLast);
  }

  /** Sends a request that gets no reply unless it fails (`pty.input`, `cancel`). */
  send(message: Message): void {
    if (!this.#check()) this.#write(message);
  }

  /** Round trip of one `ping`, in ms. */
  async ping(): Promise<number> {
    const t0 = performance.now();
    await this.request({ type: "ping" });
    return performance.now() - t0;
  }

  /** The daemon's counters and histograms. */
  async metrics(): Promise<Message> {
    const reply = await this.request({ type: "metrics" });
    return reply.metrics as Message;
  }

  #write(message: Message): void {
    this.#out.push(encodeMessageFrame(message, this.codec));
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    const socket = this.#socket;
    // While reconnecting, frames wait here for the new connection.
    if (!socket || this.#out.length === 0) return;
    const parts = this.#out;
    this.#out = [];
    socket.write(concat(parts));
  }

  /** Closes the connection for good; streams in flight fail. */
  close(): Promise<void> {
    this.#closed = true;
    const socket = this.#socket;
    if (!socket) return Promise.resolve();
    this.#flush();
    return socket.end(200);
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
