import { LOG_LEVELS, type LogLevel } from "../server/log.ts";
import { createLogger } from "../server/log.ts";
import { Server, SERVER_DEFAULTS, SHUTDOWN_MS } from "../server/server.ts";
import {
  DEFAULT_MAX_CLIENTS,
  DEFAULT_MAX_SESSIONS,
  type FdBudget,
  fdBudget,
} from "../server/fd_budget.ts";
import { openFdCount, raiseFdLimit, readFdLimit } from "../server/rlimit.ts";
import type { Service } from "../protocol/service.ts";
import { ConfigError } from "../protocol/errors.ts";
import { prepareSocketDir, resolveSocket } from "../server/socket_path.ts";
import { DECODE_PRIORITIES } from "../llm/ffi.ts";
import type { LlmServiceOptions } from "../llm/mod.ts";
import type { PtyServiceOptions } from "../pty/mod.ts";
import { choiceOption, intOption, numberOption, parse, UsageError } from "./_args.ts";
import {
  ensureToken,
  isLoopback,
  parseHttpAddress,
  type TcpAddress,
  TOKEN_FILE,
} from "../http/mod.ts";

function ratioOption(name: string, value: string | undefined): number | undefined {
  const r = numberOption(name, value);
  if (r !== undefined && !(r > 0 && r <= 4)) {
    throw new UsageError(`--${name} must be above 0 and at most 4, got "${value}"`);
  }
  return r;
}

/** `--latency-budget R`: R ≥ 1, or "unlimited" (Infinity). */
function budgetOption(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (value === "unlimited" || value === "inf") return Infinity;
  const r = Number(value);
  if (!(value.trim() !== "" && r >= 1 && r <= 100)) {
    throw new UsageError(
      `--latency-budget must be a number from 1 to 100, or "unlimited", got "${value}"`,
    );
  }
  return r;
}

/** Flags of earlier versions: what they become now, each with a warning. */
function legacyLatencyBudget(
  values: Record<string, unknown>,
  warn: (message: string) => void,
): number | undefined {
  if (values["no-batch-invariance"]) {
    warn(
      "--no-batch-invariance is the default now (same-seed-same-tokens is opt-in with " +
        "--deterministic); the flag does nothing and will go",
    );
  }
  if (values["prefill-max-ratio"] !== undefined) {
    ratioOption("prefill-max-ratio", values["prefill-max-ratio"] as string);
    warn("--prefill-max-ratio is gone (the latency budget replaces it); ignored");
  }
  const ratio = ratioOption("prefill-ratio", values["prefill-ratio"] as string | undefined);
  if (ratio === undefined) return undefined;
  warn(`--prefill-ratio ${ratio} is replaced by --latency-budget ${1 + ratio}; using that`);
  return 1 + ratio;
}

function gpuLayersOption(value: string | undefined): number | "auto" | undefined {
  if (value === undefined || value === "auto") return value;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new UsageError(`--gpu-layers must be a whole number of layers or "auto", got "${value}"`);
  }
  return n;
}

