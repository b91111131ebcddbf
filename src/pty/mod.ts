/**
 * Terminal sessions: a PTY shim over libc (Deno FFI), sessions with several clients,
 * terminal state in `@xterm/headless` for snapshots on attach, and the `pty.*` service.
 *
 * @module
 */
export {
  createPtyService,
  type PtyMetrics,
  type PtyService,
  type PtyServiceOptions,
  userShell,
} from "./service.ts";
export {
  type ExitStatus,
  liveChildren,
  PtyProcess,
  spawnPty,
  type SpawnPtyOptions,
} from "./pty_process.ts";
export type { PollTarget } from "./poller.ts";
// The wire contract's types, which the service interface names.
export type * from "../protocol/mod.ts";
export { rawOutput } from "./termios.ts";
