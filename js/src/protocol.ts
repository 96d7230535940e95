/**
 * The typed client of the kernel protocol (see PROTOCOL.md), shared by the panel's pieces.
 *
 * `AgentClient` knows nothing about JupyterLab: it sends `ClientMessage`s through an
 * `IChannel` and is fed the kernel's replies with `handleMessage`, so it is unit-tested
 * with a fake channel. `connectAgent` binds it to a real kernel through a comm.
 */
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import { PromiseDelegate, UUID } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

/** Comm target the kernel extension registers; the panel opens it. */
export const COMM_TARGET = 'dataagent';
/** Comm target the labextension registers on notebook kernels (cell insertion). */
export const FRONTEND_TARGET = 'dataagent.frontend';
/** What the panel runs (silently) when the kernel has not loaded the extension. */
export const LOAD_EXTENSION_CODE = '%load_ext dataagent_jupyter';
/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

// --- what the kernel describes -----------------------------------------------------------

export interface IFrameInfo {
  name: string;
  kind: string;
  shape: number[];
  columns: string[];
}

export interface ISandboxInfo {
  state: string;
  protections: string[];
}

export interface IStatusInfo {
  version: string;
  model: string;
  /** host[:port] of the LLM endpoint */
  endpoint: string;
  key_set: boolean;
  privacy: string;
  mode: Mode;
  sandbox: ISandboxInfo | null;
  replay?: string | null;
  record?: string | null;
  /** the conversation so far (status replies carry it, so the panel sees %%ask turns) */
  history?: IHistoryTurn[];
}

export interface IHistoryTurn {
  question: string;
  explanation: string;
  code: string;
  outcome: string;
}

export interface IErrorInfo {
  kind: string;
  title: string;
  message: string;
  hint: string | null;
}

export interface IUsage {
  prompt_tokens: number;
  completion_tokens: number;
}

export type Mode = 'insert' | 'run';

export type Phase =
  | 'describing'
  | 'asking'
  | 'running'
  | 'fixing'
  | 'checking'
  | 'loading';

// --- events (event_to_json in dataagent_jupyter/events.py) -------------------------------

export interface IStatusEvent {
  type: 'Status';
  phase: Phase;
  message: string;
  attempt: number;
}

export interface IDeltaEvent {
  type: 'Delta';
  text: string;
  attempt: number;
}

export interface ICodeProposedEvent {
  type: 'CodeProposed';
  code: string;
  explanation: string;
  attempt: number;
  warnings: string[];
}

export type MimeBundle = { [mime: string]: unknown };

export interface IOutputEvent {
  type: 'Output';
  kind: 'stream' | 'display' | 'result';
  data: MimeBundle;
  metadata: { [key: string]: unknown };
  name: string;
  attempt: number;
  saved: string | null;
}

export interface IRunFailedEvent {
  type: 'RunFailed';
  attempt: number;
  ename: string;
  evalue: string;
  traceback: string;
  will_retry: boolean;
}

export interface IDoneEvent {
  type: 'Done';
  mode: Mode;
  outcome: 'inserted' | 'ran' | 'failed' | 'proposed';
  code: string;
  explanation: string;
  model: string;
  usage: IUsage;
  elapsed: number;
  attempts: number;
  cached: boolean;
  into: string | null;
  /** answered from a record/replay transcript (newer kernels send it) */
  replayed?: boolean;
}

export interface IFailedEvent {
  type: 'Failed';
  error: IErrorInfo;
  code: string;
  elapsed: number;
}

export type AgentEvent =
  | IStatusEvent
  | IDeltaEvent
  | ICodeProposedEvent
  | IOutputEvent
  | IRunFailedEvent
  | IDoneEvent
  | IFailedEvent;

export type FinalEvent = IDoneEvent | IFailedEvent;

/** Whether `event` ends its request's stream. */
export function isFinalEvent(event: AgentEvent): event is FinalEvent {
  return event.type === 'Done' || event.type === 'Failed';
}

// --- messages ------------------------------------------------------------------------------

export interface IAskMessage {
  type: 'ask';
  id: string;
  question: string;
  frames: string[] | null;
  mode: Mode;
}

export interface IRunMessage {
  type: 'run';
  id: string;
  code: string;
  frames: string[] | null;
}

