/**
 * `%%ask` proposals that do not stack, and the provenance of every inserted cell.
 *
 * An insert-mode `%%ask` cell proposes its code through `set_next_input`, which
 * JupyterLab turns into a new cell below once the cell has run. Running the cell again
 * (or Run All twice) used to leave one more copy each time. While the cell runs, the
 * kernel also sends the proposal here (`type: "proposal"` on the `dataagent.frontend`
 * target, see dataagent_jupyter/provenance.py); when the cell has run, the new cell
 * below gets the provenance record in its metadata, and if the cell under it is this
 * cell's previous proposal:
 *
 * - unedited, same code (a re-run answered from the cache): the old cell stays, with
 *   its outputs, and the new copy goes: nothing visibly changes;
 * - unedited, other code: the old cell goes, the new proposal takes its place;
 * - edited by the user: both stay, the new proposal above, and the asking cell's
 *   status line says so.
 *
 * Whether a cell was edited is told by a hash of the source it was inserted with,
 * kept in its metadata. Without this labextension the kernel's `set_next_input` alone
 * acts, as before.
 *
 * An agent run (`%%ask --agent`) proposes several cells: a Markdown cell with the
 * question and summary, then one code cell per step that worked. `set_next_input` can
 * only make one cell, so its payload is the cells in one text with `# %%` markers; the
 * proposal carries the cells too, and here the one cell is swapped for them. A previous
 * proposal is then the run of cells below that came from the same asking cell and turn,
 * and the rules above apply to it as a whole (one edited cell keeps them all).
 */
import type { ISharedCell, ISharedNotebook } from '@jupyter/ydoc';
import type { PartialJSONObject } from '@lumino/coreutils';

import type { IProposedCell } from './wire';

/** Most cells one proposal or request may insert (an agent run has a few dozen steps). */
export const MAX_CELLS = 100;

/** The cell-metadata key of the provenance record. */
export const METADATA_KEY = 'dataagent';

/** Where a cell came from, as the kernel reports it. */
export interface IProvenance extends PartialJSONObject {
  question: string;
  model: string;
  turn_id: string;
  asked_at: string;
}

/** What the kernel sends while an insert-mode or agent `%%ask` cell runs. */
export interface IProposal {
  type: 'proposal';
  cell_id: string;
  code: string;
  metadata: { [METADATA_KEY]: IProvenance };
  /** an agent run's cells, put in place of the one `# %%` cell `code` */
  cells?: IProposedCell[];
}

/** The outcome of settling a proposal, for the tests and the status note. */
export type Settled = 'inserted' | 'unchanged' | 'replaced' | 'kept-edited' | 'missing';

/** The note added to the asking cell's status line when an edited proposal is kept. */
export const KEPT_EDITED_NOTE =
  'your edited version of the previous proposal is kept below the new one';

/** The provenance of a panel turn's code, once the kernel has answered it. */
export function turnProvenance(
  question: string,
  done: { model: string; turn_id?: string; asked_at?: number } | null
): IProvenance | null {
  if (!done?.turn_id) {
    return null;
  }
  const seconds = Math.floor(done.asked_at ?? 0);
  return {
    question: question.trim(),
    model: done.model,
    turn_id: done.turn_id,
    // as the kernel writes it: seconds, UTC offset spelt out
    asked_at: new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, '+00:00')
  };
}

/** A provenance record as the kernel sends it: four strings. */
export function isProvenance(value: unknown): value is IProvenance {
  const record = value as { [key: string]: unknown } | null;
  return (
    typeof record === 'object' &&
    record !== null &&
    !Array.isArray(record) &&
    ['question', 'model', 'turn_id', 'asked_at'].every(k => typeof record[k] === 'string')
  );
}

export function isProposal(data: unknown): data is IProposal {
  const d = data as { [key: string]: unknown } | null;
  if (typeof d !== 'object' || d === null || d.type !== 'proposal') {
    return false;
  }
  const meta = d.metadata as { [key: string]: unknown } | null;
  return (
    typeof d.cell_id === 'string' &&
    typeof d.code === 'string' &&
    typeof meta === 'object' &&
    meta !== null &&
    isProvenance(meta[METADATA_KEY]) &&
    (d.cells === undefined || (areProposedCells(d.cells) && d.cells.length > 0))
  );
}

/** Whether `value` is a list of cells as the kernel sends them (checked: it is untrusted). */
export function areProposedCells(value: unknown): value is IProposedCell[] {
  return (
    Array.isArray(value) &&
    value.length <= MAX_CELLS &&
    value.every(
      c =>
        typeof c === 'object' &&
        c !== null &&
        (c.cell_type === 'markdown' || c.cell_type === 'code') &&
        typeof c.source === 'string'
    )
  );
}

