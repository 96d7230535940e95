/**
 * The wire types of the kernel protocol (see PROTOCOL.md): what the kernel describes,
 * the events of a question, the messages each way, and the one parser of what arrives.
 *
 * Types and pure functions only: the client (`client.ts`) and the comm connection
 * (`connection.ts`) build on them, and the renderer reads events in these shapes.
 */

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
  /** "DataFrame", "Series", "polars LazyFrame", "DuckDB relation"… */
  kind: string;
  /** a row count the engine does not know cheaply is null */
  shape: (number | null)[];
  columns: string[];
  /** "pandas", "polars", "duckdb", "dask" or "spark" (absent from older kernels) */
  engine?: string;
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

export type Mode = 'insert' | 'run' | 'agent';

export type Phase =
  | 'describing'
  | 'asking'
  | 'running'
  | 'fixing'
  | 'checking'
  | 'loading'
  | 'waiting';

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

/** Agent mode: a step is about to run in the sandbox. */
export interface IStepStartedEvent {
  type: 'StepStarted';
  step: number;
  code: string;
  explanation: string;
}

/** Agent mode with each-step approval: the step waits for Run / Skip / Stop. */
export interface IStepApprovalEvent {
  type: 'StepApproval';
  step: number;
  code: string;
}

export type StepOutcome = 'ok' | 'failed' | 'skipped';

/** Agent mode: a step ended; `notes` name silent failures (an empty result…). */
export interface IStepFinishedEvent {
  type: 'StepFinished';
  step: number;
  outcome: StepOutcome;
  error: string;
  notes: string[];
  elapsed: number;
  usage: IUsage;
}

/** A cell an agent run proposes (its summary, then each step that worked). */
export interface IProposedCell {
  cell_type: 'markdown' | 'code';
  source: string;
}

export type StepDecision = 'run' | 'skip' | 'stop';

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
  /** names the turn in the history and in inserted cells' provenance (newer kernels) */
  turn_id?: string;
  /** when the question was asked, seconds since the epoch (newer kernels) */
  asked_at?: number;
  /** agent mode: the analysis as cells, the steps run, the budget (or Stop) that ended it */
  cells?: IProposedCell[];
  steps?: number;
  ended_by?: string | null;
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
  | IStepStartedEvent
  | IStepApprovalEvent
  | IStepFinishedEvent
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

/** "Fix with Data Agent": a corrected version of the notebook's last failing cell. */
export interface IFixMessage {
  type: 'fix';
  id: string;
  mode: Mode;
}

/** Front end → kernel. */
export type ClientMessage =
  | { type: 'hello' }
  | { type: 'list_frames' }
  | { type: 'status' }
  | { type: 'reset' }
  | { type: 'cancel'; id: string }
  | { type: 'step'; decision: StepDecision }
  | IAskMessage
  | IRunMessage
  | IFixMessage;

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

/** The messages that answer a request (the rest arrive unasked). */
export const REPLY_TYPES = ['hello', 'frames', 'status', 'reset'] as const;
export type ReplyType = (typeof REPLY_TYPES)[number];

/** The reply type each request is answered with. */
export const REPLY_FOR: { [request: string]: ReplyType } = {
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
