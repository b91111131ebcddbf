/**
 * The umad wire protocol: frames, codecs, message validation and error codes.
 * Runtime-neutral: nothing here touches `Deno.*`.
 *
 * @module
 */
export * from "./errors.ts";
export * from "./frame.ts";
export * from "./codec.ts";
export * from "./messages.ts";
export * from "./base64.ts";
export * from "./socket_path.ts";
