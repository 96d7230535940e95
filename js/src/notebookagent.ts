/**
 * The panel's state for one notebook: the connection to its kernel, the frames, the
 * conversation and the question in flight. The panel shows the agent of the active
 * notebook; each notebook keeps its own while the user switches between them.
 */
import type { ICodeCellModel } from '@jupyterlab/cells';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import type { KernelMessage } from '@jupyterlab/services';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { ConversationStore } from './history';
import { AgentClient, AgentRequest } from './client';
import { connectAgent, ConnectError } from './connection';
import {
  AgentEvent,
  IFrameInfo,
  IHelloReply,
  isFinalEvent,
  IStatusInfo,
  Mode,
  StepDecision
} from './wire';
import { insertCellsBelowActive } from './cells';
import { applyEvent, ITurn, mergeHistory, newTurn } from './render';
import { areProposedCells, turnProvenance } from './proposals';

/** Where the connection to the kernel stands. */
export type AgentState =
  | { kind: 'idle' }
  | { kind: 'no-kernel' }
  | { kind: 'connecting' }
  | { kind: 'ready' }
  | { kind: 'restarting' }
  | { kind: 'error'; message: string; hint: string | null; retry: boolean };

/** Frames and status are refreshed this long after the kernel finished executing. */
const REFRESH_DELAY = 250;

export class NotebookAgent implements IDisposable {
  constructor(
    readonly panel: NotebookPanel,
    private readonly _store: ConversationStore
  ) {
    const context = panel.sessionContext;
    context.statusChanged.connect(this._onKernelStatus, this);
    context.kernelChanged.connect(this._onKernelChanged, this);
    context.iopubMessage.connect(this._onIOPub, this);
    panel.context.pathChanged.connect(this._onPathChanged, this);
    NotebookActions.executed.connect(this._onExecuted, this);
    this._path = panel.context.path;
    this.turns = _store.load(this._path);
  }

  /** Anything the panel shows changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get state(): AgentState {
    return this._state;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** The notebook's file name. */
  get notebookName(): string {
    return this.panel.title.label || this._path;
  }

  get kernelName(): string {
    return this.panel.sessionContext.kernelDisplayName;
  }

  /**
   * Whether the kernel's main shell is executing: our requests then wait behind the
   * running cell. The kernel's status is not this: with subshells (ipykernel 7) a comm
   * handled on a subshell, or a control request, reports "idle" while a cell still runs.
   * So it is this notebook's own running cells, plus executions that other clients of
   * the same kernel (a console) started on the main shell, seen on iopub.
   */
  get kernelBusy(): boolean {
    if (this._othersExecuting.size > 0) {
      return true;
    }
    return this.panel.content.widgets.some(
      cell =>
        cell.model.type === 'code' &&
        (cell.model as ICodeCellModel).executionState === 'running'
    );
  }

  status: IStatusInfo | null = null;
  frames: IFrameInfo[] = [];
  /** The exception of the notebook's last cell run, when it failed (offers a fix). */
  lastError: string | null = null;
  /** frame names chosen as context; empty means "all frames" */
  readonly selected = new Set<string>();
  turns: ITurn[] = [];

  /** The question or run in flight, if any. */
  get active(): AgentRequest | null {
    return this._active;
  }

  /** Connect to the kernel (loading the extension if needed); no-op when connected. */
  async connect(): Promise<void> {
    this._wanted = true;
    if (this._isDisposed || this._client || this._state.kind === 'connecting') {
      return;
    }
    const generation = ++this._generation;
    this._setState({ kind: 'connecting' });
    const context = this.panel.sessionContext;
    try {
      await context.ready;
    } catch {
      // a failed kernel start: reported below as no kernel
    }
    const kernel = context.session?.kernel;
    if (generation !== this._generation || this._isDisposed) {
      return;
    }
    if (!kernel) {
      this._setState({ kind: 'no-kernel' });
      return;
    }
    try {
      const { client, hello } = await connectAgent(kernel, {
        onWaiting: () => this._changed.emit()
      });
      if (generation !== this._generation || this._isDisposed) {
        client.dispose();
        return;
      }
      this._attach(client, hello);
    } catch (error) {
      if (generation !== this._generation || this._isDisposed) {
        return;
      }
      if (error instanceof ConnectError) {
        this._setState({
          kind: 'error',
          message: error.message,
          hint: error.hint,
          retry: error.reason !== 'not-python'
        });
      } else if (this._state.kind !== 'restarting') {
        this._setState({
          kind: 'error',
          message: `Could not reach the Data Agent in the kernel: ${errorText(error)}`,
          hint: null,
          retry: true
        });
      }
    }
  }