/** Front end → kernel. */
export type ClientMessage =
  | { type: 'hello' }
  | { type: 'list_frames' }
  | { type: 'status' }
  | { type: 'reset' }
  | { type: 'cancel'; id: string }
  | IAskMessage
  | IRunMessage;

export interface IHelloReply {
  type: 'hello';
  version: string;
  protocol?: number;
  status: IStatusInfo;
  frames: IFrameInfo[];
  history: IHistoryTurn[];
  running?: boolean;
}

export interface IFramesReply {
  type: 'frames';
  frames: IFrameInfo[];
}

export type IStatusReply = { type: 'status' } & IStatusInfo;

export interface IResetReply {
  type: 'reset';
  ok: boolean;
}

export interface IEventMessage {
  type: 'event';
  id: string;
  event: AgentEvent;
}

export interface IErrorReply {
  type: 'error';
  request: string | null;
  id: string | null;
  error: IErrorInfo;
}

/** Kernel → front end. */
export type ServerMessage =
  | IHelloReply
  | IFramesReply
  | IStatusReply
  | IResetReply
  | IEventMessage
  | IErrorReply;

const REPLY_TYPES = ['hello', 'frames', 'status', 'reset'] as const;
type ReplyType = (typeof REPLY_TYPES)[number];

/** The reply type each request is answered with. */
const REPLY_FOR: { [request: string]: ReplyType } = {
  hello: 'hello',
  list_frames: 'frames',
  status: 'status',
  reset: 'reset'
};

function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The kernel's message as a `ServerMessage`, or null when it is not one this client
 * understands (a newer kernel may send more; unknown messages are ignored, not fatal).
 */
export function parseServerMessage(data: unknown): ServerMessage | null {
  if (!isObject(data) || typeof data.type !== 'string') {
    return null;
  }
  switch (data.type) {
    case 'event':
      if (
        typeof data.id === 'string' &&
        isObject(data.event) &&
        typeof data.event.type === 'string'
      ) {
        return data as unknown as IEventMessage;
      }
      return null;
    case 'error':
      return isObject(data.error) ? (data as unknown as IErrorReply) : null;
    case 'hello':
    case 'frames':
    case 'status':
    case 'reset':
      return data as unknown as ServerMessage;
    default:
      return null;
  }
}

/** A Failed event made on this side (the kernel went away, the request was refused). */
export function localFailure(
  title: string,
  message: string,
  hint: string | null = null,
  kind = 'PanelError'
): IFailedEvent {
  return {
    type: 'Failed',
    error: { kind, title, message, hint },
    code: '',
    elapsed: 0
  };
}

// --- the client ----------------------------------------------------------------------------

/** Where the client's messages go: a comm in JupyterLab, an array in tests. */
export interface IChannel {
  send(message: ClientMessage): void;
  close(): void;
}

/** One ask or run: its events, its end, and a way to stop it. */
export class AgentRequest {
  constructor(
    readonly id: string,
    readonly kind: 'ask' | 'run',
    private readonly _cancel: (request: AgentRequest) => void
  ) {}

  /** Every event of this request, in order, the final one included. */
  get event(): ISignal<this, AgentEvent> {
    return this._event;
  }

  /** Resolves with the Done or Failed event; never rejects. */
  get done(): Promise<FinalEvent> {
    return this._done.promise;
  }

  get finished(): boolean {
    return this._finished;
  }

  /** Whether Stop was pressed (the Failed event may still be on its way). */
  get cancelling(): boolean {
    return this._cancelling;
  }

  /** Ask the kernel to stop; the stream still ends with a (Cancelled) Failed event. */
  cancel(): void {
    if (this._finished || this._cancelling) {
      return;
    }
    this._cancelling = true;
    this._cancel(this);
  }

  /** Deliver one event (used by the client). Events after the final one are dropped. */
  deliver(event: AgentEvent): void {
    if (this._finished) {
      return;
    }
    if (isFinalEvent(event)) {
      this._finished = true;
    }
    this._event.emit(event);
    if (isFinalEvent(event)) {
      this._done.resolve(event);
      Signal.clearData(this);
    }
  }

