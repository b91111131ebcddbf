import { type Message, type Request, type RequestType, UmadError } from "../protocol/mod.ts";
import type { PtySpawnRequest, SessionInfo } from "../protocol/mod.ts";
import type { Service, Stream } from "../protocol/service.ts";
import { Emulator } from "./emulator.ts";
import { poller } from "./poller.ts";
import { liveChildren, spawnPty } from "./pty_process.ts";
import { Attachment, type PtyCounters, Session } from "./session.ts";

/** Options of {@linkcode createPtyService}. */
export interface PtyServiceOptions {
  /** How long an exited session stays listed (default 5 minutes). */
  exitedTtlMs?: number;
  /** Scrollback lines kept per session and sent in snapshots (default 1000). */
  scrollback?: number;
  /**
   * Sessions running at once; the next `pty.spawn` gets `E_BUSY` (default 1024). The
   * daemon derives it from its descriptor limit (`--max-sessions`).
   */
  maxSessions?: number;
  /** Log sink. */
  log?: (level: "debug" | "info" | "warn" | "error", msg: string) => void;
}

/** The service's counters, under `pty` in the daemon's `metrics` reply. */
export interface PtyMetrics extends Message {
  /** Sessions listed now (running + exited). */
  sessions: number;
  running: number;
  exited: number;
  spawned_total: number;
  exited_total: number;
  /** Clients attached now. */
  attachments: number;
  /** Bytes read from programs. */
  bytes_read: number;
  /** Bytes sent to clients as `pty.output` (snapshots not counted). */
  bytes_relayed: number;
  /** Times a client's backlog was dropped because its connection was over its cap. */
  dropped_backlogs: number;
  snapshots: number;
  /** Times a program was paused because the terminal emulator lagged too far. */
  emulator_pauses: number;
  /** Children spawned and not yet reaped. */
  live_children: number;
  poll_cycles: number;
}

/** The PTY part of the daemon: a {@linkcode Service} with metrics and shutdown. */
export interface PtyService extends Service {
  /** `{pty: PtyMetrics}`. */
  metrics(): { pty: PtyMetrics };
  close(deadline?: number): Promise<void>;
}

const TYPES: readonly RequestType[] = [
  "pty.spawn",
  "pty.attach",
  "pty.input",
  "pty.resize",
  "pty.detach",
  "pty.kill",
  "pty.list",
];

const DEFAULT_COLS = 80;
const DEFAULT_ROWS = 24;

function newId(): string {
  const b = crypto.getRandomValues(new Uint8Array(4));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** The user's shell: $SHELL, else the passwd entry, else /bin/sh. */
export function userShell(): string {
  const env = Deno.env.get("SHELL");
  if (env) return env;
  try {
    const uid = Deno.uid();
    for (const line of Deno.readTextFileSync("/etc/passwd").split("\n")) {
      const f = line.split(":");
      if (f.length >= 7 && Number(f[2]) === uid && f[6]) return f[6];
    }
  } catch {
    // no passwd file
  }
  return "/bin/sh";
}

function isExecutable(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0o755) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Finds `program` on the child's PATH (posix_spawnp would search the daemon's). */
function resolveProgram(program: string, path: string | undefined, cwd: string): string {
  if (program.includes("/")) {
    const full = program.startsWith("/") ? program : `${cwd}/${program}`;
    if (!isExecutable(full)) {
      throw new UmadError("E_NOT_FOUND", `Cannot spawn "${program}": not an executable file`);
    }
    return full;
  }
  for (const dir of (path ?? "/usr/local/bin:/usr/bin:/bin").split(":")) {
    const full = `${dir === "" ? "." : dir}/${program}`;
    if (isExecutable(full)) return full;
  }
  throw new UmadError("E_NOT_FOUND", `Cannot spawn "${program}": not found in PATH`);
}

/**
 * Creates the service that answers `pty.*` requests: sessions that outlive their
 * clients, several clients per session, snapshots on attach, slow-client isolation.
 *
 * @example
 * ```ts ignore
 * const pty = createPtyService({ exitedTtlMs: 60_000 });
 * // server.register(pty) ... later:
 * await pty.close();
 * ```
 */
