import { RenderMimeRegistry, standardRendererFactories } from '@jupyterlab/rendermime';

import type { AgentEvent } from '../wire';
import { applyEvent, ITurn, newTurn } from '../render';
import { ICodeActions, TurnView } from '../renderturn';

const EVIL = '<img src="x" onerror="window.__pwned = 1"><script>window.__pwned = 2</script>';

/** Markdown "parsing" that passes HTML through, so only the sanitizer stands in between. */
const passthrough = { render: async (text: string) => text };

function registry(): RenderMimeRegistry {
  return new RenderMimeRegistry({
    initialFactories: standardRendererFactories,
    markdownParser: passthrough
  });
}

function actions(): ICodeActions & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    insert: code => void calls.push(`insert:${code}`),
    replace: code => void calls.push(`replace:${code}`),
    run: code => void calls.push(`run:${code}`),
    copy: code => void calls.push(`copy:${code}`),
    insertCells: cells => void calls.push(`cells:${cells.length}`),
    decide: decision => void calls.push(`decide:${decision}`)
  };
}

/** Let the throttled markdown renders and rendermime's promises finish. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await new Promise(resolve => setTimeout(resolve, 80));
  }
}

function play(turn: ITurn, events: AgentEvent[]): ITurn {
  return events.reduce(applyEvent, turn);
}

describe('TurnView', () => {
  it('shows agent steps folded, Run/Skip/Stop while one waits, and the cells again', async () => {
    const acts = actions();
    let turn = play(newTurn('a', 'ask', 'why?', 'agent'), [
      { type: 'StepStarted', step: 1, code: 'result = <b>1</b>', explanation: '' },
      { type: 'StepApproval', step: 1, code: 'result = <b>1</b>' }
    ]);
    const view = new TurnView(turn, registry(), acts);
    const approval = view.node.querySelector('.jp-DataAgent-approval') as HTMLElement;
    expect(approval.hidden).toBe(false);
    (approval.querySelector('[data-decision="skip"]') as HTMLElement).click();
    expect(acts.calls).toEqual(['decide:skip']);
    const step = view.node.querySelector('.jp-DataAgent-step')!;
    expect(step.querySelector('pre')!.textContent).toBe('result = <b>1</b>');
    expect(step.querySelector('b')).toBeNull(); // code is text, never markup
    turn = play(turn, [
      {
        type: 'StepFinished',
        step: 1,
        outcome: 'skipped',
        error: '',
        notes: [],
        elapsed: 1,
        usage: { prompt_tokens: 1, completion_tokens: 1 }
      },
      {
        type: 'Done',
        mode: 'agent',
        outcome: 'proposed',
        code: '',
        explanation: 'Nothing ran.',
        model: 'm',
        usage: { prompt_tokens: 1, completion_tokens: 1 },
        elapsed: 2,
        attempts: 1,
        cached: false,
        into: null,
        cells: [{ cell_type: 'markdown', source: 'Nothing ran.' }],
        steps: 1,
        ended_by: null
      }
    ]);
    view.update(turn);
    await settle();
    expect(approval.hidden).toBe(true);
    expect(step.isConnected).toBe(false); // re-rendered with its outcome
    expect(view.node.querySelector('.jp-DataAgent-step summary')!.textContent).toBe(
      'Step 1 was skipped'
    );
    expect(view.node.querySelector('.jp-DataAgent-codeBlock')!.hasAttribute('hidden')).toBe(
      true
    );
    const again = view.node.querySelector('.jp-DataAgent-cells button') as HTMLElement;
    again.click();
    expect(acts.calls).toEqual(['decide:skip', 'cells:1']);
    view.dispose();
  });

  afterEach(() => {
    delete (window as unknown as { __pwned?: number }).__pwned;
  });

  it('shows the question as text and sanitizes model Markdown', async () => {
    const turn = play(newTurn('1', 'ask', EVIL, 'insert'), [
      { type: 'Delta', text: `Answer ${EVIL}`, attempt: 1 }
    ]);
    const view = new TurnView(turn, registry(), actions());
    document.body.appendChild(view.node);
    await settle();
    const question = view.node.querySelector('.jp-DataAgent-question')!;
    expect(question.textContent).toBe(EVIL);
    expect(question.querySelector('img')).toBeNull();
    const answer = view.node.querySelector('.jp-DataAgent-markdown')!;
    expect(answer.textContent).toContain('Answer');
    expect(answer.innerHTML).not.toContain('onerror');
    expect(answer.querySelector('script')).toBeNull();
    expect((window as unknown as { __pwned?: number }).__pwned).toBeUndefined();
    view.dispose();
  });

  it('offers the code with working Insert, Replace, Run and Copy buttons', async () => {
    const acts = actions();
    let turn = newTurn('1', 'ask', 'sum?', 'insert');
    const view = new TurnView(turn, registry(), acts);
    turn = play(turn, [
      { type: 'Delta', text: 'Sum.\n```python\nresult = 1\n```', attempt: 1 },
      {
        type: 'CodeProposed',
        code: 'result = 1',
        explanation: 'Sum.',
        attempt: 1,
        warnings: []
      }
    ]);
    view.update(turn);
    await settle();
    const block = view.node.querySelector('.jp-DataAgent-codeBlock') as HTMLElement;
    expect(block.hidden).toBe(false);
    expect(block.textContent).toContain('result = 1');
    for (const action of ['insert', 'replace', 'run', 'copy']) {
      (block.querySelector(`[data-action="${action}"]`) as HTMLButtonElement).click();
    }
    expect(acts.calls).toEqual([
      'insert:result = 1',
      'replace:result = 1',
      'run:result = 1',
      'copy:result = 1'
    ]);
    // the explanation replaces the streamed text (which repeated the code)
    expect(view.node.querySelector('.jp-DataAgent-markdown')!.textContent).toBe('Sum.');
    view.dispose();
  });

  it('renders run outputs: streams as text, HTML sanitized, images as images', async () => {
    const turn = play(newTurn('1', 'ask', 'plot', 'run'), [
      {
        type: 'Output',
        kind: 'stream',
        data: { 'text/plain': '<b>not bold</b>\n' },
        metadata: {},
        name: 'stdout',
        attempt: 1,
        saved: null
      },
      {
        type: 'Output',
        kind: 'result',
        data: { 'text/html': `<table><tr><td>7</td></tr></table>${EVIL}`, 'text/plain': '7' },
        metadata: {},
        name: '',
        attempt: 1,
        saved: null
      },
      {
        type: 'Output',
        kind: 'display',
        data: { 'image/png': 'iVBORw0KGgo=', 'text/plain': '<Figure>' },
        metadata: {},
        name: '',
        attempt: 1,
        saved: '.dataagent/chart-1.png'
      }
    ]);
    const view = new TurnView(turn, registry(), actions());
    document.body.appendChild(view.node);
    await settle();
    const outputs = view.node.querySelectorAll('.jp-DataAgent-output');
    expect(outputs).toHaveLength(3);
    expect(outputs[0].querySelector('b')).toBeNull();
    expect(outputs[0].textContent).toContain('<b>not bold</b>');
    expect(outputs[1].querySelector('td')?.textContent).toBe('7');
    expect(outputs[1].innerHTML).not.toContain('onerror');
    expect(outputs[1].querySelector('script')).toBeNull();
    expect(outputs[2].querySelector('img')).not.toBeNull();
    expect(outputs[2].textContent).toContain('Saved to .dataagent/chart-1.png');
    expect((window as unknown as { __pwned?: number }).__pwned).toBeUndefined();
    view.dispose();
  });

  it('keeps the hostile payloads of issue 9 inert', async () => {
    // each payload would set window.__pwned and write a file through the contents API
    const js =
      "window.__pwned=1;fetch('/api/contents/pwned.txt',{method:'PUT',body:'{}'})";
    const img = `<img src="x" onerror="${js}">`;
    const html =
      `${img}<script>${js}</script>` +
      `<svg><animate onbegin="${js}" attributeName="x" dur="1s"/></svg>` +
      `<details open ontoggle="${js}"><summary>s</summary>d</details>` +
      `<iframe srcdoc="&lt;script&gt;parent.${js}&lt;/script&gt;"></iframe>` +
      `<input autofocus onfocus="${js}"><object data="javascript:${js}"></object>` +
      `<embed src="javascript:${js}"><form action="javascript:${js}"><button>go</button></form>` +
      `<a href="javascript:${js}">link</a><a href=" java&#x09;script:${js}">spaced</a>`;
    const svg =
      `<svg xmlns="http://www.w3.org/2000/svg" onload="${js}"><script>${js}</script>` +
      `<a href="javascript:${js}"><rect width="4" height="4"/></a></svg>`;
    const markdown =
      `**Bold** ${img} [bad](javascript:${js}) ` +
      `<details open ontoggle="${js}">x</details>`;
    const frame =
      '<table class="dataframe"><thead><tr><th></th>' +
      `<th>&lt;img src=x onerror=${js}&gt;</th></tr></thead>` +
      `<tbody><tr><th>0</th><td>&lt;img src=x onerror=${js}&gt;</td></tr></tbody></table>`;
    const output = (data: Record<string, string>): AgentEvent => ({
      type: 'Output',
      kind: 'display',
      data,
      metadata: {},
      name: '',
      attempt: 1,
      saved: null
    });
    const turn = play(newTurn('1', 'ask', 'show', 'run'), [
      { type: 'Delta', text: `Here you go. ${markdown}`, attempt: 1 },
      output({ 'text/html': html, 'text/plain': 'html' }),
      output({ 'image/svg+xml': svg, 'text/plain': 'svg' }),
      output({ 'text/markdown': markdown, 'text/plain': 'md' }),
      output({ 'application/javascript': js, 'text/plain': 'js' }),
      output({ 'text/html': frame, 'text/plain': 'frame' })
    ]);
    const view = new TurnView(turn, registry(), actions());
    document.body.appendChild(view.node);
    await settle();
    const all = Array.from(view.node.querySelectorAll('*'));
    const handlers = all.flatMap(el =>
      Array.from(el.attributes)
        .filter(a => a.name.startsWith('on') || a.name === 'srcdoc')
        .map(a => `${el.tagName}[${a.name}]`)
    );
    expect(handlers).toEqual([]);
    // JupyterLab's sanitizer keeps forms and inputs, inert: no action, inputs disabled
    const active = view.node.querySelectorAll(
      'script, iframe, object, embed, svg, animate, form[action], input:not([disabled])'
    );
    expect(Array.from(active).map(el => el.tagName)).toEqual([]);
    const links = Array.from(view.node.querySelectorAll('a[href]')).map(a =>
      (a.getAttribute('href') ?? '').replace(/[\s\u0000-\u001f]/g, '').toLowerCase()
    );
    expect(links.filter(href => href.startsWith('javascript:'))).toEqual([]);
    // what is meant to be seen is still there: the answer, the table with the name as text
    expect(view.node.querySelector('.jp-DataAgent-markdown')?.textContent).toContain(
      'Here you go.'
    );
    const cells = Array.from(view.node.querySelectorAll('.jp-DataAgent-output td'));
    expect(cells.map(td => td.textContent)).toContain(`<img src=x onerror=${js}>`);
    expect(view.node.textContent).toContain('js'); // the script output only as its text
    expect((window as unknown as { __pwned?: number }).__pwned).toBeUndefined();
    view.dispose();
  });

  it('shows an error with its hint as text', () => {
    const turn = applyEvent(newTurn('1', 'ask', 'q', 'insert'), {
      type: 'Failed',
      error: {
        kind: 'MissingAPIKey',
        title: 'No API key',
        message: 'no API key is set <b>now</b>.',
        hint: 'Set OPENAI_API_KEY.'
      },
      code: '',
      elapsed: 0
    });
    const view = new TurnView(turn, registry(), actions());
    const error = view.node.querySelector('.jp-DataAgent-error') as HTMLElement;
    expect(error.hidden).toBe(false);
    expect(error.textContent).toBe('No API key: no API key is set <b>now</b>.Set OPENAI_API_KEY.');
    expect(error.querySelector('b')).toBeNull();
    expect(view.node.dataset.state).toBe('failed');
    view.dispose();
  });

  it('lists failed attempts with their traceback, colours stripped', () => {
    const turn = applyEvent(newTurn('1', 'ask', 'q', 'run'), {
      type: 'RunFailed',
      attempt: 1,
      ename: 'NameError',
      evalue: "name 'x' is not defined",
      traceback: '\x1b[0;31mNameError\x1b[0m: x',
      will_retry: true
    });
    const view = new TurnView(turn, registry(), actions());
    const details = view.node.querySelector('.jp-DataAgent-runFailed')!;
    expect(details.querySelector('summary')!.textContent).toBe(
      "Attempt 1 failed: NameError: name 'x' is not defined — asking the model to fix it"
    );
    expect(details.querySelector('pre')!.textContent).toBe('NameError: x');
    view.dispose();
  });
});
