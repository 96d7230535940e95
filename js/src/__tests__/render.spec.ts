import { ConversationStore, IKeyValueStorage } from '../history';
import type { AgentEvent, IStatusInfo } from '../wire';
import {
  applyEvent,
  doneSummary,
  escapeHtml,
  fenceCode,
  formatElapsed,
  formatShape,
  frameEngine,
  frameTitle,
  h,
  ITurn,
  mergeHistory,
  missingKeyMessage,
  newTurn,
  outputBundle,
  phaseLabel,
  stripAnsi,
  turnsFromHistory
} from '../render';

function play(turn: ITurn, events: AgentEvent[]): ITurn {
  return events.reduce(applyEvent, turn);
}

const done: AgentEvent = {
  type: 'Done',
  mode: 'run',
  outcome: 'ran',
  code: 'result = df.a.sum()',
  explanation: 'Sum of a.',
  model: 'gpt-4o-mini',
  usage: { prompt_tokens: 120, completion_tokens: 30 },
  elapsed: 2.4,
  attempts: 2,
  cached: false,
  into: null
};

describe('applyEvent', () => {
  it('follows an agent run: steps, the approval asked, how each step ended', () => {
    const usage = { prompt_tokens: 10, completion_tokens: 5 };
    const t = play(newTurn('a', 'ask', 'why?', 'agent'), [
      { type: 'StepStarted', step: 1, code: 'result = 1', explanation: '' },
      { type: 'StepApproval', step: 1, code: 'result = 1' }
    ]);
    expect(t.approval).toBe(1);
    expect(t.steps).toEqual([
      { step: 1, code: 'result = 1', outcome: null, error: '', notes: [] }
    ]);
    const f = play(t, [
      {
        type: 'StepFinished',
        step: 1,
        outcome: 'ok',
        error: '',
        notes: ['`result` is empty (0 rows): a filter or join matched nothing.'],
        elapsed: 1.5,
        usage
      },
      {
        ...(done as object),
        mode: 'agent',
        outcome: 'proposed',
        explanation: '## Findings',
        cells: [{ cell_type: 'markdown', source: '## Findings' }],
        steps: 1,
        ended_by: 'the step budget (1 steps) ran out'
      } as AgentEvent
    ]);
    expect(f.approval).toBeNull();
    expect(f.steps?.[0].outcome).toBe('ok');
    expect(f.steps?.[0].notes[0]).toContain('empty');
    expect(f.state).toBe('done');
    expect(doneSummary(f.done!)).toMatch(/^1 step\(s\) \(the step budget \(1 steps\) ran out\)/);
    expect(t.steps?.[0].outcome).toBeNull(); // the old turn is untouched
  });

  it('streams deltas, then takes the parsed code and explanation', () => {
    const t = play(newTurn('1', 'ask', 'sum of a?', 'run'), [
      { type: 'Status', phase: 'asking', message: 'gpt-4o-mini', attempt: 1 },
      { type: 'Delta', text: 'Sum ', attempt: 1 },
      { type: 'Delta', text: 'of a.\n```python\nresult = df.a.sum()\n```', attempt: 1 }
    ]);
    expect(t.state).toBe('streaming');
    expect(t.phase).toBe('asking');
    expect(t.text).toBe('Sum of a.\n```python\nresult = df.a.sum()\n```');
    const p = applyEvent(t, {
      type: 'CodeProposed',
      code: 'result = df.a.sum()',
      explanation: 'Sum of a.',
      attempt: 1,
      warnings: ['reads a file']
    });
    expect(p.code).toBe('result = df.a.sum()');
    expect(p.warnings).toEqual(['reads a file']);
    expect(t.code).toBe(''); // the old turn is untouched
  });

  it('restarts the streamed text for a fix attempt and records the failure', () => {
    const t = play(newTurn('1', 'ask', 'q', 'run'), [
      { type: 'Delta', text: 'first', attempt: 1 },
      {
        type: 'RunFailed',
        attempt: 1,
        ename: 'KeyError',
        evalue: "'x'",
        traceback: '\x1b[31mKeyError\x1b[0m',
        will_retry: true
      },
      { type: 'Delta', text: 'second', attempt: 2 }
    ]);
    expect(t.text).toBe('second');
    expect(t.attempt).toBe(2);
    expect(t.failures).toHaveLength(1);
  });

  it('collects outputs and finishes on Done', () => {
    const t = play(newTurn('1', 'ask', 'q', 'run'), [
      {
        type: 'Output',
        kind: 'result',
        data: { 'text/plain': '6' },
        metadata: {},
        name: '',
        attempt: 1,
        saved: null
      },
      done
    ]);
    expect(t.outputs).toHaveLength(1);
    expect(t.state).toBe('done');
    expect(t.elapsed).toBe(2.4);
    expect(t.phase).toBeNull();
    // a finished turn ignores anything late
    expect(applyEvent(t, { type: 'Delta', text: 'x', attempt: 1 })).toBe(t);
  });

  it('keeps the error and the code of a Failed event', () => {
    const t = applyEvent(newTurn('1', 'ask', 'q', 'insert'), {
      type: 'Failed',
      error: { kind: 'MissingAPIKey', title: 'No API key', message: 'no key', hint: 'set it' },
      code: 'x = 1',
      elapsed: 0.1
    });
    expect(t.state).toBe('failed');
    expect(t.error?.title).toBe('No API key');
    expect(t.code).toBe('x = 1');
  });
});