  private _event = new Signal<this, AgentEvent>(this);
  private _done = new PromiseDelegate<FinalEvent>();
  private _finished = false;
  private _cancelling = false;
}

/** Raised when the kernel answers a request with an error message. */
export class AgentError extends Error {
  constructor(readonly info: IErrorInfo) {
    super(info.hint ? `${info.message} ${info.hint}` : info.message);
    this.name = 'AgentError';
  }
}

/** Raised for requests pending when the connection closes. */
export class ConnectionClosed extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'ConnectionClosed';
  }
}

export interface IAskOptions {
  frames?: string[] | null;
  mode?: Mode;
}

/** Talks the `dataagent` protocol over a channel; routes replies and events by id. */
export class AgentClient implements IDisposable {
  constructor(channel: IChannel) {
    this._channel = channel;
  }

  /** Emitted once when the connection ends (kernel closed the comm, restart, dispose). */
  get closed(): ISignal<this, string> {
    return this._closed;
  }

  /** Emitted for every frames list the kernel sends (asked for or not). */
  get framesChanged(): ISignal<this, IFrameInfo[]> {
    return this._framesChanged;
  }

  /** Emitted for every status the kernel sends (hello included). */
  get statusChanged(): ISignal<this, IStatusInfo> {
    return this._statusChanged;
  }

