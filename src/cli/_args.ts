import { parseArgs, type ParseArgsConfig } from "node:util";

import { UsageError } from "../protocol/errors.ts";

export { UsageError };

type Options = NonNullable<ParseArgsConfig["options"]>;

/** `node:util` parseArgs with `--help`, turning its errors into {@linkcode UsageError}. */
export function parse<T extends Options>(args: string[], options: T, allowPositionals = true) {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals,
      strict: true,
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** Parses a whole, non-negative number option, or throws {@linkcode UsageError}. */
export function intOption(
  name: string,
  value: string | undefined,
  opts: { min?: number; max?: number } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  const min = opts.min ?? 0;
  if (!Number.isInteger(n) || n < min || (opts.max !== undefined && n > opts.max)) {
    throw new UsageError(
      `--${name} must be a whole number${
        opts.max !== undefined ? ` from ${min} to ${opts.max}` : ` of at least ${min}`
      }, got "${value}"`,
    );
  }
  return n;
}

/** Parses a number option, or throws {@linkcode UsageError}. */
export function numberOption(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${value}"`);
  return n;
}

/** Parses an option that takes one of `choices`, or throws {@linkcode UsageError}. */
export function choiceOption<T extends string>(
  name: string,
  value: string | undefined,
  choices: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${value}"`);
  }
  return value as T;
}

/** Writes a line to stdout. */
export function out(line: string): void {
  console.log(line);
}

/** Writes a line to stderr. */
export function err(line: string): void {
  console.error(line);
}
