import { YNotebook } from '@jupyter/ydoc';

import {
  IProposal,
  isProposal,
  KEPT_EDITED_NOTE,
  METADATA_KEY,
  PendingProposals,
  settleProposal,
  sourceHash,
  turnProvenance
} from '../proposals';

const RECORD = {
  question: 'total revenue by region?',
  model: 'gpt-4o-mini',
  turn_id: 'abc123',
  asked_at: '2026-01-02T03:04:05+00:00'
};

function proposal(code: string, turn = 'abc123'): IProposal {
  return {
    type: 'proposal',
    cell_id: 'ask-1',
    code,
    metadata: { [METADATA_KEY]: { ...RECORD, turn_id: turn } }
  };
}

/** A notebook with an asking cell, as JupyterLab leaves it after set_next_input. */
function notebookAfterRun(code: string, below: string[] = []): YNotebook {
  const nb = new YNotebook();
  nb.insertCell(0, { cell_type: 'code', source: 'sales = load()', metadata: {} });
  nb.insertCell(1, { cell_type: 'code', source: '%%ask sales\nq?', metadata: {}, id: 'ask-1' });
  nb.insertCell(2, { cell_type: 'code', source: code, metadata: { trusted: false } });
  below.forEach((source, i) =>
    nb.insertCell(3 + i, { cell_type: 'code', source, metadata: {} })
  );
  return nb;
}

const sources = (nb: YNotebook) => nb.cells.map(c => c.getSource());

describe('settleProposal', () => {
  it('records the provenance on the inserted cell', () => {
    const nb = notebookAfterRun('# dataagent: q?\nresult = 1\n');
    expect(settleProposal(nb, proposal('# dataagent: q?\nresult = 1\n'))).toBe('inserted');
    const meta = nb.cells[2].getMetadata(METADATA_KEY) as { [k: string]: unknown };
    expect(meta).toMatchObject(RECORD);
    expect(meta.asked_in).toBe('ask-1');
    expect(meta.source_hash).toBe(sourceHash('# dataagent: q?\nresult = 1\n'));
    expect(nb.cells).toHaveLength(3);
  });

  it('keeps the old unedited cell when the re-run proposes the same code', () => {
    const code = '# dataagent: q?\nresult = 1\n';
    const nb = notebookAfterRun(code);
    settleProposal(nb, proposal(code, 'first'));
    const oldId = nb.cells[2].id;
    // run the asking cell again: JupyterLab inserts one more copy right below it
    nb.insertCell(2, { cell_type: 'code', source: code, metadata: { trusted: false } });
    expect(settleProposal(nb, proposal(code, 'second'))).toBe('unchanged');
    expect(sources(nb)).toEqual(['sales = load()', '%%ask sales\nq?', code]);
    expect(nb.cells[2].id).toBe(oldId);
    expect((nb.cells[2].getMetadata(METADATA_KEY) as IProposal['metadata']['dataagent']).turn_id).toBe(
      'second'
    );
  });

  it('replaces an unedited old proposal with different new code', () => {
    const nb = notebookAfterRun('# dataagent: q?\nresult = 1\n');
    settleProposal(nb, proposal('# dataagent: q?\nresult = 1\n'));
    nb.insertCell(2, { cell_type: 'code', source: '# dataagent: q?\nresult = 2\n', metadata: {} });
    expect(settleProposal(nb, proposal('# dataagent: q?\nresult = 2\n'))).toBe('replaced');
    expect(sources(nb)).toEqual(['sales = load()', '%%ask sales\nq?', '# dataagent: q?\nresult = 2\n']);
  });

  it('keeps an edited old proposal below the new one', () => {
    const code = '# dataagent: q?\nresult = 1\n';
    const nb = notebookAfterRun(code);
    settleProposal(nb, proposal(code));
    nb.cells[2].setSource(code + 'result * 2\n'); // the user's edit
    nb.insertCell(2, { cell_type: 'code', source: code, metadata: {} });
    expect(settleProposal(nb, proposal(code))).toBe('kept-edited');
    expect(sources(nb)).toEqual(['sales = load()', '%%ask sales\nq?', code, code + 'result * 2\n']);
  });

  it('leaves a cell below alone when another cell proposed it', () => {
    const nb = notebookAfterRun('# dataagent: q?\nresult = 1\n', ['x = 1']);
    nb.cells[3].setMetadata(METADATA_KEY, {
      ...RECORD,
      asked_in: 'ask-2',
      source_hash: sourceHash('x = 1')
    });
    expect(settleProposal(nb, proposal('# dataagent: q?\nresult = 1\n'))).toBe('inserted');
    expect(nb.cells).toHaveLength(4);
  });

  it('does nothing when the payload cell is not there', () => {
    const nb = notebookAfterRun('something else');
    expect(settleProposal(nb, proposal('# dataagent: q?\nresult = 1\n'))).toBe('missing');
    expect(nb.cells[2].getMetadata(METADATA_KEY)).toBeUndefined();
  });
});

