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
  ERROR_CODES,
  type ErrorCode,
  errorFromCode,
  errorFromEvent,
  IdleTimeoutError,
  InternalError,
  LOCAL_ERROR_CODES,
  type LocalErrorCode,
  NoModelError,
  NotFoundError,
  PromptTooLargeError,
  RateLimitedError,
  SpawnError,
  TimeoutError,
  UMA_ERROR_CODES,
  UmadError,
  type UmadErrorCode,
  type UmaErrorCode,
  UnsafeSocketError,
} from "../protocol/errors.ts";
