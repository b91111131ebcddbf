import { LOG_LEVELS, type LogLevel } from "../server/log.ts";
import { createLogger } from "../server/log.ts";
import { Server, SERVER_DEFAULTS } from "../server/server.ts";
import type { Service } from "../protocol/service.ts";
import { ConfigError } from "../protocol/errors.ts";
import { prepareSocketDir, resolveSocketPath } from "../server/socket_path.ts";
import { DECODE_PRIORITIES } from "../llm/ffi.ts";
import type { LlmServiceOptions } from "../llm/mod.ts";
import type { PtyServiceOptions } from "../pty/mod.ts";
import { choiceOption, intOption, numberOption, parse, UsageError } from "./_args.ts";

function ratioOption(name: string, value: string | undefined): number | undefined {
  const r = numberOption(name, value);
  if (r !== undefined && !(r > 0 && r <= 4)) {
    throw new UsageError(`--${name} must be above 0 and at most 4, got "${value}"`);
  }
  return r;
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
                       or /tmp/umad-<uid>/umad.sock); its directory must be 0700 and ours
  --max-clients N      connections at once (default ${SERVER_DEFAULTS.maxClients})
  --max-frame BYTES    largest frame payload (default ${SERVER_DEFAULTS.maxFrame})
  --max-queue BYTES    outbound bytes queued per connection before it is pushed back
                       (default ${SERVER_DEFAULTS.maxQueuedBytes})
  --max-inflight N     requests in flight per connection (default ${SERVER_DEFAULTS.maxInflight})
  --rate-limit N       requests per second per connection (default ${SERVER_DEFAULTS.rateLimit})
  --idle-timeout MS    close connections that send nothing for MS (default ${SERVER_DEFAULTS.idleTimeoutMs}; 0 = never)
  --log-level LEVEL    ${LOG_LEVELS.join(", ")} (default info)