export const SERVE_HELP = `umad serve — run the daemon

Usage: umad serve [options]

Socket and limits:
  --socket PATH        socket path (default: $UMAD_SOCKET, $XDG_RUNTIME_DIR/umad/umad.sock,
                       or /tmp/umad-<uid>/umad.sock). The default directory is created 0700
                       and must stay so; a named path's directory must be ours or root's, not
                       a symlink, and writable by others only if sticky (/tmp/uma.sock works)
  --max-clients N      connections at once; the next gets E_BUSY (default: what the
                       descriptor limit allows after sessions, at most ${DEFAULT_MAX_CLIENTS})
  --max-sessions N     terminal sessions running at once; the next pty.spawn gets E_BUSY
                       (default: a quarter of the spare descriptors at 2 per session, at
                       most ${DEFAULT_MAX_SESSIONS}). The soft descriptor limit is raised to the hard
                       one at start; ulimit -n bounds both defaults
  --max-frame BYTES    largest frame payload (default ${SERVER_DEFAULTS.maxFrame})
  --max-queue BYTES    outbound bytes queued per connection before it is pushed back
                       (default ${SERVER_DEFAULTS.maxQueuedBytes})
  --max-inflight N     requests in flight per connection (default ${SERVER_DEFAULTS.maxInflight})
  --rate-limit N       requests per second per connection (default ${SERVER_DEFAULTS.rateLimit})
  --rate-burst N       requests a connection may send back to back (default: the rate)
  --idle-timeout MS    close connections that send nothing for MS (default ${SERVER_DEFAULTS.idleTimeoutMs}; 0 = never)
  --log-level LEVEL    ${LOG_LEVELS.join(", ")} (default info)

HTTP (always on the socket: a connection that starts with an HTTP request line):
  --http HOST:PORT     also serve HTTP on TCP (PORT alone: 127.0.0.1); an address other
                       than loopback is served with a warning. OpenAI's API under /v1,
                       Ollama's under /api, llama-server's /health, /metrics, /tokenize,
                       /detokenize, /props. TCP requests need "Authorization: Bearer
                       TOKEN", TOKEN being the contents of ${TOKEN_FILE} (mode 0600)
                       beside the socket, created at start
  --http-no-auth       serve --http without the token (anyone who can reach the port)

Model (llama.cpp):
  --model FILE.gguf    the model to serve (default: $UMA_MODEL, else a built-in demo model
                       with random weights)
  --no-model           serve no model (generate answers E_NO_MODEL)
  --llama-lib DIR      directory with libllama/libggml (default: $UMAD_LLAMA_LIB, else a
                       native build ("umad llama build"), an added GPU package ("umad
                       llama add cuda|vulkan"), the embedded libraries, the npm package;
                       "umad llama list" shows which and why)
  --gpu-layers N|auto  layers to offload to the GPU (default auto: as many as fit in its
                       free memory beside the KV cache; 0: the CPU only)
  --device NAME        the device to offload to, e.g. CUDA0, Vulkan0 (see "umad devices")
  --no-gpu             the CPU only, and prefer a CPU library
  --ctx N              context size in tokens, shared by all sequences (--n-ctx N too)
  --max-tokens N       max_tokens of requests that give none (default 256)
  --parallel N         sequences decoded together (default 8)
  --threads N          CPU threads (default: the CPUs this process may use)
  --queue N            generate requests waiting for a sequence before E_BUSY
  --latency-budget R   a step may take R times as long as its decode rows alone, so
                       inter-token latency stays within Rx while prompts are prefilled
                       beside decoding (default 1.5); larger R: shorter time to first
                       token; "unlimited": prompts never wait, decoding stalls for them
  --deterministic      same seed, same tokens alone or beside other streams: one KV
                       stream per sequence (ctx/parallel tokens each), decodes padded
                       to two rows, prompt chunks under 64 tokens in passes of their
                       own (slower; longer time to first token)
  --no-prefix-cache    never reuse prompt prefixes already in KV (a request opts out
                       alone with cache_prompt:false)
  --decode-priority P  low (default): decode threads at nice 5, so a waking thread
                       (a ping, a keystroke) waits at most a scheduler tick (~4 ms at
                       HZ=250) and decoding keeps a share of the CPU beside busy
                       programs; idle: SCHED_IDLE, anything that wakes up runs at once,
                       but programs keeping every core busy starve decoding; normal
  --no-lookup          with --deterministic: leave a lone stream's padding row empty
                       instead of filling it with a prompt-lookup draft (the token that
                       followed the stream's last tokens before; when it is the one
                       sampled, the next token comes from the same decode)
  (--prefill-ratio R becomes --latency-budget 1+R; --prefill-max-ratio and
   --no-batch-invariance are ignored; each warns)
  --chat-template FILE|NAME  render chat messages with this Jinja template file, or with
                       one of llama.cpp's built-in templates (chatml, llama3, phi3,
                       mistral-v7, gemma, ...), instead of the model's own

UMA Serve's daemon flags are accepted too: --n-ctx (= --ctx), --max-tokens, --threads,
--model, --socket, and --max-merge N (no effect: prompt chunks are budgeted by time).

Terminals:
  --exited-ttl MS      how long an exited session stays listed (default 5 minutes)
  --scrollback N       lines of scrollback kept per session (default 1000)
  --scrollback-bytes N scrollback memory per session at most (default 16777216:
                       16 MiB; 12 bytes per cell, so fewer lines on wide terminals)

Stops on SIGINT or SIGTERM within one 5 s deadline: open streams end with reason "shutdown",
terminal sessions are hung up, replies are flushed, the socket is removed.
Exit codes: 0 stopped cleanly, 1 runtime error, 2 usage or configuration error.`;

