/**
 * The view of one conversation turn: the question, the streamed answer (Markdown through
 * the sanitizing rendermime renderer), the code with its actions, the outputs of a run,
 * and the error, if any. Model text reaches the DOM only as textContent or through
 * rendermime with `trusted: false`.
 */
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import type { IOutputEvent, IProposedCell, IRunFailedEvent, StepDecision } from './wire';
import { IProvenance, turnProvenance } from './proposals';
import {
  doneSummary,
  fenceCode,
  h,
  IStepView,
  ITurn,
  outputBundle,
  stripAnsi
} from './render';

/** What the buttons of a turn do; the panel implements them on the notebook. */
export interface ICodeActions {
  /** `provenance` goes into the inserted cell's metadata (null before the turn is done) */
  insert(code: string, provenance: IProvenance | null): void;
  replace(code: string): void;
  run(code: string): void;
  copy(code: string): Promise<void> | void;
  /** an agent run's analysis, inserted again below the active cell (with its provenance) */
  insertCells(cells: IProposedCell[], provenance: IProvenance | null): void;
  /** Run / Skip / Stop for the agent step that waits */
  decide(decision: StepDecision): void;
}

const STEP_SAID = { ok: 'worked', failed: 'failed', skipped: 'was skipped' };

/** An agent step: its code (folded), how it ended, the silent failures it named. */
function stepNode(step: IStepView): HTMLElement {
  const said = step.outcome ? STEP_SAID[step.outcome] : 'running…';
  const error = step.error ? `: ${step.error}` : '';
  const node = h(
    'details',
    { class: 'jp-DataAgent-step', 'data-step': String(step.step) },
    h('summary', {}, `Step ${step.step} ${said}${error}`),
    h('pre', { class: 'jp-DataAgent-stepCode' }, step.code)
  );
  node.dataset.outcome = step.outcome ?? 'running';
  for (const note of step.notes) {
    node.appendChild(h('div', { class: 'jp-DataAgent-stepNote' }, `⚠ ${note}`));
  }
  return node;
}

/** Markdown rendered through rendermime, re-rendered at most every 60 ms while streaming. */
class MarkdownView {
  readonly node: HTMLElement;

  constructor(
    private readonly _rendermime: IRenderMimeRegistry,
    className: string
  ) {
    this.node = h('div', { class: className });
  }

  set text(text: string) {
    if (text === this._text) {
      return;
    }
    this._text = text;
    this.node.hidden = !text;
    this._schedule();
  }

  dispose(): void {
    clearTimeout(this._timer);
    this._renderer?.dispose();
    this._renderer = null;
    this._disposed = true;
  }

  private _schedule(): void {
    if (this._timer !== undefined || this._busy) {
      return;
    }
    this._timer = setTimeout(() => {
      this._timer = undefined;
      void this._render();
    }, 60);
  }

  private async _render(): Promise<void> {
    if (this._disposed) {
      return;
    }
    if (!this._renderer) {
      this._renderer = this._rendermime.createRenderer('text/markdown');
      this.node.appendChild(this._renderer.node);
    }
    const text = this._text;
    this._busy = true;
    try {
      await this._renderer.renderModel(
        new MimeModel({ data: { 'text/markdown': text }, trusted: false })
      );
    } catch (error) {
      // never lose the answer: fall back to plain text
      this._renderer.node.textContent = text;
      console.warn('Data Agent: markdown rendering failed', error);
    } finally {
      this._busy = false;
      if (this._text !== text && !this._disposed) {
        this._schedule();
      }
    }
  }

  private _renderer: IRenderMime.IRenderer | null = null;
  private _text = '';
  private _busy = false;
  private _disposed = false;
  private _timer: ReturnType<typeof setTimeout> | undefined = undefined;
}

/** A code block with Insert / Replace / Run / Copy. */
class CodeBlockView {
  readonly node: HTMLElement;

  constructor(rendermime: IRenderMimeRegistry, actions: ICodeActions) {
    this._body = new MarkdownView(rendermime, 'jp-DataAgent-codeBody');
    const button = (action: string, label: string, title: string) => {
      const el = h(
        'button',
        {
          class: 'jp-Button jp-mod-minimal jp-DataAgent-action',
          'data-action': action,
          title,
          type: 'button'
        },
        label
      );
      el.addEventListener('click', () => {
        const code = this._code;
        switch (action) {
          case 'insert':
            actions.insert(code, this.provenance);
            break;
          case 'replace':
            actions.replace(code);
            break;
          case 'run':
            actions.run(code);
            break;
          case 'copy':
            void Promise.resolve(actions.copy(code)).then(() => {
              el.textContent = 'Copied';
              setTimeout(() => (el.textContent = label), 1200);
            });
            break;
        }
      });
      return el;
    };
    this.node = h(
      'div',
      { class: 'jp-DataAgent-codeBlock' },
      this._body.node,
      h(
        'div',
        { class: 'jp-DataAgent-codeActions' },
        button('insert', 'Insert below', 'Insert as a new cell below the active cell'),
        button('replace', 'Replace cell', "Replace the active cell's code"),
        button('run', 'Run in sandbox', 'Run this code in the sandboxed kernel'),
        button('copy', 'Copy', 'Copy the code to the clipboard')
      )
    );
  }

