/**
 * The daemon: socket lifecycle, connections, request routing to services.
 *
 * @module
 */
export * from "./server.ts";
export type { AbortReason, Service, Stream, WireErrorCode } from "../protocol/service.ts";
export * from "./log.ts";
export * from "./socket_path.ts";
