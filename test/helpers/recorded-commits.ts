import type { Mutation, Store } from "../../src/store/store.ts";

/** Every list `store` is given from now on, in order (the commits still go through). */
export function recordCommits(store: Store): Mutation[][] {
  const lists: Mutation[][] = [];
  const commit = store.commit.bind(store);
  store.commit = (mutations) => {
    lists.push([...mutations]);
    return commit(mutations);
  };
  return lists;
}