  set code(code: string) {
    if (code === this._code) {
      return;
    }
    this._code = code;
    this.node.hidden = !code;
    this._body.text = code ? fenceCode(code) : '';
  }

  dispose(): void {
    this._body.dispose();
  }

  /** where the code came from, for the cell it is inserted as */
  provenance: IProvenance | null = null;
  private _body: MarkdownView;
  private _code = '\0';
}

/** One turn of the conversation. */
export class TurnView {
  readonly node: HTMLElement;

  constructor(
    turn: ITurn,
    private readonly _rendermime: IRenderMimeRegistry,
    actions: ICodeActions
  ) {
    this._answer = new MarkdownView(_rendermime, 'jp-DataAgent-markdown');
    this._codeBlock = new CodeBlockView(_rendermime, actions);
    this._question = h('div', { class: 'jp-DataAgent-question' });
    this._pending = h('div', { class: 'jp-DataAgent-pending' }, '…');
    this.node = h(
      'div',
      { class: 'jp-DataAgent-turn' },
      this._question,
      h(
        'div',
        { class: 'jp-DataAgent-answer' },
        this._pending,
        this._answer.node,
        this._failures,
        this._codeBlock.node,
        this._warnings,
        this._steps,
        this._approval,
        this._outputs,
        this._cells,
        this._error,
        this._footer
      )
    );
    for (const [decision, label] of [
      ['run', 'Run'],
      ['skip', 'Skip'],
      ['stop', 'Stop']
    ] as const) {
      const button = h(
        'button',
        {
          class: 'jp-Button jp-mod-styled jp-DataAgent-decide',
          'data-decision': decision,
          type: 'button'
        },
        label
      );
      button.addEventListener('click', () => actions.decide(decision));
      this._approval.appendChild(button);
    }
    this._cellsButton.addEventListener('click', () => {
      const turn = this._turn;
      const cells = turn?.done?.cells;
      if (turn && cells?.length) {
        actions.insertCells(cells, turnProvenance(turn.question, turn.done));
      }
    });
    this._cells.appendChild(this._cellsButton);
    this.update(turn);
  }

  get turn(): ITurn {
    return this._turn!;
  }

  update(turn: ITurn): void {
    const old = this._turn;
    this._turn = turn;
    this.node.dataset.state = turn.state;
    this.node.dataset.kind = turn.kind;
    this.node.dataset.turnId = turn.id;
    if (!old || old.question !== turn.question || old.kind !== turn.kind) {
      this._question.textContent = turn.kind === 'run' ? 'Run in sandbox' : turn.question;
    }
    const finished = turn.state === 'done' || turn.state === 'failed';
    // before the code is known the streamed text is the answer; after, the explanation
    const agent = turn.mode === 'agent';
    const proposed = turn.kind === 'ask' && Boolean(turn.code) && !agent;
    this._answer.text = proposed
      ? turn.explanation
      : turn.kind === 'ask'
        ? (agent && finished ? turn.explanation : turn.text) ||
          (finished ? turn.explanation : '')
        : '';
    this._pending.hidden = !(
      turn.state === 'waiting' ||
      (turn.state === 'streaming' && !turn.text && !turn.code && !turn.outputs.length)
    );
    this._codeBlock.code = proposed || turn.kind === 'run' ? turn.code : '';
    this._codeBlock.provenance =
      turn.kind === 'ask' ? turnProvenance(turn.question, turn.done) : null;
    if (!old || old.steps !== turn.steps) {
      this._steps.replaceChildren(...(turn.steps ?? []).map(stepNode));
      this._steps.hidden = !turn.steps?.length;
    }
    const waiting = turn.approval ?? null;
    this._approval.hidden = waiting === null;
    this._approval.dataset.step = waiting === null ? '' : String(waiting);
    const cells = turn.done?.cells ?? [];
    this._cells.hidden = !cells.length;
    this._cellsButton.textContent = `Insert the ${cells.length} cells again`;
    if (!old || old.failures !== turn.failures) {
      this._renderFailures(turn.failures);
    }
    if (!old || old.warnings !== turn.warnings) {
      this._warnings.replaceChildren(...turn.warnings.map(w => h('li', {}, w)));
      this._warnings.hidden = !turn.warnings.length;
    }
    if (!old || old.outputs !== turn.outputs) {
      this._renderOutputs(turn.outputs);
    }
    if (!old || old.error !== turn.error) {
      this._renderError(turn);
    }
    const footer = turn.done
      ? doneSummary(turn.done)
      : turn.outcome && turn.state === 'done'
        ? turn.outcome
        : '';
    this._footer.textContent = footer;
    this._footer.hidden = !footer;
  }

