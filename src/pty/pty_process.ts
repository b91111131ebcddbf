import { BusyError, SpawnError } from "../protocol/errors.ts";
import { C, cString, cStringArray, errno, libc, signalName, SIGNALS } from "./libc.ts";
import { poller, type PollTarget } from "./poller.ts";

/** How a PTY's program ended. */
export interface ExitStatus {
  /** Exit code, or null when a signal ended it. */
  code: number | null;
  /** Signal name (e.g. "SIGTERM"), or null when it exited normally. */
  signal: string | null;
}

/** What {@linkcode spawnPty} needs. */
export interface SpawnPtyOptions {
  /** The program: a path containing "/" (resolve PATH before). */
  file: string;
  /** argv, argv[0] included. */
  argv: readonly string[];
  /** The child's complete environment. */
  env: Readonly<Record<string, string>>;
  /** Working directory of the child. */
  cwd?: string;
  /** The terminal's width, columns. */
  cols: number;
  /** The terminal's height, rows. */
  rows: number;
}

const ERRNO_NAMES: Record<number, string> = {
  1: "operation not permitted",
  2: "no such file or directory",
  7: "argument list too long",
  8: "exec format error",
  11: "resource temporarily unavailable",
  12: "out of memory",
  13: "permission denied",
  20: "not a directory",
  21: "is a directory",
  23: "too many open files in the system",
  24: "too many open files",
  26: "text file busy",
  40: "too many levels of symbolic links",
};

/** Linux errno values the spawn path tells apart (the same numbers on macOS for these). */
const E = {
  ENOENT: 2,
  E2BIG: 7,
  ENOEXEC: 8,
  EAGAIN: 11,
  EACCES: 13,
  ENOTDIR: 20,
  EISDIR: 21,
  ENFILE: 23,
  EMFILE: 24,
} as const;

function describeErrno(n: number): string {
  return `${ERRNO_NAMES[n] ?? "error"} (errno ${n})`;
}

/**
 * The error for a failed spawn step: out of descriptors or processes is the daemon
 * being full (`E_BUSY`, retry later); anything else is this program failing to start
 * (`E_SPAWN`), with the cause in words.
 */
function spawnFailure(what: string, err: number, opts: SpawnPtyOptions): Error {
  if (err === E.EMFILE || err === E.ENFILE) {
    return new BusyError(`${what}: the daemon is out of file descriptors (${describeErrno(err)})`);
  }
  if (err === E.EAGAIN) {
    return new BusyError(`${what}: the process limit is reached (${describeErrno(err)})`);
  }
  const cause = err === E.ENOENT && opts.cwd !== undefined
    ? `not found, or the directory "${opts.cwd}" is missing`
    : err === E.ENOENT
    ? "not found"
    : err === E.EACCES
    ? "not executable (permission denied)"
    : err === E.ENOEXEC
    ? "not executable (not a binary, and no #! line)"
    : err === E.EISDIR
    ? "is a directory"
    : err === E.ENOTDIR
    ? "a path component is not a directory"
    : err === E.E2BIG
    ? `argument list too long (${argBytes(opts)} bytes of arguments and environment)`
    : (ERRNO_NAMES[err] ?? "could not start");
  return new SpawnError(`${what}: ${cause} (errno ${err})`);
}

/** Bytes argv and the environment take on the new process's stack (as E2BIG counts). */
function argBytes(opts: SpawnPtyOptions): number {
  const enc = new TextEncoder();
  let n = 0;
  for (const a of opts.argv) n += enc.encode(a).length + 1 + 8;
  for (const [k, v] of Object.entries(opts.env)) {
    n += enc.encode(k).length + enc.encode(v).length + 2 + 8;
  }
  return n;
}

/** Largest chunk one poll cycle reads from one PTY before moving on to the others. */
const CHUNK_BYTES = 256 * 1024;
/** Bytes of input queued (program not reading) before `write` refuses more. */
const MAX_WRITE_QUEUE = 4 * 1024 * 1024;
/** After the program exits, output still flowing from its children is relayed until
 * it pauses this long (or the slave closes). */
