/**
 * Pure helpers of the panel: the conversation model (a turn and how events change it),
 * text formatting, and safe DOM building. No JupyterLab imports, so jest tests them
 * without a running application.
 */
import type {
  AgentEvent,
  IDoneEvent,
  IErrorInfo,
  IFrameInfo,
  IHistoryTurn,
  IOutputEvent,
  IRunFailedEvent,
  IStatusInfo,
  Mode,
  Phase,
  StepOutcome
} from './wire';

// --- the conversation model ----------------------------------------------------------------

export type TurnState = 'waiting' | 'streaming' | 'done' | 'failed';

/** One question (or one "Run in sandbox") and everything its events said. */
export interface ITurn {
  id: string;
  kind: 'ask' | 'run';
  question: string;
  mode: Mode;
  state: TurnState;
  /** model text of the latest attempt, as streamed (Markdown) */
  text: string;
  attempt: number;
  code: string;
  explanation: string;
  warnings: string[];
  outputs: IOutputEvent[];
  failures: IRunFailedEvent[];
  error: IErrorInfo | null;
  done: IDoneEvent | null;
  phase: Phase | null;
  phaseMessage: string;
  /** Date.now() when asked; the status line ticks from it */
  started: number;
  /** seconds, when finished */
  elapsed: number | null;
  /** outcome line of a turn restored from the kernel's history */
  outcome?: string;
  /** agent mode: the steps so far, and the step waiting for approval */
  steps?: IStepView[];
  approval?: number | null;
}

/** One step of an agent run, as the panel shows it. */
export interface IStepView {
  step: number;
  code: string;
  outcome: StepOutcome | null;
  error: string;
  notes: string[];
}

/** A new turn for a question just sent. */
export function newTurn(
  id: string,
  kind: 'ask' | 'run',
  question: string,
  mode: Mode,
  now: number = Date.now()
): ITurn {
  return {
    id,
    kind,
    question,
    mode,
    state: 'waiting',
    text: '',
    attempt: 1,
    code: kind === 'run' ? question : '',
    explanation: '',
    warnings: [],
    outputs: [],
    failures: [],
    error: null,
    done: null,
    phase: null,
    phaseMessage: '',
    started: now,
    elapsed: null
  };
}

/** The turn after `event` (a new object; the old one is left as it was). */
export function applyEvent(turn: ITurn, event: AgentEvent): ITurn {
  if (turn.state === 'done' || turn.state === 'failed') {
    return turn;
  }
  const next: ITurn = { ...turn, state: 'streaming' };
  switch (event.type) {
    case 'Status':
      next.phase = event.phase;
      next.phaseMessage = event.message;
      break;
    case 'Delta':
      if (event.attempt !== turn.attempt) {
        // a fix attempt streams a whole new answer
        next.attempt = event.attempt;
        next.text = event.text;
      } else {
        next.text = turn.text + event.text;
      }
      break;
    case 'CodeProposed':
      next.attempt = event.attempt;
      next.code = event.code;
      next.explanation = event.explanation;
      next.warnings = [...event.warnings];
      break;
    case 'Output':
      next.outputs = [...turn.outputs, event];
      break;
    case 'RunFailed':
      next.failures = [...turn.failures, event];
      break;
    case 'StepStarted':
      next.steps = [
        ...(turn.steps ?? []),
        { step: event.step, code: event.code, outcome: null, error: '', notes: [] }
      ];
      break;
    case 'StepApproval':
      next.approval = event.step;
      break;
    case 'StepFinished':
      next.approval = null;
      next.steps = (turn.steps ?? []).map(s =>
        s.step === event.step
          ? { ...s, outcome: event.outcome, error: event.error, notes: [...event.notes] }
          : s
      );
      break;
    case 'Done':
      next.approval = null;
      next.state = 'done';
      next.done = event;
      next.code = event.code || turn.code;
      next.explanation = event.explanation || turn.explanation;
      next.elapsed = event.elapsed;
      next.phase = null;
      break;
    case 'Failed':
      next.approval = null;
      next.state = 'failed';
      next.error = event.error;
      next.code = event.code || turn.code;
      next.elapsed = event.elapsed || (Date.now() - turn.started) / 1000;
      next.phase = null;
      break;
    default:
      return turn;
  }
  return next;
}

/** Turns rebuilt from the kernel's history (question, explanation, code, outcome). */
export function turnsFromHistory(history: IHistoryTurn[]): ITurn[] {
  return history.map((h, i) => {
    const turn = newTurn(`history-${i}`, 'ask', h.question, 'insert', 0);
    const failed = /^(error|failed|cancel)/i.test(h.outcome);
    return {
      ...turn,
      state: failed ? 'failed' : 'done',
      code: h.code,
      explanation: h.explanation,
      outcome: h.outcome,
      error: failed
        ? {
            kind: 'History',
            title: 'Failed',
            message: h.outcome.replace(/^failed:\s*/i, ''),
            hint: null
          }
        : null
    } as ITurn;
  });
}

/**
 * The turns to show when a notebook's panel (re)connects or refreshes: the kernel's
 * history is the authority on which questions were asked (a reset or restart empties it;
 * `%%ask` and the chat widget add to it), and each of them is shown from the richer local
 * copy (outputs, errors) when the panel has one. Local "Run in sandbox" turns stay after
 * the question they belong to.
 */
