import { C, libc } from "./libc.ts";

/** Something with a file descriptor the poller watches. */
export interface PollTarget {
  /** The descriptor to watch. */
  readonly fd: number;
  /** Watch for POLLIN (and hangups). */
  readonly wantRead: boolean;
  /** Watch for POLLOUT. */
  readonly wantWrite: boolean;
  /** Called on the event loop with the fd's `revents`; reads must not block. */
  onReady(revents: number): void;
}

/** What the PTY code needs from a poller. */
export interface Poller {
  /** Poll cycles run (a metric). */
  readonly cycles: number;
  /** Number of registered targets. */
  readonly size: number;
  /** Starts watching `target`. */
  add(target: PollTarget): void;
  /** Stops watching `target` (its fd may be closed right after). */
  remove(target: PollTarget): void;
  /** `target`'s interest changed (all targets' when omitted): watch accordingly. */
  changed(target?: PollTarget): void;
  /**
   * Stops reporting input on `target` until the next `changed(target)`, so that the event
   * loop can wait for it itself without the poll thread waking too. False where the
   * poller cannot (then the poll thread also wakes: harmless, only slower).
   */
  hold(target: PollTarget): boolean;
  /** Resolves once the loop has stopped (after the last target was removed). */
  idle(): Promise<void>;
}

/**
 * Portable poller: one `poll()` over every PTY master, run as a single `nonblocking` FFI
 * call (one thread of Deno's FFI pool, however many sessions), plus an eventfd (a pipe
 * where there is no eventfd) that wakes it when the set of fds or their interest
 * changes. Ready fds are then read synchronously, without blocking, on the event loop.
 *
 * The loop runs only while targets are registered, so an idle daemon (or a finished
 * test) has no pending FFI call.
 */
export class PollPoller implements Poller {
  #targets = new Set<PollTarget>();
  #wakeRead = -1;
  #wakeWrite = -1;
  #loop: Promise<void> | undefined;
  #wakePending = false;
  #wakeBuf = new BigUint64Array([1n]);
  #drainBuf = new Uint8Array(64);
  /** Poll cycles run (a metric). */
  cycles = 0;

  /** Number of registered targets. */
  get size(): number {
    return this.#targets.size;
  }

