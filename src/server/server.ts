import { encodeMessageFrame, PROTOCOL_VERSION } from "../protocol/mod.ts";
import type { Message, Request, RequestType } from "../protocol/mod.ts";
import { isWireCode, UmadError } from "../protocol/mod.ts";
import { VERSION } from "../version.ts";
import { Connection, type ConnectionLimits } from "./connection.ts";
import type { Logger } from "./log.ts";
import type { Service, Stream, WireErrorCode } from "../protocol/service.ts";
import { ConfigError } from "../protocol/errors.ts";
import { delay, withTimeout } from "../protocol/async.ts";
import { prepareSocketDir, refuseForeignFile } from "./socket_path.ts";
import type { SocketKind } from "../protocol/socket_path.ts";
import {
  HTTP_ROUTES,
  HttpGateway,
  type HttpSession,
  listenTcp,
  type TcpAddress,
  type TcpEndpoint,
} from "../http/mod.ts";

/** HTTP beside the framed protocol: always on the socket, on TCP with `--http`. */
export interface ServerHttpOptions {
  /** `--http HOST:PORT`: also serve HTTP on this TCP address. */
  tcp?: TcpAddress;
  /** The bearer token TCP requests must carry; null with `--http-no-auth`. */
  token: string | null;
  /** Where the token is kept (reported in `hello`). */
  tokenPath?: string;
  /** The daemon's default `max_tokens`, reported by `/props`. */
  defaultMaxTokens?: number;
}

/** How a server is set up. */
export interface ServerOptions extends Partial<ConnectionLimits> {
  /** The Unix socket path. */
  socket: string;
  /**
   * Whether `socket` was named by the user or is the default: the rules for its
   * directory differ (PROTOCOL.md, "Socket"). Default "explicit".
   */
  socketKind?: SocketKind;
  /** Connections served at once; the next gets `E_BUSY` and is closed. */
  maxClients?: number;
  /** The services requests are routed to, by type. */
  services?: Service[];
  /** Where the server logs. */
  log: Logger;
  /** HTTP settings; default: HTTP on the socket only. */
  http?: ServerHttpOptions;
}

/** The whole shutdown's time by default: streams ended, services closed, replies flushed. */
export const SHUTDOWN_MS = 5000;

/** Defaults for {@linkcode ServerOptions}. */
export const SERVER_DEFAULTS = {
  maxClients: 4096,
  maxFrame: 1 << 20,
  maxQueuedBytes: 4 << 20,
  maxInflight: 1024,
  rateLimit: 100_000,
  idleTimeoutMs: 30_000,
} as const;

/**
 * The daemon's listener: owns the socket, accepts connections, routes validated
 * requests to services, answers `hello`/`ping`/`metrics` itself, and shuts down in
 * order (stop accepting, end streams, flush, close, remove the socket). It is each
 * connection's `ConnectionHost` (those methods are marked internal).
 */
export class Server {
  /** The socket path it listens on. */
  readonly socket: string;
  /** Its logger. */
  readonly log: Logger;
  readonly #listener: Deno.Listener;
  readonly #limits: ConnectionLimits;
  readonly #maxClients: number;
  readonly #services: Service[];
  readonly #routes = new Map<RequestType, Service>();
  readonly #conns = new Set<Connection>();
  readonly #startedAt = Date.now();
  readonly #http: HttpGateway;
  readonly #httpOptions: ServerHttpOptions;
  #tcp: TcpEndpoint | undefined;
  #nextId = 1;
  #closing: Promise<void> | undefined;
  #stats = {
    connectionsTotal: 0,
    connectionsRejected: 0,
    acceptErrors: 0,
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
  #errors: Record<string, number> = {};
  #requests: Record<string, number> = {};

