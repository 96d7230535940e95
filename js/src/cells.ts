/**
 * Writing code into a notebook: from the panel's buttons, and for the kernel's
 * `dataagent.frontend` comm (the in-notebook chat widget's "Insert cell" button).
 */
import { NotebookActions, NotebookPanel, INotebookTracker } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { PartialJSONObject } from '@lumino/coreutils';

import { FRONTEND_TARGET, IProposedCell } from './wire';
import {
  addStatusNote,
  areProposedCells,
  cellProvenance,
  IProvenance,
  isProposal,
  isProvenance,
  KEPT_EDITED_NOTE,
  MAX_CELLS,
  METADATA_KEY,
  PendingProposals,
  replacePrevious
} from './proposals';

/**
 * Insert `code` as a new code cell below the active cell (at the top of an empty
 * notebook); `provenance` goes into its metadata.
 */
export function insertBelowActive(
  panel: NotebookPanel,
  code: string,
  provenance: IProvenance | null = null
): string | null {
  const notebook = panel.content;
  const index = notebook.activeCell ? notebook.activeCellIndex + 1 : 0;
  return insertAt(panel, index, code, true, provenance);
}

/** Replace the active cell's source with `code` (making it a code cell). */
export function replaceActive(panel: NotebookPanel, code: string): string | null {
  const notebook = panel.content;
  const cell = notebook.activeCell;
  if (!cell) {
    return insertAt(panel, 0, code, true);
  }
  if (cell.model.type !== 'code') {
    NotebookActions.changeCellType(notebook, 'code');
  }
  const active = notebook.activeCell;
  active?.model.sharedModel.setSource(code);
  return active?.model.id ?? null;
}

/**
 * Insert `cells` (an agent run's analysis: Markdown and code) in order below the cell at
 * `index - 1`; returns the id of the first one. The notebook stays where the user is.
 * `provenance` goes into each new cell's metadata, with `askedIn` (the asking cell's id)
 * when the cells are that cell's proposal.
 */
export function insertCellsAt(
  panel: NotebookPanel,
  index: number,
  cells: IProposedCell[],
  provenance: IProvenance | null = null,
  askedIn: string | null = null
): string | null {
  const shared = panel.content.model?.sharedModel;
  if (!shared) {
    return null;
  }
  const at = Math.max(0, Math.min(index, shared.cells.length));
  const made = shared.insertCells(
    at,
    cells.slice(0, MAX_CELLS).map(cell => ({
      cell_type: cell.cell_type,
      source: cell.source,
      metadata: provenance
        ? { [METADATA_KEY]: cellProvenance(provenance, cell.source, askedIn) }
        : {}
    }))
  );
  return made[0]?.id ?? null;
}

/** Insert `cells` below the active cell (at the top of an empty notebook). */
export function insertCellsBelowActive(
  panel: NotebookPanel,
  cells: IProposedCell[],
  provenance: IProvenance | null = null
): string | null {
  const notebook = panel.content;
  const index = notebook.activeCell ? notebook.activeCellIndex + 1 : 0;
  return insertCellsAt(panel, index, cells, provenance);
}

function insertAt(
  panel: NotebookPanel,
  index: number,
  code: string,
  activate: boolean,
  provenance: IProvenance | null = null
): string | null {
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    return null;
  }
  const shared = model.sharedModel;
  const at = Math.max(0, Math.min(index, shared.cells.length));
  const metadata: PartialJSONObject = provenance
    ? { [METADATA_KEY]: cellProvenance(provenance, code, null) }
    : {};
  const cell = shared.insertCell(at, { cell_type: 'code', source: code, metadata });
  if (activate) {
    notebook.activeCellIndex = at;
    notebook.mode = 'command';
    const widget = notebook.widgets[at];
    if (widget) {
      void notebook.scrollToCell(widget);
    }
  }
  return cell.id;
}

/** The index of the cell with `cellId`, or -1. */
function indexOfCell(panel: NotebookPanel, cellId: string | null): number {
  if (!cellId) {
    return -1;
  }
  const cells = panel.content.model?.sharedModel.cells ?? [];
  return cells.findIndex(cell => cell.id === cellId);
}

export interface IInsertCellRequest {
  type: 'insert_cell';
  code: string;
  cell_id: string | null;
  replace: boolean;
  /** the `dataagent` provenance record for the inserted cell, when the kernel sends it */
  provenance?: IProvenance | null;
  /** an agent run's cells, inserted in order instead of `code` */
  cells?: IProposedCell[];
  /**
   * The cells are the proposal of the cell `cell_id` (an `%%ask --agent` run approved
   * step by step, which ends after its cell): they replace its previous proposal below
   * instead of stacking, as `set_next_input` proposals do (proposals.ts).
   */
  proposal?: boolean;
}

/**
 * Do what a kernel's insert_cell request asks in `panel`: insert below (or replace) the
 * cell with that id, or the active cell when the id is missing or unknown.
 */
