/**
 * The HTTP gateway: `node:http`'s server (llhttp: keep-alive, chunked encoding, header
 * limits, slowloris timeouts) serving connections the daemon hands it — Unix socket
 * connections whose first bytes were an HTTP request line, and every `--http` TCP
 * connection. Routes turn OpenAI's, Ollama's and llama-server's requests into the
 * daemon's own validated requests, dispatched to the same services, scheduler, limits
 * and metrics as framed ones.
 *
 * @module
 */
import { delay } from "../protocol/async.ts";
import http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Message } from "../protocol/codec.ts";
import { UmadError } from "../protocol/errors.ts";
import type { Event, EventFields } from "../protocol/events.ts";
import { type Request, validateRequest } from "../protocol/messages.ts";
import type { AbortReason, Stream } from "../protocol/service.ts";
import { ConnSocket } from "./conn_socket.ts";
import { type ApiFamily, errorBody, failureOf, HttpError } from "./http_errors.ts";
import { HttpStream, type ResponseSink } from "./http_stream.ts";

/** What the gateway asks of the daemon. */
export interface HttpHost {
  /** Routes a validated request to the service that serves its type (as for frames). */
  dispatch(request: Request, stream: Stream): void;
  /** Writes a line to the daemon's log. */
  log(level: "debug" | "info" | "warn" | "error", message: string): void;
}

/** The daemon's connection an HTTP session runs on. */
export interface HttpConnection {
  /** The connection's number (services see it as `Stream.connectionId`). */
  readonly id: number;
  /** TCP connections need the bearer token; the Unix socket's permissions guard it. */
  readonly transport: "unix" | "tcp";
  /** Takes one request from the connection's rate limit; false when over it. */
  takeToken(): boolean;
  /** Closes the daemon's side (idempotent). */
  close(): void;
  /** Counts bytes read from and written to the socket. */
  countTraffic(read: number, written: number): void;
}

/** An HTTP connection as the daemon's connection sees it after the hand-off. */
export interface HttpSession {
  /** Aborts every request in flight on it (their generations end). */
  abortAll(reason: AbortReason): void;
  /** Resolves when responses in flight are written, or after `timeoutMs`. */
  drain(timeoutMs: number): Promise<void>;
  /** Closes the socket. */
  close(): void;
}

/** Limits and settings of the gateway. */
export interface HttpGatewayOptions {
  /** The daemon: where requests go, where log lines go. */
  host: HttpHost;
  /** Largest request body (`--max-frame`): above it, 413. */
  maxBodyBytes: number;
  /** Bytes a response may queue before generations for it pause (`--max-queue`). */
  maxQueuedBytes: number;
  /** Headers must arrive within this, and idle keep-alive connections close after it (ms). */
  idleTimeoutMs: number;
  /** Largest request head (request line and headers): above it, 431. Default 64 KiB. */
  maxHeaderBytes?: number;
  /** The bearer token TCP requests must carry; null: none needed (`--http-no-auth`). */
  token: string | null;
  /** The default `max_tokens` (`--max-tokens`), reported in `/props`. */
  defaultMaxTokens?: number;
}

/** What a route handler gets for one request. */
export interface HttpContext {
  /** The request, as `node:http` parsed it. */
  readonly req: IncomingMessage;
  /** Its response. */
  readonly res: ServerResponse;
  /** The request target (absolute-form targets included). */
  readonly url: URL;
  /** The request's JSON body (an object), or an empty object when it has none. */
  readonly body: Record<string, unknown>;
  /** Route parameters (`/v1/models/:model`). */
  readonly params: Record<string, string>;
  /**
   * Validates `input` as a framed request (the `id` is chosen here) and dispatches it;
   * a validation error throws {@linkcode UmadError} (400). The stream is aborted when
   * the client goes away before the response ends.
   */
  call(input: Message): HttpStream;
  /** The daemon's `hello` (the model, the server's version). */
  hello(): Promise<EventFields["hello"]>;
  /** The daemon's `metrics` map. */
  metrics(): Promise<Record<string, unknown>>;
  /** The gateway's own settings. */
  readonly gateway: HttpGatewayInfo;
}