const EXIT_QUIET_MS = 100;
/** ...but never longer than this after the exit. */
const EXIT_MAX_DRAIN_MS = 3000;

const scratch = new Uint8Array(CHUNK_BYTES);

/**
 * After a keystroke-sized write, the event loop waits for the echo itself, asleep in
 * `ppoll` (no CPU burnt, so the program gets it), with the poll thread told to leave the
 * fd alone meanwhile: the echo then costs one wake-up, not two. Bounded per write; a
 * program that does not echo (a password prompt) is stopped being waited for after a few
 * misses, and misses are capped in wall time per second across all sessions.
 */
const ECHO_WAIT_MAX_INPUT = 64;
const ECHO_WAIT_US = 500;
const ECHO_MISS_BUDGET_MS_PER_S = 20;
/** After this many misses in a row a session is waited for only on every 16th write. */
const ECHO_MISS_STREAK = 3;
let missWindowStart = 0;
let missUsed = 0;
const echoTimeout = new BigInt64Array([0n, BigInt(ECHO_WAIT_US * 1000)]);
const echoTimeoutBytes = new Uint8Array(echoTimeout.buffer);

function echoWaitAllowed(): boolean {
  const now = performance.now();
  if (now - missWindowStart > 1000) {
    missWindowStart = now;
    missUsed = 0;
  }
  return missUsed < ECHO_MISS_BUDGET_MS_PER_S;
}

/**
 * One program on a pseudo-terminal: the master fd (non-blocking, read by the shared
 * {@linkcode poller}), the child's pid, a write queue, and exit detection that reports
 * only after the output is drained.
 */
export class PtyProcess implements PollTarget {
  /** The PTY master. */
  readonly fd: number;
  /** The program's pid (its process group and session leader). */
  readonly pid: number;
  /** Called for each chunk of output, on the event loop. */
  onData: (chunk: Uint8Array) => void = () => {};
  /** Called once, after the last `onData`. The master fd is closed by then. */
  onExit: (status: ExitStatus) => void = () => {};

  #paused = false;
  #writeQueue: Uint8Array[] = [];
  #queuedBytes = 0;
  #status: ExitStatus | undefined;
  #hungUp = false;
  #closed = false;
  #quietTimer: ReturnType<typeof setTimeout> | undefined;
  #maxTimer: ReturnType<typeof setTimeout> | undefined;
  #cols: number;
  #rows: number;
  #echoMisses = 0;
  #echoSkips = 0;
  #pfd: Uint8Array | undefined;
  #fgPgid = 0;
  #fgName: string | undefined;

  /** Takes over a spawned child's master `fd`: the poller reads it, the reaper waits for `pid`. */
  constructor(fd: number, pid: number, cols: number, rows: number) {
    this.fd = fd;
    this.pid = pid;
    this.#cols = cols;
    this.#rows = rows;
    poller.add(this);
    reaper.add(this);
  }