  get isClosed(): boolean {
    return this._isClosed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Requests that have not ended yet. */
  get active(): AgentRequest[] {
    return [...this._requests.values()];
  }

  hello(): Promise<IHelloReply> {
    return this._request({ type: 'hello' }) as Promise<IHelloReply>;
  }

  async listFrames(): Promise<IFrameInfo[]> {
    const reply = (await this._request({ type: 'list_frames' })) as IFramesReply;
    return reply.frames;
  }

  async status(): Promise<IStatusInfo> {
    const reply = (await this._request({ type: 'status' })) as IStatusReply;
    return statusOf(reply);
  }

  async reset(): Promise<void> {
    await this._request({ type: 'reset' });
  }

  /** Ask a question; `frames` null or empty means every frame. */
  ask(question: string, options: IAskOptions = {}): AgentRequest {
    const id = UUID.uuid4();
    const frames = options.frames?.length ? [...options.frames] : null;
    return this._stream('ask', id, {
      type: 'ask',
      id,
      question,
      frames,
      mode: options.mode ?? 'insert'
    });
  }

  /** Run existing code in the sandbox (the "Run in sandbox" button). */
  run(code: string, frames: string[] | null = null): AgentRequest {
    const id = UUID.uuid4();
    return this._stream('run', id, {
      type: 'run',
      id,
      code,
      frames: frames?.length ? [...frames] : null
    });
  }

  /** Feed one message the kernel sent. */
  handleMessage(data: unknown): void {
    const message = parseServerMessage(data);
    if (message === null || this._isDisposed) {
      return;
    }
    switch (message.type) {
      case 'event':
        this._requests.get(message.id)?.deliver(message.event);
        if (isFinalEvent(message.event)) {
          this._requests.delete(message.id);
        }
        return;
      case 'error': {
        const request = message.id ? this._requests.get(message.id) : undefined;
        if (request) {
          this._requests.delete(request.id);
          request.deliver({ type: 'Failed', error: message.error, code: '', elapsed: 0 });
          return;
        }
        const replyType = message.request ? REPLY_FOR[message.request] : undefined;
        const waiting = replyType ? this._pending[replyType].shift() : undefined;
        if (waiting) {
          waiting.reject(new AgentError(message.error));
        } else {
          console.warn('Data Agent kernel error:', message.error.message);
        }
        return;
      }
      case 'hello':
        this._statusChanged.emit(message.status);
        this._framesChanged.emit(message.frames);
        break;
      case 'frames':
        this._framesChanged.emit(message.frames);
        break;
      case 'status':
        this._statusChanged.emit(statusOf(message));
        break;
      default:
        break;
    }
    this._pending[message.type].shift()?.resolve(message);
  }

  /** The connection ended: pending replies reject, running requests end with Failed. */
  handleClose(reason = 'The connection to the kernel closed.'): void {
    if (this._isClosed) {
      return;
    }
    this._isClosed = true;
    for (const type of REPLY_TYPES) {
      for (const waiting of this._pending[type].splice(0)) {
        waiting.reject(new ConnectionClosed(reason));
      }
    }
    for (const request of [...this._requests.values()]) {
      request.deliver(
        request.cancelling
          ? localFailure('Cancelled', 'stopped.', null, 'Cancelled')
          : localFailure('Disconnected', reason, 'Ask again once the kernel is back.')
      );
    }
    this._requests.clear();
    this._closed.emit(reason);
  }

  /**
   * Close the channel (the kernel stops this client's running questions) and end what
   * is pending with `reason`.
   */
  close(reason = 'The panel closed the connection.'): void {
    if (this._isClosed) {
      return;
    }
    try {
      this._channel.close();
    } catch {
      // the kernel may be gone already
    }
    this.handleClose(reason);
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this.close();
    this._isDisposed = true;
    Signal.clearData(this);
  }

  private _request(message: ClientMessage): Promise<ServerMessage> {
    const replyType = REPLY_FOR[message.type];
    if (this._isClosed) {
      return Promise.reject(new ConnectionClosed('The connection to the kernel is closed.'));
    }
    const waiting = new PromiseDelegate<ServerMessage>();
    this._pending[replyType].push(waiting);
    try {
      this._channel.send(message);
    } catch (error) {
      this._pending[replyType] = this._pending[replyType].filter(p => p !== waiting);
      waiting.reject(error);
    }
    return waiting.promise;
  }

  private _stream(
    kind: 'ask' | 'run',
    id: string,
    message: IAskMessage | IRunMessage
  ): AgentRequest {
    const request = new AgentRequest(id, kind, r => this._sendCancel(r));
    if (this._isClosed) {
      // deliver after the caller had a chance to connect to the signal
      void Promise.resolve().then(() =>
        request.deliver(
          localFailure('Disconnected', 'The connection to the kernel is closed.')
        )
      );
      return request;
    }
    this._requests.set(id, request);
    try {
      this._channel.send(message);
    } catch (error) {
      this._requests.delete(id);
      void Promise.resolve().then(() =>
        request.deliver(localFailure('Not sent', String(error)))
      );
    }
    return request;
  }

  private _sendCancel(request: AgentRequest): void {
    if (this._isClosed || !this._requests.has(request.id)) {
      return;
    }
    try {
      this._channel.send({ type: 'cancel', id: request.id });
    } catch {
      this._requests.delete(request.id);
      request.deliver(localFailure('Cancelled', 'stopped.', null, 'Cancelled'));
    }
  }

  private _channel: IChannel;
  private _requests = new Map<string, AgentRequest>();
  private _pending: { [type in ReplyType]: PromiseDelegate<ServerMessage>[] } = {
    hello: [],
    frames: [],
    status: [],
    reset: []
  };
  private _closed = new Signal<this, string>(this);
  private _framesChanged = new Signal<this, IFrameInfo[]>(this);
  private _statusChanged = new Signal<this, IStatusInfo>(this);
  private _isClosed = false;
  private _isDisposed = false;
}

function statusOf(reply: IStatusReply): IStatusInfo {
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  const { type, ...status } = reply;
  return status as IStatusInfo;
}

// --- binding to a kernel -------------------------------------------------------------------

/** Why the panel could not talk to the kernel, with what to tell the user. */
export class ConnectError extends Error {
  constructor(
    readonly reason: 'not-python' | 'load-failed' | 'refused' | 'no-kernel',
    message: string,
    readonly hint: string | null = null
  ) {
    super(message);
    this.name = 'ConnectError';
  }
}

/**
 * Wait until a comm's messages will travel on one channel.
 *
 * JupyterLab 4.6 sends comm messages over a per-target kernel subshell once it exists;
 * until then they go to the main shell. A message sent on one and the next on the other
 * can arrive out of order, so both sides wait for the subshell before the first message.
 */
export async function commReady(
  comm: Kernel.IComm,
  kernel: Kernel.IKernelConnection,
  timeoutMs = 5000
): Promise<void> {
  await kernel.info;
  const started = (comm as unknown as { subshellStarted?: Promise<void> })
    .subshellStarted;
  if (!kernel.supportsSubshells || !started || comm.commsOverSubshells === 'disabled') {
    return;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    started.catch(() => undefined),
    new Promise<void>(resolve => (timer = setTimeout(resolve, timeoutMs)))
  ]);
  clearTimeout(timer);
}