  /** Try again after an error. */
  retry(): void {
    this._dropClient(null);
    this._setState({ kind: 'idle' });
    void this.connect();
  }

  ask(question: string, mode: Mode): void {
    const client = this._client;
    const text = question.trim();
    if (!client || this._active || !text) {
      return;
    }
    const request = client.ask(text, { frames: [...this.selected], mode });
    this._track(request, newTurn(request.id, 'ask', text, mode));
  }

  /** Ask for a corrected version of the last failing cell, as a new turn. */
  fix(mode: Mode): void {
    const client = this._client;
    if (!client || this._active || this.lastError === null) {
      return;
    }
    const request = client.fix(mode);
    // named as the kernel names it (fixes.py), so history merges see one turn
    const question = `fix the ${this.lastError} in the last failing cell`;
    this._track(request, newTurn(request.id, 'ask', question, mode));
    this.lastError = null;
  }

  private _onExecuted(
    _: unknown,
    args: { notebook: unknown; success: boolean; error?: { errorName?: string } | null }
  ): void {
    if (args.notebook !== this.panel.content) {
      return;
    }
    const failed = args.success ? null : args.error?.errorName || 'error';
    if (failed !== this.lastError) {
      this.lastError = failed;
      this._changed.emit();
    }
  }

  /** Run code of an earlier answer in the sandbox, as a new turn. */
  runCode(code: string): void {
    const client = this._client;
    if (!client || this._active || !code.trim()) {
      return;
    }
    const request = client.run(code, [...this.selected]);
    this._track(request, newTurn(request.id, 'run', code, 'run'));
  }

  stop(): void {
    this._active?.cancel();
    this._changed.emit();
  }

  /** Run, skip or stop the agent step that waits for approval. */
  decide(decision: StepDecision): void {
    this._client?.decide(decision);
  }

  /** Start a new conversation (the kernel forgets the earlier turns too). */
  async reset(): Promise<void> {
    this._active?.cancel();
    this.turns = [];
    this._store.clear(this._path);
    this._changed.emit();
    try {
      await this._client?.reset();
    } catch (error) {
      console.warn('Data Agent: reset failed', error);
    }
  }

  toggleFrame(name: string, on: boolean): void {
    if (on) {
      this.selected.add(name);
    } else {
      this.selected.delete(name);
    }
    this._changed.emit();
  }

  /** Ask the kernel for the frames and the status again. */
  refresh(): void {
    const client = this._client;
    if (!client || client.isClosed) {
      return;
    }
    // the replies arrive through framesChanged / statusChanged
    client.listFrames().catch(() => undefined);
    client.status().catch(() => undefined);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    clearTimeout(this._refreshTimer);
    this._dropClient(null);
    Signal.clearData(this);
  }

  // --- internals -----------------------------------------------------------------------

  private _attach(client: AgentClient, hello: IHelloReply): void {
    this._client = client;
    client.closed.connect((_, reason) => {
      if (this._client !== client) {
        return;
      }
      this._client = null;
      this._active = null;
      if (this._state.kind !== 'restarting') {
        this._setState({
          kind: 'error',
          message: 'The kernel closed the Data Agent connection (the extension was unloaded?).',
          hint: reason,
          retry: true
        });
      }
    });
    client.framesChanged.connect((_, frames) => {
      this.frames = frames;
      const names = new Set(frames.map(f => f.name));
      for (const name of [...this.selected]) {
        if (!names.has(name)) {
          this.selected.delete(name);
        }
      }
      this._changed.emit();
    });
    client.statusChanged.connect((_, status) => {
      this.status = status;
      if (status.history && !this._active) {
        // questions asked by %%ask or the chat widget since the last refresh
        this.turns = mergeHistory(this.turns, status.history);
      }
      this._changed.emit();
    });
    this.status = hello.status;
    this.frames = hello.frames;
    const running = this.turns.filter(t => t.state === 'waiting' || t.state === 'streaming');
    this.turns = [...mergeHistory(this.turns, hello.history), ...running];
    this._setState({ kind: 'ready' });
  }

