import { LabIcon } from '@jupyterlab/ui-components';

/** A speech bubble holding a small bar chart. */
const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2h-7.2L8 21.6V18H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm0 2v11h6v1.6L12.2 16H20V5H4z"/>
  <path class="jp-icon-brand0" fill="#1976d2" d="M7 13h2v1.5H7zM10.5 9.5h2V14.5h-2zM14 7h2v7.5h-2z"/>
</svg>`;

export const dataAgentIcon = new LabIcon({ name: 'dataagent-jupyter:agent', svgstr: svg });