/** The options `umad serve` understands, for services to read. */
export interface ServeConfig {
  socket: string;
  log: ReturnType<typeof createLogger>;
  noModel: boolean;
  /** The model service's options from the flags (`log` is added by the factory). */
  llm: Omit<LlmServiceOptions, "log">;
  /** The terminal service's options from the flags. */
  pty: Omit<PtyServiceOptions, "log">;
  /** `--http`: the TCP address to serve HTTP on, if any. */
  http?: TcpAddress;
  /** `--http-no-auth`. */
  httpNoAuth: boolean;
}

/** Builds the services a daemon runs; replaced in tests, extended as services land. */
export type ServiceFactory = (config: ServeConfig) => Promise<Service[]>;

/** `umad serve`: runs until SIGINT/SIGTERM. Returns the exit code. */
export async function serveCommand(
  args: string[],
  makeServices: ServiceFactory,
): Promise<number> {
  const { values, positionals } = parse(args, {
    socket: { type: "string" },
    "max-clients": { type: "string" },
    "max-frame": { type: "string" },
    "max-queue": { type: "string" },
    "max-inflight": { type: "string" },
    "rate-limit": { type: "string" },
    "rate-burst": { type: "string" },
    "max-sessions": { type: "string" },
    "idle-timeout": { type: "string" },
    "log-level": { type: "string" },
    model: { type: "string" },
    "no-model": { type: "boolean" },
    "llama-lib": { type: "string" },
    "gpu-layers": { type: "string" },
    device: { type: "string" },
    "no-gpu": { type: "boolean" },
    ctx: { type: "string" },
    "n-ctx": { type: "string" },
    "max-tokens": { type: "string" },
    "max-merge": { type: "string" },
    http: { type: "string" },
    "http-no-auth": { type: "boolean" },
    parallel: { type: "string" },
    threads: { type: "string" },
    queue: { type: "string" },
    "latency-budget": { type: "string" },
    deterministic: { type: "boolean" },
    "no-prefix-cache": { type: "boolean" },
    "prefill-ratio": { type: "string" },
    "prefill-max-ratio": { type: "string" },
    "no-batch-invariance": { type: "boolean" },
    "no-lookup": { type: "boolean" },
    "decode-priority": { type: "string" },
    "chat-template": { type: "string" },
    "exited-ttl": { type: "string" },
    scrollback: { type: "string" },
    "scrollback-bytes": { type: "string" },
  }, false);
  if (values.help) {
    console.log(SERVE_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError(`Unexpected argument "${positionals[0]}"`);
  const level = (values["log-level"] ?? "info") as LogLevel;
  if (!LOG_LEVELS.includes(level)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
  }
  const log = createLogger(level);
  const where = resolveSocket(values.socket);
  const socket = where.path;
  const limits = {
    maxClients: intOption("max-clients", values["max-clients"], { min: 1 }),
    maxFrame: intOption("max-frame", values["max-frame"], { min: 16, max: 2 ** 31 }),
    maxQueuedBytes: intOption("max-queue", values["max-queue"], { min: 1024 }),
    maxInflight: intOption("max-inflight", values["max-inflight"], { min: 1 }),
    rateLimit: intOption("rate-limit", values["rate-limit"], { min: 1 }),
    rateBurst: intOption("rate-burst", values["rate-burst"], { min: 1 }),
    idleTimeoutMs: intOption("idle-timeout", values["idle-timeout"]),
  };
  if (values.ctx !== undefined && values["n-ctx"] !== undefined) {
    throw new UsageError("--ctx and --n-ctx are the same setting: give one");
  }
  intOption("max-merge", values["max-merge"], { min: 1 });
  const noModel = values["no-model"] ?? false;
  const envModel = Deno.env.get("UMA_MODEL") || undefined;
  const config: ServeConfig = {
    socket,
    log,
    noModel,
    http: values.http !== undefined ? parseHttpAddress(values.http) : undefined,
    httpNoAuth: values["http-no-auth"] ?? false,
    llm: {
      model: values.model ?? (noModel ? undefined : envModel),
      libDir: values["llama-lib"],
      gpuLayers: gpuLayersOption(values["gpu-layers"]),
      device: values.device,
      noGpu: values["no-gpu"] ?? false,
      ctx: values["n-ctx"] !== undefined
        ? intOption("n-ctx", values["n-ctx"], { min: 16 })
        : intOption("ctx", values.ctx, { min: 16 }),
      defaultMaxTokens: intOption("max-tokens", values["max-tokens"], { min: 1, max: 1 << 24 }),
      parallel: intOption("parallel", values.parallel, { min: 1, max: 256 }),
      threads: intOption("threads", values.threads, { min: 1, max: 1024 }),
      queue: intOption("queue", values.queue),
      latencyBudget: [
        legacyLatencyBudget(values, (m) => log("warn", m)),
        budgetOption(values["latency-budget"]),
      ].findLast((b) => b !== undefined),
      deterministic: values.deterministic ?? false,
      prefixCache: !values["no-prefix-cache"],
      lookup: !values["no-lookup"],
      decodePriority: choiceOption(
        "decode-priority",
        values["decode-priority"],
        DECODE_PRIORITIES,
      ),
      chatTemplate: values["chat-template"],
    },
    pty: {
      exitedTtlMs: intOption("exited-ttl", values["exited-ttl"]),
      scrollback: intOption("scrollback", values.scrollback),
      scrollbackBytes: intOption("scrollback-bytes", values["scrollback-bytes"], { min: 1 }),
    },
  };
  if (config.noModel && values.model) throw new UsageError("--model and --no-model conflict");
  if (config.httpNoAuth && !config.http) throw new UsageError("--http-no-auth needs --http");
  if (config.llm.noGpu && (values["gpu-layers"] !== undefined || values.device !== undefined)) {
    throw new UsageError("--no-gpu conflicts with --gpu-layers and --device");
  }

  // Fail fast, before a slow model load, on a bad path, an unsafe directory or a live daemon.
  if (config.llm.model !== undefined) requireModelFile(config.llm.model);
  prepareSocketDir(where);
  await refuseLiveDaemon(socket);
  const budget = descriptorBudget(
    limits.maxClients,
    intOption("max-sessions", values["max-sessions"], { min: 1 }),
    log,
  );
  limits.maxClients = budget.maxClients;
  config.pty.maxSessions = budget.maxSessions;

  const token = config.http && !config.httpNoAuth ? ensureToken(socket) : undefined;
  if (config.http && !isLoopback(config.http.hostname)) {
    log(
      "warn",
      `--http ${config.http.hostname}: serving HTTP beyond loopback; anyone who can reach ` +
        `the port ${token ? "and has the token" : "(--http-no-auth: with no token)"} can use it`,
    );
  }
  if (values["max-merge"] !== undefined) {
    log("info", "--max-merge (UMA Serve) has no effect: prompt chunks are budgeted by time");
  }

  const services = await makeServices(config);
  const server = await Server.listen({
    socket,
    socketKind: where.kind,
    log,
    services,
    http: {
      tcp: config.http,
      token: token?.token ?? null,
      tokenPath: token?.path,
      defaultMaxTokens: config.llm.defaultMaxTokens,
    },
    ...Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)),
  });
  log("info", `umad listening on ${socket} (pid ${Deno.pid})`);
  const tcp = server.httpAddress;
  if (tcp) {
    log(
      "info",
      `HTTP on http://${tcp.hostname.includes(":") ? `[${tcp.hostname}]` : tcp.hostname}:` +
        `${tcp.port} (${token ? `bearer token in ${token.path}` : "no token: --http-no-auth"})`,
    );
  }

  const signal = await new Promise<string>((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(sig, () => resolve(sig));
    }
  });
  log("info", `${signal}: stopping`);
  // One deadline for the whole shutdown, passed down to the server and every service;
  // the hard stop is only for a close that overruns it (a wedged native call).
  const deadline = performance.now() + SHUTDOWN_MS;
  const hardStop = setTimeout(() => {
    log("error", `shutdown overran its ${SHUTDOWN_MS / 1000} s deadline; exiting anyway`);
    Deno.exit(1);
  }, SHUTDOWN_MS + HARD_STOP_GRACE_MS);
  await server.close(deadline);
  clearTimeout(hardStop);
  return 0;
}