export function createPtyService(options: PtyServiceOptions = {}): PtyService {
  const exitedTtlMs = options.exitedTtlMs ?? 5 * 60_000;
  const scrollback = options.scrollback ?? 1000;
  const maxSessions = options.maxSessions ?? 1024;
  const log = options.log ?? (() => {});
  const emulator = new Emulator(log);
  const sessions = new Map<string, Session>();
  const ttlTimers = new Map<string, ReturnType<typeof setTimeout>>();
  const counters: PtyCounters = {
    bytesRead: 0,
    bytesRelayed: 0,
    droppedBacklogs: 0,
    snapshots: 0,
    emulatorPauses: 0,
  };
  let spawned = 0;
  let exitedTotal = 0;
  let closing = false;
  const exitWaiters = new Set<() => void>();

  function find(ref: string, verb: string): Session {
    const s = sessions.get(ref);
    if (s !== undefined) return s;
    const named = [...sessions.values()].filter((x) => x.name === ref);
    if (named.length === 1) return named[0];
    throw new UmadError(
      "E_NOT_FOUND",
      named.length > 1
        ? `Cannot ${verb} session "${ref}": several sessions have that name; use the id`
        : `Cannot ${verb} session "${ref}": not found`,
    );
  }

  function remove(s: Session): void {
    if (sessions.get(s.id) !== s) return;
    sessions.delete(s.id);
    clearTimeout(ttlTimers.get(s.id));
    ttlTimers.delete(s.id);
    s.dispose();
    log("debug", `pty session ${s.id} removed`);
  }

  function spawn(req: PtySpawnRequest): Session {
    if (closing) throw new UmadError("E_BUSY", "The daemon is shutting down");
    if (running().length >= maxSessions) {
      throw new UmadError(
        "E_BUSY",
        `${maxSessions} terminal sessions are running already (--max-sessions); try again later`,
      );
    }
    const daemonEnv = Deno.env.toObject();
    const home = daemonEnv.HOME ?? "/";
    const cwd = req.cwd ?? home;
    try {
      if (!Deno.statSync(cwd).isDirectory) throw new Error();
    } catch {
      throw new UmadError("E_NOT_FOUND", `Cannot spawn in "${cwd}": no such directory`);
    }
    const argv = req.argv ?? [userShell()];
    let id = newId();
    while (sessions.has(id)) id = newId();
    const env: Record<string, string> = {
      ...daemonEnv,
      TERM: "xterm-256color",
      ...req.env,
      UMAD_SESSION: id,
    };
    const file = resolveProgram(argv[0], env.PATH, cwd);
    const cols = req.cols ?? DEFAULT_COLS;
    const rows = req.rows ?? DEFAULT_ROWS;
    let proc;
    try {
      proc = spawnPty({ file, argv, env, cwd, cols, rows });
    } catch (e) {
      throw new UmadError("E_INTERNAL", (e as Error).message);
    }
    const name = req.name ?? argv[0].split("/").pop()!;
    const s = new Session({ id, name, proc, scrollback }, emulator, counters);
    sessions.set(id, s);
    spawned++;
    s.onGone = () => remove(s);
    s.onExited = () => {
      exitedTotal++;
      log("debug", `pty session ${id} exited (${JSON.stringify(s.status)})`);
      if (!closing && !s.removeOnExit) {
        ttlTimers.set(id, setTimeout(() => remove(s), exitedTtlMs));
      }
      for (const w of exitWaiters) w();
    };
    log("debug", `pty session ${id} spawned pid ${proc.pid}: ${argv.join(" ")}`);
    return s;
  }

  function handle(request: Request, stream: Stream): void {
    switch (request.type) {
      case "pty.spawn": {
        const s = spawn(request);
        stream.send("pty.spawned", { session: s.id, pid: s.proc.pid });
        stream.end();
        return;
      }
      case "pty.attach": {
        const s = find(request.session, "attach");
        s.attach(new Attachment(stream, request.readonly, request.cols, request.rows));
        return;
      }
      case "pty.input": {
        find(request.session, "write to").input(stream.connectionId, request.data);
        stream.end();
        return;
      }
      case "pty.resize": {
        find(request.session, "resize").resize(stream.connectionId, request.cols, request.rows);
        stream.end();
        return;
      }
      case "pty.detach": {
        const s = find(request.session, "detach");
        for (const a of s.attachmentsOf(stream.connectionId)) s.detach(a);
        stream.send("pty.detached", { session: s.id });
        stream.end();
        return;
      }
      case "pty.kill": {
        const s = find(request.session, "kill");
        if (s.exited) {
          remove(s);
        } else {
          s.removeOnExit = true;
          s.exitReason = "killed";
          s.proc.kill(request.signal);
        }
        stream.send("pty.killed", { session: s.id });
        stream.end();
        return;
      }
      case "pty.list": {
        const list = [...sessions.values()].sort((a, b) => a.created - b.created).map((
          s,
        ): SessionInfo => ({
          session: s.id,
          name: s.name,
          pid: s.proc.pid,
          cols: s.cols,
          rows: s.rows,
          clients: s.attachments.size,
          state: s.exited ? "exited" : "running",
          ...(s.exited ? { code: s.status!.code, signal: s.status!.signal } : {}),
          created: s.created,
        }));
        stream.send("pty.list", { sessions: list });
        stream.end();
        return;
      }
      default:
        throw new UmadError("E_PROTO_BAD_REQUEST", `pty: cannot handle "${request.type}"`);
    }
  }

  function running(): Session[] {
    return [...sessions.values()].filter((s) => !s.exited);
  }

  async function waitExits(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (running().length > 0 && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.max(1, deadline - Date.now()));
        function done() {
          clearTimeout(t);
          exitWaiters.delete(done);
          resolve();
        }
        exitWaiters.add(done);
      });
    }
  }

  return {
    types: TYPES,
    handle,
    metrics(): { pty: PtyMetrics } {
      const all = [...sessions.values()];
      const pty: PtyMetrics = {
        sessions: all.length,
        running: all.filter((s) => !s.exited).length,
        exited: all.filter((s) => s.exited).length,
        spawned_total: spawned,
        exited_total: exitedTotal,
        attachments: all.reduce((n, s) => n + s.attachments.size, 0),
        bytes_read: counters.bytesRead,
        bytes_relayed: counters.bytesRelayed,
        dropped_backlogs: counters.droppedBacklogs,
        snapshots: counters.snapshots,
        emulator_pauses: counters.emulatorPauses,
        live_children: liveChildren(),
        poll_cycles: poller.cycles,
      };
      return { pty };
    },
    disconnected(connectionId: number): void {
      for (const s of sessions.values()) {
        for (const a of s.attachmentsOf(connectionId)) s.detach(a, true);
      }
    },
    async close(deadline = performance.now() + 4000): Promise<void> {
      closing = true;
      for (const s of running()) {
        s.exitReason = "shutdown";
        s.proc.hangUp();
      }
      // Half the time left for programs to exit on SIGHUP, the rest after SIGKILL.
      await waitExits(Math.max(0, (deadline - performance.now()) / 2));
      for (const s of running()) s.proc.kill("SIGKILL");
      await waitExits(Math.max(0, deadline - performance.now()));
      for (const s of [...sessions.values()]) remove(s);
      emulator.terminate();
      if (running().length === 0) await poller.idle();
    },
  };
}