/** A short, stable hash of a cell's source (FNV-1a, 32 bits): "was it edited?". */
export function sourceHash(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/**
 * The provenance record stored on an inserted cell: the kernel's record, plus the id of
 * the cell that asked (so its next proposal recognises this one) and the source hash.
 */
export function cellProvenance(
  record: IProvenance,
  code: string,
  askedIn: string | null
): PartialJSONObject {
  const stored: PartialJSONObject = { ...record, source_hash: sourceHash(code) };
  if (askedIn) {
    stored.asked_in = askedIn;
  }
  return stored;
}

function provenanceOf(cell: ISharedCell | undefined): PartialJSONObject | null {
  const value = cell?.getMetadata(METADATA_KEY);
  return value && typeof value === 'object' && !Array.isArray(value)
    ? (value as PartialJSONObject)
    : null;
}

function isUnedited(cell: ISharedCell): boolean {
  const record = provenanceOf(cell);
  return record !== null && record.source_hash === sourceHash(cell.getSource());
}

/**
 * Apply `proposal` once JupyterLab has inserted its `set_next_input` cell below the
 * asking cell `proposal.cell_id` of `notebook`.
 */
export function settleProposal(notebook: ISharedNotebook, proposal: IProposal): Settled {
  const cells = notebook.cells;
  const at = cells.findIndex(cell => cell.id === proposal.cell_id);
  const fresh = at >= 0 ? cells[at + 1] : undefined;
  if (!fresh || fresh.cell_type !== 'code' || fresh.getSource() !== proposal.code) {
    return 'missing'; // the payload was not applied here: nothing to settle
  }
  const record = proposal.metadata[METADATA_KEY];
  const proposed = proposal.cells ?? [];
  if (proposed.length) {
    // the one `# %%` cell becomes the separate cells it stands for (in a transaction of
    // its own: `notebook.cells` follows the document only once a transaction has ended)
    notebook.transact(() => {
      notebook.deleteCell(at + 1);
      notebook.insertCells(
        at + 1,
        proposed.map(cell => ({
          cell_type: cell.cell_type,
          source: cell.source,
          metadata: { [METADATA_KEY]: cellProvenance(record, cell.source, proposal.cell_id) }
        }))
      );
    });
  } else {
    fresh.setMetadata(METADATA_KEY, cellProvenance(record, proposal.code, proposal.cell_id));
  }
  return replacePrevious(notebook, at, Math.max(proposed.length, 1), proposal.cell_id);
}

/**
 * The `count` cells just put below the asking cell at index `at` are its new proposal:
 * settle the previous one right below them. Returns what happened; the new cells carry
 * their provenance already. Call it outside a transaction (it reads `notebook.cells`).
 */
export function replacePrevious(
  notebook: ISharedNotebook,
  at: number,
  count: number,
  askedIn: string
): Settled {
  const cells = notebook.cells;
  const start = at + 1 + count;
  const fresh = cells.slice(at + 1, start);
  const previous = previousProposal(cells, start, askedIn);
  if (previous.length === 0) {
    return 'inserted';
  }
  if (!previous.every(isUnedited)) {
    return 'kept-edited';
  }
  const same =
    previous.length === fresh.length &&
    previous.every(
      (cell, i) =>
        cell.cell_type === fresh[i].cell_type && cell.getSource() === fresh[i].getSource()
    );
  if (same) {
    // keep the old cells and their outputs; they now stand for the new turn
    notebook.transact(() => {
      previous.forEach((cell, i) =>
        cell.setMetadata(METADATA_KEY, fresh[i].getMetadata(METADATA_KEY) as PartialJSONObject)
      );
      notebook.deleteCellRange(at + 1, start);
    });
    return 'unchanged';
  }
  notebook.deleteCellRange(start, start + previous.length);
  return 'replaced';
}

/** The cells from `start` on that one earlier turn of the asking cell `askedIn` proposed. */
function previousProposal(
  cells: readonly ISharedCell[],
  start: number,
  askedIn: string
): ISharedCell[] {
  const first = provenanceOf(cells[start]);
  if (first?.asked_in !== askedIn) {
    return [];
  }
  const group: ISharedCell[] = [];
  for (let i = start; i < cells.length; i++) {
    const record = provenanceOf(cells[i]);
    if (record?.asked_in !== askedIn || record.turn_id !== first.turn_id) {
      break;
    }
    group.push(cells[i]);
  }
  return group;
}

/** Add `note` to the asking cell's final status line (the output starting with ✓). */
export function addStatusNote(notebook: ISharedNotebook, cellId: string, note: string): boolean {
  const cell = notebook.cells.find(c => c.id === cellId);
  if (!cell || cell.cell_type !== 'code') {
    return false;
  }
  const code = cell as unknown as {
    getOutputs(): Array<{ [key: string]: unknown }>;
    updateOutputs(start: number, end: number, outputs: Array<{ [key: string]: unknown }>): void;
  };
  const outputs = code.getOutputs();
  for (let i = outputs.length - 1; i >= 0; i--) {
    const output = outputs[i];
    const data = (output.data ?? {}) as { [mime: string]: unknown };
    const plain = data['text/plain'];
    if (typeof plain !== 'string' || !plain.startsWith('✓ ')) {
      continue;
    }
    const next: { [mime: string]: unknown } = { 'text/plain': `${plain} · ${note}` };
    const html = data['text/html'];
    if (typeof html === 'string' && html.trimEnd().endsWith('</div>')) {
      // the status line is this package's own markup; the note is plain, escaped text
      const at = html.lastIndexOf('</div>');
      next['text/html'] = `${html.slice(0, at)} · ${escapeHtml(note)}</div>`;
    }
    const updated = { ...output, data: next };
    code.updateOutputs(i, i + 1, [updated]);
    return true;
  }
  return false;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
}

/** Proposals announced by the kernel, by asking cell id, until that cell has run. */
export class PendingProposals {
  remember(proposal: IProposal): void {
    this._pending.set(proposal.cell_id, proposal);
  }

  /** Settle the proposal of `cellId` (after it ran) in `notebook`; forget it. */
  settle(notebook: ISharedNotebook, cellId: string): Settled | null {
    const proposal = this._pending.get(cellId);
    if (!proposal) {
      return null;
    }
    this._pending.delete(cellId);
    const settled = settleProposal(notebook, proposal);
    if (settled === 'kept-edited') {
      addStatusNote(notebook, cellId, KEPT_EDITED_NOTE);
    }
    return settled;
  }

  private _pending = new Map<string, IProposal>();
}