/** An `IChannel` over a comm: the first message goes with the comm_open. */
export class CommChannel implements IChannel {
  constructor(private readonly _comm: Kernel.IComm) {}

  send(message: ClientMessage): void {
    if (!this._opened) {
      this._opened = true;
      this._comm.open(message as never);
    } else {
      this._comm.send(message as never);
    }
  }

  close(): void {
    if (!this._comm.isDisposed) {
      this._comm.close();
    }
  }

  private _opened = false;
}

export interface IConnectOptions {
  /** Load the kernel extension when the comm target is missing (default true). */
  loadExtension?: boolean;
  /** Called with true while the panel waits on a busy kernel, false when done. */
  onWaiting?: (waiting: boolean) => void;
}

/** A connected client and the kernel's hello. */
export interface IConnection {
  client: AgentClient;
  hello: IHelloReply;
}

/**
 * Open the `dataagent` comm on `kernel` and say hello; load the extension silently first
 * when the kernel does not know the target. Rejects with a `ConnectError`.
 */
export async function connectAgent(
  kernel: Kernel.IKernelConnection,
  options: IConnectOptions = {}
): Promise<IConnection> {
  const info = await kernel.info;
  const language = info.language_info?.name ?? '';
  if (language.toLowerCase() !== 'python') {
    throw new ConnectError(
      'not-python',
      `This notebook's kernel runs ${language || 'an unknown language'}; the Data Agent needs a Python (ipykernel) kernel.`,
      'Change the kernel to Python 3 (Kernel → Change Kernel…).'
    );
  }
  try {
    return await openOnce(kernel);
  } catch (error) {
    if (!(error instanceof ConnectionClosed) || options.loadExtension === false) {
      throw error;
    }
  }
  await loadExtension(kernel, options.onWaiting);
  try {
    return await openOnce(kernel);
  } catch (error) {
    if (error instanceof ConnectionClosed) {
      throw new ConnectError(
        'refused',
        'The kernel loaded dataagent_jupyter but did not accept the panel.',
        'Restart the kernel and try again; the kernel log may say more.'
      );
    }
    throw error;
  }
}

async function openOnce(kernel: Kernel.IKernelConnection): Promise<IConnection> {
  const comm = kernel.createComm(COMM_TARGET);
  await commReady(comm, kernel);
  const client = new AgentClient(new CommChannel(comm));
  comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
    client.handleMessage(msg.content.data);
  };
  comm.onClose = () => {
    // a kernel without the target closes the comm at once: hello then rejects
    client.handleClose('The kernel closed the Data Agent connection.');
  };
  try {
    const hello = await client.hello();
    return { client, hello };
  } catch (error) {
    client.dispose();
    throw error;
  }
}

async function loadExtension(
  kernel: Kernel.IKernelConnection,
  onWaiting?: (waiting: boolean) => void
): Promise<void> {
  const busy = kernel.status === 'busy';
  if (busy) {
    onWaiting?.(true);
  }
  let reply: KernelMessage.IExecuteReplyMsg;
  try {
    const future = kernel.requestExecute({
      code: LOAD_EXTENSION_CODE,
      silent: true,
      store_history: false,
      allow_stdin: false,
      stop_on_error: false
    });
    reply = await future.done;
  } finally {
    if (busy) {
      onWaiting?.(false);
    }
  }
  const content = reply.content;
  if (content.status === 'error') {
    const missing = content.ename === 'ModuleNotFoundError';
    throw new ConnectError(
      'load-failed',
      missing
        ? "The kernel's Python environment does not have dataagent-jupyter installed."
        : `Loading the Data Agent in the kernel failed: ${content.ename}: ${content.evalue}`,
      missing
        ? 'Run %pip install dataagent-jupyter in a cell, then restart the kernel.'
        : 'Run %load_ext dataagent_jupyter in a cell to see the full error.'
    );
  }
  if (content.status !== 'ok') {
    throw new ConnectError(
      'load-failed',
      'Loading the Data Agent in the kernel was interrupted.',
      'Open the panel again to retry.'
    );
  }
}
