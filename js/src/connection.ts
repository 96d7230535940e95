/**
 * Binding the client to a kernel: open the `dataagent` comm, load the kernel extension
 * when the target is missing, and say hello. The only part that needs JupyterLab's
 * kernel services (jest tests fake them).
 */
import type { Kernel, KernelMessage } from '@jupyterlab/services';

import { AgentClient, ConnectionClosed, IChannel } from './client';
import { ClientMessage, COMM_TARGET, IHelloReply, LOAD_EXTENSION_CODE } from './wire';

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