/** Settings a handler may report (`/props`). */
export interface HttpGatewayInfo {
  /** `--max-tokens`, when given. */
  readonly defaultMaxTokens: number | undefined;
}

/** One route. */
export interface Route {
  /** The method it answers (`GET` routes answer `HEAD` too). */
  method: "GET" | "POST" | "DELETE";
  /** A literal path, or one with `:name` segments. */
  path: string;
  /** The API it belongs to: decides the shape of its errors. */
  family: ApiFamily;
  /** Answers the request through `ctx.res`; a throw becomes an error response. */
  handler(ctx: HttpContext): Promise<void> | void;
}

interface Session {
  conn: HttpConnection;
  socket: ConnSocket;
  streams: Set<HttpStream>;
  aborted: AbortReason | null;
  active: number;
}

const DEFAULT_MAX_HEADER_BYTES = 64 * 1024;

/**
 * Serves HTTP on connections handed to it; see the module doc. One gateway per daemon.
 *
 * @example
 * ```ts ignore
 * const gateway = new HttpGateway({ host: server, maxBodyBytes: 1 << 20,
 *   maxQueuedBytes: 4 << 20, idleTimeoutMs: 30_000, token: null }, routes);
 * const session = gateway.adopt(connection, denoConn, firstBytes);
 * ```
 */
