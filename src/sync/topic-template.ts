/**
 * Topic mapping between the edge and the cloud: `strip` removes a prefix (in which
 * `${edge_id}` is filled in), then the template's `${topic}`, `${edge_id}` and
 * `${clientid}` are filled in.
 */
export interface TemplateValues {
  topic: string;
  edgeId: string;
  clientId?: string;
}

export function renderTopic(template: string, strip: string, v: TemplateValues): string {
  // `strip` may name the edge too ("cmd/${edge_id}/"), as downlink filters do.
  const prefix = strip.replaceAll("${edge_id}", v.edgeId);
  const topic = prefix !== "" && v.topic.startsWith(prefix) ? v.topic.slice(prefix.length) : v.topic;
  return template
    .replaceAll("${topic}", topic)
    .replaceAll("${edge_id}", v.edgeId)
    .replaceAll("${clientid}", v.clientId ?? "");
}

/** Fill `${edge_id}` in a filter (downlink subscriptions). */
export function renderFilter(filter: string, edgeId: string): string {
  return filter.replaceAll("${edge_id}", edgeId);
}
