import {
  chatKeyAction,
  installChatKeys,
  SEND_DELAY_MS,
  sendButtonFor
} from '../chatkeys';

const key = (over: Partial<KeyboardEventInit> = {}) => ({
  key: 'Enter',
  shiftKey: false,
  ctrlKey: false,
  metaKey: false,
  altKey: false,
  isComposing: false,
  ...over
});

describe('chatKeyAction', () => {
  it('sends on a plain Enter', () => {
    expect(chatKeyAction(key())).toBe('send');
  });
  it('adds a line on Shift+Enter', () => {
    expect(chatKeyAction(key({ shiftKey: true }))).toBe('newline');
  });
  it('leaves other keys, modifiers and IME composition alone', () => {
    expect(chatKeyAction(key({ key: 'a' }))).toBe('ignore');
    expect(chatKeyAction(key({ ctrlKey: true }))).toBe('ignore');
    expect(chatKeyAction(key({ isComposing: true }))).toBe('ignore');
  });
});

function chat(): { textarea: HTMLTextAreaElement; button: HTMLButtonElement } {
  document.body.innerHTML = `
    <div class="dataagent-chat">
      <div class="dataagent-chat-input"><textarea></textarea></div>
      <button class="dataagent-chat-send">Send</button>
    </div>
    <textarea class="other"></textarea>`;
  return {
    textarea: document.querySelector('.dataagent-chat-input textarea')!,
    button: document.querySelector('.dataagent-chat-send')!
  };
}

describe('installChatKeys', () => {
  it('clicks Send on Enter and stops the notebook from seeing it', () => {
    jest.useFakeTimers();
    const { textarea, button } = chat();
    const remove = installChatKeys(document);
    const clicked = jest.fn();
    button.addEventListener('click', clicked);
    const outer = jest.fn();
    document.body.addEventListener('keydown', outer);
    const event = new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true });
    textarea.dispatchEvent(event);
    expect(clicked).not.toHaveBeenCalled(); // the value sync goes first
    jest.advanceTimersByTime(SEND_DELAY_MS);
    expect(clicked).toHaveBeenCalledTimes(1);
    expect(event.defaultPrevented).toBe(true);
    jest.useRealTimers();
    expect(outer).not.toHaveBeenCalled();
    remove();
  });

  it('lets Shift+Enter insert a newline but keeps it from the notebook', () => {
    const { textarea, button } = chat();
    const remove = installChatKeys(document);
    const clicked = jest.fn();
    button.addEventListener('click', clicked);
    const event = new KeyboardEvent('keydown', {
      key: 'Enter',
      shiftKey: true,
      bubbles: true,
      cancelable: true
    });
    jest.useFakeTimers();
    textarea.dispatchEvent(event);
    jest.advanceTimersByTime(SEND_DELAY_MS * 2);
    expect(clicked).not.toHaveBeenCalled();
    expect(event.defaultPrevented).toBe(false);
    jest.useRealTimers();
    remove();
  });

  it('ignores textareas outside the chat and finds nested buttons', () => {
    const { button } = chat();
    const remove = installChatKeys(document);
    const clicked = jest.fn();
    button.addEventListener('click', clicked);
    const other = document.querySelector('textarea.other')!;
    other.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
    expect(clicked).not.toHaveBeenCalled();
    remove();
    document.body.innerHTML =
      '<div class="dataagent-chat"><div class="dataagent-chat-send"><button>S</button></div>' +
      '<div class="dataagent-chat-input"><textarea></textarea></div></div>';
    const inner = sendButtonFor(document.querySelector('textarea')!);
    expect(inner?.textContent).toBe('S');
  });
});