export class HttpGateway {
  readonly #opts: HttpGatewayOptions;
  readonly #server: http.Server;
  readonly #routes: { route: Route; parts: string[] }[];
  readonly #sessions = new Map<ConnSocket, Session>();
  #closing = false;
  #nextStream = 1;
  #stats = {
    connections: 0,
    requests: 0,
    streams: 0,
    clientErrors: 0,
    unauthorized: 0,
  };
  #byStatus: Record<string, number> = {};
  #byRoute: Record<string, number> = {};

  /** A gateway serving `routes` under `options`' limits. */
  constructor(options: HttpGatewayOptions, routes: Route[]) {
    this.#opts = options;
    this.#routes = routes.map((route) => ({ route, parts: route.path.split("/") }));
    const idle = options.idleTimeoutMs > 0 ? options.idleTimeoutMs : 0;
    this.#server = http.createServer({
      maxHeaderSize: options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES,
      // Slowloris: the head must be complete within the idle timeout, the body within twice it.
      headersTimeout: idle,
      requestTimeout: idle * 2,
      keepAliveTimeout: idle,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(idle / 4) || 1000)),
      // The daemon's own connection ids, counts and limits apply; node's defaults stay off.
      requireHostHeader: false,
    }, (req, res) => void this.#onRequest(req, res));
    // node:http keeps connections alive and checks its timeouts only while it "listens";
    // its connections come from the daemon's own listeners here.
    Object.defineProperty(this.#server, "listening", { get: () => !this.#closing });
    this.#server.emit("listening");
    this.#server.on("clientError", (err: Error & { code?: string }, socket: ConnSocket) => {
      this.#onClientError(err, socket);
    });
  }

  /** Serves HTTP on `raw`, whose first bytes (already read) are `head`. */
  adopt(conn: HttpConnection, raw: Deno.Conn, head: Uint8Array): HttpSession {
    const socket = new ConnSocket(raw, head, (r, w) => conn.countTraffic(r, w));
    if (head.length) conn.countTraffic(head.length, 0);
    const session: Session = { conn, socket, streams: new Set(), aborted: null, active: 0 };
    this.#sessions.set(socket, session);
    this.#stats.connections++;
    socket.on("close", () => {
      this.#sessions.delete(socket);
      for (const s of session.streams) s.abort("disconnected");
      conn.close();
    });
    socket.on("error", () => {}); // the close that follows does the cleanup
    this.#server.emit("connection", socket);
    return {
      abortAll: (reason) => {
        session.aborted = reason;
        for (const s of session.streams) s.abort(reason);
      },
      drain: (timeoutMs) => drainSession(session, timeoutMs),
      close: () => socket.destroy(),
    };
  }

  /** This gateway's part of `metrics`, under `http`. */
  metrics(): Message {
    let active = 0;
    for (const s of this.#sessions.values()) active += s.streams.size;
    return {
      http: {
        connections_now: this.#sessions.size,
        connections_total: this.#stats.connections,
        requests_total: this.#stats.requests,
        active_calls: active,
        client_errors: this.#stats.clientErrors,
        unauthorized: this.#stats.unauthorized,
        responses: { ...this.#byStatus },
        routes: { ...this.#byRoute },
      },
    };
  }

  /** Stops keep-alive and timeout checks; sockets close with their connections. */
  close(): void {
    this.#closing = true;
    try {
      this.#server.close(() => {});
    } catch { /* it never listened on a socket of its own */ }
  }

  #onClientError(err: Error & { code?: string }, socket: ConnSocket): void {
    this.#stats.clientErrors++;
    const session = this.#sessions.get(socket);
    this.#opts.host.log(
      "debug",
      `http connection ${session?.conn.id ?? "?"}: ${err.code ?? ""} ${err.message}`,
    );
    if (socket.destroyed) return;
    const status = err.code === "HPE_HEADER_OVERFLOW"
      ? 431
      : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
      ? 408
      : err.code === "ECONNRESET"
      ? 0
      : 400;
    if (status === 0 || !socket.writable) {
      socket.destroy();
      return;
    }
    const reason = http.STATUS_CODES[status] ?? "Error";
    const body = JSON.stringify({ error: { code: status, message: `${reason}: ${err.message}` } });
    this.#count(status, "client_error");
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${new TextEncoder().encode(body).length}\r\n\r\n${body}`,
    );
    socket.destroySoon();
  }

  #count(status: number, route: string): void {
    this.#byStatus[status] = (this.#byStatus[status] ?? 0) + 1;
    this.#byRoute[route] = (this.#byRoute[route] ?? 0) + 1;
  }

  #match(method: string, path: string): { route: Route; params: Record<string, string> } | {
    allowed: string[];
  } {
    const parts = path.split("/");
    const allowed: string[] = [];
    for (const { route, parts: want } of this.#routes) {
      if (want.length !== parts.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < want.length && ok; i++) {
        if (want[i].startsWith(":")) {
          if (parts[i] === "") ok = false;
          else params[want[i].slice(1)] = decodeURIComponent(parts[i]);
        } else if (want[i] !== parts[i]) ok = false;
      }
      if (!ok) continue;
      if (route.method === method || (method === "HEAD" && route.method === "GET")) {
        return { route, params };
      }
      allowed.push(route.method);
    }
    return { allowed };
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const session = this.#sessions.get(req.socket as unknown as ConnSocket);
    if (!session) {
      res.destroy();
      return;
    }
    this.#stats.requests++;
    session.active++;
    res.once("close", () => session.active--);
    let url: URL;
    try {
      // Absolute-form targets arrive through proxies and fetch over a Unix socket.
      url = new URL(req.url ?? "/", "http://localhost");
    } catch {
      url = new URL("http://localhost/");
    }
    const found = this.#match(req.method ?? "GET", url.pathname);
    const family: ApiFamily = "route" in found
      ? found.route.family
      : url.pathname.startsWith("/v1/")
      ? "openai"
      : url.pathname.startsWith("/api/")
      ? "ollama"
      : "llama";
    const routeName = "route" in found ? `${found.route.method} ${found.route.path}` : "unmatched";
    res.once("finish", () => this.#count(res.statusCode, routeName));
    try {
      if (session.conn.transport === "tcp" && this.#opts.token !== null) {
        if (!authorized(req.headers.authorization, this.#opts.token)) {
          this.#stats.unauthorized++;
          res.setHeader("WWW-Authenticate", 'Bearer realm="umad"');
          throw new HttpError(
            401,
            "Missing or wrong bearer token: send 'Authorization: Bearer <token>' with the " +
              "token from the umad.token file beside the daemon's socket",
            "invalid_api_key",
          );
        }
      }
      if (!session.conn.takeToken()) {
        throw new UmadError(
          "E_RATE_LIMITED",
          "Connection exceeded its request rate (--rate-limit)",
        );
      }
      if (req.method === "OPTIONS") {
        res.writeHead(204, { Allow: "GET, HEAD, POST, OPTIONS" }).end();
        return;
      }
      if (!("route" in found)) {
        if (found.allowed.length) {
          res.setHeader("Allow", [...new Set(found.allowed)].join(", "));
          throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`);
        }
        throw new HttpError(404, `Invalid URL (${req.method} ${url.pathname})`, "not_found");
      }
      if (this.#closing || session.aborted) {
        throw new HttpError(503, "The daemon is shutting down", "shutdown");
      }
      const body = found.route.method === "POST"
        ? await readJsonBody(req, res, this.#opts.maxBodyBytes)
        : {};
      await found.route.handler(this.#context(session, req, res, url, body, found.params));
    } catch (e) {
      this.#fail(res, family, e);
    }
  }

  #context(
    session: Session,
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    body: Record<string, unknown>,
    params: Record<string, string>,
  ): HttpContext {
    const info: HttpGatewayInfo = { defaultMaxTokens: this.#opts.defaultMaxTokens };
    const sink = sinkOf(res, this.#opts.maxQueuedBytes);
    const call = (input: Message): HttpStream => {
      const id = `http-${this.#nextStream++}`;
      const request = validateRequest({ ...input, id }, "json");
      const stream = new HttpStream(id, session.conn.id, sink, () => {
        session.streams.delete(stream);
        res.off("close", onClose);
      });
      const onClose = () => {
        if (!res.writableFinished) stream.abort("disconnected");
      };
      res.on("close", onClose);
      session.streams.add(stream);
      this.#stats.streams++;
      if (session.aborted) stream.abort(session.aborted);
      this.#opts.host.dispatch(request, stream);
      return stream;
    };
    const one = async <E extends "hello" | "metrics">(type: E): Promise<Event<E>> => {
      for (const ev of await call({ type }).all()) {
        if (ev.event === type) return ev as Event<E>;
      }
      throw new HttpError(500, `The daemon did not answer "${type}"`);
    };
    return {
      req,
      res,
      url,
      body,
      params,
      call,
      hello: async () => await one("hello"),
      metrics: async () => (await one("metrics")).metrics,
      gateway: info,
    };
  }

  #fail(res: ServerResponse, family: ApiFamily, e: unknown): void {
    const f = failureOf(e);
    if (f.status >= 500 && !(e instanceof HttpError)) {
      this.#opts.host.log("error", `http: ${(e as Error)?.stack ?? e}`);
    }
    if (res.destroyed || res.writableEnded) return;
    if (res.headersSent) {
      // A stream already started: the error goes in-band, as each API does it.
      writeStreamError(res, family, errorBody(family, f));
      return;
    }
    // Busy and rate-limited clients retry; OpenAI's and Ollama's clients honour the header.
    if (f.status === 429 || f.status === 503) res.setHeader("Retry-After", "1");
    sendJson(res, f.status, errorBody(family, f));
  }
}

