/**
 * Where the socket is and when it is safe to use (PROTOCOL.md, "Socket"), written once
 * for the daemon and the client. Pure: callers pass their runtime's environment, uid
 * and `lstat` facts.
 *
 * @module
 */

/** Whether a socket path was named (`--socket`, `$UMAD_SOCKET`) or is the default. */
export type SocketKind = "explicit" | "default";

/** A socket path and how it was chosen (the rules for its directory differ). */
export interface SocketLocation {
  /** The socket's path. */
  path: string;
  /** Named by the user, or the default (its directory's rules are stricter). */
  kind: SocketKind;
}

/**
 * The socket by PROTOCOL.md's rules: an explicit path, else `$UMAD_SOCKET`, else
 * `$XDG_RUNTIME_DIR/umad/umad.sock`, else `/tmp/umad-<uid>/umad.sock`.
 *
 * @example
 * ```ts
 * import { socketLocation } from "./socket_path.ts";
 * const where = socketLocation(undefined, { UMAD_SOCKET: "/tmp/uma.sock" }, 1000);
 * console.log(where); // { path: "/tmp/uma.sock", kind: "explicit" }
 * ```
 */
export function socketLocation(
  explicit: string | undefined,
  env: Record<string, string | undefined>,
  uid: number,
): SocketLocation {
  if (explicit) return { path: explicit, kind: "explicit" };
  if (env.UMAD_SOCKET) return { path: env.UMAD_SOCKET, kind: "explicit" };
  if (env.XDG_RUNTIME_DIR) {
    return { path: `${env.XDG_RUNTIME_DIR.replace(/\/+$/, "")}/umad/umad.sock`, kind: "default" };
  }
  return { path: `/tmp/umad-${uid}/umad.sock`, kind: "default" };
}

/**
 * The socket path alone (see {@linkcode socketLocation}).
 *
 * @example
 * ```ts
 * import { socketPathFor } from "./socket_path.ts";
 * const path = socketPathFor(undefined, { XDG_RUNTIME_DIR: "/run/user/1000" }, 1000);
 * console.log(path); // "/run/user/1000/umad/umad.sock"
 * ```
 */
export function socketPathFor(
  explicit: string | undefined,
  env: Record<string, string | undefined>,
  uid: number,
): string {
  return socketLocation(explicit, env, uid).path;
}

/** What `lstat` (never `stat`: a symlink must not be followed) says about a path. */
export interface PathFacts {
  /** The path itself is a symbolic link. */
  isSymlink: boolean;
  /** A directory (not through a link). */
  isDirectory: boolean;
  /** A Unix socket (not through a link). */
  isSocket: boolean;
  /** The owner. */
  uid: number;
  /** `st_mode`; only the permission bits and the sticky bit (0o7777) are read. */
  mode: number;
}

/** The outcome of a rule: fine, or the reason it is not (a clause for a message). */
export type SocketVerdict = { ok: true } | { ok: false; reason: string };

const OK: SocketVerdict = { ok: true };
const STICKY = 0o1000;

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/**
 * Whether the socket's directory may be used by a process running as `uid`.
 * Both kinds: not a symlink, a directory. The default directory (created 0700 by the
 * daemon) must belong to `uid` and grant nothing to group or others, as tmux's. An
 * explicit path's directory must belong to `uid` or root and may be writable by others
 * only with the sticky bit (`/tmp`), since then only the 0600 socket file's owner can
 * replace it.
 *
 * @example
 * ```ts
 * import { checkSocketDir } from "./socket_path.ts";
 * const tmp = { isSymlink: false, isDirectory: true, isSocket: false, uid: 0, mode: 0o41777 };
 * console.log(checkSocketDir(tmp, { uid: 1000, kind: "explicit" }).ok); // true
 * console.log(checkSocketDir(tmp, { uid: 1000, kind: "default" }).ok); // false
 * ```
 */
export function checkSocketDir(
  dir: PathFacts,
  who: { uid: number; kind: SocketKind },
): SocketVerdict {
  if (dir.isSymlink) return { ok: false, reason: "is a symlink (it could point anywhere)" };
  if (!dir.isDirectory) return { ok: false, reason: "is not a directory" };
  const mode = dir.mode & 0o7777;
  if (who.kind === "default") {
    if (dir.uid !== who.uid) {
      return { ok: false, reason: `belongs to uid ${dir.uid}, not to uid ${who.uid}` };
    }
    if (mode & 0o077) {
      return {
        ok: false,
        reason: `has mode ${octal(mode)}: it must not grant group or other access (chmod 700 it)`,
      };
    }
    return OK;
  }
  if (dir.uid !== who.uid && dir.uid !== 0) {
    return { ok: false, reason: `belongs to uid ${dir.uid}, neither to uid ${who.uid} nor root` };
  }
  if ((mode & 0o022) && !(mode & STICKY)) {
    return {
      ok: false,
      reason: `has mode ${
        octal(mode)
      }: others may write it and it has no sticky bit, so they could replace the socket`,
    };
  }
  return OK;
}

/**
 * Whether the client may talk to the socket file: it must be a socket (not a symlink)
 * owned by `uid` or root, so no other user's program can pose as the daemon.
 *
 * @example
 * ```ts
 * import { checkSocketFile } from "./socket_path.ts";
 * const facts = { isSymlink: false, isDirectory: false, isSocket: true, uid: 65534, mode: 0o140600 };
 * console.log(checkSocketFile(facts, { uid: 1000 })); // { ok: false, reason: "belongs to uid 65534, neither to uid 1000 nor root" }
 * ```
 */
export function checkSocketFile(file: PathFacts, who: { uid: number }): SocketVerdict {
  if (file.isSymlink) return { ok: false, reason: "is a symlink, not a socket" };
  if (!file.isSocket) return { ok: false, reason: "is not a socket" };
  if (file.uid !== who.uid && file.uid !== 0) {
    return { ok: false, reason: `belongs to uid ${file.uid}, neither to uid ${who.uid} nor root` };
  }
  return OK;
}

/**
 * The longest socket path the platform takes, in bytes: `sun_path` is 108 bytes on
 * Linux and 104 on macOS and the BSDs, one of them the terminating NUL.
 */
export function maxSocketPathBytes(os: string): number {
  return os === "linux" || os === "android" ? 107 : 103;
}

/**
 * Whether `path` fits in `sun_path` on `os` (`Deno.build.os` or `process.platform`
 * values); a longer one fails to bind or connect with an obscure error.
 *
 * @example
 * ```ts
 * import { checkSocketPathLength } from "./socket_path.ts";
 * console.log(checkSocketPathLength("/tmp/" + "x".repeat(120), "linux").ok); // false
 * ```
 */
export function checkSocketPathLength(path: string, os: string): SocketVerdict {
  const bytes = new TextEncoder().encode(path).length;
  const max = maxSocketPathBytes(os);
  if (bytes <= max) return OK;
  return {
    ok: false,
    reason: `is ${bytes} bytes long, over the ${max} bytes a Unix socket path may have on ${os}` +
      ` (choose a shorter --socket or $UMAD_SOCKET)`,
  };
}
