import { createLlmService } from "../llm/mod.ts";
import { createPtyService } from "../pty/mod.ts";
import type { Service } from "../server/service.ts";
import type { ServeConfig } from "./serve.ts";

/** The services `umad serve` runs: terminals, and the model unless `--no-model`. */
export async function defaultServices(config: ServeConfig): Promise<Service[]> {
  const services: Service[] = [
    createPtyService({
      exitedTtlMs: config.exitedTtlMs,
      scrollback: config.scrollback,
      log: config.log,
    }),
  ];
  if (!config.noModel) {
    services.push(
      await createLlmService({
        model: config.model,
        libDir: config.llamaLib,
        ctx: config.ctx,
        parallel: config.parallel,
        threads: config.threads,
        queue: config.queue,
        prefillRatio: config.prefillRatio,
        prefillMaxRatio: config.prefillMaxRatio,
        batchInvariant: config.batchInvariant,
        decodePriority: config.decodePriority,
        log: config.log,
      }),
    );
  }
  return services;
}