function authorized(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  if (!m) return false;
  const a = new TextEncoder().encode(m[1]);
  const b = new TextEncoder().encode(token);
  // Constant time in the token's length: no early exit on the first wrong byte.
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i];
  return diff === 0;
}

function sinkOf(res: ServerResponse, maxQueuedBytes: number): ResponseSink {
  const queued = () => res.writableLength ?? 0;
  return {
    get writable() {
      return !res.destroyed && queued() < maxQueuedBytes;
    },
    get queuedBytes() {
      return queued();
    },
    ready() {
      if (res.destroyed || queued() < maxQueuedBytes) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const check = () => {
          if (!res.destroyed && queued() >= maxQueuedBytes) return;
          res.off("drain", check);
          res.off("close", check);
          resolve();
        };
        res.on("drain", check);
        res.on("close", check);
      });
    },
  };
}

async function drainSession(session: Session, timeoutMs: number): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (
    (session.active > 0 || session.socket.writableLength > 0) && !session.socket.destroyed &&
    performance.now() < until
  ) {
    await delay(5);
  }
}

/**
 * Reads a request body of at most `max` bytes as a JSON object. Over the limit: 413
 * (the connection closes after the response, so the rest is never read); not JSON, or
 * not an object: 400. An empty body is an empty object.
 */
