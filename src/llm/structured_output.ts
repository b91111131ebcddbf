/**
 * The grammar a `generate` request's output must follow, from whichever of its fields
 * asks for one: `grammar` (GBNF), `json_schema`, or `tools` with `tool_choice` "required"
 * or a named function. Checked on the main thread before the request is queued, so a bad
 * grammar or schema is the client's `E_PROTO_BAD_REQUEST`, never a failure in llama.cpp.
 *
 * @module
 */
import { type GenerateRequest, UmadError } from "../protocol/mod.ts";
import { checkGrammar, GrammarError } from "./grammar.ts";
import { jsonSchemaToGrammar, SchemaError } from "./json_schema_grammar.ts";
import { type ToolCallFormat, toolCallGrammar } from "./tool_calls.ts";

/**
 * The GBNF grammar for `request`, or undefined when its output is free. Throws
 * `UmadError("E_PROTO_BAD_REQUEST")` naming the problem.
 *
 * @example
 * ```ts
 * import { structuredOutputGrammar } from "./structured_output.ts";
 * import { validateRequest } from "../protocol/mod.ts";
 * const req = validateRequest(
 *   { type: "generate", id: "1", prompt: "x", json_schema: { type: "boolean" } },
 *   "json",
 * );
 * console.log(structuredOutputGrammar(req as never, "json")?.startsWith("root ::=")); // true
 * ```
 */
export function structuredOutputGrammar(
  request: GenerateRequest,
  toolFormat: ToolCallFormat,
): string | undefined {
  const forced = (request.tools?.length ?? 0) > 0 &&
    (request.tool_choice === "required" || typeof request.tool_choice === "object");
  const asked = [
    request.grammar ? "grammar" : "",
    request.json_schema !== undefined ? "json_schema" : "",
    forced ? "a required tool call" : "",
  ].filter(Boolean);
  if (asked.length > 1) {
    throw new UmadError("E_PROTO_BAD_REQUEST", `generate: give one of ${asked.join(" and ")}`);
  }
  try {
    if (request.grammar) return checkGrammar(request.grammar);
    if (request.json_schema !== undefined) {
      return checkGrammar(jsonSchemaToGrammar(request.json_schema));
    }
    if (forced) {
      if (request.messages === undefined) {
        throw new UmadError(
          "E_PROTO_BAD_REQUEST",
          'generate: tools need "messages" (a raw prompt has no chat template to show them)',
        );
      }
      return checkGrammar(toolCallGrammar(toolFormat, request.tools!, request.tool_choice));
    }
  } catch (e) {
    if (e instanceof GrammarError) {
      throw new UmadError("E_PROTO_BAD_REQUEST", `generate: grammar: ${e.message}`, { cause: e });
    }
    if (e instanceof SchemaError) {
      const field = forced ? "tool parameters" : "json_schema";
      throw new UmadError("E_PROTO_BAD_REQUEST", `generate: ${field}: ${e.message}`, { cause: e });
    }
    throw e;
  }
  return undefined;
}