  /** Starts watching `target`. */
  add(target: PollTarget): void {
    this.#targets.add(target);
    if (this.#loop === undefined) {
      this.#openWake();
      this.#loop = this.#run().finally(() => {
        this.#loop = undefined;
        this.#closeWake();
        // A target added while the loop was winding down needs a new loop.
        if (this.#targets.size > 0) this.add([...this.#targets][0]);
      });
    } else {
      this.changed();
    }
  }

  /** Stops watching `target` (its fd may be closed right after). */
  remove(target: PollTarget): void {
    if (this.#targets.delete(target)) this.changed();
  }

  hold(_target: PollTarget): boolean {
    return false;
  }

  /** Wakes the pending poll so that it picks up changed interest. */
  changed(_target?: PollTarget): void {
    if (this.#wakeWrite < 0 || this.#wakePending) return;
    this.#wakePending = true;
    libc().write(this.#wakeWrite, this.#wakeBuf, 8n);
  }

  /** Resolves once the loop has stopped (after the last target was removed). */
  async idle(): Promise<void> {
    while (this.#loop !== undefined) await this.#loop;
  }

  #openWake(): void {
    const lib = libc();
    if (lib.eventfd !== null) {
      const fd = lib.eventfd(0, C.EFD_CLOEXEC | C.EFD_NONBLOCK);
      if (fd >= 0) {
        this.#wakeRead = this.#wakeWrite = fd;
        return;
      }
    }
    const fds = new Int32Array(2);
    if (lib.pipe(fds) !== 0) throw new Error("Cannot create the poller's wake pipe");
    for (const fd of fds) {
      lib.fcntl(fd, C.F_SETFL, BigInt(lib.fcntl(fd, C.F_GETFL, 0n) | C.O_NONBLOCK));
    }
    [this.#wakeRead, this.#wakeWrite] = fds;
  }

  #closeWake(): void {
    const lib = libc();
    lib.close(this.#wakeRead);
    if (this.#wakeWrite !== this.#wakeRead) lib.close(this.#wakeWrite);
    this.#wakeRead = this.#wakeWrite = -1;
    this.#wakePending = false;
  }

  async #run(): Promise<void> {
    const lib = libc();
    while (this.#targets.size > 0) {
      const targets = [...this.#targets];
      // struct pollfd { int fd; short events; short revents; }
      const buf = new ArrayBuffer(8 * (targets.length + 1));
      const view = new DataView(buf);
      view.setInt32(0, this.#wakeRead, true);
      view.setInt16(4, C.POLLIN, true);
      targets.forEach((t, i) => {
        const events = (t.wantRead ? C.POLLIN : 0) | (t.wantWrite ? C.POLLOUT : 0);
        // A negative fd makes poll skip the entry (a paused reader with nothing to write).
        view.setInt32(8 * (i + 1), events === 0 ? -1 : t.fd, true);
        view.setInt16(8 * (i + 1) + 4, events, true);
      });
      const n = await lib.poll(new Uint8Array(buf), BigInt(targets.length + 1), -1);
      this.cycles++;
      if (n <= 0) continue; // EINTR
      if (view.getInt16(6, true) !== 0) {
        while (lib.read(this.#wakeRead, this.#drainBuf, 64n) > 0) {
          // drain
        }
        this.#wakePending = false;
      }
      for (let i = 0; i < targets.length; i++) {
        const revents = view.getInt16(8 * (i + 1) + 6, true);
        const t = targets[i];
        if (revents === 0 || !this.#targets.has(t)) continue;
        try {
          t.onReady(revents);
        } catch (e) {
          console.error("umad pty: poll handler failed:", e);
        }
      }
    }
  }
}

/**
 * Linux poller: every PTY master in one epoll set, each registered `EPOLLONESHOT`, and
 * one `epoll_wait` pending as a `nonblocking` FFI call (one thread of Deno's FFI pool).
 * Interest changes are `epoll_ctl` calls from the event loop, no wake-up needed; a
 * target is re-armed after its handler ran. Because a fired fd stays disarmed until then,
 * the event loop can also take an fd out of the poll thread's hands for a moment
 * ({@linkcode hold}): after a keystroke, it waits for the echo itself, and the echo then
 * costs one wake-up (the event loop's) instead of two (the poll thread's, then the event
 * loop's through Deno's completion queue).
 *
 * The loop runs only while targets are registered.
 */
export class EpollPoller implements Poller {
  #targets = new Map<number, PollTarget>();
  /** fds currently in the epoll set (with interest, armed or fired). */
  #inSet = new Set<number>();
  #epfd = -1;
  #wakeFd = -1;
  #loop: Promise<void> | undefined;
  #ev = new Uint8Array(C.EPOLL_EVENT_BYTES);
  #evView = new DataView(this.#ev.buffer);
  #wakeBuf = new BigUint64Array([1n]);
  #drainBuf = new Uint8Array(8);
  cycles = 0;

  get size(): number {
    return this.#targets.size;
  }

  add(target: PollTarget): void {
    if (this.#loop === undefined) this.#start();
    this.#targets.set(target.fd, target);
    this.#arm(target);
  }

  remove(target: PollTarget): void {
    if (this.#targets.get(target.fd) !== target) return;
    this.#targets.delete(target.fd);
    if (this.#inSet.delete(target.fd)) this.#ctl(C.EPOLL_CTL_DEL, target.fd, 0);
    if (this.#targets.size === 0) this.#wake();
  }

  changed(target?: PollTarget): void {
    if (target === undefined) {
      for (const t of this.#targets.values()) this.#arm(t);
    } else if (this.#targets.get(target.fd) === target) {
      this.#arm(target);
    }
  }

  hold(target: PollTarget): boolean {
    if (this.#targets.get(target.fd) !== target || !this.#inSet.has(target.fd)) return false;
    // Armed for nothing but hang-ups and errors (always reported).
    this.#ctl(C.EPOLL_CTL_MOD, target.fd, C.EPOLLONESHOT);
    return true;
  }

  async idle(): Promise<void> {
    while (this.#loop !== undefined) await this.#loop;
  }

  /** Registers `t` with its current interest, once; none: out of the set (a paused
   * reader must not be woken by a hang-up it will not read). */
  #arm(t: PollTarget): void {
    const events = (t.wantRead ? C.POLLIN : 0) | (t.wantWrite ? C.POLLOUT : 0);
    if (events === 0) {
      if (this.#inSet.delete(t.fd)) this.#ctl(C.EPOLL_CTL_DEL, t.fd, 0);
      return;
    }
    const op = this.#inSet.has(t.fd) ? C.EPOLL_CTL_MOD : C.EPOLL_CTL_ADD;
    this.#inSet.add(t.fd);
    this.#ctl(op, t.fd, events | C.EPOLLONESHOT);
  }

  #ctl(op: number, fd: number, events: number): void {
    this.#evView.setUint32(0, events >>> 0, true);
    this.#evView.setInt32(4, fd, true); // data: the fd (x86_64 packs data at offset 4)
    if (C.EPOLL_EVENT_BYTES === 16) this.#evView.setInt32(8, fd, true);
    const lib = libc();
    if (lib.epoll_ctl!(this.#epfd, op, fd, this.#ev) !== 0 && op === C.EPOLL_CTL_MOD) {
      // The kernel dropped it (the fd was closed behind our back): register it again.
      lib.epoll_ctl!(this.#epfd, C.EPOLL_CTL_ADD, fd, this.#ev);
    }
  }

  #wake(): void {
    if (this.#wakeFd >= 0) libc().write(this.#wakeFd, this.#wakeBuf, 8n);
  }

  #start(): void {
    const lib = libc();
    this.#epfd = lib.epoll_create1!(C.EPOLL_CLOEXEC);
    if (this.#epfd < 0) throw new Error("Cannot create the PTY poller's epoll set");
    this.#wakeFd = lib.eventfd!(0, C.EFD_CLOEXEC | C.EFD_NONBLOCK);
    if (this.#wakeFd < 0) {
      lib.close(this.#epfd);
      throw new Error("Cannot create the PTY poller's eventfd");
    }
    // The wake fd stays level-triggered: it only ever means "look at the target set".
    this.#evView.setUint32(0, C.POLLIN, true);
    this.#evView.setInt32(4, this.#wakeFd, true);
    if (C.EPOLL_EVENT_BYTES === 16) this.#evView.setInt32(8, this.#wakeFd, true);
    lib.epoll_ctl!(this.#epfd, C.EPOLL_CTL_ADD, this.#wakeFd, this.#ev);
    this.#loop = this.#run().finally(() => {
      this.#loop = undefined;
      lib.close(this.#wakeFd);
      lib.close(this.#epfd);
      this.#wakeFd = this.#epfd = -1;
      this.#inSet.clear();
      // A target added while the loop was winding down needs a new loop.
      const left = [...this.#targets.values()];
      if (left.length > 0) {
        this.#start();
        for (const t of left) this.#arm(t);
      }
    });
  }

  async #run(): Promise<void> {
    const lib = libc();
    const max = 64;
    const size = C.EPOLL_EVENT_BYTES;
    const dataAt = size === 16 ? 8 : 4;
    const buf = new Uint8Array(size * max);
    const view = new DataView(buf.buffer);
    while (this.#targets.size > 0) {
      const n = await lib.epoll_wait!(this.#epfd, buf, max, -1);
      this.cycles++;
      for (let i = 0; i < n; i++) {
        const revents = view.getUint32(i * size, true);
        const fd = view.getInt32(i * size + dataAt, true);
        if (fd === this.#wakeFd) {
          while (lib.read(this.#wakeFd, this.#drainBuf, 8n) > 0) {
            // drain
          }
          continue;
        }
        const t = this.#targets.get(fd);
        if (t === undefined) continue;
        try {
          t.onReady(revents);
        } catch (e) {
          console.error("umad pty: poll handler failed:", e);
        }
        // Fired one-shot: watch again (unless the handler removed it).
        if (this.#targets.get(fd) === t) this.#arm(t);
      }
    }
  }
}

/** The process-wide poller all PTY sessions share. */
export const poller: Poller = Deno.build.os === "linux" ? new EpollPoller() : new PollPoller();