describe('settleProposal for an agent run', () => {
  const cellsOf = (steps: string[]) => [
    { cell_type: 'markdown' as const, source: '**Question**\n\n> q?' },
    ...steps.map(source => ({ cell_type: 'code' as const, source }))
  ];
  const percent = (steps: string[]) => `# %% [markdown]\n# q?\n\n# %%\n${steps.join('\n# %%\n')}`;
  function agentProposal(steps: string[], turn = 'abc123'): IProposal {
    return { ...proposal(percent(steps), turn), cells: cellsOf(steps) };
  }
  /** The asking cell run again: set_next_input put one more `# %%` cell below it. */
  function rerun(nb: YNotebook, steps: string[]): void {
    nb.insertCell(2, { cell_type: 'code', source: percent(steps), metadata: {} });
  }

  it('puts the markdown and code cells in place of the one # %% cell', () => {
    const steps = ['a = 1', 'b = a + 1'];
    const nb = notebookAfterRun(percent(steps), ['later = 1']);
    expect(settleProposal(nb, agentProposal(steps))).toBe('inserted');
    expect(nb.cells.map(c => c.cell_type)).toEqual(['code', 'code', 'markdown', 'code', 'code', 'code']);
    expect(sources(nb)).toEqual([
      'sales = load()',
      '%%ask sales\nq?',
      '**Question**\n\n> q?',
      'a = 1',
      'b = a + 1',
      'later = 1'
    ]);
    for (const cell of nb.cells.slice(2, 5)) {
      const meta = cell.getMetadata(METADATA_KEY) as { [k: string]: unknown };
      expect(meta).toMatchObject({ ...RECORD, asked_in: 'ask-1' });
      expect(meta.source_hash).toBe(sourceHash(cell.getSource()));
    }
    expect(nb.cells[5].getMetadata(METADATA_KEY)).toBeUndefined();
  });

  it('replaces every cell of the previous unedited run, and keeps identical ones', () => {
    const nb = notebookAfterRun(percent(['a = 1', 'b = 2']), ['later = 1']);
    settleProposal(nb, agentProposal(['a = 1', 'b = 2'], 'first'));
    rerun(nb, ['c = 3']);
    expect(settleProposal(nb, agentProposal(['c = 3'], 'second'))).toBe('replaced');
    expect(sources(nb).slice(2)).toEqual(['**Question**\n\n> q?', 'c = 3', 'later = 1']);
    const kept = nb.cells[3].id;
    rerun(nb, ['c = 3']);
    expect(settleProposal(nb, agentProposal(['c = 3'], 'third'))).toBe('unchanged');
    expect(sources(nb).slice(2)).toEqual(['**Question**\n\n> q?', 'c = 3', 'later = 1']);
    expect(nb.cells[3].id).toBe(kept);
    expect((nb.cells[3].getMetadata(METADATA_KEY) as { turn_id: string }).turn_id).toBe('third');
  });

  it('keeps the whole previous run when one of its cells was edited', () => {
    const nb = notebookAfterRun(percent(['a = 1', 'b = 2']));
    settleProposal(nb, agentProposal(['a = 1', 'b = 2'], 'first'));
    nb.cells[4].setSource('b = 20  # mine');
    rerun(nb, ['c = 3']);
    expect(settleProposal(nb, agentProposal(['c = 3'], 'second'))).toBe('kept-edited');
    expect(sources(nb).slice(2)).toEqual([
      '**Question**\n\n> q?',
      'c = 3',
      '**Question**\n\n> q?',
      'a = 1',
      'b = 20  # mine'
    ]);
  });

  it('rejects malformed cells from the kernel', () => {
    expect(isProposal(agentProposal(['a = 1']))).toBe(true);
    expect(isProposal({ ...agentProposal(['a = 1']), cells: [{ cell_type: 'raw', source: 'x' }] })).toBe(
      false
    );
    expect(isProposal({ ...agentProposal(['a = 1']), cells: [] })).toBe(false);
  });
});

describe('PendingProposals', () => {
  it('notes on the status line that an edited proposal was kept', () => {
    const code = '# dataagent: q?\nresult = 1\n';
    const nb = notebookAfterRun(code);
    settleProposal(nb, proposal(code));
    nb.cells[2].setSource('edited');
    nb.insertCell(2, { cell_type: 'code', source: code, metadata: {} });
    const asking = nb.cells[1] as unknown as {
      setOutputs(o: unknown[]): void;
      getOutputs(): Array<{ data: { [k: string]: string } }>;
    };
    asking.setOutputs([
      {
        output_type: 'display_data',
        metadata: {},
        data: {
          'text/plain': '✓ Code proposed in a new cell below in 0.1 s',
          'text/html': '<div class="dataagent-status">✓ Code proposed</div>'
        }
      }
    ]);
    const pending = new PendingProposals();
    pending.remember(proposal(code));
    expect(pending.settle(nb, 'ask-1')).toBe('kept-edited');
    const data = asking.getOutputs()[0].data;
    expect(data['text/plain']).toContain(KEPT_EDITED_NOTE);
    expect(data['text/html']).toContain(KEPT_EDITED_NOTE);
    // settled once: a later run without a proposal changes nothing
    expect(pending.settle(nb, 'ask-1')).toBeNull();
  });
});

describe('isProposal', () => {
  it('accepts the kernel message and rejects malformed ones', () => {
    expect(isProposal(proposal('x'))).toBe(true);
    expect(isProposal({ ...proposal('x'), cell_id: 3 })).toBe(false);
    expect(isProposal({ ...proposal('x'), metadata: { dataagent: { question: 1 } } })).toBe(false);
    expect(isProposal({ type: 'insert_cell', code: 'x', cell_id: null })).toBe(false);
  });
});

describe('turnProvenance', () => {
  it('is the kernel record once the turn is done, none before', () => {
    expect(turnProvenance('q?', null)).toBeNull();
    expect(turnProvenance('q?', { model: 'm' })).toBeNull(); // an older kernel
    expect(
      turnProvenance(' q? ', { model: 'm', turn_id: 't1', asked_at: 1767323045.75 })
    ).toEqual({ question: 'q?', model: 'm', turn_id: 't1', asked_at: '2026-01-02T03:04:05+00:00' });
  });
});
