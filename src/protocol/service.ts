/**
 * What the server asks of a service and gives it: {@linkcode Service} answers some
 * request types; {@linkcode Stream} is one request's reply channel. Here, beside the
 * message types, so services (`llm/`, `pty/`) and the server import it without pointing
 * up the folder tree.
 *
 * @module
 */
import type { Codec, Message } from "./codec.ts";
import type { ErrorCode, UmaErrorCode } from "./errors.ts";
import type { EventFields, EventName } from "./events.ts";
import type { Request, RequestType } from "./messages.ts";

/** A code an error reply may carry. */
export type WireErrorCode = ErrorCode | UmaErrorCode;

/**
 * The reply channel of one request on one connection. Events are sent in the codec
 * of the request that opened it and carry its `id`.
 *
 * Backpressure: `send` always queues (control replies are never dropped) and returns
 * `false` when the connection's outbound queue is over its byte cap. Producers of
 * streams (tokens, terminal output) must then stop producing for this connection and
 * `await ready()` (or check `writable` before each step) — that keeps a client that
 * stops reading at bounded memory without slowing anyone else.
 */
export interface Stream {
  /** The request id (the empty string for requests that came without one). */
  readonly id: string;
  /** The connection's number, unique for the daemon's lifetime. */
  readonly connectionId: number;
  /** The codec replies use. */
  readonly codec: Codec;
  /** Queues `{event, id, ...fields}`; false when the connection is over its cap. */
  send<E extends EventName>(event: E, fields: EventFields[E]): boolean;
  /** Sends `error {id, code, message}` and ends the request. */
  fail(code: WireErrorCode, message: string): void;
  /** Ends the request: its id is free again. Idempotent. */
  end(): void;
  /** True while the connection's outbound queue is under its cap and it is open. */
  readonly writable: boolean;
  /** Bytes queued on the connection, not yet written to the socket. */
  readonly queuedBytes: number;
  /** Resolves once the connection is under its cap again, or closed. */
  ready(): Promise<void>;
  /**
   * Aborted when the request is cancelled (`cancel`, reason "cancelled"), its
   * connection closes (reason "disconnected"), or the daemon shuts down (reason
   * "shutdown"). `signal.reason` is that string.
   */
  readonly signal: AbortSignal;
}

/** Why a stream's signal was aborted. */
export type AbortReason = "cancelled" | "disconnected" | "shutdown";

/**
 * A service answers some request types. The server validates requests, tracks ids in
 * flight, and routes each request to the service that lists its type.
 */
export interface Service {
  /** Request types this service handles. */
  readonly types: readonly RequestType[];
  /**
   * Handles one validated request. The request stays in flight (its id taken) until
   * `stream.end()` or `stream.fail()`. A thrown `UmadError` with a wire code becomes an
   * error reply; any other throw becomes `E_INTERNAL`.
   */
  handle(request: Request, stream: Stream): void | Promise<void>;
  /** Fields added to the `hello` reply (e.g. `model`). */
  hello?(): Message;
  /** This service's part of the `metrics` reply, under its own key. */
  metrics?(): Message;
  /** Called when a connection closes, after its streams' signals were aborted. */
  disconnected?(connectionId: number): void;
  /**
   * Daemon shutdown: end open streams (generate: `eos` reason `shutdown`), free
   * resources, and resolve by `deadline`, a time on `performance.now()`'s clock that
   * the daemon sets once for the whole shutdown (what is still running then is cut).
   * The server always passes one; a caller that does not (a test) gets the service's
   * own default of a few seconds.
   */
  close?(deadline?: number): Promise<void>;
}