describe('history', () => {
  const history = [
    { question: 'q1', explanation: 'e1', code: 'a = 1', outcome: 'proposed as a notebook cell' },
    { question: 'q2', explanation: '', code: '', outcome: 'failed: no API key' }
  ];

  it('rebuilds turns from the kernel history', () => {
    const turns = turnsFromHistory(history);
    expect(turns.map(t => [t.question, t.state, t.code])).toEqual([
      ['q1', 'done', 'a = 1'],
      ['q2', 'failed', '']
    ]);
    expect(turns[1].error?.message).toBe('no API key');
  });

  it('prefers the local copy when it tells the same story', () => {
    const local = [
      { ...newTurn('a', 'ask', 'q1', 'insert'), state: 'done' as const, code: 'a = 1' },
      { ...newTurn('r', 'run', 'a = 1', 'run'), state: 'done' as const },
      { ...newTurn('b', 'ask', 'q2', 'insert'), state: 'failed' as const }
    ];
    const merged = mergeHistory(local, history);
    expect(merged.map(t => t.id)).toEqual(['a', 'r', 'b']);
  });

  it('adds questions asked elsewhere (%%ask, the widget) between the local ones', () => {
    const local = [
      { ...newTurn('a', 'ask', 'q1', 'insert'), state: 'done' as const, code: 'a = 1' },
      { ...newTurn('r', 'run', 'a = 1', 'run'), state: 'done' as const }
    ];
    const more = [...history, { question: 'q3', explanation: '', code: 'c = 3', outcome: 'ok' }];
    const merged = mergeHistory(local, more);
    expect(merged.map(t => t.question)).toEqual(['q1', 'a = 1', 'q2', 'q3']);
    expect(merged[0].id).toBe('a'); // the local copy, with its outputs
    expect(merged[3].code).toBe('c = 3');
  });

  it('follows the kernel when the stories differ (reset, restart, other tab)', () => {
    const local = [{ ...newTurn('a', 'ask', 'old question', 'insert'), state: 'done' as const }];
    expect(mergeHistory(local, history).map(t => t.question)).toEqual(['q1', 'q2']);
    expect(mergeHistory(local, [])).toEqual([]);
  });
});

describe('ConversationStore', () => {
  function memory(): IKeyValueStorage & { data: Map<string, string> } {
    const data = new Map<string, string>();
    return {
      data,
      getItem: k => data.get(k) ?? null,
      setItem: (k, v) => void data.set(k, v),
      removeItem: k => void data.delete(k)
    };
  }

  it('saves finished turns per notebook and follows renames', () => {
    const storage = memory();
    const store = new ConversationStore(storage);
    const finished = { ...newTurn('a', 'ask', 'q', 'insert'), state: 'done' as const };
    const running = newTurn('b', 'ask', 'q2', 'insert');
    store.save('a.ipynb', [finished, running]);
    expect(store.load('a.ipynb').map(t => t.id)).toEqual(['a']);
    expect(store.load('b.ipynb')).toEqual([]);
    store.move('a.ipynb', 'c.ipynb');
    expect(store.load('a.ipynb')).toEqual([]);
    expect(store.load('c.ipynb')).toHaveLength(1);
    store.clear('c.ipynb');
    expect(storage.data.size).toBe(0);
  });

  it('survives broken storage content', () => {
    const storage = memory();
    storage.setItem('dataagent-jupyter:conversation:x.ipynb', '{not json');
    expect(new ConversationStore(storage).load('x.ipynb')).toEqual([]);
    expect(new ConversationStore(null).load('x.ipynb')).toEqual([]);
  });
});

