/**
 * Tool calls: which format a model's template asks it to call tools in, how to read the
 * calls back out of its output, and the grammar that makes it call one when the request
 * says it must (`tool_choice: "required"` or a named function). Pure TypeScript.
 *
 * Formats (the ones the common templates teach):
 * - `hermes`: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` (Qwen 2.5,
 *   Hermes 2/3, many ChatML models);
 * - `llama3`: a bare JSON object `{"name": ..., "parameters": {...}}`, optionally after
 *   `<|python_tag|>` (Llama 3.1/3.2/3.3);
 * - `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}, "id"?: ...}]`;
 * - `gpt-oss`: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}`
 *   (OpenAI's harmony format, ending at `<|call|>`);
 * - `json`: the fallback for templates that teach none of these: `{"name", "arguments"}`.
 *
 * @module
 */
import type { ToolCall } from "../protocol/events.ts";
import type { ToolChoice, ToolSpec } from "../protocol/messages.ts";
import { gbnfLiteral, grammarText, schemaGrammarPart } from "./json_schema_grammar.ts";

/** A tool-call format (see the module doc). */
export type ToolCallFormat = "hermes" | "llama3" | "mistral" | "gpt-oss" | "json";

/**
 * The format a chat template teaches, from its text (null: no template).
 *
 * @example
 * ```ts
 * import { detectToolCallFormat } from "./tool_calls.ts";
 * console.log(detectToolCallFormat("... <tool_call>\n{...}\n</tool_call> ...")); // "hermes"
 * ```
 */
export function detectToolCallFormat(template: string | null): ToolCallFormat {
  if (!template) return "json";
  if (template.includes("<tool_call>")) return "hermes";
  if (template.includes("[TOOL_CALLS]")) return "mistral";
  if (template.includes("<|channel|>") && /to=|functions\./.test(template)) return "gpt-oss";
  if (template.includes("<|python_tag|>") || template.includes('"parameters": ')) return "llama3";
  return "json";
}

/** What a model's output holds: its text without the calls, and the calls. */
export interface ParsedOutput {
  /** The output without the calls. */
  content: string;
  /** The calls, in order. */
  toolCalls: ToolCall[];
}

function callId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return "call_" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A call from `{name, arguments|parameters}`, or null when it is not one. */
function callOf(value: unknown, known: Set<string> | null, id?: unknown): ToolCall | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.name !== "string" || (known && !known.has(v.name))) return null;
  let args = v.arguments ?? v.parameters ?? {};
  if (typeof args === "string") {
    try {
      args = JSON.parse(args);
    } catch {
      return null;
    }
  }
  if (typeof args !== "object" || args === null || Array.isArray(args)) return null;
  return {
    id: typeof id === "string" && id.length > 0 ? id : callId(),
    name: v.name,
    arguments: JSON.stringify(args),
  };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Reads tool calls out of a model's output (the text with control tokens written out,
 * e.g. `<|python_tag|>`), in `format`. Calls to functions not in `tools` (when given) and
 * calls whose arguments are not a JSON object are left in the content as text.
 *
 * @example
 * ```ts
 * import { parseToolCalls } from "./tool_calls.ts";
 * const out = parseToolCalls(
 *   'Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
 *   "hermes",
 * );
 * console.log(out.content, out.toolCalls[0].name, out.toolCalls[0].arguments);
 * // "Let me check." "get_weather" '{"city":"Oslo"}'
 * ```
 */
