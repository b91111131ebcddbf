/**
 * HTTP statuses and error bodies: the wire codes of the framed protocol mapped to the
 * statuses clients of OpenAI's, Ollama's and llama-server's APIs act on, and each API's
 * error shape.
 *
 * @module
 */
import { isWireCode, UmadError } from "../protocol/errors.ts";
import type { WireErrorCode } from "../protocol/service.ts";

/** Which API a route belongs to: it decides the error body's shape. */
export type ApiFamily = "openai" | "ollama" | "llama";

/** An error an HTTP handler answers with: a status, a message and OpenAI's fields. */
export class HttpError extends Error {
  /** A response with `status`; `code` and `param` go into OpenAI's error object. */
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "HttpError";
  }
}

/**
 * The HTTP status for a wire code: 400 for a bad request or a prompt over the context,
 * 429 for `E_BUSY`/`E_RATE_LIMITED` (retry later), 503 with no model, 500 for bugs.
 *
 * @example
 * ```ts
 * import { statusOfCode } from "./http_errors.ts";
 * console.log(statusOfCode("E_BUSY"), statusOfCode("E_PROTO_BAD_REQUEST")); // 429 400
 * ```
 */
export function statusOfCode(code: WireErrorCode): number {
  switch (code) {
    case "E_PROTO_INVALID_LEN":
    case "E_PROTO_FRAME_TOO_LARGE":
    case "E_PROTO_INVALID_JSON":
    case "E_PROTO_BAD_REQUEST":
    case "E_PROTO_001":
    case "E_LIMIT_PROMPT_TOO_LARGE":
    case "E_LIMIT_001":
    case "E_SPAWN":
      return 400;
    case "E_NOT_FOUND":
      return 404;
    case "E_IDLE_TIMEOUT":
      return 408;
    case "E_BUSY":
    case "E_RATE_LIMITED":
      return 429;
    case "E_NO_MODEL":
      return 503;
    case "E_INTERNAL":
    case "E_RUNTIME_DECODE":
      return 500;
  }
}

/** OpenAI's error `code` for a wire code, where OpenAI has one; else the wire code. */
function openaiCodeOf(code: WireErrorCode): string {
  switch (code) {
    case "E_LIMIT_PROMPT_TOO_LARGE":
    case "E_LIMIT_001":
      return "context_length_exceeded";
    case "E_BUSY":
    case "E_RATE_LIMITED":
      return "rate_limit_exceeded";
    default:
      return code;
  }
}

/** The `type` of OpenAI's error object for a status (the names llama-server uses). */
export function openaiErrorType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  if (status === 501) return "not_supported_error";
  if (status === 503) return "unavailable_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

/** An error as the handlers see it: what to send, whatever was thrown. */
export interface HttpFailure {
  /** The HTTP status. */
  status: number;
  /** What went wrong, for people. */
  message: string;
  /** A code programs can switch on (OpenAI's `error.code`). */
  code: string | null;
  /** The request field at fault (OpenAI's `error.param`). */
  param: string | null;
}

/**
 * What to answer for a thrown value: an {@linkcode HttpError} as it is, an
 * {@linkcode UmadError} with a wire code by {@linkcode statusOfCode}, anything else 500.
 *
 * @example
 * ```ts
 * import { UmadError } from "../protocol/errors.ts";
 * import { failureOf } from "./http_errors.ts";
 * console.log(failureOf(new UmadError("E_BUSY", "full")).status); // 429
 * ```
 */
export function failureOf(e: unknown): HttpFailure {
  if (e instanceof HttpError) {
    return { status: e.status, message: e.message, code: e.code, param: e.param };
  }
  if (e instanceof UmadError && isWireCode(e.code)) {
    return {
      status: statusOfCode(e.code),
      message: e.message,
      code: openaiCodeOf(e.code),
      param: null,
    };
  }
  return {
    status: 500,
    message: `Internal error: ${(e as Error)?.message ?? String(e)}`,
    code: "E_INTERNAL",
    param: null,
  };
}

/** The failure an `error` event of the framed protocol stands for. */
export function failureOfEvent(ev: { code: WireErrorCode; message: string }): HttpFailure {
  return failureOf(new UmadError(ev.code, ev.message));
}

/**
 * The error body of an API: OpenAI's `{error: {message, type, param, code}}`, Ollama's
 * `{error: message}`, llama-server's `{error: {code: status, message, type}}`.
 *
 * @example
 * ```ts
 * import { errorBody } from "./http_errors.ts";
 * const f = { status: 400, message: "bad", code: null, param: "n" };
 * console.log(JSON.stringify(errorBody("ollama", f))); // {"error":"bad"}
 * ```
 */
export function errorBody(family: ApiFamily, f: HttpFailure): Record<string, unknown> {
  switch (family) {
    case "openai":
      return {
        error: {
          message: f.message,
          type: openaiErrorType(f.status),
          param: f.param,
          code: f.code,
        },
      };
    case "ollama":
      return { error: f.message };
    case "llama":
      return { error: { code: f.status, message: f.message, type: openaiErrorType(f.status) } };
  }
}
