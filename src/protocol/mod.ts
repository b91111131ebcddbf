/**
 * The umad wire protocol: frames, codecs, requests and their validation, the typed
 * events, the error tree, the service interface, socket path rules and latency
 * summaries. Runtime-neutral: nothing here touches `Deno.*`.
 *
 * @module
 */
export * from "./errors.ts";
export * from "./frame.ts";
export * from "./codec.ts";
export * from "./messages.ts";
export * from "./events.ts";
export * from "./service.ts";
export * from "./base64.ts";
export * from "./socket_path.ts";
export * from "./samples.ts";
export * from "./uma.ts";
export * from "./async.ts";
