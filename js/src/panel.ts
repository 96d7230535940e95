/**
 * The "Data Agent" side panel: header, frames, conversation, status line and composer,
 * showing the `NotebookAgent` of the active notebook.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { insertBelowActive, insertCellsBelowActive, replaceActive } from './cells';
import { ConversationStore } from './history';
import { dataAgentIcon } from './icon';
import { NotebookAgent } from './notebookagent';
import type { Mode } from './wire';
import {
  endpointHost,
  formatElapsed,
  formatShape,
  frameEngine,
  frameTitle,
  h,
  missingKeyMessage,
  phaseLabel
} from './render';
import { ICodeActions, TurnView } from './renderturn';

export interface IDataAgentPanelOptions {
  tracker: INotebookTracker;
  rendermime: IRenderMimeRegistry;
  store?: ConversationStore;
}

export class DataAgentPanel extends Widget {
  constructor(options: IDataAgentPanelOptions) {
    super();
    this.id = 'dataagent-panel';
    this.addClass('jp-DataAgent-panel');
    this.title.icon = dataAgentIcon;
    this.title.caption = 'Data Agent';
    this._tracker = options.tracker;
    this._rendermime = options.rendermime;
    this._store = options.store ?? new ConversationStore();
    this._build();
    this._tracker.currentChanged.connect(() => this._follow());
    this._follow();
  }

  /** The agent shown now (the active notebook's), if any. */
  get agent(): NotebookAgent | null {
    return this._agent;
  }

  /** Focus the question box. */
  focusInput(): void {
    this._input.focus();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    clearInterval(this._ticker);
    for (const view of this._views.values()) {
      view.dispose();
    }
    this._views.clear();
    for (const agent of this._agents.values()) {
      agent.dispose();
    }
    this._agents.clear();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this._agent?.connect();
    this._render();
  }

  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    this.focusInput();
  }

  // --- building ------------------------------------------------------------------------

  private _build(): void {
    this._resetButton.addEventListener('click', () => void this._agent?.reset());
    this._retryButton.addEventListener('click', () => this._agent?.retry());
    this._stopButton.addEventListener('click', () => this._agent?.stop());
    this._fixButton.addEventListener('click', () => {
      this._stickToBottom = true;
      this._agent?.fix(this._modeSelect.value as Mode);
    });
    this._form.addEventListener('submit', event => {
      event.preventDefault();
      this._submit();
    });
    this._input.addEventListener('keydown', event => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this._submit();
      }
    });
    this._input.addEventListener('input', () => this._renderComposer());
    this._modeSelect.append(
      h('option', { value: 'insert' }, 'Propose code'),
      h('option', { value: 'run' }, 'Run in sandbox'),
      h('option', { value: 'agent' }, 'Agent (steps in sandbox)')
    );
    this._modeSelect.addEventListener('change', () => {
      this._modeTouched = true;
    });
    this._conversation.addEventListener('scroll', () => {
      const el = this._conversation;
      this._stickToBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    });

    this.node.append(
      h(
        'div',
        { class: 'jp-DataAgent-header' },
        h(
          'div',
          { class: 'jp-DataAgent-headerText' },
          h('div', { class: 'jp-DataAgent-title' }, 'Data Agent'),
          this._notebookLabel
        ),
        this._resetButton
      ),
      this._notice,
      h(
        'div',
        { class: 'jp-DataAgent-frames' },
        h(
          'div',
          { class: 'jp-DataAgent-sectionTitle' },
          'DataFrames',
          h('span', { class: 'jp-DataAgent-sectionHint' }, ' — none ticked: all')
        ),
        this._frameList
      ),
      this._conversation,
      this._fixBox,
      this._keyWarning,
      this._statusLine,
      this._form
    );
    this._form.append(
      this._input,
      h('div', { class: 'jp-DataAgent-composerRow' }, this._modeSelect, this._askButton)
    );
    this._statusLine.append(this._statusText, this._phaseText, this._stopButton);
    this._notice.append(this._noticeText, this._retryButton);
    this._fixBox.append(this._fixText, this._fixButton);
  }

  // --- following the active notebook --------------------------------------------------------

  private _follow(): void {
    const panel = this._tracker.currentWidget;
    const agent = panel ? this._agentFor(panel) : null;
    if (agent === this._agent) {
      return;
    }
    this._agent?.changed.disconnect(this._render, this);
    for (const view of this._views.values()) {
      view.dispose();
    }
    this._views.clear();
    this._agent = agent;
    this._modeTouched = false;
    agent?.changed.connect(this._render, this);
    if (agent && this.isVisible) {
      void agent.connect();
    }
    this._stickToBottom = true;
    this._render();
  }

  private _agentFor(panel: NotebookPanel): NotebookAgent {
    let agent = this._agents.get(panel);
    if (!agent) {
      agent = new NotebookAgent(panel, this._store);
      this._agents.set(panel, agent);
      panel.disposed.connect(() => {
        this._agents.get(panel)?.dispose();
        this._agents.delete(panel);
      });
    }
    return agent;
  }

  // --- rendering -----------------------------------------------------------------------------

  private _render(): void {
    const agent = this._agent;
    this._renderHeader(agent);
    this._renderNotice(agent);
    this._renderFrames(agent);
    this._renderConversation(agent);
    this._renderStatus(agent);
    this._renderFix(agent);
    this._renderComposer();
  }

  /** "Fix with Data Agent" while the notebook's last cell run ended in an error. */
  private _renderFix(agent: NotebookAgent | null): void {
    const error = agent?.lastError ?? null;
    const show = error !== null && agent?.state.kind === 'ready' && !agent.active;
    this._fixBox.hidden = !show;
    this._fixText.textContent = show ? `The last cell raised ${error}.` : '';
  }

  private _renderHeader(agent: NotebookAgent | null): void {
    this._notebookLabel.textContent = agent
      ? `${agent.notebookName} · ${agent.kernelName}`
      : 'No notebook open';
    this._resetButton.disabled = !agent || agent.turns.length === 0;
  }

  private _renderNotice(agent: NotebookAgent | null): void {
    let text = '';
    let kind = 'info';
    let retry = false;
    if (!agent) {
      text = 'Open a notebook to ask about its DataFrames.';
    } else {
      const state = agent.state;
      switch (state.kind) {
        case 'no-kernel':
          text = 'This notebook has no kernel. Select a Python kernel to use the Data Agent.';
          kind = 'warning';
          break;
        case 'connecting':
          text = agent.kernelBusy
            ? 'Kernel busy — waiting for the running cell to finish…'
            : 'Connecting to the kernel…';
          kind = agent.kernelBusy ? 'busy' : 'info';
          break;
        case 'restarting':
          text = 'The kernel is restarting — the panel reconnects when it is back.';
          kind = 'warning';
          break;
        case 'error':
          text = state.hint ? `${state.message} ${state.hint}` : state.message;
          kind = 'error';
          retry = state.retry;
          break;
        default:
          break;
      }
    }
    this._noticeText.textContent = text;
    this._notice.dataset.kind = kind;
    this._notice.hidden = !text;
    this._retryButton.hidden = !retry;
  }

  private _renderFrames(agent: NotebookAgent | null): void {
    const frames = agent?.frames ?? [];
    const key = JSON.stringify([frames, agent ? [...agent.selected] : []]);
    if (key === this._framesKey) {
      return;
    }
    this._framesKey = key;
    if (!frames.length) {
      this._frameList.replaceChildren(
        h(
          'li',
          { class: 'jp-DataAgent-noFrames' },
          agent?.state.kind === 'ready' ? 'No DataFrames in the kernel yet.' : '—'
        )
      );
      return;
    }
    this._frameList.replaceChildren(
      ...frames.map(frame => {
        const box = h('input', { type: 'checkbox', 'data-frame': frame.name });
        box.checked = agent!.selected.has(frame.name);
        box.addEventListener('change', () => agent!.toggleFrame(frame.name, box.checked));
        return h(
          'li',
          { class: 'jp-DataAgent-frame', title: frameTitle(frame), 'data-frame': frame.name },
          h(
            'label',
            {},
            box,
            h('span', { class: 'jp-DataAgent-frameName' }, frame.name),
            h('span', { class: 'jp-DataAgent-frameShape' }, formatShape(frame.shape)),
            h('span', { class: 'jp-DataAgent-frameEngine' }, frameEngine(frame))
          )
        );
      })
    );
  }

  private _renderConversation(agent: NotebookAgent | null): void {
    const turns = agent?.turns ?? [];
    const seen = new Set<string>();
    let previous: Element | null = null;
    for (const turn of turns) {
      seen.add(turn.id);
      let view = this._views.get(turn.id);
      if (!view) {
        view = new TurnView(turn, this._rendermime, this._actions);
        this._views.set(turn.id, view);
      } else if (view.turn !== turn) {
        view.update(turn);
      }
      // keep DOM order equal to the turn order
      const expected: Element | null = previous
        ? previous.nextElementSibling
        : this._conversation.firstElementChild;
      if (expected !== view.node) {
        this._conversation.insertBefore(view.node, expected);
      }
      previous = view.node;
    }
    for (const [id, view] of this._views) {
      if (!seen.has(id)) {
        view.dispose();
        this._views.delete(id);
      }
    }
    this._empty.hidden = turns.length > 0;
    if (!this._empty.isConnected) {
      this._conversation.appendChild(this._empty);
    }
    if (this._stickToBottom) {
      this._conversation.scrollTop = this._conversation.scrollHeight;
    }
  }

  private _renderStatus(agent: NotebookAgent | null): void {
    const status = agent?.status ?? null;
    this._statusText.textContent = status
      ? status.replay
        ? `${status.model} · replaying ${basename(status.replay)}`
        : `${status.model} · ${endpointHost(status.endpoint)}`
      : '';
    this._statusText.title = status
      ? `model ${status.model} at ${status.endpoint}; privacy ${status.privacy}; ` +
        `dataagent-jupyter ${status.version}`
      : '';
    const warning = status ? missingKeyMessage(status) : null;
    this._keyWarning.textContent = warning ?? '';
    this._keyWarning.hidden = !warning;
    if (status && !this._modeTouched) {
      this._modeSelect.value = status.mode;
    }
    const request = agent?.active ?? null;
    const turn = request ? agent!.turns.find(t => t.id === request.id) : undefined;
    if (turn && request) {
      const elapsed = formatElapsed((Date.now() - turn.started) / 1000);
      let phase: string;
      if (request.cancelling) {
        phase = 'Stopping…';
      } else if (turn.state === 'waiting' && agent!.kernelBusy) {
        phase = 'Kernel busy — waiting…';
      } else {
        phase = phaseLabel(turn.phase, turn.attempt) || 'Sending…';
      }
      this._phaseText.textContent = `${phase} · ${elapsed}`;
      this._stopButton.hidden = false;
      this._stopButton.disabled = request.cancelling;
      if (this._ticker === undefined) {
        this._ticker = setInterval(() => this._renderStatus(this._agent), 1000);
      }
    } else {
      this._phaseText.textContent = '';
      this._stopButton.hidden = true;
      clearInterval(this._ticker);
      this._ticker = undefined;
    }
    this._statusLine.hidden = !status && !request;
  }

  private _renderComposer(): void {
    const agent = this._agent;
    const ready = agent?.state.kind === 'ready';
    const busy = Boolean(agent?.active);
    this._input.disabled = !agent;
    this._input.placeholder = ready
      ? 'Ask about your DataFrames… (Enter to send, Shift+Enter for a new line)'
      : 'The Data Agent is not connected to this notebook’s kernel';
    this._askButton.disabled = !ready || busy || !this._input.value.trim();
    this._modeSelect.disabled = !ready;
  }

  private _submit(): void {
    const agent = this._agent;
    const question = this._input.value.trim();
    if (!agent || agent.state.kind !== 'ready' || agent.active || !question) {
      return;
    }
    this._stickToBottom = true;
    agent.ask(question, this._modeSelect.value as Mode);
    this._input.value = '';
    this._renderComposer();
  }

  private _actions: ICodeActions = {
    insert: (code, provenance) => {
      const panel = this._agent?.panel;
      if (panel) {
        insertBelowActive(panel, code, provenance);
      }
    },
    replace: code => {
      const panel = this._agent?.panel;
      if (panel) {
        replaceActive(panel, code);
      }
    },
    run: code => {
      this._stickToBottom = true;
      this._agent?.runCode(code);
    },
    copy: code => Clipboard.copyToSystem(code),
    insertCells: (cells, provenance) => {
      const panel = this._agent?.panel;
      if (panel) {
        insertCellsBelowActive(panel, cells, provenance);
      }
    },
    decide: decision => this._agent?.decide(decision)
  };

  private _tracker: INotebookTracker;
  private _rendermime: IRenderMimeRegistry;
  private _store: ConversationStore;
  private _agent: NotebookAgent | null = null;
  private _agents = new Map<NotebookPanel, NotebookAgent>();
  private _views = new Map<string, TurnView>();
  private _framesKey = '';
  private _stickToBottom = true;
  private _modeTouched = false;
  private _ticker: ReturnType<typeof setInterval> | undefined = undefined;

  private _notebookLabel = h('div', { class: 'jp-DataAgent-notebook' });
  private _resetButton = h(
    'button',
    {
      class: 'jp-Button jp-mod-minimal jp-DataAgent-reset',
      type: 'button',
      title: 'Start a new conversation (the agent forgets the earlier questions)'
    },
    'New chat'
  );
  private _notice = h('div', { class: 'jp-DataAgent-notice', role: 'status' });
  private _fixBox = h('div', { class: 'jp-DataAgent-fix', role: 'status' });
  private _fixText = h('span', { class: 'jp-DataAgent-fixText' });
  private _fixButton = h(
    'button',
    {
      type: 'button',
      class: 'jp-DataAgent-fixButton jp-mod-styled',
      title: 'Send the failing cell, its error and the frames it names; propose a fix'
    },
    'Fix with Data Agent'
  );
  private _noticeText = h('span', {});
  private _retryButton = h(
    'button',
    { class: 'jp-Button jp-mod-styled jp-mod-accept jp-DataAgent-retry', type: 'button' },
    'Reconnect'
  );
  private _frameList = h('ul', { class: 'jp-DataAgent-frameList' });
  private _conversation = h('div', { class: 'jp-DataAgent-conversation' });
  private _empty = h(
    'div',
    { class: 'jp-DataAgent-empty' },
    'Ask a question about the DataFrames of this notebook, e.g. “which region grew fastest?”'
  );
  private _keyWarning = h('div', { class: 'jp-DataAgent-keyWarning', role: 'alert' });
  private _statusLine = h('div', { class: 'jp-DataAgent-statusLine' });
  private _statusText = h('span', { class: 'jp-DataAgent-statusText' });
  private _phaseText = h('span', { class: 'jp-DataAgent-phase' });
  private _stopButton = h(
    'button',
    { class: 'jp-Button jp-mod-styled jp-mod-warn jp-DataAgent-stop', type: 'button' },
    'Stop'
  );
  private _form = h('form', { class: 'jp-DataAgent-composer' });
  private _input = h('textarea', {
    class: 'jp-DataAgent-input',
    rows: '3',
    'aria-label': 'Question for the Data Agent'
  });
  private _modeSelect = h('select', {
    class: 'jp-DataAgent-mode',
    'aria-label': 'What to do with the code'
  });
  private _askButton = h(
    'button',
    { class: 'jp-Button jp-mod-styled jp-mod-accept jp-DataAgent-ask', type: 'submit' },
    'Ask'
  );
}

/** The file name of a path, for the status line. */
function basename(path: string): string {
  return path.split(/[\\/]/).pop() || path;
}
