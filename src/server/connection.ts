import {
  type Codec,
  decodePayload,
  detectCodec,
  encodeMessageFrame,
  FrameDecoder,
  isFramingError,
  isWireCode,
  type Message,
  type Request,
  requestIdOf,
  UmadError,
  umaError,
  umaInvalidUtf8Id,
  validateRequest,
} from "../protocol/mod.ts";
import type { AbortReason, Stream, WireErrorCode } from "../protocol/service.ts";
import type { EventFields, EventName } from "../protocol/events.ts";
import { concat } from "../protocol/bytes.ts";
import { type HttpSession, sniffProtocol } from "../http/mod.ts";
import { delay } from "../protocol/async.ts";

/** Limits one connection enforces. */
export interface ConnectionLimits {
  /** Largest frame payload accepted (`--max-frame`). */
  maxFrame: number;
  /** Outbound bytes queued before producers are pushed back and reading pauses. */
  maxQueuedBytes: number;
  /** Requests in flight at once. */
  maxInflight: number;
  /** Requests per second sustained (a token bucket refilled at this rate). */
  rateLimit: number;
  /** The bucket's size: requests accepted back to back after a quiet spell. */
  rateBurst: number;
  /** Close a connection that sends no complete frame for this long (ms); 0 = never. */
  idleTimeoutMs: number;
}

/** What a connection asks of the server. */
export interface ConnectionHost {
  /** Routes a validated request (everything but `cancel`, which the connection owns). */
  dispatch(conn: Connection, request: Request, stream: Stream): void;
  /** Counts a request, by type. */
  countRequest(type: string): void;
  /** Counts an error sent, by code. */
  countError(code: WireErrorCode): void;
  /** Counts traffic. */
  countIn(frames: number, bytes: number): void;
  countOut(frames: number, bytes: number): void;
  /** The connection is gone; its streams' signals were aborted. */
  closed(conn: Connection): void;
  /**
   * Takes over a connection that speaks HTTP (its first bytes, already read, are
   * `head`; a TCP connection is HTTP from its first byte).
   */
  serveHttp(conn: Connection, socket: Deno.Conn, head: Uint8Array): HttpSession;
  log(level: "debug" | "info" | "warn" | "error", message: string): void;
}

const READ_SIZE = 64 * 1024;
/** Coalesced writes are cut at this size so one slow write never holds a huge buffer. */
const MAX_WRITE = 256 * 1024;

class RequestStream implements Stream {
  readonly #conn: Connection;
  // Created on first use: most requests (ping, input) never look at their signal.
  #controller: AbortController | undefined;
  #abortReason: AbortReason | undefined;
  #ended = false;
  /** `uma`: a request in UMA Serve's form, whose errors carry UMA's codes. */
  constructor(
    conn: Connection,
    readonly id: string,
    readonly codec: Codec,
    readonly uma = false,
  ) {
    this.#conn = conn;
  }
  get connectionId(): number {
    return this.#conn.id;
  }
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#abortReason) this.#controller.abort(this.#abortReason);
    }
    return this.#controller.signal;
  }
  get writable(): boolean {
    return this.#conn.writable;
  }
  get queuedBytes(): number {
    return this.#conn.queuedBytes;
  }
  send<E extends EventName>(event: E, fields: EventFields[E]): boolean {
    const msg: Message = { event, id: this.id || null, ...fields };
    return this.#conn.sendMessage(msg, this.codec);
  }
  fail(code: WireErrorCode, message: string): void {
    if (this.#ended) return;
    if (this.uma) ({ code, message } = umaError(code, message));
    this.#conn.sendError(this.id || null, code, message, this.codec);
    this.end();
  }
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#conn.release(this);
  }
  ready(): Promise<void> {
    return this.#conn.ready();
  }
  abort(reason: AbortReason): void {
    if (this.#abortReason) return;
    this.#abortReason = reason;
    this.#controller?.abort(reason);
  }
}

/**
 * One client connection: reads frames, validates requests, tracks the ids in flight,
 * and owns the outbound queue. Queued frames are coalesced into one write per turn
 * with one write in flight; past `maxQueuedBytes` producers are told to wait and the
 * connection stops reading new requests, so a client that never reads costs bounded
 * memory and slows nobody else.
 */
export class Connection {
  readonly id: number;
  readonly #conn: Deno.Conn;
  readonly #host: ConnectionHost;
  readonly #limits: ConnectionLimits;
  readonly #decoder: FrameDecoder;
  readonly #inflight = new Map<string, RequestStream>();
  #out: Uint8Array[] = [];
  #outBytes = 0;
  #writing = false;
  #closed = false;
  #waiters: (() => void)[] = [];
  #tokens: number;
  #lastRefill = performance.now();
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #stopReading = false;
  /** Bytes read while it is not yet known whether the peer speaks frames or HTTP. */
  #head: Uint8Array | null = new Uint8Array(0);
  /** Set once the connection was handed to the HTTP gateway. */
  #http: HttpSession | undefined;
  readonly connectedAt = Date.now();
  client: string | undefined;