export function applyInsertRequest(
  panel: NotebookPanel,
  request: IInsertCellRequest
): string | null {
  const index = indexOfCell(panel, request.cell_id);
  const provenance = request.provenance ?? null;
  if (request.cells?.length && !request.replace) {
    if (index < 0) {
      return insertCellsBelowActive(panel, request.cells, provenance);
    }
    if (!request.proposal || !provenance || !request.cell_id) {
      return insertCellsAt(panel, index + 1, request.cells, provenance);
    }
    const askedIn = request.cell_id;
    const shared = panel.content.model!.sharedModel;
    const first = insertCellsAt(panel, index + 1, request.cells, provenance, askedIn);
    const settled = replacePrevious(shared, index, request.cells.length, askedIn);
    if (settled === 'kept-edited') {
      addStatusNote(shared, askedIn, KEPT_EDITED_NOTE);
    }
    // when the old cells stayed (same code), they are the proposal now
    return settled === 'unchanged' ? (shared.cells[index + 1]?.id ?? first) : first;
  }
  if (index < 0) {
    return request.replace
      ? replaceActive(panel, request.code)
      : insertBelowActive(panel, request.code, provenance);
  }
  if (request.replace) {
    const cell = panel.content.model!.sharedModel.cells[index];
    if (cell.cell_type === 'code') {
      cell.setSource(request.code);
      return cell.id;
    }
  }
  // not activated: the user is looking at the widget, not at the new cell
  return insertAt(panel, index + 1, request.code, false, provenance);
}

function isInsertRequest(data: unknown): data is IInsertCellRequest {
  const d = data as { [key: string]: unknown } | null;
  return (
    typeof d === 'object' &&
    d !== null &&
    d.type === 'insert_cell' &&
    typeof d.code === 'string' &&
    (d.cell_id === null || d.cell_id === undefined || typeof d.cell_id === 'string') &&
    (d.provenance === null || d.provenance === undefined || isProvenance(d.provenance)) &&
    (d.cells === undefined || areProposedCells(d.cells)) &&
    (d.proposal === undefined || typeof d.proposal === 'boolean')
  );
}

// Two notebooks may share a kernel through two connections: each receives the comm_open;
// the first to see it acts for both.
const handled = new Set<string>();

/**
 * Registers the `dataagent.frontend` target on every notebook kernel connection, for as
 * long as JupyterLab runs (not only while the panel is open).
 */
export class FrontendTarget {
  constructor(private readonly _tracker: INotebookTracker) {
    _tracker.widgetAdded.connect((_, panel) => this._watch(panel));
    _tracker.forEach(panel => this._watch(panel));
    // a %%ask cell's proposal is settled once JupyterLab has inserted it (see proposals.ts)
    NotebookActions.executed.connect((_, { notebook, cell }) => {
      const model = notebook.model;
      if (model) {
        this._proposals.settle(model.sharedModel, cell.model.id);
      }
    });
  }

  private _watch(panel: NotebookPanel): void {
    const context = panel.sessionContext;
    const register = () => {
      const kernel = context.session?.kernel;
      if (kernel && !this._registered.has(kernel)) {
        this._registered.add(kernel);
        kernel.registerCommTarget(FRONTEND_TARGET, (comm, msg) =>
          this._handle(kernel, comm, msg)
        );
        kernel.disposed.connect(() => this._registered.delete(kernel));
      }
    };
    context.kernelChanged.connect(register);
    void context.ready.then(register);
    register();
  }

  private _handle(
    kernel: Kernel.IKernelConnection,
    comm: Kernel.IComm,
    msg: KernelMessage.ICommOpenMsg
  ): void {
    if (handled.has(comm.commId)) {
      return;
    }
    handled.add(comm.commId);
    const data = msg.content.data;
    let cellId: string | null = null;
    let ok = false;
    if (isProposal(data)) {
      this._proposals.remember(data);
      ok = true;
      cellId = data.cell_id;
    } else if (isInsertRequest(data)) {
      const panel = this._target(kernel.id, data.cell_id ?? null);
      if (panel) {
        try {
          cellId = applyInsertRequest(panel, { ...data, cell_id: data.cell_id ?? null });
          ok = cellId !== null;
        } catch (error) {
          console.error('Data Agent: inserting a cell failed', error);
        }
      }
    }
    // Reply at once: a comm the kernel opened never gets a subshell, and JupyterLab
    // holds the kernel's next messages until this handler returns.
    if (!comm.isDisposed) {
      comm.send({ type: 'inserted', ok, cell_id: cellId });
      comm.close();
    }
  }

  /** The notebook to write into: the one holding the cell, else the active one. */
  private _target(kernelId: string, cellId: string | null): NotebookPanel | null {
    const candidates: NotebookPanel[] = [];
    this._tracker.forEach(panel => {
      if (panel.sessionContext.session?.kernel?.id === kernelId) {
        candidates.push(panel);
      }
    });
    const holder = candidates.find(panel => indexOfCell(panel, cellId) >= 0);
    if (holder) {
      return holder;
    }
    const current = this._tracker.currentWidget;
    if (current && candidates.includes(current)) {
      return current;
    }
    return candidates[0] ?? null;
  }

  private _registered = new WeakSet<Kernel.IKernelConnection>();
  private _proposals = new PendingProposals();
}
