/**
 * The client's errors: the same tree the daemon throws (`src/protocol/errors.ts`), so a
 * caller catches {@linkcode BusyError} or checks `err.code` whichever side raised it.
 *
 * @module
 */
export {
  BadRequestError,
  BusyError,
  ConfigError,
  ConnectionClosedError,
  errorFromCode,
  errorFromEvent,
  IdleTimeoutError,
  InternalError,
  NoModelError,
  NotFoundError,
  PromptTooLargeError,
  RateLimitedError,
  SpawnError,
  TimeoutError,
  UmadError,
  type UmadErrorCode,
  UnsafeSocketError,
} from "../protocol/errors.ts";
