/**
 * llama-server's extras: `/health`, `/metrics` (Prometheus), `/tokenize`,
 * `/detokenize` and `/props`, in its request and response shapes.
 *
 * @module
 */
import type { Message } from "../protocol/codec.ts";
import type { Event } from "../protocol/events.ts";
import { VERSION } from "../version.ts";
import { type HttpContext, type Route, sendJson, sendText } from "./gateway.ts";
import { failureOfEvent, HttpError } from "./http_errors.ts";
import { modelCard } from "./model_card.ts";
import { renderPrometheus } from "./prometheus.ts";

async function one<E extends "tokenize" | "detokenize">(
  ctx: HttpContext,
  input: Message,
  event: E,
): Promise<Event<E>> {
  for await (const ev of ctx.call(input)) {
    if (ev.event === "error") {
      const f = failureOfEvent(ev);
      throw new HttpError(f.status, f.message, f.code);
    }
    if (ev.event === event) return ev as Event<E>;
  }
  throw new HttpError(500, `The ${event} request ended without a result`);
}

async function tokenize(ctx: HttpContext): Promise<void> {
  const b = ctx.body;
  if (typeof b.content !== "string") throw new HttpError(400, '"content" must be a string');
  const withPieces = b.with_pieces === true;
  const ev = await one(ctx, {
    type: "tokenize",
    text: b.content,
    // llama-server parses control-token text unless parse_special is false.
    special: b.parse_special !== false,
    add_special: b.add_special === true,
    pieces: withPieces,
  }, "tokenize");
  const tokens = withPieces
    ? ev.tokens.map((id, i) => ({ id, piece: ev.pieces?.[i] ?? "" }))
    : ev.tokens;
  sendJson(ctx.res, 200, { tokens });
}

async function detokenize(ctx: HttpContext): Promise<void> {
  const ev = await one(ctx, { type: "detokenize", tokens: ctx.body.tokens }, "detokenize");
  sendJson(ctx.res, 200, { content: ev.text });
}

async function props(ctx: HttpContext): Promise<void> {
  const hello = await ctx.hello();
  const card = await modelCard(hello.model);
  const info = hello.model;
  sendJson(ctx.res, 200, {
    default_generation_settings: {
      n_ctx: info?.n_ctx ?? 0,
      params: { n_predict: ctx.gateway.defaultMaxTokens ?? -1 },
    },
    total_slots: info?.parallel ?? 0,
    model_path: info?.path ?? "",
    model_alias: card?.id ?? "",
    chat_template: info?.chat_template ?? "",
    modalities: { vision: false, audio: false },
    build_info: `umad ${VERSION}`,
  });
}

/** The routes of llama-server's own API that clients and dashboards use. */
export const llamaServerRoutes: Route[] = [
  {
    method: "GET",
    path: "/health",
    family: "llama",
    handler: (ctx) => sendJson(ctx.res, 200, { status: "ok" }),
  },
  {
    method: "GET",
    path: "/metrics",
    family: "llama",
    handler: async (ctx) =>
      sendText(
        ctx.res,
        200,
        renderPrometheus(await ctx.metrics()),
        "text/plain; version=0.0.4; charset=utf-8",
      ),
  },
  { method: "POST", path: "/tokenize", family: "llama", handler: tokenize },
  { method: "POST", path: "/detokenize", family: "llama", handler: detokenize },
  { method: "GET", path: "/props", family: "llama", handler: props },
];
