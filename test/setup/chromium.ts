import { provideDebianTool } from './debian-tool.js';

/**
 * The browser tests (the Temporal UI, the API from a page, the console) drive a real headless
 * Chromium. On a fresh machine there is none: scripts/chromium.sh installs Debian's `chromium`
 * (as root) or fails naming what to do; the tests get its path in CHROMIUM_PATH.
 */
export default function setup(): void {
  provideDebianTool('chromium.sh', 'CHROMIUM_PATH', 'Chromium for the browser tests');
}
