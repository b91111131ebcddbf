/**
 * The umad executable: `deno run -A main.ts <command>` before it is compiled.
 *
 * @module
 */
import { main } from "./src/cli/mod.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));
