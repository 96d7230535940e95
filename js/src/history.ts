/**
 * The conversation of each notebook kept in localStorage, so a page reload shows the
 * answers with their outputs. The kernel's history stays the authority (see mergeHistory).
 */
import type { ITurn } from './render';

const PREFIX = 'dataagent-jupyter:conversation:';
/** turns kept per notebook */
export const MAX_TURNS = 40;
/** a single output bigger than this (characters) is left out of the saved copy */
const MAX_OUTPUT_CHARS = 200_000;

/** Storage as the store needs it (window.localStorage, or a Map in tests). */
export interface IKeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

function defaultStorage(): IKeyValueStorage | null {
  try {
    return typeof window !== 'undefined' ? window.localStorage : null;
  } catch {
    return null; // storage can be disabled by the browser
  }
}

/** Saved conversations keyed by notebook path. */
export class ConversationStore {
  constructor(private readonly _storage: IKeyValueStorage | null = defaultStorage()) {}

  load(notebook: string): ITurn[] {
    if (!this._storage || !notebook) {
      return [];
    }
    try {
      const raw = this._storage.getItem(PREFIX + notebook);
      const turns = raw ? (JSON.parse(raw) as ITurn[]) : [];
      return Array.isArray(turns) ? turns : [];
    } catch {
      return [];
    }
  }

  /** Save the finished turns (a turn still streaming is not worth restoring). */
  save(notebook: string, turns: ITurn[]): void {
    if (!this._storage || !notebook) {
      return;
    }
    const finished = turns
      .filter(t => t.state === 'done' || t.state === 'failed')
      .slice(-MAX_TURNS)
      .map(slim);
    try {
      if (finished.length) {
        this._storage.setItem(PREFIX + notebook, JSON.stringify(finished));
      } else {
        this._storage.removeItem(PREFIX + notebook);
      }
    } catch {
      // quota exceeded: keep only the text of the turns
      try {
        this._storage.setItem(
          PREFIX + notebook,
          JSON.stringify(finished.map(t => ({ ...t, outputs: [] })))
        );
      } catch {
        /* nothing more to do: the kernel still has the history */
      }
    }
  }

  /** Follow a rename. */
  move(from: string, to: string): void {
    if (!this._storage || from === to) {
      return;
    }
    const raw = this._storage.getItem(PREFIX + from);
    if (raw !== null) {
      this._storage.setItem(PREFIX + to, raw);
      this._storage.removeItem(PREFIX + from);
    }
  }

  clear(notebook: string): void {
    this._storage?.removeItem(PREFIX + notebook);
  }
}

function slim(turn: ITurn): ITurn {
  return {
    ...turn,
    text: turn.code ? '' : turn.text, // the explanation and code carry the answer
    outputs: turn.outputs.filter(o => JSON.stringify(o.data).length <= MAX_OUTPUT_CHARS)
  };
}
