/**
 * A config file's text parsed as JSONC by `jsonc-parser` (the parser VS Code uses), kept as
 * a tree so that every problem can be reported where it is: `file:line:col key: message`.
 * Comments and trailing commas are allowed, as in VS Code's own settings files.
 */
import { findNodeAtLocation, getNodeValue, type Node, parseTree, printParseErrorCode } from "jsonc-parser";
import type { ParseError } from "jsonc-parser";

export type KeyPath = ReadonlyArray<string | number>;

/** One problem with a config: the key it is about (empty for the file itself) and what is wrong. */
export interface ConfigProblem {
  path: KeyPath;
  message: string;
  /** Point at the key's name rather than its value (unknown keys). */
  atKey?: boolean;
}

export class ConfigSource {
  readonly #lineStarts: number[] = [0];
  readonly #tree: Node | undefined;
  /** Syntax errors, already located; when there are any, `value` is not to be used. */
  readonly syntaxProblems: string[] = [];
  readonly value: unknown;

  constructor(readonly text: string, readonly file: string) {
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.#lineStarts.push(i + 1);
    const errors: ParseError[] = [];
    this.#tree = parseTree(text, errors, { allowTrailingComma: true, disallowComments: false });
    // An empty file, or one of comments only, is the defaults (every key is optional).
    if (this.#tree === undefined && errors.every((e) => printParseErrorCode(e.error) === "ValueExpected")) {
      errors.length = 0;
    }
    for (const e of errors) {
      this.syntaxProblems.push(
        `${this.#at(e.offset)}: not valid JSON: ${describeSyntaxError(printParseErrorCode(e.error))}`,
      );
    }
    this.value = this.#tree === undefined ? {} : getNodeValue(this.#tree);
  }

  /** `file:line:col key: message`, the position being where `path` is in the text (or the nearest parent that is). */
  format(problem: ConfigProblem): string {
    const key = problem.path.length === 0 ? "" : ` ${formatPath(problem.path)}`;
    return `${this.#at(this.#offsetOf(problem.path, problem.atKey === true))}${key}: ${problem.message}`;
  }

  /** Every problem formatted, in the order they appear in the file. */
  formatAll(problems: readonly ConfigProblem[]): string[] {
    return problems
      .map((p, i) => ({ p, i, at: this.#offsetOf(p.path, p.atKey === true) }))
      .sort((a, b) => a.at - b.at || a.i - b.i)
      .map(({ p }) => this.format(p));
  }

  #offsetOf(path: KeyPath, atKey: boolean): number {
    if (this.#tree === undefined) return 0;
    for (let n = path.length; n >= 0; n--) {
      const node = findNodeAtLocation(this.#tree, [...path.slice(0, n)]);
      if (node === undefined) continue;
      // A property's value node: its parent is the property, whose first child is the key.
      if (atKey && n === path.length && node.parent?.type === "property") return node.parent.children![0]!.offset;
      return node.offset;
    }
    return 0;
  }

  #at(offset: number): string {
    let lo = 0;
    let hi = this.#lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return `${this.file}:${lo + 1}:${offset - this.#lineStarts[lo]! + 1}`;
  }
}

/** `uplinks[0].tls.ca`: list indexes in brackets, as an operator would write them. */
export function formatPath(path: KeyPath): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out === "" ? p : `.${p}`;
  return out;
}

const SYNTAX_MESSAGES: Record<string, string> = {
  InvalidSymbol: "unexpected character",
  InvalidNumberFormat: "not a number",
  PropertyNameExpected: "a property name in double quotes expected",
  ValueExpected: "a value expected",
  ColonExpected: "':' expected",
  CommaExpected: "',' expected",
  CloseBraceExpected: "'}' expected",
  CloseBracketExpected: "']' expected",
  EndOfFileExpected: "nothing expected after the end of the value",
  InvalidCommentToken: "invalid comment",
  UnexpectedEndOfComment: "comment not closed (*/ missing)",
  UnexpectedEndOfString: 'string not closed (" missing)',
  UnexpectedEndOfNumber: "number cut short",
  InvalidUnicode: "invalid \\u escape",
  InvalidEscapeCharacter: "invalid escape character",
  InvalidCharacter: "invalid character in a string (a control character or a raw newline)",
};

function describeSyntaxError(code: string): string {
  return SYNTAX_MESSAGES[code] ?? code;
}
