/**
 * HTTP on the daemon's socket and on `--http`: OpenAI's API (`/v1`), Ollama's (`/api`)
 * and llama-server's extras, served by `node:http` over connections the daemon hands
 * over, and dispatched to the same services as framed requests.
 *
 * @module
 */
export * from "./gateway.ts";
export * from "./sniff.ts";
export * from "./http_errors.ts";
export * from "./http_stream.ts";
export * from "./token.ts";
export * from "./tcp_listener.ts";
export { renderPrometheus, type Tree } from "./prometheus.ts";
import { llamaServerRoutes } from "./llama_server.ts";
import { ollamaRoutes } from "./ollama.ts";
import { openaiRoutes } from "./openai.ts";
import type { Route } from "./gateway.ts";

/** Every route the gateway serves. */
export const HTTP_ROUTES: Route[] = [...openaiRoutes, ...ollamaRoutes, ...llamaServerRoutes];
