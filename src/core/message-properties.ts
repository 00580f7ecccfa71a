import type { MessageProperties } from "../store/store.ts";

const encoder = new TextEncoder();

export function toBytes(payload: string | Uint8Array): Uint8Array {
  return typeof payload === "string" ? encoder.encode(payload) : payload;
}

/** The properties forwarded unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-15..17] [MQTT-3.3.2-20]. */
export function pickMessageProperties(p: {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Uint8Array;
  userProperties?: Record<string, string | string[]>;
}): MessageProperties | undefined {
  let out: MessageProperties | undefined;
  if (p.payloadFormatIndicator !== undefined) (out ??= {}).payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.contentType !== undefined) (out ??= {}).contentType = p.contentType;
  if (p.responseTopic !== undefined) (out ??= {}).responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) (out ??= {}).correlationData = p.correlationData;
  if (p.userProperties !== undefined) (out ??= {}).userProperties = p.userProperties;
  return out;
}
