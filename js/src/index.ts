/**
 * The Data Agent labextension: plugins only; the pieces live in their own modules.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';

import { FrontendTarget } from './cells';
import { installChatKeys } from './chatkeys';
import { dataAgentIcon } from './icon';
import { DataAgentPanel } from './panel';

/** Command ids; the keyboard shortcut is declared in schema/panel.json. */
export namespace CommandIDs {
  export const open = 'dataagent:open';
}

/** The "Data Agent" panel in the right sidebar, bound to the active notebook. */
const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'dataagent-jupyter:panel',
  description: 'The Data Agent side panel: ask about the live DataFrames of a notebook.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new DataAgentPanel({ tracker, rendermime });
    app.shell.add(panel, 'right', { rank: 650 });
    restorer?.add(panel, panel.id);

    app.commands.addCommand(CommandIDs.open, {
      label: 'Open Data Agent',
      caption: 'Ask the Data Agent about the DataFrames of the active notebook',
      icon: dataAgentIcon,
      execute: () => {
        app.shell.activateById(panel.id);
        panel.focusInput();
      }
    });
    palette?.addItem({ command: CommandIDs.open, category: 'Data Agent' });
  }
};

/**
 * Lets the kernel insert cells (the in-notebook chat widget's "Insert cell" button):
 * registers the `dataagent.frontend` comm target on every notebook kernel, whether or
 * not the panel is open.
 */
const frontendTargetPlugin: JupyterFrontEndPlugin<void> = {
  id: 'dataagent-jupyter:insert-cell',
  description: 'Inserts cells on request of the Data Agent kernel extension.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    new FrontendTarget(tracker);
  }
};

/** Enter sends in the in-notebook chat widget (ipywidgets has no key events). */
const chatKeysPlugin: JupyterFrontEndPlugin<void> = {
  id: 'dataagent-jupyter:chat-keys',
  description: 'Enter sends and Shift+Enter adds a line in the Data Agent chat widget.',
  autoStart: true,
  activate: () => {
    installChatKeys(document);
  }
};

export default [panelPlugin, frontendTargetPlugin, chatKeysPlugin];