Model (llama.cpp):
  --model FILE.gguf    the model to serve (default: a built-in demo model with random weights)
  --no-model           serve no model (generate answers E_NO_MODEL)
  --llama-lib DIR      directory with libllama/libggml (default: $UMAD_LLAMA_LIB, else a
                       native build ("umad llama build"), an added GPU package ("umad
                       llama add cuda|vulkan"), the embedded libraries, the npm package;
                       "umad llama list" shows which and why)
  --gpu-layers N|auto  layers to offload to the GPU (default auto: as many as fit in its
                       free memory beside the KV cache; 0: the CPU only)
  --device NAME        the device to offload to, e.g. CUDA0, Vulkan0 (see "umad devices")
  --no-gpu             the CPU only, and prefer a CPU library
  --ctx N              context size in tokens, shared by all sequences
  --parallel N         sequences decoded together (default 8)
  --threads N          CPU threads (default: the CPUs this process may use)
  --queue N            generate requests waiting for a sequence before E_BUSY
  --prefill-ratio R    share of a decode step that prompt chunks may add (default 0.4:
                       inter-token latency stays within ~1.5x while prompts arrive)
  --prefill-max-ratio R  raise that share up to R while a prompt has waited over 1 s
                       (default: no raise); trades inter-token latency for time to
                       first token under a storm of long prompts
  --decode-priority P  low (default): decode threads at nice 5, so a waking thread
                       (a ping, a keystroke) waits at most a scheduler tick (~4 ms at
                       HZ=250) and decoding keeps a share of the CPU beside busy
                       programs; idle: SCHED_IDLE, anything that wakes up runs at once,
                       but programs keeping every core busy starve decoding; normal
  --no-batch-invariance  give up "same seed, same tokens alone or beside other streams"
                       for speed: one-stream decodes are not padded to two rows (about
                       1.3x faster alone on CPUs) and prompt chunks may be larger
  --no-lookup          leave a lone stream's padding row empty instead of filling it
                       with a prompt-lookup draft (the token that followed the
                       stream's last tokens before; when it is the one sampled, the
                       next token comes from the same decode; same tokens either way)

Terminals:
  --exited-ttl MS      how long an exited session stays listed (default 5 minutes)
  --scrollback N       lines of scrollback kept per session

Stops on SIGINT or SIGTERM: open streams end with reason "shutdown", the socket is removed.
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
    "idle-timeout": { type: "string" },
    "log-level": { type: "string" },
    model: { type: "string" },
    "no-model": { type: "boolean" },
    "llama-lib": { type: "string" },
    "gpu-layers": { type: "string" },
    device: { type: "string" },
    "no-gpu": { type: "boolean" },
    ctx: { type: "string" },
    parallel: { type: "string" },
    threads: { type: "string" },
    queue: { type: "string" },
    "prefill-ratio": { type: "string" },
    "prefill-max-ratio": { type: "string" },
    "no-batch-invariance": { type: "boolean" },
    "no-lookup": { type: "boolean" },
    "decode-priority": { type: "string" },
    "exited-ttl": { type: "string" },
    scrollback: { type: "string" },
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
  const socket = resolveSocketPath(values.socket);
  const limits = {
    maxClients: intOption("max-clients", values["max-clients"], { min: 1 }),
    maxFrame: intOption("max-frame", values["max-frame"], { min: 16, max: 2 ** 31 }),
    maxQueuedBytes: intOption("max-queue", values["max-queue"], { min: 1024 }),
    maxInflight: intOption("max-inflight", values["max-inflight"], { min: 1 }),
    rateLimit: intOption("rate-limit", values["rate-limit"], { min: 1 }),
    idleTimeoutMs: intOption("idle-timeout", values["idle-timeout"]),
  };
  const config: ServeConfig = {
    socket,
    log,
    noModel: values["no-model"] ?? false,
    llm: {
      model: values.model,
      libDir: values["llama-lib"],
      gpuLayers: gpuLayersOption(values["gpu-layers"]),
      device: values.device,
      noGpu: values["no-gpu"] ?? false,
      ctx: intOption("ctx", values.ctx, { min: 16 }),
      parallel: intOption("parallel", values.parallel, { min: 1, max: 256 }),
      threads: intOption("threads", values.threads, { min: 1, max: 1024 }),
      queue: intOption("queue", values.queue),
      prefillRatio: ratioOption("prefill-ratio", values["prefill-ratio"]),
      prefillMaxRatio: ratioOption("prefill-max-ratio", values["prefill-max-ratio"]),
      batchInvariant: !values["no-batch-invariance"],
      lookup: !values["no-lookup"],
      decodePriority: choiceOption(
        "decode-priority",
        values["decode-priority"],
        DECODE_PRIORITIES,
      ),
    },
    pty: {
      exitedTtlMs: intOption("exited-ttl", values["exited-ttl"]),
      scrollback: intOption("scrollback", values.scrollback),
    },
  };
  if (config.noModel && config.llm.model) throw new UsageError("--model and --no-model conflict");
  if (config.llm.noGpu && (values["gpu-layers"] !== undefined || values.device !== undefined)) {
    throw new UsageError("--no-gpu conflicts with --gpu-layers and --device");
  }

  // Fail fast, before a slow model load, on an unsafe directory or a live daemon.
  prepareSocketDir(socket);
  await refuseLiveDaemon(socket);

  const services = await makeServices(config);
  const server = await Server.listen({
    socket,
    log,
    services,
    ...Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)),
  });
  log("info", `umad listening on ${socket} (pid ${Deno.pid})`);

  const signal = await new Promise<string>((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(sig, () => resolve(sig));
    }
  });
  log("info", `${signal}: stopping`);
  const hardStop = setTimeout(() => {
    log("error", "shutdown took longer than 5 s; exiting anyway");
    Deno.exit(1);
  }, 4800);
  await server.close();
  clearTimeout(hardStop);
  return 0;
}

async function refuseLiveDaemon(socket: string): Promise<void> {
  try {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    conn.close();
  } catch {
    return; // nothing there, or a stale socket: Server.listen handles it under its lock
  }
  throw new ConfigError(`Another umad daemon is already serving "${socket}"`);
}
