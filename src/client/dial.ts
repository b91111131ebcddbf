/**
 * The default {@linkcode Dialer}: the runtime's own Unix socket (`Deno.connect` under
 * Deno, `node:net` under Node and Bun), each loaded only where it runs. Every real
 * socket the client opens is dialed here (the client checks the socket first: see
 * `socket_check.ts`).
 *
 * @module
 */
import { socketPathFor } from "../protocol/socket_path.ts";
import type { Dialer, Transport } from "./transport.ts";

/** The part of Node's `process` (also a global under Deno 2 and Bun) used here. */
interface ProcessLike {
  env: Record<string, string | undefined>;
  getuid?: () => number;
}

/**
 * The socket path by PROTOCOL.md's rules: `explicit`, else `$UMAD_SOCKET`, else
 * `$XDG_RUNTIME_DIR/umad/umad.sock`, else `/tmp/umad-<uid>/umad.sock`.
 *
 * @example
 * ```ts
 * import { defaultSocketPath } from "./dial.ts";
 * console.log(defaultSocketPath("/tmp/x/umad.sock")); // /tmp/x/umad.sock
 * ```
 */
export function defaultSocketPath(explicit?: string): string {
  if (explicit) return explicit;
  const proc = (globalThis as { process?: ProcessLike }).process;
  return socketPathFor(undefined, proc?.env ?? {}, proc?.getuid?.() ?? 0);
}

const isDeno = () =>
  typeof (globalThis as { Deno?: { connect?: unknown } }).Deno?.connect === "function";

/**
 * Connects to the Unix socket at `path` with the runtime's socket API.
 *
 * @example
 * ```ts ignore
 * import { dialUnix } from "./dial.ts";
 * const transport = await dialUnix("/tmp/umad-1000/umad.sock");
 * transport.destroy();
 * ```
 */
export const dialUnix: Dialer = async (path: string): Promise<Transport> => {
  if (isDeno()) return (await import("./transport_deno.ts")).dialDeno(path);
  return (await import("./transport_node.ts")).dialNode(path);
};