  private constructor(listener: Deno.Listener, options: ServerOptions) {
    this.#listener = listener;
    this.socket = options.socket;
    this.log = options.log;
    this.#maxClients = options.maxClients ?? SERVER_DEFAULTS.maxClients;
    this.#limits = {
      maxFrame: options.maxFrame ?? SERVER_DEFAULTS.maxFrame,
      maxQueuedBytes: options.maxQueuedBytes ?? SERVER_DEFAULTS.maxQueuedBytes,
      maxInflight: options.maxInflight ?? SERVER_DEFAULTS.maxInflight,
      rateLimit: options.rateLimit ?? SERVER_DEFAULTS.rateLimit,
      // A burst above the rate would let a flood through before the limit bites.
      rateBurst: options.rateBurst ?? options.rateLimit ?? SERVER_DEFAULTS.rateLimit,
      idleTimeoutMs: options.idleTimeoutMs ?? SERVER_DEFAULTS.idleTimeoutMs,
    };
    this.#services = options.services ?? [];
    for (const s of this.#services) for (const t of s.types) this.#routes.set(t, s);
    this.#httpOptions = options.http ?? { token: null };
    this.#http = new HttpGateway({
      host: {
        dispatch: (request, stream) => this.dispatch(null, request, stream),
        log: (level, message) => this.log(level, message),
      },
      maxBodyBytes: this.#limits.maxFrame,
      maxQueuedBytes: this.#limits.maxQueuedBytes,
      idleTimeoutMs: this.#limits.idleTimeoutMs,
      token: this.#httpOptions.token,
      defaultMaxTokens: this.#httpOptions.defaultMaxTokens,
    }, HTTP_ROUTES);
  }

  /**
   * Binds the socket under a lock: refuses an unsafe directory or a live daemon on
   * the same path ({@linkcode ConfigError}), replaces a stale socket left by a daemon
   * that died, and starts accepting.
   */
  static async listen(options: ServerOptions): Promise<Server> {
    const path = options.socket;
    prepareSocketDir({ path, kind: options.socketKind ?? "explicit" });
    refuseForeignFile(`${path}.lock`, "lock");
    const lock = await Deno.open(`${path}.lock`, { create: true, write: true, mode: 0o600 });
    let listener: Deno.Listener;
    try {
      await lock.lock(true);
      refuseForeignFile(path, "socket");
      await removeStaleSocket(path, options.log);
      const oldMask = Deno.umask(0o077);
      try {
        listener = Deno.listen({ transport: "unix", path });
      } finally {
        Deno.umask(oldMask);
      }
      Deno.chmodSync(path, 0o600);
    } finally {
      await lock.unlock().catch(() => {});
      lock.close();
    }
    const server = new Server(listener, options);
    if (options.http?.tcp) {
      try {
        server.#tcp = listenTcp(
          options.http.tcp,
          (raw) => server.#admit(raw, "tcp"),
          (level, message) => server.log(level, message),
        );
      } catch (e) {
        await server.close();
        const { hostname, port } = options.http.tcp;
        throw new ConfigError(`Cannot serve HTTP on ${hostname}:${port}: ${(e as Error).message}`, {
          cause: e,
        });
      }
    }
    void server.#acceptLoop();
    return server;
  }

  /**
   * Accepts until the server closes. No accept error ends it: EMFILE (out of
   * descriptors) and the like are logged once per burst and retried after a short,
   * growing pause, while the connections already open go on being served.
   */
  async #acceptLoop(): Promise<void> {
    let failures = 0; // in a row, for the pause
    let burst = 0; // in the current burst, for the log
    let lastFailure = -Infinity;
    while (!this.#closing) {
      let raw: Deno.Conn;
      try {
        raw = await this.#listener.accept();
      } catch (e) {
        if (this.#closing || e instanceof Deno.errors.BadResource) return;
        this.#stats.acceptErrors++;
        const now = performance.now();
        if (now - lastFailure > ACCEPT_BURST_GAP_MS) {
          const before = burst > 1 ? ` (the previous burst had ${burst} failures)` : "";
          this.log(
            "error",
            `accept failed: ${(e as Error).message ?? e}; retrying, not logging repeats for ` +
              `${ACCEPT_BURST_GAP_MS / 1000} s${before}. ${this.#conns.size} connections open ` +
              `(limit ${this.#maxClients}): lower --max-clients or raise ulimit -n`,
          );
          burst = 0;
        }
        burst++;
        lastFailure = now;
        await delay(Math.min(ACCEPT_RETRY_MAX_MS, ACCEPT_RETRY_MS * 2 ** Math.min(failures++, 8)));
        continue;
      }
      failures = 0;
      this.#admit(raw, "unix");
    }
  }

  /**
   * Sets up one accepted connection (`tcp`: from `--http`, HTTP only): served, or
   * refused with `E_BUSY` (an HTTP 503 on TCP) when full.
   */
  #admit(raw: Deno.Conn, transport: "unix" | "tcp"): void {
    if (this.#closing) {
      raw.close();
      return;
    }
    if (this.#conns.size >= this.#maxClients) {
      // One write into an empty socket buffer, then a short linger (refuse()): a refused
      // connection holds its descriptor for as short a time as it can and still be told.
      this.#stats.connectionsRejected++;
      this.countError("E_BUSY");
      if (transport === "tcp") {
        // An HTTP client reads a status line, not a frame.
        const refusal = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n" +
          "Retry-After: 1\r\nContent-Length: 0\r\n\r\n";
        void refuse(raw, new TextEncoder().encode(refusal));
        return;
      }
      const message = `Server has ${this.#maxClients} clients already (--max-clients); ` +
        `try again later`;
      const frame = encodeMessageFrame(
        { event: "error", id: null, code: "E_BUSY", message },
        "json",
      );
      void refuse(raw, frame);
      return;
    }
    const conn = new Connection(this.#nextId++, raw, this, this.#limits, transport);
    this.#conns.add(conn);
    this.#stats.connectionsTotal++;
    void conn.serve();
  }

  /** The `--http` TCP address, when serving one (the port the system chose, for port 0). */
  get httpAddress(): TcpAddress | undefined {
    return this.#tcp?.address;
  }

  /** @internal ConnectionHost: a request of `type` arrived. */
  countRequest(type: string): void {
    this.#requests[type] = (this.#requests[type] ?? 0) + 1;
  }
  /** @internal ConnectionHost: routes a validated request; `conn` is null over HTTP. */
  dispatch(conn: Connection | null, request: Request, stream: Stream): void {
    this.countRequest(request.type);
    switch (request.type) {
      case "hello": {
        if (conn) conn.client = request.client;
        let extra: Message = {};
        for (const s of this.#services) if (s.hello) extra = { ...extra, ...s.hello() };
        stream.send("hello", {
          server: "umad",
          version: VERSION,
          protocol: PROTOCOL_VERSION,
          pid: Deno.pid,
          http: this.#httpInfo(),
          ...extra,
        });
        stream.end();
        return;
      }
      case "metrics":
        stream.send("metrics", { metrics: this.metrics() });
        stream.end();
        return;
    }
    const service = this.#routes.get(request.type);
    if (!service) {
      stream.fail("E_PROTO_BAD_REQUEST", `Request type "${request.type}" is not served here`);
      return;
    }
    const fail = (e: unknown) => {
      if (e instanceof UmadError && isWireCode(e.code)) return stream.fail(e.code, e.message);
      this.log("error", `${request.type} failed: ${(e as Error)?.stack ?? e}`);
      stream.fail("E_INTERNAL", `${request.type} failed: ${(e as Error)?.message ?? e}`);
    };
    try {
      const result = service.handle(request, stream);
      if (result instanceof Promise) result.catch(fail);
    } catch (e) {
      fail(e);
    }
  }
  /** @internal ConnectionHost: hands a connection that speaks HTTP to the gateway. */
  serveHttp(conn: Connection, socket: Deno.Conn, head: Uint8Array): HttpSession {
    return this.#http.adopt(conn, socket, head);
  }

  #httpInfo(): Message {
    const tcp = this.#tcp?.address;
    const host = tcp && (tcp.hostname.includes(":") ? `[${tcp.hostname}]` : tcp.hostname);
    const info: Message = { socket: this.socket, tcp: tcp ? `http://${host}:${tcp.port}` : null };
    if (tcp) {
      info.auth = this.#httpOptions.token !== null ? "bearer" : "none";
      if (this.#httpOptions.token !== null && this.#httpOptions.tokenPath) {
        info.token_file = this.#httpOptions.tokenPath;
      }
    }
    return info;
  }

  /** @internal ConnectionHost: an error reply was sent. */
  countError(code: WireErrorCode): void {
    this.#errors[code] = (this.#errors[code] ?? 0) + 1;
  }
  /** @internal ConnectionHost: frames and bytes read. */
  countIn(frames: number, bytes: number): void {
    this.#stats.framesIn += frames;
    this.#stats.bytesIn += bytes;
  }
  /** @internal ConnectionHost: frames and bytes written. */
  countOut(frames: number, bytes: number): void {
    this.#stats.framesOut += frames;
    this.#stats.bytesOut += bytes;
  }
  /** @internal ConnectionHost: a connection closed. */
  closed(conn: Connection): void {
    this.#conns.delete(conn);
    for (const s of this.#services) s.disconnected?.(conn.id);
  }

  /** Connections open now. */
  get connections(): number {
    return this.#conns.size;
  }

  /** @internal The `metrics` reply: counters of the server and each service. */
  metrics(): Message {
    const m: Message = {
      uptime_s: Math.round((Date.now() - this.#startedAt) / 100) / 10,
      pid: Deno.pid,
      connections: {
        now: this.#conns.size,
        total: this.#stats.connectionsTotal,
        rejected: this.#stats.connectionsRejected,
        max: this.#maxClients,
        accept_errors: this.#stats.acceptErrors,
      },
      frames_in: this.#stats.framesIn,
      frames_out: this.#stats.framesOut,
      bytes_in: this.#stats.bytesIn,
      bytes_out: this.#stats.bytesOut,
      requests: { ...this.#requests },
      errors: { ...this.#errors },
      memory: { rss: Deno.memoryUsage().rss, heap_used: Deno.memoryUsage().heapUsed },
    };
    Object.assign(m, this.#http.metrics());
    for (const s of this.#services) if (s.metrics) Object.assign(m, s.metrics());
    return m;
  }

  /**
   * Stops accepting, ends open streams with reason "shutdown", lets services close,
   * flushes and closes connections, and removes the socket, all by `deadline` (a time
   * on `performance.now()`'s clock; default {@linkcode SHUTDOWN_MS} from now): services
   * get the time left but the last quarter (at most 1 s), which is the flush's.
   * Idempotent: later calls get the first shutdown.
   */
  close(deadline: number = performance.now() + SHUTDOWN_MS): Promise<void> {
    this.#closing ??= this.#shutdown(deadline);
    return this.#closing;
  }

  async #shutdown(deadline: number): Promise<void> {
    this.log("info", "shutting down");
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    this.#tcp?.close();
    this.#http.close();
    for (const c of this.#conns) c.abortAll("shutdown");
    const left = () => Math.max(0, deadline - performance.now());
    const servicesDeadline = deadline - Math.min(1000, left() / 4);
    // Services that do not close in time are left behind: the connections still close.
    await withTimeout(
      Promise.allSettled(
        this.#services.map((s) => s.close?.(servicesDeadline) ?? Promise.resolve()),
      ),
      Math.max(0, servicesDeadline - performance.now()),
    ).catch(() => {});
    await Promise.all([...this.#conns].map((c) => c.drain(left())));
    for (const c of [...this.#conns]) c.close();
    try {
      Deno.removeSync(this.socket);
    } catch {
      // the listener removed it already
    }
    this.log("info", "stopped");
  }
}

async function removeStaleSocket(path: string, log: Logger): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  if (!info.isSocket) {
    throw new ConfigError(`"${path}" exists and is not a socket: refusing to replace it`);
  }
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.NotFound) {
      log("warn", `replacing stale socket "${path}" left by a daemon that is gone`);
      Deno.removeSync(path);
      return;
    }
    throw e;
  }
  throw new ConfigError(`Another umad daemon is already serving "${path}"`);
}

/** How long a refused connection may linger for its peer to read the refusal. */
const REFUSE_LINGER_MS = 200;

/**
 * Writes a refusal and closes the connection so that the peer reads it: closing a Unix
 * socket whose input was never read (the client's `hello`, already sent) resets the
 * peer, whose read then fails before it sees the refusal. So the write side is shut
 * first and the input discarded until the peer closes, for at most REFUSE_LINGER_MS.
 */
async function refuse(raw: Deno.Conn, bytes: Uint8Array): Promise<void> {
  const timer = setTimeout(() => {
    try {
      raw.close();
    } catch {
      // closed already
    }
  }, REFUSE_LINGER_MS);
  try {
    await raw.write(bytes);
    await raw.closeWrite();
    const sink = new Uint8Array(4096);
    while ((await raw.read(sink)) !== null) {
      // discard
    }
  } catch {
    // the peer went away, or the linger timer closed the connection
  } finally {
    clearTimeout(timer);
    try {
      raw.close();
    } catch {
      // closed already
    }
  }
}

/** First pause after a failed accept; it doubles per failure in a row, up to the max. */
const ACCEPT_RETRY_MS = 5;
const ACCEPT_RETRY_MAX_MS = 500;
/** Accept failures closer together than this are one burst, logged once. */
const ACCEPT_BURST_GAP_MS = 10_000;
