/**
 * A Unix stream socket and a wait on several descriptors, both plain libc calls on the
 * calling thread: what a relay that does nothing else needs (`umad attach`, as tmux's
 * client is). A key then reaches the daemon, and its echo the screen, without a hop
 * through a thread pool or the event loop: the process sleeps in `poll` and the kernel
 * wakes it. Nothing here is for the daemon, whose event loop must never block.
 *
 * @module
 */
import { C, cString, errno, libc } from "./libc.ts";

/** Readiness of one descriptor after {@linkcode waitFds}. */
export interface Ready {
  readable: boolean;
  /** Hung up or in error (reading then returns 0 or fails). */
  closed: boolean;
}

const EINTR = C.EINTR;

/**
 * Waits until one of `fds` is readable (or hung up), at most `timeoutMs` (-1: forever),
 * blocking this thread. Returns one {@linkcode Ready} per fd; all false on a timeout.
 */
export function waitFds(fds: readonly number[], timeoutMs: number): Ready[] {
  const buf = new Uint8Array(8 * fds.length);
  const view = new DataView(buf.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(8 * i, fd, true);
    view.setInt16(8 * i + 4, C.POLLIN, true);
  });
  const n = libc().poll_here(buf, BigInt(fds.length), timeoutMs);
  return fds.map((_, i) => {
    if (n <= 0) return { readable: false, closed: false };
    const r = view.getInt16(8 * i + 6, true);
    return {
      readable: (r & C.POLLIN) !== 0,
      closed: (r & (C.POLLHUP | C.POLLERR | C.POLLNVAL)) !== 0,
    };
  });
}

/**
 * {@linkcode waitFds} over a fixed set of fds with nothing allocated per wait, for a loop
 * that waits on the same fds for every key (the attach relay).
 *
 * @example
 * ```ts ignore
 * const p = new FdPoll([sock.fd, 0]);
 * const ready = p.wait(100);
 * if (ready & FdPoll.readable(1)) readFd(0, buf);
 * ```
 */
export class FdPoll {
  readonly #buf: Uint8Array;
  readonly #view: DataView;
  readonly #count: bigint;

  /** A poll set over `fds`, each waited on for input. */
  constructor(readonly fds: readonly number[]) {
    this.#buf = new Uint8Array(8 * fds.length);
    this.#view = new DataView(this.#buf.buffer);
    fds.forEach((fd, i) => {
      this.#view.setInt32(8 * i, fd, true);
      this.#view.setInt16(8 * i + 4, C.POLLIN, true);
    });
    this.#count = BigInt(fds.length);
  }

  /** The bit of {@linkcode wait}'s answer saying fd number `i` of the set is readable. */
  static readable(i: number): number {
    return 1 << (2 * i);
  }

  /** The bit saying fd number `i` hung up or failed. */
  static closed(i: number): number {
    return 2 << (2 * i);
  }

  /** Waits up to `timeoutMs` for input; the bits of the fds that are ready (0: timed out). */
  wait(timeoutMs: number): number {
    const n = libc().poll_here(this.#buf, this.#count, timeoutMs);
    if (n <= 0) return 0;
    let bits = 0;
    for (let i = 0; i < this.fds.length; i++) {
      const r = this.#view.getInt16(8 * i + 6, true);
      if (r & C.POLLIN) bits |= 1 << (2 * i);
      if (r & (C.POLLHUP | C.POLLERR | C.POLLNVAL)) bits |= 2 << (2 * i);
    }
    return bits;
  }
}

/**
 * Reads what is available from `fd` into `buf` (call after {@linkcode waitFds} said it
 * is readable, so it does not block). Returns the byte count, 0 at end of input, or -1
 * when nothing was there after all (EAGAIN, EINTR).
 */
export function readFd(fd: number, buf: Uint8Array): number {
  const n = Number(libc().read(fd, buf, BigInt(buf.length)));
  if (n >= 0) return n;
  const e = errno();
  if (e === C.EAGAIN || e === EINTR) return -1;
  return 0; // EIO and the like: the other side is gone
}

/** A connected Unix stream socket, blocking, used from one thread. */
export class UnixSocket {
  readonly fd: number;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Connects to `path`; throws with the errno's meaning when it cannot. */
  static connect(path: string): UnixSocket {
    const lib = libc();
    const fd = lib.socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`Cannot create a socket (errno ${errno()})`);
    const name = cString(path);
    if (name.length > C.SUN_PATH_BYTES) {
      lib.close(fd);
      throw new Error(`Socket path too long (${name.length - 1} bytes): "${path}"`);
    }
    const addr = new Uint8Array(2 + C.SUN_PATH_BYTES);
    if (C.SOCKADDR_FAMILY_BSD) {
      addr[0] = addr.length;
      addr[1] = C.AF_UNIX;
    } else {
      new DataView(addr.buffer).setUint16(0, C.AF_UNIX, true);
    }
    addr.set(name, 2);
    if (lib.connect(fd, addr, addr.length) !== 0) {
      const e = errno();
      lib.close(fd);
      throw new Error(`Cannot connect to "${path}" (errno ${e})`);
    }
    return new UnixSocket(fd);
  }

  /** Writes all of `bytes` (blocking until the daemon has taken them). False when closed. */
  write(bytes: Uint8Array): boolean {
    const lib = libc();
    let off = 0;
    while (off < bytes.length) {
      if (this.#closed) return false;
      const rest = bytes.subarray(off);
      const n = Number(lib.write(this.fd, rest, BigInt(rest.length)));
      if (n > 0) {
        off += n;
        continue;
      }
      if (n < 0 && errno() === EINTR) continue;
      return false; // EPIPE (SIGPIPE is ignored under Deno): the daemon is gone
    }
    return true;
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().close(this.fd);
  }
}
