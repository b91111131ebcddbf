import { C, libc } from "./libc.ts";

/** Something with a file descriptor the poller watches. */
export interface PollTarget {
  readonly fd: number;
  /** Watch for POLLIN (and hangups). */
  readonly wantRead: boolean;
  /** Watch for POLLOUT. */
  readonly wantWrite: boolean;
  /** Called on the event loop with the fd's `revents`; reads must not block. */
  onReady(revents: number): void;
}

/**
 * One `poll()` over every PTY master, run as a single `nonblocking` FFI call (one thread
 * of Deno's FFI pool, however many sessions), plus an eventfd (a pipe where there is no
 * eventfd) that wakes it when the set of fds or their interest changes. Ready fds are
 * then read synchronously, without blocking, on the event loop.
 *
 * The loop runs only while targets are registered, so an idle daemon (or a finished
 * test) has no pending FFI call.
 */
export class Poller {
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

  /** Wakes the pending poll so that it picks up changed interest. */
  changed(): void {
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

/** The process-wide poller all PTY sessions share. */
export const poller: Poller = new Poller();
