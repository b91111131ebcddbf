import { type Request, type RequestType, UmadError } from "../protocol/mod.ts";
import { BusyError, SpawnError } from "../protocol/errors.ts";
import type { WatchKind } from "../protocol/events.ts";
import type { PtySpawnRequest, RequestOf, SessionInfo } from "../protocol/mod.ts";
import type { Service, Stream } from "../protocol/service.ts";
import { Emulator } from "./emulator.ts";
import { poller } from "./poller.ts";
import { liveChildren, spawnPty } from "./pty_process.ts";
import { Attachment, type PtyCounters, Session } from "./session.ts";
import { BYTES_PER_CELL } from "./emulator.ts";

/** Options of {@linkcode createPtyService}. */
export interface PtyServiceOptions {
  /** How long an exited session stays listed (default 5 minutes). */
  exitedTtlMs?: number;
  /** Scrollback lines kept per session and sent in snapshots (default 1000). */
  scrollback?: number;
  /**
   * Scrollback memory per session at most, in bytes (default 16 MiB): the emulator keeps
   * 12 bytes per cell, so a session keeps `min(scrollback, bytes / (cols × 12))` lines.
   */
  scrollbackBytes?: number;
  /**
   * Sessions running at once; the next `pty.spawn` gets `E_BUSY` (default 1024), as it
   * does when the daemon runs out of file descriptors at spawn. The daemon derives it
   * from its descriptor limit (`--max-sessions`). Exited sessions beyond it are
   * forgotten, oldest first, so the list stays bounded too.
   */
  maxSessions?: number;
  /** Log sink. */
  log?: (level: "debug" | "info" | "warn" | "error", msg: string) => void;
}

/** The service's counters, under `pty` in the daemon's `metrics` reply. */
export interface PtyMetrics {
  /** Sessions listed now (running + exited). */
  sessions: number;
  /** Sessions whose program is running. */
  running: number;
  /** Sessions whose program has exited (listed until their TTL). */
  exited: number;
  /** Sessions spawned since the start. */
  spawned_total: number;
  /** Programs that exited since the start. */
  exited_total: number;
  /** Clients attached now. */
  attachments: number;
  /** Bytes read from programs. */
  bytes_read: number;
  /** Bytes sent to clients as `pty.output` (snapshots not counted). */
  bytes_relayed: number;
  /** Times a client's backlog was dropped because its connection was over its cap. */
  dropped_backlogs: number;
  /** Snapshots sent (attach, re-attach, resync after a dropped backlog). */
  snapshots: number;
  /** Times a program was paused because the terminal emulator lagged too far. */
  emulator_pauses: number;
  /** Children spawned and not yet reaped. */
  live_children: number;
  /** Wake-ups of the PTY poller. */
  poll_cycles: number;
  /** The `maxSessions` limit. */
  max_sessions: number;
  /** Spawns refused with `E_BUSY` (the limit, or out of descriptors). */
  spawns_refused: number;
  /** Scrollback lines per session (the line cap). */
  scrollback_lines: number;
  /** Scrollback memory per session at most, bytes. */
  scrollback_bytes_max: number;
  /** Estimated emulator memory of all sessions' buffers now (lines × cols × 12). */
  screen_bytes: number;
  /** `pty.wait` requests pending now. */
  waits: number;
  /** `watch` streams open now. */
  watches: number;
  /** (Any further counter.) */
  [key: string]: number;
}

/** The PTY part of the daemon: a {@linkcode Service} with metrics and shutdown. */
export interface PtyService extends Service {
  /** `{pty: PtyMetrics}`. */
  metrics(): { pty: PtyMetrics };
  /** Hangs up every session and waits for them to exit, until `deadline` (performance.now() ms). */
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
  "pty.pause",
  "pty.resume",
  "pty.capture",
  "pty.wait",
  "watch",
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

/** What a path is, for a spawn's error message. */
function probe(path: string): "missing" | "directory" | "not-executable" | "ok" {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(path);
  } catch {
    return "missing";
  }
  if (st.isDirectory) return "directory";
  if (!st.isFile || ((st.mode ?? 0o755) & 0o111) === 0) return "not-executable";
  return "ok";
}

function notStartable(program: string, what: ReturnType<typeof probe>, where = ""): SpawnError {
  const cause = what === "directory"
    ? "is a directory"
    : what === "not-executable"
    ? "not executable (no execute permission)"
    : `not found${where}`;
  return new SpawnError(`Cannot spawn "${program}": ${cause}`);
}

