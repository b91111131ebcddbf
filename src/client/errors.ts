import type { ErrorCode } from "../protocol/errors.ts";

/**
 * An error the daemon answered with: `error {id, code, message}`. Subclasses exist for
 * the codes callers act on; `code` is always the wire code.
 *
 * @example
 * ```ts
 * const err = errorFromEvent({ event: "error", code: "E_BUSY", message: "full" });
 * console.log(err instanceof BusyError, err.code); // true "E_BUSY"
 * ```
 */
export class UmadError extends Error {
  readonly code: ErrorCode | string;
  constructor(code: ErrorCode | string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UmadError";
    this.code = code;
  }
}

/** `E_PROTO_*`: the request (or frame) was malformed. */
export class BadRequestError extends UmadError {
  constructor(code: ErrorCode | string, message: string) {
    super(code, message);
    this.name = "BadRequestError";
  }
}
/** `E_BUSY`: too many clients, requests or queued generations; retry later. */
export class BusyError extends UmadError {
  constructor(message: string) {
    super("E_BUSY", message);
    this.name = "BusyError";
  }
}
/** `E_RATE_LIMITED`: the connection sent requests too fast. */
export class RateLimitedError extends UmadError {
  constructor(message: string) {
    super("E_RATE_LIMITED", message);
    this.name = "RateLimitedError";
  }
}
/** `E_NOT_FOUND`: unknown session, or cancel of an unknown id. */
export class NotFoundError extends UmadError {
  constructor(message: string) {
    super("E_NOT_FOUND", message);
    this.name = "NotFoundError";
  }
}
/** `E_NO_MODEL`: the daemon has no model loaded. */
export class NoModelError extends UmadError {
  constructor(message: string) {
    super("E_NO_MODEL", message);
    this.name = "NoModelError";
  }
}
/** `E_LIMIT_PROMPT_TOO_LARGE`: the prompt does not fit the context. */
export class PromptTooLargeError extends UmadError {
  constructor(message: string) {
    super("E_LIMIT_PROMPT_TOO_LARGE", message);
    this.name = "PromptTooLargeError";
  }
}
/** The connection closed while the request was in flight (the client may reconnect). */
export class ConnectionClosedError extends UmadError {
  constructor(message = "Connection to umad closed", options?: ErrorOptions) {
    super("E_CLOSED", message, options);
    this.name = "ConnectionClosedError";
  }
}
/** Connecting, or a reply, took longer than allowed. */
export class TimeoutError extends UmadError {
  constructor(message: string) {
    super("E_TIMEOUT", message);
    this.name = "TimeoutError";
  }
}

/** The error class for an `error` event. */
export function errorFromEvent(event: Record<string, unknown>): UmadError {
  const code = String(event.code ?? "E_INTERNAL");
  const message = String(event.message ?? code);
  switch (code) {
    case "E_BUSY":
      return new BusyError(message);
    case "E_RATE_LIMITED":
      return new RateLimitedError(message);
    case "E_NOT_FOUND":
      return new NotFoundError(message);
    case "E_NO_MODEL":
      return new NoModelError(message);
    case "E_LIMIT_PROMPT_TOO_LARGE":
      return new PromptTooLargeError(message);
    default:
      return code.startsWith("E_PROTO_")
        ? new BadRequestError(code, message)
        : new UmadError(code, message);
  }
}
