import type { AclRule } from "./acl.ts";

/**
 * Mosquitto's `acl_file` format, turned into Ferry ACL rules:
 *
 *     # comment
 *     topic [read|write|readwrite|deny] <filter>     lines before any `user`: anonymous clients
 *     user <username>
 *     topic [read|write|readwrite|deny] <filter>     this user
 *     pattern [read|write|readwrite|deny] <filter>   every client; %u = username, %c = client id
 *
 * The access type defaults to readwrite. Mosquitto denies when any matching line says
 * `deny`, else allows when any matching line grants the access, else denies. Ferry's rules
 * are first-match, so the deny lines come first, then the grants; the caller sets the
 * fallback to deny.
 */
export function parseAclFile(text: string): { rules: AclRule[]; problems: string[] } {
  const denies: AclRule[] = [];
  const grants: AclRule[] = [];
  const problems: string[] = [];
  let user: string | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const [keyword, rest] = splitWord(line);
    if (keyword === "user") {
      if (rest === "") problems.push(`line ${i + 1}: user without a name`);
      else user = rest;
      return;
    }
    if (keyword !== "topic" && keyword !== "pattern") {
      problems.push(`line ${i + 1}: unknown keyword '${keyword}' (expected topic, pattern or user)`);
      return;
    }
    let [access, filter] = splitWord(rest);
    if (!["read", "write", "readwrite", "deny"].includes(access)) {
      // No access type: the whole rest is the topic, readwrite.
      filter = rest;
      access = "readwrite";
    }
    if (filter === "") {
      problems.push(`line ${i + 1}: ${keyword} without a topic`);
      return;
    }
    const base: Pick<AclRule, "topic" | "username" | "anonymous"> = { topic: filter };
    if (keyword === "topic") {
      if (user === undefined) base.anonymous = true;
      else base.username = user;
    }
    if (access === "deny") denies.push({ ...base, action: "all", permission: "deny" });
    else {
      const action = access === "read" ? "subscribe" : access === "write" ? "publish" : "all";
      grants.push({ ...base, action, permission: "allow" });
    }
  });
  return { rules: [...denies, ...grants], problems };
}

function splitWord(s: string): [string, string] {
  const m = /^(\S+)\s*(.*)$/.exec(s);
  return m ? [m[1]!, m[2]!.trim()] : ["", ""];
}