export function parseToolCalls(
  text: string,
  format: ToolCallFormat,
  tools?: readonly ToolSpec[],
): ParsedOutput {
  const known = tools && tools.length ? new Set(tools.map((t) => t.function.name)) : null;
  const calls: ToolCall[] = [];
  switch (format) {
    case "hermes": {
      // An unclosed last call (the stream hit max_tokens or stopped at </tool_call>) counts.
      const re = /<tool_call>\s*([\s\S]*?)\s*(?:<\/tool_call>|$)/g;
      const content = text.replace(re, (all, body: string) => {
        const call = callOf(parseJson(body), known);
        if (!call) return all;
        calls.push(call);
        return "";
      });
      return { content: content.trim(), toolCalls: calls };
    }
    case "mistral": {
      const at = text.indexOf("[TOOL_CALLS]");
      if (at < 0) return { content: text, toolCalls: [] };
      const list = parseJson(text.slice(at + "[TOOL_CALLS]".length).trim().replace(/<\/s>$/, ""));
      for (const item of Array.isArray(list) ? list : [list]) {
        const call = callOf(item, known, (item as { id?: unknown })?.id);
        if (call) calls.push(call);
      }
      return calls.length
        ? { content: text.slice(0, at).trim(), toolCalls: calls }
        : { content: text, toolCalls: [] };
    }
    case "gpt-oss": {
      const re =
        /(?:<\|start\|>assistant)?\s*(?:to=functions\.([A-Za-z0-9_.:-]+)\s*)?<\|channel\|>\s*commentary(?:\s+to=functions\.([A-Za-z0-9_.:-]+))?[^<]*(?:<\|constrain\|>\s*\w+\s*)?<\|message\|>([\s\S]*?)(?:<\|call\|>|<\|end\|>|(?=<\|start\|>)|$)/g;
      const content = text.replace(re, (all, name1?: string, name2?: string, body?: string) => {
        const name = name1 ?? name2;
        if (!name) return all;
        const call = callOf({ name, arguments: parseJson((body ?? "").trim()) }, known);
        if (!call) return all;
        calls.push(call);
        return "";
      });
      // The answer proper is the final channel's message.
      const final = /<\|channel\|>\s*final\s*<\|message\|>([\s\S]*?)(?:<\|return\|>|<\|end\|>|$)/
        .exec(content);
      return { content: (final ? final[1] : content).trim(), toolCalls: calls };
    }
    case "llama3":
    case "json": {
      const body = text.replace(/^\s*<\|python_tag\|>/, "").trim();
      const whole = parseJson(body);
      const items = Array.isArray(whole)
        ? whole
        : whole !== undefined
        ? [whole]
        : body.split(/\s*;\s*/).map(parseJson);
      for (const item of items) {
        const call = callOf(item, known);
        if (!call) return { content: text, toolCalls: [] }; // not (only) calls: plain text
        calls.push(call);
      }
      return { content: "", toolCalls: calls };
    }
  }
}

/**
 * A GBNF grammar that makes the model call one of `tools` (or the one `choice` names)
 * in `format`, its arguments valid against the tool's JSON Schema. Throws the
 * converter's `SchemaError` for a schema it cannot convert.
 */
export function toolCallGrammar(
  format: ToolCallFormat,
  tools: readonly ToolSpec[],
  choice: ToolChoice | undefined,
): string {
  const named = typeof choice === "object" ? choice.function.name : null;
  const chosen = named ? tools.filter((t) => t.function.name === named) : tools;
  const rules = new Map<string, string>();
  const calls: string[] = [];
  chosen.forEach((tool, i) => {
    const part = schemaGrammarPart(tool.function.parameters ?? { type: "object" }, `t${i}-`);
    for (const [k, v] of part.rules) rules.set(k, v);
    const name = tool.function.name;
    const open = (argsKey: string) => gbnfLiteral(`{"name": "${name}", "${argsKey}": `);
    let call: string;
    switch (format) {
      case "hermes":
        call = `${gbnfLiteral("<tool_call>\n")} ${open("arguments")} ${part.top} ${
          gbnfLiteral("}\n</tool_call>")
        }`;
        break;
      case "llama3":
        call = `${open("parameters")} ${part.top} "}"`;
        break;
      case "mistral":
        call = `${gbnfLiteral("[TOOL_CALLS][")} ${open("arguments")} ${part.top} "}]"`;
        break;
      case "gpt-oss":
        call = `${
          gbnfLiteral(`<|channel|>commentary to=functions.${name} <|constrain|>json<|message|>`)
        } ${part.top}`;
        break;
      case "json":
        call = `${open("arguments")} ${part.top} "}"`;
        break;
    }
    rules.set(`call-${i}`, call);
    calls.push(`call-${i}`);
  });
  return grammarText(new Map([["root", calls.join(" | ")], ...rules]));
}