  dispose(): void {
    this._answer.dispose();
    this._codeBlock.dispose();
    for (const renderer of this._renderers) {
      renderer.dispose();
    }
    this._renderers = [];
    this.node.remove();
  }

  private _renderFailures(failures: IRunFailedEvent[]): void {
    this._failures.replaceChildren(
      ...failures.map(f =>
        h(
          'details',
          { class: 'jp-DataAgent-runFailed' },
          h(
            'summary',
            {},
            `Attempt ${f.attempt} failed: ${f.ename}: ${f.evalue}` +
              (f.will_retry ? ' — asking the model to fix it' : '')
          ),
          h('pre', {}, stripAnsi(f.traceback))
        )
      )
    );
    this._failures.hidden = !failures.length;
  }

  private _renderOutputs(outputs: IOutputEvent[]): void {
    // outputs only ever grow while a turn streams; render the new ones
    for (const output of outputs.slice(this._renderedOutputs)) {
      this._outputs.appendChild(this._renderOutput(output));
    }
    this._renderedOutputs = outputs.length;
    this._outputs.hidden = !outputs.length;
  }

  private _renderOutput(output: IOutputEvent): HTMLElement {
    const box = h('div', {
      class: `jp-DataAgent-output jp-DataAgent-output-${output.kind}`
    });
    const { data, metadata } = outputBundle(output);
    if (output.kind === 'stream') {
      box.appendChild(
        h(
          'pre',
          { class: output.name === 'stderr' ? 'jp-DataAgent-stderr' : undefined },
          stripAnsi(String(data['text/plain'] ?? ''))
        )
      );
    } else {
      const mime = this._rendermime.preferredMimeType(
        data as ReadonlyPartialJSONObject,
        'ensure'
      );
      if (mime) {
        const renderer = this._rendermime.createRenderer(mime);
        this._renderers.push(renderer);
        box.appendChild(renderer.node);
        void renderer
          .renderModel(
            new MimeModel({
              data: data as ReadonlyPartialJSONObject,
              metadata: metadata as ReadonlyPartialJSONObject,
              trusted: false
            })
          )
          .catch(error => {
            renderer.node.textContent = String(data['text/plain'] ?? error);
          });
      } else {
        box.appendChild(h('pre', {}, String(data['text/plain'] ?? '(no displayable output)')));
      }
    }
    if (output.saved) {
      box.appendChild(h('div', { class: 'jp-DataAgent-saved' }, `Saved to ${output.saved}`));
    }
    return box;
  }

  private _renderError(turn: ITurn): void {
    const error = turn.error;
    if (!error) {
      this._error.replaceChildren();
      this._error.hidden = true;
      return;
    }
    this._error.dataset.kind = error.kind;
    this._error.replaceChildren(h('strong', {}, `${error.title}: `), error.message);
    if (error.hint) {
      this._error.appendChild(h('div', { class: 'jp-DataAgent-hint' }, error.hint));
    }
    this._error.hidden = false;
  }

  private _turn: ITurn | null = null;
  private _question: HTMLElement;
  private _pending: HTMLElement;
  private _answer: MarkdownView;
  private _codeBlock: CodeBlockView;
  private _failures = h('div', { class: 'jp-DataAgent-failures' });
  private _warnings = h('ul', { class: 'jp-DataAgent-warnings' });
  private _outputs = h('div', { class: 'jp-DataAgent-outputs' });
  private _error = h('div', { class: 'jp-DataAgent-error', role: 'alert' });
  private _footer = h('div', { class: 'jp-DataAgent-footer' });
  private _steps = h('div', { class: 'jp-DataAgent-steps' });
  private _approval = h('div', { class: 'jp-DataAgent-approval', role: 'group' });
  private _cells = h('div', { class: 'jp-DataAgent-cells' });
  private _cellsButton = h(
    'button',
    { class: 'jp-Button jp-mod-minimal jp-DataAgent-action', type: 'button' },
    'Insert the cells again'
  );
  private _renderers: IRenderMime.IRenderer[] = [];
  private _renderedOutputs = 0;
}