  /** `transport: "tcp"` (the `--http` port) serves HTTP only. */
  constructor(
    id: number,
    conn: Deno.Conn,
    host: ConnectionHost,
    limits: ConnectionLimits,
    readonly transport: "unix" | "tcp" = "unix",
  ) {
    this.id = id;
    this.#conn = conn;
    this.#host = host;
    this.#limits = limits;
    this.#decoder = new FrameDecoder(limits.maxFrame);
    this.#tokens = limits.rateBurst;
    if (limits.idleTimeoutMs > 0) {
      this.#idleTimer = setTimeout(() => {
        this.#idleTimer = undefined;
        this.#host.log("info", `connection ${id}: no request within ${limits.idleTimeoutMs} ms`);
        this.sendError(
          null,
          "E_IDLE_TIMEOUT",
          `No request within ${limits.idleTimeoutMs} ms (--idle-timeout): closing`,
          "json",
        );
        void this.#flushThenClose();
      }, limits.idleTimeoutMs);
    }
  }

  /** Under the outbound cap and open. */
  get writable(): boolean {
    return !this.#closed && this.#outBytes < this.#limits.maxQueuedBytes;
  }
  get queuedBytes(): number {
    return this.#outBytes;
  }
  get closed(): boolean {
    return this.#closed;
  }
  get inflight(): number {
    return this.#inflight.size;
  }

  /** Resolves once under the cap again, or closed. */
  ready(): Promise<void> {
    if (this.writable || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Reads until the peer closes or a framing error; then closes. */
  async serve(): Promise<void> {
    if (this.transport === "tcp") return this.#handOff(new Uint8Array(0));
    try {
      // One buffer for every read: frames are decoded before the next read, and
      // payloads whose decoded fields could be views into it are copied first.
      const buf = new Uint8Array(READ_SIZE);
      while (!this.#closed && !this.#stopReading) {
        if (!this.writable) await this.ready();
        if (this.#closed) break;
        const n = await this.#conn.read(buf);
        if (n === null) {
          // Peer closed its side: stop its streams, deliver what is queued, close.
          this.abortAll("disconnected");
          void this.#flushThenClose();
          return;
        }
        let chunk: Uint8Array = buf.subarray(0, n);
        if (this.#head !== null) {
          // The first bytes decide: an HTTP request line, or frames (PROTOCOL.md).
          const head = concat([this.#head, chunk.slice()]);
          const kind = sniffProtocol(head);
          if (kind === "undecided") {
            this.#head = head;
            continue;
          }
          this.#head = null;
          if (kind === "http") return this.#handOff(head);
          chunk = head;
        }
        this.#onBytes(chunk);
      }
    } catch (e) {
      if (!this.#closed) this.#host.log("debug", `connection ${this.id}: read ended: ${e}`);
      this.close();
    }
  }

  #handOff(head: Uint8Array): void {
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined; // node:http's header and keep-alive timeouts apply now
    this.#http = this.#host.serveHttp(this, this.#conn, head);
  }

  #onBytes(chunk: Uint8Array): void {
    this.#host.countIn(0, chunk.length);
    try {
      for (const payload of this.#decoder.push(chunk)) {
        this.#host.countIn(1, 0);
        if (this.#idleTimer !== undefined) {
          clearTimeout(this.#idleTimer);
          this.#idleTimer = undefined;
        }
        this.#onFrame(payload);
        if (this.#closed) return;
      }
    } catch (e) {
      if (e instanceof UmadError && isWireCode(e.code) && isFramingError(e.code)) {
        // The header alone decides this: nothing of the payload is read.
        this.sendError(null, e.code, e.message, "json");
        this.#host.log("debug", `connection ${this.id}: ${e.message}; closing`);
        void this.#flushThenClose();
        return;
      }
      throw e;
    }
  }

  #onFrame(payload: Uint8Array): void {
    let codec: Codec = detectCodec(payload);
    let id: string | null = null;
    try {
      // MessagePack `bin` fields decode as views of the payload: detach them from
      // the read buffer, which the next read overwrites.
      const decoded = decodePayload(codec === "msgpack" ? payload.slice() : payload);
      codec = decoded.codec;
      id = requestIdOf(decoded.message) ?? null;
      if (!this.takeToken()) {
        throw new UmadError(
          "E_RATE_LIMITED",
          `Connection exceeded ${this.#limits.rateLimit} requests per second`,
        );
      }
      const request = validateRequest(decoded.message, codec);
      if (request.type === "ping") {
        // The hot path of latency probes: no stream, no id bookkeeping.
        this.#host.countRequest("ping");
        const pong: Message = { event: "pong", id: request.id ?? null };
        if (request.t !== undefined) pong.t = request.t;
        this.sendMessage(pong, codec);
        return;
      }
      if (request.type === "cancel") return this.#cancel(request.target, request.id, codec);
      const rid = request.id ?? "";
      if (rid !== "") {
        if (this.#inflight.has(rid)) {
          throw new UmadError(
            "E_PROTO_BAD_REQUEST",
            `Request id ${JSON.stringify(rid)} is already in flight on this connection`,
          );
        }
        if (this.#inflight.size >= this.#limits.maxInflight) {
          throw new UmadError(
            "E_BUSY",
            `Connection has ${this.#limits.maxInflight} requests in flight already`,
          );
        }
      }
      const stream = new RequestStream(
        this,
        rid,
        codec,
        request.type === "generate" && request.uma === true,
      );
      if (rid !== "") this.#inflight.set(rid, stream);
      this.#host.dispatch(this, request, stream);
    } catch (e) {
      if (e instanceof UmadError && e.code === "E_PROTO_INVALID_JSON" && codec === "json") {
        // UMA Serve answers its own request form's undecodable text with its code.
        const umaId = umaInvalidUtf8Id(payload);
        if (umaId !== undefined) {
          this.sendError(umaId, "E_PROTO_001", `invalid utf-8 in the request: ${e.message}`, codec);
          return;
        }
      }
      if (e instanceof UmadError && isWireCode(e.code)) {
        this.sendError(id, e.code, e.message, codec);
      } else {
        this.#host.log("error", `connection ${this.id}: ${(e as Error).stack ?? e}`);
        this.sendError(id, "E_INTERNAL", `Request failed: ${(e as Error).message}`, codec);
      }
    }
  }

  #cancel(target: string, id: string | undefined, codec: Codec): void {
    const stream = this.#inflight.get(target);
    if (!stream) {
      this.sendError(
        id ?? target,
        "E_NOT_FOUND",
        `Cannot cancel ${JSON.stringify(target)}: no such request in flight`,
        codec,
      );
      return;
    }
    stream.abort("cancelled");
  }

  /** Counts HTTP traffic with the daemon's byte counters (frames count their own). */
  countTraffic(read: number, written: number): void {
    if (read) this.#host.countIn(0, read);
    if (written) this.#host.countOut(0, written);
  }

  /** Takes one request from the connection's rate limit (token bucket); false when over it. */
  takeToken(): boolean {
    const now = performance.now();
    const { rateLimit, rateBurst } = this.#limits;
    this.#tokens = Math.min(
      rateBurst,
      this.#tokens + ((now - this.#lastRefill) * rateLimit) / 1000,
    );
    this.#lastRefill = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** A stream ended: its id is free again. */
  release(stream: RequestStream): void {
    if (this.#inflight.get(stream.id) === stream) this.#inflight.delete(stream.id);
  }

  /** Queues an error reply. */
  sendError(id: string | null, code: WireErrorCode, message: string, codec: Codec): void {
    this.#host.countError(code);
    this.sendMessage({ event: "error", id, code, message }, codec);
  }

  /** Encodes and queues one message; false when over the cap. */
  sendMessage(message: Message, codec: Codec): boolean {
    if (this.#closed) return false;
    this.#enqueue(encodeMessageFrame(message, codec));
    return this.writable;
  }

  #enqueue(frame: Uint8Array): void {
    this.#out.push(frame);
    this.#outBytes += frame.length;
    this.#host.countOut(1, 0);
    if (!this.#writing) {
      this.#writing = true;
      queueMicrotask(() => void this.#flush());
    }
  }

  async #flush(): Promise<void> {
    try {
      while (this.#out.length > 0 && !this.#closed) {
        let buf: Uint8Array;
        let taken = 0;
        if (this.#out.length === 1 || this.#out[0].length >= MAX_WRITE) {
          buf = this.#out.shift()!;
          taken = buf.length;
        } else {
          let n = 0;
          let count = 0;
          while (count < this.#out.length && n + this.#out[count].length <= MAX_WRITE) {
            n += this.#out[count++].length;
          }
          buf = new Uint8Array(n);
          for (let i = 0; i < count; i++) {
            buf.set(this.#out[i], taken);
            taken += this.#out[i].length;
          }
          this.#out.splice(0, count);
        }
        let off = 0;
        while (off < buf.length) off += await this.#conn.write(buf.subarray(off));
        this.#outBytes -= taken;
        this.#host.countOut(0, taken);
        if (this.writable && this.#waiters.length > 0) this.#wake();
      }
    } catch (e) {
      if (!this.#closed) this.#host.log("debug", `connection ${this.id}: write failed: ${e}`);
      this.close();
    } finally {
      this.#writing = false;
    }
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves when everything queued is written, or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.#http) return this.#http.drain(timeoutMs);
    const until = performance.now() + timeoutMs;
    while ((this.#out.length > 0 || this.#writing) && !this.#closed && performance.now() < until) {
      await delay(5);
    }
  }

  async #flushThenClose(): Promise<void> {
    this.#stopReading = true;
    await this.drain(1000);
    this.close();
  }

  /** Aborts every stream with `reason` (streams stay in flight until they end). */
  abortAll(reason: AbortReason): void {
    this.#http?.abortAll(reason);
    for (const s of [...this.#inflight.values()]) s.abort(reason);
  }

  /** Closes the socket; aborts streams with "disconnected". Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#out = [];
    this.#outBytes = 0;
    this.#http?.close();
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    this.abortAll("disconnected");
    this.#inflight.clear();
    this.#wake();
    this.#host.closed(this);
  }
}
