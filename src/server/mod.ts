/**
 * The daemon: socket lifecycle, connections, request routing to services.
 *
 * @module
 */
export * from "./server.ts";
export * from "./service.ts";
export * from "./log.ts";
export * from "./socket_path.ts";