/** How long past the shutdown deadline `serve` waits before it exits regardless. */
const HARD_STOP_GRACE_MS = 500;

function requireModelFile(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    throw new ConfigError(`Model file "${path}" ${describeMissing(e)}`, { cause: e });
  }
  if (!info.isFile) throw new ConfigError(`Model file "${path}" is not a file`);
}

function describeMissing(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "does not exist";
  if (e instanceof Deno.errors.PermissionDenied) return "cannot be read (permission denied)";
  return `cannot be read: ${(e as Error).message}`;
}

/**
 * Raises the descriptor limit to the hard one and splits it between clients and
 * terminal sessions (`fd_budget.ts`), so both are refused with E_BUSY before the
 * daemon runs out of descriptors.
 */
function descriptorBudget(
  maxClients: number | undefined,
  maxSessions: number | undefined,
  log: ReturnType<typeof createLogger>,
): FdBudget {
  const before = readFdLimit();
  const after = raiseFdLimit();
  const limit = after?.soft ?? FALLBACK_FD_LIMIT;
  const inUse = openFdCount() ?? FALLBACK_FDS_IN_USE;
  const budget = fdBudget({ limit, inUse, maxClients, maxSessions });
  const raised = before && after && after.soft > before.soft ? ` (raised from ${before.soft})` : "";
  log(
    "info",
    `descriptors: limit ${limit}${raised}, ${inUse} in use: up to ${budget.maxClients} ` +
      `clients and ${budget.maxSessions} terminal sessions`,
  );
  if (budget.overcommitted) {
    log(
      "warn",
      `--max-clients/--max-sessions need more descriptors than the limit of ${limit} leaves; ` +
        `past it connections and spawns may fail (raise ulimit -n, or lower them)`,
    );
  }
  return budget;
}

/** Assumed where the limit cannot be read: the usual soft default on Linux. */
const FALLBACK_FD_LIMIT = 1024;
const FALLBACK_FDS_IN_USE = 64;

async function refuseLiveDaemon(socket: string): Promise<void> {
  try {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    conn.close();
  } catch {
    return; // nothing there, or a stale socket: Server.listen handles it under its lock
  }
  throw new ConfigError(`Another umad daemon is already serving "${socket}"`);
}