  private _track(request: AgentRequest, turn: ITurn): void {
    this._active = request;
    this.turns = [...this.turns, turn];
    request.event.connect((_, event: AgentEvent) => {
      this.turns = this.turns.map(t => (t.id === request.id ? applyEvent(t, event) : t));
      if (event.type === 'Done' && event.mode === 'agent' && areProposedCells(event.cells)) {
        // the analysis is proposed as cells below, for review; nothing runs
        insertCellsBelowActive(this.panel, event.cells, turnProvenance(turn.question, event));
      }
      if (isFinalEvent(event)) {
        if (this._active === request) {
          this._active = null;
        }
        this._store.save(this._path, this.turns);
        this.refresh(); // `--into` or a run may have changed what the kernel holds
      }
      this._changed.emit();
    });
    this._changed.emit();
  }

  private _dropClient(reason: string | null): void {
    const client = this._client;
    this._client = null;
    this._generation++;
    if (client) {
      client.close(reason ?? undefined); // ends the running turn with that reason
      client.dispose();
    }
    this._active = null;
  }

  private _onKernelStatus(): void {
    const status = this.panel.sessionContext.session?.kernel?.status;
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      this._othersExecuting.clear();
    }
    if (status === 'restarting' || status === 'autorestarting') {
      this._dropClient('The kernel restarted; the question was stopped.');
      this._setState({ kind: 'restarting' });
    } else if (status === 'dead') {
      this._dropClient('The kernel died.');
      this._setState({
        kind: 'error',
        message: 'The kernel died.',
        hint: 'Restart it (Kernel → Restart Kernel…); the panel reconnects by itself.',
        retry: true
      });
    } else if (status === 'idle' && this._wanted && !this._client) {
      if (this._state.kind === 'restarting' || this._state.kind === 'idle') {
        this._setState({ kind: 'idle' });
        void this.connect();
      }
    }
    this._changed.emit(); // busy/idle changes the "waiting" line
  }

  private _onKernelChanged(): void {
    this._dropClient('The notebook changed kernel; the question was stopped.');
    this._othersExecuting.clear();
    this.frames = [];
    this.status = null;
    this._setState({ kind: 'idle' });
    if (this._wanted) {
      void this.connect();
    }
  }

  private _onIOPub(_: unknown, msg: KernelMessage.IMessage): void {
    if (msg.header.msg_type !== 'status' || !msg.parent_header) {
      return;
    }
    const parent = msg.parent_header as KernelMessage.IHeader;
    if (parent.msg_type !== 'execute_request') {
      return;
    }
    const state = (msg as KernelMessage.IStatusMsg).content.execution_state;
    const kernel = this.panel.sessionContext.session?.kernel;
    if (!parent.subshell_id && kernel && parent.session !== kernel.clientId) {
      // another client's cell on the main shell (this notebook's cells are counted
      // from their own execution state)
      const before = this._othersExecuting.size;
      if (state === 'busy') {
        this._othersExecuting.add(parent.msg_id);
      } else if (state === 'idle') {
        this._othersExecuting.delete(parent.msg_id);
      }
      if (this._othersExecuting.size !== before) {
        this._changed.emit();
      }
    }
    if (state === 'idle') {
      clearTimeout(this._refreshTimer);
      this._refreshTimer = setTimeout(() => this.refresh(), REFRESH_DELAY);
    }
  }

  private _onPathChanged(_: unknown, path: string): void {
    this._store.move(this._path, path);
    this._path = path;
    this._changed.emit();
  }

  private _setState(state: AgentState): void {
    this._state = state;
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
  private _state: AgentState = { kind: 'idle' };
  private _client: AgentClient | null = null;
  private _active: AgentRequest | null = null;
  private _generation = 0;
  private _wanted = false;
  private _isDisposed = false;
  private _path: string;
  private _refreshTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** msg ids of other clients' executions running on the main shell */
  private _othersExecuting = new Set<string>();
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
