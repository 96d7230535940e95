import { YNotebook } from '@jupyter/ydoc';
import { Signal } from '@lumino/signaling';

import { FrontendTarget } from '../cells';
import { FRONTEND_TARGET } from '../wire';

/** A kernel connection that records the comm target and what the handler replies. */
class FakeKernel {
  id = 'kernel-1';
  disposed = new Signal<this, void>(this);
  handler: ((comm: unknown, msg: unknown) => void) | null = null;
  registerCommTarget(name: string, handler: (comm: unknown, msg: unknown) => void): void {
    expect(name).toBe(FRONTEND_TARGET);
    this.handler = handler;
  }
}

function fakePanel(nb: YNotebook, kernel: FakeKernel): unknown {
  return {
    content: { model: { sharedModel: nb }, activeCell: null, widgets: [] },
    sessionContext: {
      session: { kernel },
      kernelChanged: new Signal({}),
      ready: Promise.resolve()
    }
  };
}

const provenance = {
  question: 'who leads?',
  model: 'gpt-4o-mini',
  turn_id: 't1',
  asked_at: '2026-01-02T03:04:05+00:00'
};

/** A target on one notebook; `request(data)` plays a comm_open and returns the reply. */
function target(nb: YNotebook): (data: unknown) => unknown[] {
  const kernel = new FakeKernel();
  const panel = fakePanel(nb, kernel);
  const tracker = {
    widgetAdded: new Signal({}),
    currentWidget: panel,
    forEach: (fn: (p: unknown) => void) => fn(panel)
  };
  new FrontendTarget(tracker as never);
  let opened = 0;
  return (data: unknown) => {
    const sent: unknown[] = [];
    const comm = {
      commId: `c${++opened}-${Math.random()}`,
      isDisposed: false,
      send: (d: unknown) => sent.push(d),
      close: () => undefined
    };
    kernel.handler!(comm, { content: { data } });
    return sent;
  };
}

describe('FrontendTarget', () => {
  it("replaces an asking cell's previous cells when the request is its proposal", () => {
    const nb = new YNotebook();
    nb.insertCell(0, { cell_type: 'code', source: '%%ask --agent', metadata: {}, id: 'ask' });
    nb.insertCell(1, { cell_type: 'code', source: 'mine = 1', metadata: {} });
    const request = target(nb);
    const cells = (code: string) => [
      { cell_type: 'markdown', source: '**Question**' },
      { cell_type: 'code', source: code }
    ];
    const ask = (code: string, turn: string) =>
      request({
        type: 'insert_cell',
        code: `# %%\n${code}\n`,
        cell_id: 'ask',
        replace: false,
        provenance: { ...provenance, turn_id: turn },
        cells: cells(code),
        proposal: true
      });
    expect(ask('a = 1', 't1')).toEqual([{ type: 'inserted', ok: true, cell_id: nb.cells[1].id }]);
    expect(nb.cells[1].getMetadata('dataagent')).toMatchObject({ asked_in: 'ask', turn_id: 't1' });
    ask('a = 2', 't2'); // the cell run again, with another answer
    expect(nb.cells.map(c => c.getSource())).toEqual(['%%ask --agent', '**Question**', 'a = 2', 'mine = 1']);
    // a chat's insert (no proposal flag) stacks, as the user asked for another copy
    request({ type: 'insert_cell', code: 'x', cell_id: 'ask', replace: false, provenance, cells: cells('a = 2') });
    expect(nb.cells).toHaveLength(6);
  });

  it('inserts a requested cell below the asking cell, with its provenance', () => {
    const nb = new YNotebook();
    nb.insertCell(0, { cell_type: 'code', source: 'chat()', metadata: {}, id: 'chat-cell' });
    const sent = target(nb)({
      type: 'insert_cell',
      code: 'x = 1\n',
      cell_id: 'chat-cell',
      replace: false,
      provenance
    });
    expect(nb.cells.map(c => c.getSource())).toEqual(['chat()', 'x = 1\n']);
    expect(nb.cells[1].getMetadata('dataagent')).toMatchObject(provenance);
    expect(sent).toEqual([{ type: 'inserted', ok: true, cell_id: nb.cells[1].id }]);
  });
});
