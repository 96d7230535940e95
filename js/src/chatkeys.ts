/**
 * Enter sends in the in-notebook chat widget; Shift+Enter adds a line.
 *
 * ipywidgets has no key events, so the kernel-side widget marks its textarea with the
 * class `dataagent-chat-input` and its Send button with `dataagent-chat-send`; this
 * listener (capture phase, so the notebook never sees the key) clicks Send on a plain
 * Enter. Without the labextension (VS Code), the Send button works as usual.
 */

/**
 * Milliseconds between Enter and the click. The textarea's value and the button click
 * travel on different widget comms, which JupyterLab may send over different kernel
 * subshells; without a pause the click can overtake the last keystrokes.
 */
export const SEND_DELAY_MS = 150;

/** What a keydown in a chat textarea should do. */
export type ChatKeyAction = 'send' | 'newline' | 'ignore';

/** Decide from the key alone (kept pure for the unit tests). */
export function chatKeyAction(event: {
  key: string;
  shiftKey: boolean;
  ctrlKey: boolean;
  metaKey: boolean;
  altKey: boolean;
  isComposing: boolean;
}): ChatKeyAction {
  if (event.key !== 'Enter' || event.isComposing) {
    return 'ignore';
  }
  if (event.shiftKey) {
    return 'newline';
  }
  if (event.ctrlKey || event.metaKey || event.altKey) {
    return 'ignore';
  }
  return 'send';
}

/** The Send button of the chat that holds ``textarea``, if any. */
export function sendButtonFor(textarea: Element): HTMLButtonElement | null {
  const chat = textarea.closest('.dataagent-chat');
  const button = chat?.querySelector('.dataagent-chat-send');
  if (!button) {
    return null;
  }
  return button instanceof HTMLButtonElement
    ? button
    : button.querySelector('button');
}

/** Install the listener on ``root``; returns a function that removes it. */
export function installChatKeys(root: Document = document): () => void {
  const onKeyDown = (event: KeyboardEvent) => {
    const target = event.target;
    if (!(target instanceof HTMLTextAreaElement)) {
      return;
    }
    if (!target.closest('.dataagent-chat-input')) {
      return;
    }
    const action = chatKeyAction(event);
    if (action === 'ignore') {
      return;
    }
    // the notebook must not run the cell or enter command mode on these keys
    event.stopPropagation();
    if (action === 'send') {
      event.preventDefault();
      const button = sendButtonFor(target);
      window.setTimeout(() => {
        if (button && !button.disabled) {
          button.click();
        }
      }, SEND_DELAY_MS);
    }
  };
  root.addEventListener('keydown', onKeyDown, true);
  return () => root.removeEventListener('keydown', onKeyDown, true);
}
