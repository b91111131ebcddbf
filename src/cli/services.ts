import { createLlmService, createNoModelService } from "../llm/mod.ts";
import { createPtyService } from "../pty/mod.ts";
import type { Service } from "../protocol/service.ts";
import type { ServeConfig } from "./serve.ts";

/** The services `umad serve` runs: terminals, and the model unless `--no-model`. */
export async function defaultServices(config: ServeConfig): Promise<Service[]> {
  const services: Service[] = [createPtyService({ ...config.pty, log: config.log })];
  services.push(
    config.noModel
      ? createNoModelService()
      : await createLlmService({ ...config.llm, log: config.log }),
  );
  return services;
}