/** Finds `program` on the child's PATH (posix_spawnp would search the daemon's). */
function resolveProgram(program: string, path: string | undefined, cwd: string): string {
  if (program.includes("/")) {
    const full = program.startsWith("/") ? program : `${cwd}/${program}`;
    const what = probe(full);
    if (what !== "ok") throw notStartable(program, what);
    return full;
  }
  const dirs = (path ?? "/usr/local/bin:/usr/bin:/bin").split(":");
  let seen: ReturnType<typeof probe> = "missing";
  for (const dir of dirs) {
    const full = `${dir === "" ? "." : dir}/${program}`;
    const what = probe(full);
    if (what === "ok") return full;
    if (what === "not-executable") seen = what;
  }
  throw notStartable(program, seen, ` in PATH (${dirs.join(":")})`);
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
  const scrollbackBytes = options.scrollbackBytes ?? 16 * 1024 * 1024;
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
  let refused = 0;
  let nextWait = 1;
  const waits = new Set<() => void>();
  const watches = new Set<{ stream: Stream; only?: Set<string> }>();

  function announce(s: Session, kind: WatchKind, fields: Record<string, unknown>): void {
    for (const w of watches) {
      if (w.only !== undefined && !w.only.has(s.id) && !w.only.has(s.name)) continue;
      w.stream.send("watch.event", { kind, session: s.id, ...fields });
    }
  }

  /**
   * Makes room for one more session: E_BUSY when `maxSessions` are running; exited ones
   * beyond the limit are forgotten, oldest first (they hold memory, not descriptors).
   */
  function admit(): void {
    if (running().length >= maxSessions) {
      refused++;
      throw new BusyError(
        `${maxSessions} terminal sessions are running already (--max-sessions); try again later`,
      );
    }
    if (sessions.size < maxSessions) return;
    const exited = [...sessions.values()].filter((s) => s.exited && s.attachments.size === 0)
      .sort((a, b) => a.created - b.created);
    for (const s of exited) {
      if (sessions.size < maxSessions) break;
      remove(s);
    }
  }
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
    admit();
    const daemonEnv = Deno.env.toObject();
    const home = daemonEnv.HOME ?? "/";
    const cwd = req.cwd ?? home;
    const argv = req.argv ?? [userShell()];
    let cwdInfo: Deno.FileInfo | undefined;
    try {
      cwdInfo = Deno.statSync(cwd);
    } catch {
      // missing: said below
    }
    if (cwdInfo?.isDirectory !== true) {
      throw new SpawnError(
        `Cannot spawn "${argv[0]}" in "${cwd}": ${
          cwdInfo === undefined ? "no such directory" : "not a directory"
        }`,
      );
    }
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
    // Failures come as SpawnError (the program) or BusyError (out of descriptors).
    let proc;
    try {
      proc = spawnPty({ file, argv, env, cwd, cols, rows });
    } catch (e) {
      if (e instanceof BusyError) refused++;
      throw e;
    }
    const name = req.name ?? argv[0].split("/").pop()!;
    const s = new Session(
      { id, name, proc, scrollback, scrollbackBytes, program: argv[0] },
      emulator,
      counters,
    );
    sessions.set(id, s);
    spawned++;
    s.onGone = () => remove(s);
    s.onResized = () => announce(s, "resized", { cols: s.cols, rows: s.rows });
    s.onTitle = () => announce(s, "title", { title: s.title });
    s.onExited = () => {
      exitedTotal++;
      announce(s, "exited", {
        code: s.status?.code ?? null,
        signal: s.status?.signal ?? null,
        reason: s.exitReason,
      });
      log("debug", `pty session ${id} exited (${JSON.stringify(s.status)})`);
      if (!closing && !s.removeOnExit) {
        ttlTimers.set(id, setTimeout(() => remove(s), exitedTtlMs));
      }
      for (const w of exitWaiters) w();
    };
    log("debug", `pty session ${id} spawned pid ${proc.pid}: ${argv.join(" ")}`);
    announce(s, "created", { name, pid: proc.pid, cols, rows });
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
      case "pty.pause":
      case "pty.resume": {
        const s = find(request.session, request.type === "pty.pause" ? "pause" : "resume");
        s.setPaused(stream.connectionId, request.type === "pty.pause");
        stream.end();
        return;
      }
      case "pty.capture": {
        const s = find(request.session, "capture");
        void s.capture(request.format, request.start, request.end).then((c) => {
          stream.send("pty.capture", { session: s.id, ...c });
          stream.end();
        });
        return;
      }
      case "pty.wait":
        startWait(find(request.session, "wait for"), request, stream);
        return;
      case "watch": {
        const w = {
          stream,
          only: request.sessions === undefined ? undefined : new Set(request.sessions),
        };
        watches.add(w);
        stream.signal.addEventListener("abort", () => {
          watches.delete(w);
          stream.end();
        }, { once: true });
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
          process: s.exited ? s.process : (s.proc.foreground() ?? s.process),
          ...(s.title !== "" ? { title: s.title } : {}),
        }));
        stream.send("pty.list", { sessions: list });
        stream.end();
        return;
      }
      default:
        throw new UmadError("E_PROTO_BAD_REQUEST", `pty: cannot handle "${request.type}"`);
    }
  }

  /**
   * A `pty.wait`: the worker tests the screen now, then each batch of new output and the
   * rows it changed. Ends matched, at the timeout, when the program has exited and its
   * last output was checked, or when the request is cancelled.
   */
  function startWait(s: Session, req: RequestOf<"pty.wait">, stream: Stream): void {
    const wid = nextWait++;
    let done = false;
    const finish = (matched: boolean, text?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      waits.delete(end);
      s.offExit(onExit);
      emulator.unwait(s.id, wid);
      if (stream.signal.reason !== "disconnected") {
        stream.send("pty.waited", {
          session: s.id,
          matched,
          ...(text !== undefined ? { text } : {}),
        });
      }
      stream.end();
    };
    const end = () => finish(false);
    const onExit = () => void s.parsedAll().then(() => finish(false));
    const timer = setTimeout(end, req.timeout_ms);
    waits.add(end);
    stream.signal.addEventListener("abort", end, { once: true });
    s.flushToEmulator();
    void emulator.wait(s.id, wid, req.pattern, req.regex).then((r) => {
      if (r.matched) finish(true, r.text);
    });
    if (s.exited) onExit();
    else s.onExit(onExit);
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
        max_sessions: maxSessions,
        spawns_refused: refused,
        scrollback_lines: scrollback,
        scrollback_bytes_max: scrollbackBytes,
        screen_bytes: all.reduce((n, s) => n + s.lines * s.cols * BYTES_PER_CELL, 0),
        waits: waits.size,
        watches: watches.size,
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
      for (const w of [...waits]) w();
      for (const w of watches) w.stream.end();
      watches.clear();
      for (const s of [...sessions.values()]) remove(s);
      emulator.terminate();
      if (running().length === 0) await poller.idle();
    },
  };
}
