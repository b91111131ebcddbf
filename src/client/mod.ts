/**
 * The umad client library: connect over the daemon's Unix socket, multiplex requests,
 * stream events, drive terminal sessions. Runs on Node, Deno and Bun: the core is
 * runtime-free and dials through a {@linkcode Dialer} (`Deno.connect` under Deno,
 * `node:net` elsewhere, or one you pass).
 *
 * @example
 * ```ts ignore
 * import { connect, generate } from "umad-client";
 * const client = await connect();
 * const { text } = await generate(client, { prompt: "Hello", max_tokens: 16 }).complete();
 * console.log(text);
 * await client.close();
 * ```
 *
 * @module
 */
export * from "./client.ts";
export * from "./errors.ts";
export { EventStream } from "./event_stream.ts";
export type { Dialer, Transport } from "./transport.ts";
export { memoryPipe } from "./memory_transport.ts";
export { defaultSocketPath, dialUnix } from "./dial.ts";
export type { Codec, Message } from "../protocol/codec.ts";
export type { Clock, TimerHandle } from "../protocol/async.ts";
// The wire contract's types: every request as written and validated, every event.
export type * from "../protocol/events.ts";
export type {
  CancelRequest,
  ChatMessage,
  ChatToolCall,
  DetokenizeRequest,
  EmbedRequest,
  GenerateRequest,
  HelloRequest,
  LooseInput,
  LooseOf,
  MetricsRequest,
  PingRequest,
  PtyAttachRequest,
  PtyCaptureRequest,
  PtyDetachRequest,
  PtyInputRequest,
  PtyKillRequest,
  PtyListRequest,
  PtyPauseRequest,
  PtyResizeRequest,
  PtyResumeRequest,
  PtySpawnRequest,
  PtyWaitRequest,
  Request,
  RequestInput,
  RequestOf,
  RequestType,
  RequiredInput,
  SignalName,
  TokenizeRequest,
  ToolChoice,
  ToolSpec,
  WatchRequest,
} from "../protocol/messages.ts";
export { SIGNAL_NAMES } from "../protocol/messages.ts";
export * from "./generate.ts";
export * from "./terminal.ts";
export * from "./capture.ts";
export * from "./watch.ts";
