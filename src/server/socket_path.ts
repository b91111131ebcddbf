import { dirname } from "node:path";
import { ConfigError } from "../protocol/errors.ts";
import {
  checkSocketDir,
  checkSocketFile,
  checkSocketPathLength,
  type PathFacts,
  type SocketLocation,
  socketLocation,
} from "../protocol/socket_path.ts";

/**
 * The daemon's socket: `--socket`, else the environment's (see
 * {@linkcode socketLocation}), with how it was chosen.
 *
 * @example
 * ```ts
 * import { resolveSocket } from "./socket_path.ts";
 * console.log(resolveSocket("/tmp/x/umad.sock").kind); // "explicit"
 * ```
 */
export function resolveSocket(flag?: string): SocketLocation {
  return socketLocation(flag, Deno.env.toObject(), Deno.uid() ?? 0);
}

/**
 * The daemon's socket path (see {@linkcode resolveSocket}).
 *
 * @example
 * ```ts
 * import { resolveSocketPath } from "./socket_path.ts";
 * console.log(resolveSocketPath("/tmp/x/umad.sock")); // "/tmp/x/umad.sock"
 * ```
 */
export function resolveSocketPath(flag?: string): string {
  return resolveSocket(flag).path;
}

/** `lstat` facts of `path`, or null when nothing is there. */
export function lstatFacts(path: string): PathFacts | null {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  return {
    isSymlink: info.isSymlink,
    isDirectory: info.isDirectory,
    isSocket: info.isSocket === true,
    uid: info.uid ?? 0,
    mode: info.mode ?? 0,
  };
}

/**
 * Makes sure the socket's directory is safe by PROTOCOL.md's rules
 * (`protocol/socket_path.ts`): creates it with mode 0700 when missing, and refuses
 * (throws {@linkcode ConfigError}) a path too long for a Unix socket, a directory that
 * is a symlink, belongs to someone else, or that others may write (default directory:
 * any group/other bit; explicit path: writable by others without the sticky bit).
 * Returns the directory.
 */
export function prepareSocketDir(socket: SocketLocation | string): string {
  const { path, kind } = typeof socket === "string"
    ? { path: socket, kind: "explicit" as const }
    : socket;
  const length = checkSocketPathLength(path, Deno.build.os);
  if (!length.ok) throw new ConfigError(`Socket path "${path}" ${length.reason}`);
  const dir = dirname(path);
  let facts = lstatFacts(dir);
  if (facts === null) {
    Deno.mkdirSync(dirname(dir), { recursive: true });
    try {
      Deno.mkdirSync(dir, { mode: 0o700 });
      Deno.chmodSync(dir, 0o700); // mkdir's mode goes through the umask
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    facts = lstatFacts(dir);
  }
  const uid = Deno.uid() ?? 0;
  const verdict = facts === null
    ? { ok: false as const, reason: "vanished while it was being created" }
    : checkSocketDir(facts, { uid, kind });
  if (!verdict.ok) {
    throw new ConfigError(
      `Socket directory "${dir}" ${verdict.reason}: refusing to use it (${
        kind === "default"
          ? "remove it and umad recreates it with mode 0700"
          : "choose a directory of your own, or a sticky one such as /tmp"
      })`,
    );
  }
  return dir;
}

/**
 * Refuses to reuse a file beside the socket (the socket itself, its lock) that is a
 * symlink or belongs to another user: in a shared sticky directory such as `/tmp`,
 * someone else may have put it there.
 */
export function refuseForeignFile(path: string, what: "socket" | "lock"): void {
  const facts = lstatFacts(path);
  if (facts === null) return;
  const uid = Deno.uid() ?? 0;
  const verdict = what === "socket"
    ? checkSocketFile(facts, { uid })
    : facts.isSymlink
    ? { ok: false as const, reason: "is a symlink" }
    : facts.uid !== uid
    ? { ok: false as const, reason: `belongs to uid ${facts.uid}, not to uid ${uid}` }
    : { ok: true as const };
  if (!verdict.ok) {
    throw new ConfigError(`"${path}" ${verdict.reason}: refusing to replace or use it`);
  }
}