describe('formatting', () => {
  it('formats shapes, elapsed time and phases', () => {
    expect(formatShape([1000, 3])).toBe('1,000 × 3');
    expect(formatShape([12])).toBe('12 rows');
    expect(formatElapsed(3.7)).toBe('3 s');
    expect(formatElapsed(65)).toBe('1 min 05 s');
    expect(phaseLabel('asking')).toBe('Asking the model');
    expect(phaseLabel('fixing', 2)).toBe('Asking the model to fix the code (attempt 2)');
    expect(phaseLabel(null)).toBe('');
  });

  it('describes a frame for its tooltip', () => {
    expect(
      frameTitle({ name: 'df', kind: 'DataFrame', shape: [5, 4], columns: ['a', 'b'] })
    ).toBe('df: DataFrame 5 × 4\ncolumns: a, b, …');
  });

  it('shows an uncounted engine frame with its engine', () => {
    const lazy = {
      name: 'events',
      kind: 'polars LazyFrame',
      shape: [null, 3],
      columns: ['a', 'b', 'c'],
      engine: 'polars'
    };
    expect(formatShape(lazy.shape)).toBe('? × 3');
    expect(frameTitle(lazy)).toBe('events: polars LazyFrame ? × 3\ncolumns: a, b, c');
    expect(frameEngine(lazy)).toBe('polars');
    expect(frameEngine({ name: 'df', kind: 'DataFrame', shape: [1, 1], columns: ['a'] })).toBe(
      ''
    );
  });

  it('summarises a finished answer', () => {
    expect(doneSummary(done as never)).toBe(
      'gpt-4o-mini · 2 s · 120 → 30 tokens · 2 attempts'
    );
  });

  it('says how to fix a missing key, and nothing when it is set', () => {
    const status: IStatusInfo = {
      version: '0',
      model: 'm',
      endpoint: 'api.openai.com',
      key_set: false,
      privacy: 'sample',
      mode: 'insert',
      sandbox: null
    };
    expect(missingKeyMessage(status)).toMatch(/OPENAI_API_KEY/);
    expect(missingKeyMessage({ ...status, key_set: true })).toBeNull();
  });

  it('fences code with a fence longer than any backtick run inside it', () => {
    expect(fenceCode('x = 1\n')).toBe('```python\nx = 1\n```\n');
    const tricky = 's = """\n```\n"""';
    expect(fenceCode(tricky)).toBe('````python\n' + tricky + '\n````\n');
  });

  it('strips terminal colours and escapes HTML', () => {
    expect(stripAnsi('\x1b[0;31mValueError\x1b[0m: bad')).toBe('ValueError: bad');
    expect(escapeHtml('<img src=x onerror="alert(1)">&')).toBe(
      '&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;'
    );
  });

  it('renders a stream output as plain text only', () => {
    expect(
      outputBundle({
        type: 'Output',
        kind: 'stream',
        data: { 'text/plain': 'hi\n', 'text/html': '<b>x</b>' },
        metadata: {},
        name: 'stdout',
        attempt: 1,
        saved: null
      })
    ).toEqual({ data: { 'text/plain': 'hi\n' }, metadata: {} });
  });
});

describe('h', () => {
  it('puts strings in as text, never as markup', () => {
    const el = h('div', { class: 'x' }, '<img src=x onerror="alert(1)">', h('b', {}, 'ok'));
    expect(el.querySelector('img')).toBeNull();
    expect(el.textContent).toBe('<img src=x onerror="alert(1)">ok');
    expect(el.className).toBe('x');
  });

  it('refuses inline event handlers', () => {
    expect(() => h('div', { onclick: 'alert(1)' })).toThrow();
  });
});
