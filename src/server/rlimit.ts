/**
 * The process's descriptor limit (`RLIMIT_NOFILE`) through libc's `getrlimit` and
 * `setrlimit`, loaded with `Deno.dlopen` (Linux and macOS). Nothing else in the daemon
 * touches these pointers.
 *
 * @module
 */

/** The soft and hard descriptor limits of this process. */
export interface FdLimit {
  /** What the kernel enforces now (`rlim_cur`). */
  soft: number;
  /** How far an unprivileged process may raise `soft` (`rlim_max`). */
  hard: number;
}

const SYMBOLS = {
  // int getrlimit(int resource, struct rlimit *rlim);
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // int setrlimit(int resource, const struct rlimit *rlim);
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

/** `RLIMIT_NOFILE`: 7 in Linux's <bits/resource.h>, 8 in macOS's <sys/resource.h>. */
const RLIMIT_NOFILE = Deno.build.os === "darwin" ? 8 : 7;
/** macOS refuses a soft limit above `OPEN_MAX` (<sys/syslimits.h>) even when hard is infinite. */
const DARWIN_OPEN_MAX = 10240;
/** Limits above this (RLIM_INFINITY included) are treated as this many descriptors. */
const PRACTICAL_MAX = 1 << 20;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let lib: Libc | null | undefined;

function libc(): Libc | null {
  if (lib !== undefined) return lib;
  const os = Deno.build.os;
  if (os !== "linux" && os !== "darwin") return lib = null;
  const path = os === "darwin" ? "/usr/lib/libSystem.B.dylib" : "libc.so.6";
  try {
    lib = Deno.dlopen(path, SYMBOLS).symbols;
  } catch {
    lib = null;
  }
  return lib;
}

// struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }: two 64-bit words on both platforms.
function toNumber(v: bigint): number {
  return v > BigInt(PRACTICAL_MAX) ? PRACTICAL_MAX : Number(v);
}

/**
 * The descriptor limits, or null where libc cannot be loaded (then callers assume a
 * conservative limit).
 *
 * @example
 * ```ts
 * import { readFdLimit } from "./rlimit.ts";
 * const limit = readFdLimit();
 * if (limit) console.log(limit.soft <= limit.hard); // true
 * ```
 */
export function readFdLimit(): FdLimit | null {
  const c = libc();
  if (!c) return null;
  const buf = new BigUint64Array(2);
  if (c.getrlimit(RLIMIT_NOFILE, buf) !== 0) return null;
  return { soft: toNumber(buf[0]), hard: toNumber(buf[1]) };
}

/**
 * Raises the soft descriptor limit to the hard one, as most servers do at start (the
 * soft default, 1024 on Linux and 256 on macOS, is far below what a daemon with
 * thousands of clients needs). Returns the limits in force afterwards; leaves them
 * unchanged when the kernel refuses.
 *
 * @example
 * ```ts ignore
 * import { raiseFdLimit } from "./rlimit.ts";
 * const { soft } = raiseFdLimit() ?? { soft: 1024 };
 * ```
 */
export function raiseFdLimit(): FdLimit | null {
  const c = libc();
  const before = readFdLimit();
  if (!c || !before || before.soft >= before.hard) return before;
  const targets = [before.hard];
  if (Deno.build.os === "darwin" && before.hard > DARWIN_OPEN_MAX) targets.push(DARWIN_OPEN_MAX);
  for (const target of targets) {
    // The hard word is written back as read, so RLIM_INFINITY stays infinite.
    const buf = new BigUint64Array(2);
    if (c.getrlimit(RLIMIT_NOFILE, buf) !== 0) break;
    buf[0] = BigInt(target);
    if (c.setrlimit(RLIMIT_NOFILE, buf) === 0) break;
  }
  return readFdLimit();
}

/**
 * Descriptors this process has open now (`/proc/self/fd` on Linux, `/dev/fd` on macOS),
 * or null where neither can be listed.
 *
 * @example
 * ```ts
 * import { openFdCount } from "./rlimit.ts";
 * console.log((openFdCount() ?? 3) >= 3); // true: stdin, stdout, stderr at least
 * ```
 */
export function openFdCount(): number | null {
  for (const dir of ["/proc/self/fd", "/dev/fd"]) {
    try {
      let n = 0;
      for (const _ of Deno.readDirSync(dir)) n++;
      return Math.max(0, n - 1); // the listing's own descriptor
    } catch {
      // try the next
    }
  }
  return null;
}
