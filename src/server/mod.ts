/**
 * The daemon: socket lifecycle, connections, request routing to services. Services
 * implement `Service` from `src/protocol/service.ts`.
 *
 * @module
 */
export * from "./server.ts";
export type { ConnectionLimits } from "./connection.ts";
// The wire contract's types, which the service interface names.
export type * from "../protocol/mod.ts";
export * from "./log.ts";
export * from "./socket_path.ts";
