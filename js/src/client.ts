/**
 * The typed client of the kernel protocol, shared by the panel's pieces.
 *
 * `AgentClient` knows nothing about JupyterLab: it sends `ClientMessage`s through an
 * `IChannel` and is fed the kernel's replies with `handleMessage`, so it is unit-tested
 * with a fake channel. `connection.ts` binds it to a real kernel through a comm.
 */
import { PromiseDelegate, UUID } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  AgentEvent,
  ClientMessage,
  FinalEvent,
  IErrorInfo,
  IFrameInfo,
  IAskMessage,
  IFixMessage,
  IFramesReply,
  IHelloReply,
  IRunMessage,
  IStatusInfo,
  IStatusReply,
  isFinalEvent,
  localFailure,
  Mode,
  StepDecision,
  parseServerMessage,
  REPLY_FOR,
  REPLY_TYPES,
  ReplyType,
  ServerMessage
} from './wire';

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

  /** Ask for a fix of the kernel's last failing cell (streamed like an answer). */
  fix(mode: Mode = 'insert'): AgentRequest {
    const id = UUID.uuid4();
    return this._stream('ask', id, { type: 'fix', id, mode });
  }

  /** Answer an agent step that waits for approval (agent_approval = "each-step"). */
  decide(decision: StepDecision): void {
    if (!this._isClosed) {
      this._channel.send({ type: 'step', decision });
    }
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
    message: IAskMessage | IRunMessage | IFixMessage
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
