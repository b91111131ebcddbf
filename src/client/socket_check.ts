/**
 * The client's side of PROTOCOL.md's socket rules: before a byte is sent, the socket
 * must be a socket owned by the user (or root) in a directory that passes the rules
 * of `protocol/socket_path.ts`, so a program of another user cannot pose as the daemon.
 * Runtime-neutral (`node:fs` works on Node, Deno and Bun).
 *
 * @module
 */
import { lstatSync, type Stats } from "node:fs";
import { dirname } from "node:path";
import process from "node:process";
import { ConfigError, UnsafeSocketError } from "../protocol/errors.ts";
import {
  checkSocketDir,
  checkSocketFile,
  checkSocketPathLength,
  type PathFacts,
  type SocketKind,
} from "../protocol/socket_path.ts";

function facts(path: string): PathFacts | null {
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return null;
    throw e;
  }
  return {
    isSymlink: st.isSymbolicLink(),
    isDirectory: st.isDirectory(),
    isSocket: st.isSocket(),
    uid: st.uid,
    mode: st.mode,
  };
}

/**
 * Throws {@linkcode UnsafeSocketError} when the socket at `path`, or its directory,
 * fails the rules (a symlink, another user's, a directory others may write without the
 * sticky bit), and {@linkcode ConfigError} when the path is too long for a Unix socket.
 * A socket or directory that does not exist passes: connecting then fails as "not
 * running". `explicitFlag` is the path the caller named, if any: with it, or with
 * `$UMAD_SOCKET`, the explicit-path rules apply, else the default directory's.
 * Where the runtime has no uids (Windows) only the length is checked.
 *
 * @example
 * ```ts ignore
 * import { assertSafeSocket } from "./socket_check.ts";
 * assertSafeSocket("/tmp/uma.sock", "/tmp/uma.sock"); // sticky /tmp: fine
 * ```
 */
export function assertSafeSocket(path: string, explicitFlag?: string): void {
  const length = checkSocketPathLength(path, process.platform);
  if (!length.ok) throw new ConfigError(`Socket path "${path}" ${length.reason}`);
  if (typeof process.getuid !== "function") return;
  const uid = process.getuid();
  const kind: SocketKind = explicitFlag || process.env.UMAD_SOCKET ? "explicit" : "default";
  const dir = dirname(path);
  const dirFacts = facts(dir);
  if (dirFacts === null) return;
  const dirVerdict = checkSocketDir(dirFacts, { uid, kind });
  if (!dirVerdict.ok) {
    throw new UnsafeSocketError(
      `Refusing to connect to "${path}": its directory "${dir}" ${dirVerdict.reason}`,
    );
  }
  const fileFacts = facts(path);
  if (fileFacts === null) return;
  const fileVerdict = checkSocketFile(fileFacts, { uid });
  if (!fileVerdict.ok) {
    throw new UnsafeSocketError(`Refusing to connect to "${path}": it ${fileVerdict.reason}`);
  }
}
