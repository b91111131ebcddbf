/**
 * The umad client library: connect over the daemon's Unix socket, multiplex requests,
 * stream events. Runs on Node, Deno and Bun (`Deno.connect` under Deno, `node:net` elsewhere).
 *
 * @module
 */
export * from "./client.ts";
export * from "./errors.ts";
export { EventStream } from "./event_stream.ts";
export type { Codec, Message } from "../protocol/codec.ts";
export * from "./generate.ts";
export * from "./terminal.ts";
export * from "./capture.ts";
export * from "./watch.ts";