export async function readJsonBody(
  req: IncomingMessage,
  res: ServerResponse,
  max: number,
): Promise<Record<string, unknown>> {
  const tooLarge = () => {
    res.setHeader("Connection", "close");
    req.pause();
    return new HttpError(
      413,
      `Request body is larger than ${max} bytes (--max-frame)`,
      "request_too_large",
    );
  };
  const declared = Number(req.headers["content-length"] ?? NaN);
  if (declared > max) throw tooLarge();
  // Events, not for-await: leaving an async iteration early would destroy the socket
  // before the 413 is written.
  const chunks: Uint8Array[] = [];
  let size = 0;
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("aborted", onAborted);
      if (err) reject(err);
      else resolve();
    };
    const onData = (chunk: Uint8Array) => {
      size += chunk.length;
      if (size > max) done(tooLarge());
      else chunks.push(chunk);
    };
    const onEnd = () => done();
    const onError = (e: Error) =>
      done(new HttpError(400, `Reading the request failed: ${e.message}`));
    const onAborted = () => done(new HttpError(400, "The client aborted the request"));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("aborted", onAborted);
  });
  if (size === 0) return {};
  const bytes = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.length;
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new HttpError(
      400,
      `We could not parse the JSON body of your request: ${(e as Error).message}`,
      "invalid_json",
    );
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new HttpError(400, "The request body must be a JSON object", "invalid_json");
  }
  return value as Record<string, unknown>;
}

/** Sends a whole JSON response. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": String(new TextEncoder().encode(text).length),
  });
  res.end(text);
}

/** Sends a whole plain-text response. */
export function sendText(
  res: ServerResponse,
  status: number,
  text: string,
  contentType = "text/plain; charset=utf-8",
): void {
  res.writeHead(status, {
    "Content-Type": contentType,
    "Content-Length": String(new TextEncoder().encode(text).length),
  });
  res.end(text);
}

/** Starts a server-sent events response. */
export function startSse(res: ServerResponse): void {
  // setHeader, not writeHead's object: an error after the start reads the type back.
  res.setHeader("Content-Type", "text/event-stream; charset=utf-8");
  res.setHeader("Cache-Control", "no-cache");
  res.setHeader("X-Accel-Buffering", "no");
  res.writeHead(200);
}

/** Starts a newline-delimited JSON response (Ollama's streams). */
export function startNdjson(res: ServerResponse): void {
  res.setHeader("Content-Type", "application/x-ndjson");
  res.setHeader("Cache-Control", "no-cache");
  res.writeHead(200);
}

/** Writes one server-sent event with a JSON (or literal) payload. */
export function writeSse(res: ServerResponse, data: unknown): void {
  res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
}

/** Writes one NDJSON line. */
export function writeNdjson(res: ServerResponse, data: unknown): void {
  res.write(`${JSON.stringify(data)}\n`);
}

function writeStreamError(
  res: ServerResponse,
  family: ApiFamily,
  body: Record<string, unknown>,
): void {
  const type = String(res.getHeader("Content-Type") ?? "");
  if (type.startsWith("text/event-stream")) writeSse(res, body);
  else if (type.startsWith("application/x-ndjson")) writeNdjson(res, body);
  else if (family === "ollama") writeNdjson(res, body);
  res.end();
}