export function mergeHistory(local: ITurn[], history: IHistoryTurn[]): ITurn[] {
  if (history.length === 0) {
    return [];
  }
  const fromKernel = turnsFromHistory(history);
  const finished = local.filter(t => t.state === 'done' || t.state === 'failed');
  const merged: ITurn[] = [];
  let next = 0; // the first kernel turn not shown yet
  let kept = false; // whether the last local ask was kept (its runs follow it)
  for (const turn of finished) {
    if (turn.kind !== 'ask') {
      if (kept) {
        merged.push({ ...turn });
      }
      continue;
    }
    const question = turn.question.trim();
    let found = -1;
    for (let i = next; i < history.length; i++) {
      if (history[i].question.trim() === question) {
        found = i;
        break;
      }
    }
    kept = found >= 0;
    if (!kept) {
      continue; // asked before a reset, or in another kernel
    }
    merged.push(...fromKernel.slice(next, found), { ...turn });
    next = found + 1;
  }
  merged.push(...fromKernel.slice(next));
  return merged;
}

// --- text ----------------------------------------------------------------------------------

const PHASES: { [phase in Phase]: string } = {
  describing: 'Describing the frames',
  asking: 'Asking the model',
  running: 'Running in the sandbox',
  fixing: 'Asking the model to fix the code',
  checking: 'Checking the code in the sandbox',
  loading: 'Loading',
  waiting: 'Waiting for you'
};

/** A phase as the status line says it. */
export function phaseLabel(phase: Phase | null, attempt = 1): string {
  if (phase === null) {
    return '';
  }
  const label = PHASES[phase] ?? String(phase);
  return attempt > 1 ? `${label} (attempt ${attempt})` : label;
}

/** "3 s", "1 min 05 s". */
export function formatElapsed(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  const m = Math.floor(s / 60);
  return `${m} min ${String(s % 60).padStart(2, '0')} s`;
}

/** "1,000 × 3" for a DataFrame, "1,000 rows" for a Series, "? × 3" when not counted. */
export function formatShape(shape: (number | null)[]): string {
  const n = (v: number | null) => (v === null ? '?' : v.toLocaleString('en-US'));
  if (shape.length === 1) {
    return `${n(shape[0])} rows`;
  }
  return shape.map(n).join(' × ');
}

/** The frame's tooltip: kind, shape and the first column names. */
export function frameTitle(frame: IFrameInfo): string {
  const cols = frame.columns.length ? `\ncolumns: ${frame.columns.join(', ')}` : '';
  const width = frame.shape.length > 1 ? frame.shape[1] : null;
  const more = width !== null && width > frame.columns.length ? ', …' : '';
  return `${frame.name}: ${frame.kind} ${formatShape(frame.shape)}${cols}${cols ? more : ''}`;
}

/** The engine a frame list shows beside its shape ("" for pandas, the common case). */
export function frameEngine(frame: IFrameInfo): string {
  return frame.engine && frame.engine !== 'pandas' ? frame.engine : '';
}

/** The host of an endpoint URL (the kernel usually sends the host already). */
export function endpointHost(endpoint: string): string {
  try {
    return new URL(endpoint).host || endpoint;
  } catch {
    return endpoint;
  }
}

/** The missing-key warning and how to fix it, or null when a key is set. */
export function missingKeyMessage(status: IStatusInfo): string | null {
  if (status.key_set) {
    return null;
  }
  return (
    'No API key: set OPENAI_API_KEY in the environment that starts Jupyter, or run ' +
    "%config DataAgent.api_key = '…' in the notebook. For a local server (Ollama, " +
    'vLLM…) set OPENAI_BASE_URL and any non-empty key.'
  );
}

/** A one-line summary of a finished answer: model, time, tokens. */
export function doneSummary(done: IDoneEvent): string {
  const parts = [done.model, formatElapsed(done.elapsed)];
  if (done.mode === 'agent') {
    parts.unshift(
      `${done.steps ?? 0} step(s)` + (done.ended_by ? ` (${done.ended_by})` : '')
    );
  }
  const tokens = done.usage.prompt_tokens + done.usage.completion_tokens;
  if (tokens) {
    parts.push(`${done.usage.prompt_tokens} → ${done.usage.completion_tokens} tokens`);
  }
  if (done.attempts > 1) {
    parts.push(`${done.attempts} attempts`);
  }
  if (done.replayed) {
    parts.push('replayed');
  } else if (done.cached) {
    parts.push('cached');
  }
  if (done.into) {
    parts.push(`result in ${done.into}`);
  }
  return parts.filter(Boolean).join(' · ');
}

/** Markdown for a fenced code block whose fence cannot be closed by the code itself. */
export function fenceCode(code: string, language = 'python'): string {
  const longest = Math.max(0, ...(code.match(/`+/g) ?? []).map(run => run.length));
  const fence = '`'.repeat(Math.max(3, longest + 1));
  return `${fence}${language}\n${code.replace(/\n+$/, '')}\n${fence}\n`;
}

/** Terminal colour codes removed (tracebacks from the sandbox carry them). */
export function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
}

/** Text escaped for HTML (for the rare place a string is not set as textContent). */
export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

/** The MIME bundle to render for an output (a stream is plain text). */
export function outputBundle(output: IOutputEvent): {
  data: { [mime: string]: unknown };
  metadata: { [key: string]: unknown };
} {
  if (output.kind === 'stream') {
    const text = output.data['text/plain'];
    return { data: { 'text/plain': typeof text === 'string' ? text : '' }, metadata: {} };
  }
  return { data: output.data ?? {}, metadata: output.metadata ?? {} };
}

// --- DOM -------------------------------------------------------------------------------------

type Child = Node | string | null | undefined | false;

/**
 * A DOM element with attributes and children; strings become text nodes, so model text
 * can never turn into markup here.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: { [name: string]: string | boolean | undefined } = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) {
      continue;
    }
    if (name.startsWith('on')) {
      throw new Error('h(): attach listeners with addEventListener');
    }
    el.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return el;
}