  /** Read output now (not paused, not hung up). */
  get wantRead(): boolean {
    return !this.#paused && !this.#hungUp;
  }
  /** Input is queued for the program. */
  get wantWrite(): boolean {
    return this.#writeQueue.length > 0 && !this.#hungUp;
  }
  /** True once the program has exited and its output was drained. */
  get closed(): boolean {
    return this.#closed;
  }
  /** The terminal's width, columns. */
  get cols(): number {
    return this.#cols;
  }
  /** The terminal's height, rows. */
  get rows(): number {
    return this.#rows;
  }
  /** Input bytes waiting for the program to read them. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Stops reading output (the kernel buffer fills and the program blocks). */
  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    poller.changed(this);
  }
  /** Reads output again. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#closed) return;
    poller.changed(this);
    if (this.#status !== undefined) this.#armQuiet(false);
  }

  /** Queues input for the program; false (nothing queued) when the queue is full. */
  write(data: Uint8Array): boolean {
    if (this.#closed || this.#hungUp) return true; // nobody reads it any more
    if (this.#queuedBytes + data.length > MAX_WRITE_QUEUE) return false;
    if (this.#writeQueue.length === 0) {
      const wait = data.length <= ECHO_WAIT_MAX_INPUT && this.#shouldWaitForEcho();
      const held = wait && poller.hold(this);
      const n = this.#writeSome(data);
      if (n === data.length) {
        if (wait) this.#waitForEcho();
        if (held) poller.changed(this); // watch again; reports what came in meanwhile
        return true;
      }
      data = data.subarray(Math.max(0, n));
      this.#writeQueue.push(data.slice());
      this.#queuedBytes += data.length;
      poller.changed(this);
      return true;
    }
    this.#writeQueue.push(data.slice());
    this.#queuedBytes += data.length;
    return true;
  }

  /**
   * The name of the terminal's foreground process (argv[0] of its foreground process
   * group's leader, as node-pty's `process` reads it), or undefined when it cannot be
   * read (the program exited, or not Linux).
   */
  foreground(): string | undefined {
    if (this.#closed || this.#hungUp) return undefined;
    const pgid = libc().tcgetpgrp(this.fd);
    if (pgid <= 0) return undefined;
    if (pgid === this.#fgPgid) return this.#fgName;
    let name: string | undefined;
    try {
      const cmdline = Deno.readFileSync(`/proc/${pgid}/cmdline`);
      const end = cmdline.indexOf(0);
      name = new TextDecoder().decode(cmdline.subarray(0, end < 0 ? cmdline.length : end));
      if (name === "") name = Deno.readTextFileSync(`/proc/${pgid}/comm`).trim();
    } catch {
      return undefined; // gone meanwhile: try again next time
    }
    this.#fgPgid = pgid;
    this.#fgName = name;
    return name;
  }

  /** Sets the terminal size; the kernel sends SIGWINCH to the foreground job. */
  resize(cols: number, rows: number): void {
    if (this.#closed) return;
    setWinsize(this.fd, cols, rows);
    this.#cols = cols;
    this.#rows = rows;
  }

  /** Sends a signal to the program's process group (or to the program alone). */
  kill(signal: string | number = "SIGHUP"): void {
    if (this.#status !== undefined) return;
    const signo = typeof signal === "number" ? signal : SIGNALS[signal];
    if (signo === undefined) throw new RangeError(`Unknown signal "${signal}"`);
    const lib = libc();
    if (lib.kill(-this.pid, signo) !== 0) lib.kill(this.pid, signo);
  }

  /**
   * Hangs up: closes the master (the kernel sends SIGHUP to the terminal's session)
   * and stops reading. Exit is still reported once the program is reaped.
   */
  hangUp(): void {
    if (this.#closed || this.#hungUp) return;
    this.#hungUp = true;
    poller.remove(this);
    libc().close(this.fd);
    this.#writeQueue = [];
    this.#queuedBytes = 0;
    this.kill("SIGHUP");
    this.#maybeFinish();
  }

  onReady(revents: number): void {
    if (revents & C.POLLOUT) this.#flush();
    if (revents & (C.POLLIN | C.POLLHUP | C.POLLERR)) this.#readAvailable();
    if (revents & C.POLLNVAL) this.#setHungUp();
  }

  /** Called by the reaper with the program's wait status. */
  reaped(status: ExitStatus): void {
    if (this.#status !== undefined) return;
    this.#status = status;
    if (!this.#hungUp) {
      if (this.#paused) {
        this.#armMax();
      } else {
        this.#readAvailable();
        this.#armMax();
      }
    }
    this.#maybeFinish();
  }

  #shouldWaitForEcho(): boolean {
    if (this.#paused || this.#status !== undefined || !echoWaitAllowed()) return false;
    if (this.#echoMisses < ECHO_MISS_STREAK) return true;
    return ++this.#echoSkips % 16 === 0; // look again now and then
  }

  /** Waits (bounded, asleep) for output after a keystroke and reads it here. */
  #waitForEcho(): void {
    const lib = libc();
    // struct pollfd { int fd; short events; short revents; }
    this.#pfd ??= new Uint8Array(new Int32Array([this.fd, C.POLLIN]).buffer);
    const t0 = performance.now();
    const r = lib.ppoll !== null
      ? lib.ppoll(this.#pfd, 1n, echoTimeoutBytes, null)
      : lib.poll_now(this.#pfd, 1n, 1);
    if (r > 0) {
      this.#echoMisses = 0;
      this.#readAvailable();
    } else {
      this.#echoMisses++;
      missUsed += performance.now() - t0;
    }
  }

  #writeSome(data: Uint8Array): number {
    const n = Number(libc().write(this.fd, data, BigInt(data.length)));
    if (n < 0) {
      const e = errno();
      if (e === C.EAGAIN || e === C.EINTR) return 0;
      return data.length; // EIO: the slave is gone; drop the input
    }
    return n;
  }

  #flush(): void {
    while (this.#writeQueue.length > 0) {
      const head = this.#writeQueue[0];
      const n = this.#writeSome(head);
      this.#queuedBytes -= n;
      if (n === head.length) {
        this.#writeQueue.shift();
      } else {
        this.#writeQueue[0] = head.subarray(n);
        break;
      }
    }
    if (this.#writeQueue.length === 0) poller.changed(this);
  }

  #readAvailable(): void {
    if (this.#hungUp || this.#closed) return;
    const lib = libc();
    let off = 0;
    let hup = false;
    while (off < CHUNK_BYTES) {
      const n = Number(lib.read(this.fd, scratch.subarray(off), BigInt(CHUNK_BYTES - off)));
      if (n > 0) {
        off += n;
        continue;
      }
      if (n === 0) {
        hup = true;
        break;
      }
      const e = errno();
      if (e === C.EINTR) continue;
      if (e !== C.EAGAIN) hup = true; // EIO: every slave fd is closed
      break;
    }
    if (off > 0) {
      const chunk = scratch.slice(0, off);
      try {
        this.onData(chunk);
      } catch (e) {
        console.error("umad pty: output handler failed:", e);
      }
    }
    if (hup) {
      this.#setHungUp();
    } else if (this.#status !== undefined) {
      // The program is gone but the slave is still open (a background child holds it):
      // finish once its output goes quiet.
      this.#armQuiet(off > 0);
    }
  }

  #armQuiet(restart: boolean): void {
    if (this.#closed) return;
    if (restart) {
      clearTimeout(this.#quietTimer);
      this.#quietTimer = undefined;
    }
    this.#quietTimer ??= setTimeout(() => {
      this.#quietTimer = undefined;
      if (!this.#paused) this.#finish(); // a paused reader re-arms on resume
    }, EXIT_QUIET_MS);
  }

  #armMax(): void {
    this.#maxTimer = setTimeout(() => {
      if (this.#paused) this.#armMax();
      else this.#finish();
    }, EXIT_MAX_DRAIN_MS);
  }

  #setHungUp(): void {
    if (this.#hungUp) return;
    this.#hungUp = true;
    poller.remove(this);
    libc().close(this.fd);
    this.#writeQueue = [];
    this.#queuedBytes = 0;
    // The slave closing usually means the program is exiting: look now, not at SIGCHLD.
    reaper.check(this);
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#hungUp && this.#status !== undefined) this.#finish();
  }

  #finish(): void {
    if (this.#closed || this.#status === undefined) return;
    clearTimeout(this.#quietTimer);
    clearTimeout(this.#maxTimer);
    if (!this.#hungUp) {
      this.#hungUp = true;
      poller.remove(this);
      libc().close(this.fd);
    }
    this.#closed = true;
    this.#writeQueue = [];
    this.#queuedBytes = 0;
    reaper.delete(this);
    this.onExit(this.#status);
  }
}

/** Sets a PTY's window size through its master fd. */
export function setWinsize(fd: number, cols: number, rows: number): void {
  // struct winsize { unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel; }
  const ws = new Uint16Array([rows, cols, 0, 0]);
  if (libc().ioctl(fd, C.TIOCSWINSZ, new Uint8Array(ws.buffer)) !== 0) {
    throw new Error(`Cannot set the terminal size: ${describeErrno(errno())}`);
  }
}

/** Decodes a `waitpid` status word. */
export function decodeWaitStatus(status: number): ExitStatus {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: null };
  return { code: null, signal: signalName(sig) };
}

/**
 * Reaps PTY children: on SIGCHLD, `waitpid(pid, WNOHANG)` for each child it knows (never
 * `waitpid(-1)`, which would steal other children of the daemon). Listens only while it
 * has children.
 */
class Reaper {
  #children = new Set<PtyProcess>();
  #listening = false;
  #statusBuf = new Int32Array(1);
  #timer: ReturnType<typeof setTimeout> | undefined;
  #onSignal = () => this.checkAll();

  add(p: PtyProcess): void {
    this.#children.add(p);
    if (!this.#listening) {
      Deno.addSignalListener("SIGCHLD", this.#onSignal);
      this.#listening = true;
    }
  }
  delete(p: PtyProcess): void {
    this.#children.delete(p);
    if (this.#children.size === 0) {
      if (this.#listening) {
        Deno.removeSignalListener("SIGCHLD", this.#onSignal);
        this.#listening = false;
      }
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
  /** Number of children not yet finished. */
  get size(): number {
    return this.#children.size;
  }
  checkAll(): void {
    for (const p of [...this.#children]) this.check(p);
  }
  /** Reaps `p` if it has exited; a hung-up child that has not is re-checked shortly. */
  check(p: PtyProcess): void {
    const lib = libc();
    const r = lib.waitpid(p.pid, this.#statusBuf, C.WNOHANG);
    if (r === p.pid) {
      p.reaped(decodeWaitStatus(this.#statusBuf[0]));
    } else if (r < 0 && errno() === C.ECHILD) {
      p.reaped({ code: null, signal: null }); // reaped elsewhere; status unknown
    } else if (this.#timer === undefined) {
      // Signals coalesce; a slow safety net costs one syscall per child per tick.
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        if (this.#children.size > 0) this.checkAll();
      }, 250);
    }
  }
}

const reaper = new Reaper();

/** Children spawned and not yet reported exited (a metric and a test hook). */
export function liveChildren(): number {
  return reaper.size;
}

/**
 * Opens a PTY pair, sets its size, and spawns `argv` with the slave as its stdin,
 * stdout, stderr and controlling terminal (Linux recipe, see NATIVE.md):
 * `posix_openpt` → `grantpt`/`unlockpt`/`ptsname_r` → `TIOCSWINSZ` → `posix_spawnp` with
 * file actions open(slave) on fd 0, dup2 to 1 and 2, closefrom(3), chdir; flags
 * SETSID | SETSIGDEF (all signals) | SETSIGMASK (empty). glibc runs setsid before the
 * file actions, so opening the slave makes it the controlling terminal. The daemon
 * never opens the slave itself.
 *
 * @example
 * ```ts ignore
 * const p = spawnPty({ file: "/bin/echo", argv: ["echo", "hi"], env: {}, cols: 80, rows: 24 });
 * p.onData = (b) => console.log(new TextDecoder().decode(b));
 * p.onExit = (s) => console.log("exit", s.code);
 * ```
 */
export function spawnPty(opts: SpawnPtyOptions): PtyProcess {
  if (Deno.build.os !== "linux") {
    throw new Error(
      `PTY sessions are implemented for Linux only (this is ${Deno.build.os}); ` +
        "see src/pty/README.md for the macOS route",
    );
  }
  const lib = libc();
  const fd = lib.posix_openpt(C.O_RDWR | C.O_NOCTTY | C.O_CLOEXEC);
  if (fd < 0) throw spawnFailure(`Cannot open a PTY for "${opts.file}"`, errno(), opts);
  let ok = false;
  const fa = new Uint8Array(C.FILE_ACTIONS_BYTES);
  const attr = new Uint8Array(C.SPAWNATTR_BYTES);
  let faInit = false;
  let attrInit = false;
  try {
    if (lib.grantpt(fd) !== 0 || lib.unlockpt(fd) !== 0) {
      throw spawnFailure(`Cannot unlock the PTY for "${opts.file}"`, errno(), opts);
    }
    const nameBuf = new Uint8Array(128);
    const r = lib.ptsname_r(fd, nameBuf, BigInt(nameBuf.length));
    if (r !== 0) throw spawnFailure(`Cannot name the PTY slave for "${opts.file}"`, r, opts);
    const slavePath = new TextDecoder().decode(nameBuf.subarray(0, nameBuf.indexOf(0)));
    const flags = lib.fcntl(fd, C.F_GETFL, 0n);
    lib.fcntl(fd, C.F_SETFL, BigInt(flags | C.O_NONBLOCK));
    setWinsize(fd, opts.cols, opts.rows);

    check(lib.posix_spawn_file_actions_init(fa), "file actions");
    faInit = true;
    const slave = cString(slavePath);
    check(lib.posix_spawn_file_actions_addopen(fa, 0, slave, C.O_RDWR, 0), "addopen");
    check(lib.posix_spawn_file_actions_adddup2(fa, 0, 1), "adddup2");
    check(lib.posix_spawn_file_actions_adddup2(fa, 0, 2), "adddup2");
    if (lib.posix_spawn_file_actions_addclosefrom_np === null) {
      throw new Error("posix_spawn_file_actions_addclosefrom_np is missing (glibc < 2.34)");
    }
    check(lib.posix_spawn_file_actions_addclosefrom_np(fa, 3), "addclosefrom_np");
    const cwd = opts.cwd === undefined ? undefined : cString(opts.cwd);
    if (cwd !== undefined) check(lib.posix_spawn_file_actions_addchdir_np(fa, cwd), "addchdir");

    check(lib.posix_spawnattr_init(attr), "spawn attributes");
    attrInit = true;
    check(
      lib.posix_spawnattr_setflags(
        attr,
        C.POSIX_SPAWN_SETSID | C.POSIX_SPAWN_SETSIGDEF | C.POSIX_SPAWN_SETSIGMASK,
      ),
      "setflags",
    );
    const sigs = new Uint8Array(C.SIGSET_BYTES);
    lib.sigfillset(sigs);
    check(lib.posix_spawnattr_setsigdefault(attr, sigs), "setsigdefault");
    const mask = new Uint8Array(C.SIGSET_BYTES);
    lib.sigemptyset(mask);
    check(lib.posix_spawnattr_setsigmask(attr, mask), "setsigmask");

    const argv = cStringArray(opts.argv);
    const envp = cStringArray(Object.entries(opts.env).map(([k, v]) => `${k}=${v}`));
    const pidBuf = new Int32Array(1);
    const file = cString(opts.file);
    const rc = lib.posix_spawnp(
      new Uint8Array(pidBuf.buffer),
      file,
      fa,
      attr,
      new Uint8Array(argv.array.buffer),
      new Uint8Array(envp.array.buffer),
    );
    // Keep the strings alive past the call.
    void [argv.keep, envp.keep, slave, cwd, file];
    if (rc !== 0) throw spawnFailure(`Cannot spawn "${opts.argv[0]}"`, rc, opts);
    ok = true;
    return new PtyProcess(fd, pidBuf[0], opts.cols, opts.rows);
  } finally {
    if (faInit) lib.posix_spawn_file_actions_destroy(fa);
    if (attrInit) lib.posix_spawnattr_destroy(attr);
    if (!ok) lib.close(fd);
  }
}

function check(rc: number, what: string): void {
  // These only fail for lack of memory (ENOMEM): the daemon's problem, not the program's.
  if (rc !== 0) throw new Error(`Cannot prepare the spawn (${what}): ${describeErrno(rc)}`);
}
