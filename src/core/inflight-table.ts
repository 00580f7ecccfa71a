/**
 * A session's in-flight messages by packet id (1..65535): the subset of Map's interface
 * the broker uses, with Map's insertion-order iteration.
 *
 * Why not a Map: JavaScriptCore's Map replaces its hash table as entries come and go, and
 * a replaced table keeps pointing at its successor. Once one of them has survived a
 * garbage collection, the whole chain after it (and every message it held) survives every
 * minor collection too, until a full one. With a packet id added and removed per
 * delivery, that kept about half of all delivered messages alive across minor
 * collections (measured in Bun 1.4 with an in-process 1→1 QoS 1 load): minor pauses of
 * 1-5 ms and a full collection every few seconds. Here the storage is a fixed set of
 * arrays that only grows, with deletion by backward shift (no tombstones, so no rebuilds);
 * a removed entry's slot is cleared at once.
 */
const NO_VALUES: readonly unknown[] = Object.freeze([]);

export class InflightTable<V> {
  /** Packet id per slot; 0 marks an empty slot (0 is never a packet id [MQTT-2.2.1-3]). */
  #ids: Uint16Array | undefined;
  /** Replaced by a real array on the first `set` (an idle session's table holds no array). */
  #values: (V | undefined)[] = NO_VALUES as (V | undefined)[];
  /** Insertion number per slot, for Map's iteration order. */
  #order: Float64Array | undefined;
  #mask = 0;
  #size = 0;
  #inserted = 0;

  get size(): number {
    return this.#size;
  }

  #slot(id: number): number {
    const ids = this.#ids;
    if (ids === undefined) return -1;
    const mask = this.#mask;
    for (let i = id & mask;; i = (i + 1) & mask) {
      const at = ids[i]!;
      if (at === id) return i;
      if (at === 0) return -1;
    }
  }

  has(id: number): boolean {
    return this.#slot(id) !== -1;
  }

  get(id: number): V | undefined {
    const i = this.#slot(id);
    return i === -1 ? undefined : this.#values[i];
  }

  set(id: number, value: V): this {
    if (!Number.isInteger(id) || id < 1 || id > 0xffff) throw new RangeError(`packet id ${id} out of range`);
    const found = this.#slot(id);
    if (found !== -1) {
      // As in a Map, replacing a value keeps the entry's place in the iteration order.
      this.#values[found] = value;
      return this;
    }
    // Kept at most half full, so probes stay short and an empty slot always ends them.
    if (this.#ids === undefined || (this.#size + 1) * 2 > this.#ids.length) this.#grow();
    const ids = this.#ids!;
    const mask = this.#mask;
    let i = id & mask;
    while (ids[i] !== 0) i = (i + 1) & mask;
    ids[i] = id;
    this.#values[i] = value;
    this.#order![i] = this.#inserted++;
    this.#size++;
    return this;
  }

  delete(id: number): boolean {
    let hole = this.#slot(id);
    if (hole === -1) return false;
    const ids = this.#ids!;
    const values = this.#values;
    const order = this.#order!;
    const mask = this.#mask;
    // Backward shift (linear probing without tombstones): move later entries of the same
    // probe run into the hole when their home slot does not lie between the hole and them.
    for (let j = (hole + 1) & mask; ids[j] !== 0; j = (j + 1) & mask) {
      const home = ids[j]! & mask;
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      ids[hole] = ids[j]!;
      values[hole] = values[j];
      order[hole] = order[j]!;
      hole = j;
    }
    ids[hole] = 0;
    values[hole] = undefined;
    this.#size--;
    return true;
  }

  /** The entries in insertion order, as a Map iterates them; a snapshot, so deleting while iterating is safe. */
  entries(): IterableIterator<[number, V]> {
    const ids = this.#ids;
    if (ids === undefined || this.#size === 0) return [].values();
    const slots: number[] = [];
    for (let i = 0; i < ids.length; i++) if (ids[i] !== 0) slots.push(i);
    const order = this.#order!;
    slots.sort((a, b) => order[a]! - order[b]!);
    return slots.map((i): [number, V] => [ids[i]!, this.#values[i] as V]).values();
  }

  values(): IterableIterator<V> {
    return Array.from(this.entries(), ([, v]) => v).values();
  }

  keys(): IterableIterator<number> {
    return Array.from(this.entries(), ([k]) => k).values();
  }

  [Symbol.iterator](): IterableIterator<[number, V]> {
    return this.entries();
  }

  #grow(): void {
    const oldIds = this.#ids;
    const oldValues = this.#values;
    const oldOrder = this.#order;
    const capacity = oldIds === undefined ? 16 : oldIds.length * 2;
    this.#ids = new Uint16Array(capacity);
    this.#values = new Array<V | undefined>(capacity).fill(undefined);
    this.#order = new Float64Array(capacity);
    this.#mask = capacity - 1;
    if (oldIds === undefined) return;
    const ids = this.#ids;
    const mask = this.#mask;
    for (let j = 0; j < oldIds.length; j++) {
      const id = oldIds[j]!;
      if (id === 0) continue;
      let i = id & mask;
      while (ids[i] !== 0) i = (i + 1) & mask;
      ids[i] = id;
      this.#values[i] = oldValues[j];
      this.#order[i] = oldOrder![j]!;
    }
    // The old array may already be in the old generation: emptied, it keeps nothing alive.
    oldValues.fill(undefined);
  }
}
