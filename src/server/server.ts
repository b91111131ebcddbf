import { PROTOCOL_VERSION } from "../protocol/mod.ts";
import type { Message, Request, RequestType } from "../protocol/mod.ts";
import { isWireCode, UmadError } from "../protocol/mod.ts";
import { VERSION } from "../version.ts";
import { Connection, type ConnectionLimits } from "./connection.ts";
import type { Logger } from "./log.ts";
import type { Service, Stream, WireErrorCode } from "../protocol/service.ts";
import { ConfigError } from "../protocol/errors.ts";
import { withTimeout } from "../protocol/async.ts";
import { prepareSocketDir } from "./socket_path.ts";

/** How a server is set up. */
export interface ServerOptions extends Partial<ConnectionLimits> {
  /** The Unix socket path. */
  socket: string;
  /** Connections served at once; the next gets `E_BUSY` and is closed. */
  maxClients?: number;
  /** The services requests are routed to, by type. */
  services?: Service[];
  /** Where the server logs. */
  log: Logger;
}

/** Defaults for {@linkcode ServerOptions}. */
export const SERVER_DEFAULTS = {
  maxClients: 4096,
  maxFrame: 1 << 20,
  maxQueuedBytes: 4 << 20,
  maxInflight: 1024,
  rateLimit: 100_000,
  rateBurst: 20_000,
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
  #nextId = 1;
  #closing: Promise<void> | undefined;
  #stats = {
    connectionsTotal: 0,
    connectionsRejected: 0,
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
      rateBurst: options.rateBurst ?? SERVER_DEFAULTS.rateBurst,
      idleTimeoutMs: options.idleTimeoutMs ?? SERVER_DEFAULTS.idleTimeoutMs,
    };
    this.#services = options.services ?? [];
    for (const s of this.#services) for (const t of s.types) this.#routes.set(t, s);
  }

  /**
   * Binds the socket under a lock: refuses an unsafe directory or a live daemon on
   * the same path ({@linkcode ConfigError}), replaces a stale socket left by a daemon
   * that died, and starts accepting.
   */
  static async listen(options: ServerOptions): Promise<Server> {
    const path = options.socket;
    prepareSocketDir(path);
    const lock = await Deno.open(`${path}.lock`, { create: true, write: true, mode: 0o600 });
    let listener: Deno.Listener;
    try {
      await lock.lock(true);
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
    void server.#acceptLoop();
    return server;
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const raw of this.#listener) {
        if (this.#closing) {
          raw.close();
          continue;
        }
        const id = this.#nextId++;
        const conn = new Connection(id, raw, this, this.#limits);
        if (this.#conns.size >= this.#maxClients) {
          this.#stats.connectionsRejected++;
          conn.sendError(
            null,
            "E_BUSY",
            `Server has ${this.#maxClients} clients already (--max-clients)`,
            "json",
          );
          void conn.drain(500).then(() => conn.close());
          continue;
        }
        this.#conns.add(conn);
        this.#stats.connectionsTotal++;
        void conn.serve();
      }
    } catch (e) {
      if (!this.#closing) this.log("error", `accept failed: ${e}`);
    }
  }

  /** @internal ConnectionHost: a request of `type` arrived. */
  countRequest(type: string): void {
    this.#requests[type] = (this.#requests[type] ?? 0) + 1;
  }
  /** @internal ConnectionHost: routes a validated request. */
  dispatch(conn: Connection, request: Request, stream: Stream): void {
    this.countRequest(request.type);
    switch (request.type) {
      case "hello": {
        conn.client = request.client;
        let extra: Message = {};
        for (const s of this.#services) if (s.hello) extra = { ...extra, ...s.hello() };
        stream.send("hello", {
          server: "umad",
          version: VERSION,
          protocol: PROTOCOL_VERSION,
          pid: Deno.pid,
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
      },
      frames_in: this.#stats.framesIn,
      frames_out: this.#stats.framesOut,
      bytes_in: this.#stats.bytesIn,
      bytes_out: this.#stats.bytesOut,
      requests: { ...this.#requests },
      errors: { ...this.#errors },
      memory: { rss: Deno.memoryUsage().rss, heap_used: Deno.memoryUsage().heapUsed },
    };
    for (const s of this.#services) if (s.metrics) Object.assign(m, s.metrics());
    return m;
  }

  /**
   * Stops accepting, ends open streams with reason "shutdown", lets services close,
   * flushes and closes connections, and removes the socket. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.log("info", "shutting down");
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    for (const c of this.#conns) c.abortAll("shutdown");
    // Services that do not close in time are left behind: the connections still close.
    await withTimeout(
      Promise.allSettled(this.#services.map((s) => s.close?.() ?? Promise.resolve())),
      2500,
    ).catch(() => {});
    await Promise.all([...this.#conns].map((c) => c.drain(1000)));
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
