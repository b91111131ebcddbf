import { createPtyService } from "../pty/mod.ts";
import type { Service } from "../server/service.ts";
import type { ServeConfig } from "./serve.ts";

/** The services `umad serve` runs: terminals, and the model unless `--no-model`. */
export function defaultServices(config: ServeConfig): Promise<Service[]> {
  const services: Service[] = [
    createPtyService({
      exitedTtlMs: config.exitedTtlMs,
      scrollback: config.scrollback,
      log: config.log,
    }),
  ];
  return Promise.resolve(services);
}
