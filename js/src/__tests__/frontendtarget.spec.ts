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

describe('FrontendTarget', () => {
  it('inserts a requested cell below the asking cell, with its provenance', () => {
    const nb = new YNotebook();
    nb.insertCell(0, { cell_type: 'code', source: 'chat()', metadata: {}, id: 'chat-cell' });
    const kernel = new FakeKernel();
    const panel = fakePanel(nb, kernel);
    const tracker = {
      widgetAdded: new Signal({}),
      currentWidget: panel,
      forEach: (fn: (p: unknown) => void) => fn(panel)
    };
    new FrontendTarget(tracker as never);
    const sent: unknown[] = [];
    const comm = {
      commId: 'c1',
      isDisposed: false,
      send: (d: unknown) => sent.push(d),
      close: () => undefined
    };
    const provenance = {
      question: 'who leads?',
      model: 'gpt-4o-mini',
      turn_id: 't1',
      asked_at: '2026-01-02T03:04:05+00:00'
    };
    kernel.handler!(comm, {
      content: {
        data: {
          type: 'insert_cell',
          code: 'x = 1\n',
          cell_id: 'chat-cell',
          replace: false,
          provenance
        }
      }
    });
    expect(nb.cells.map(c => c.getSource())).toEqual(['chat()', 'x = 1\n']);
    expect(nb.cells[1].getMetadata('dataagent')).toMatchObject(provenance);
    expect(sent).toEqual([{ type: 'inserted', ok: true, cell_id: nb.cells[1].id }]);
  });
});
