// The history of the plugin contract (plugins/contract.ts): what each version changed and how a
// plugin moves to it. The one place in code that knows; docs/plugin-contract.md is the long form.
// The registry quotes it when it refuses a plugin written for another version.
import { PLUGIN_API_VERSION } from './contract.js';

export interface ContractVersion {
  version: number;
  /** Changes that break a plugin written for the version before, each saying how to migrate. */
  breaking: readonly string[];
  /** What arrived without breaking anything: a plugin for the version before is unaffected. */
  added: readonly string[];
}

export const PLUGIN_CONTRACT_DOC = 'docs/plugin-contract.md';

/** Every plugin API version, oldest first; the last is PLUGIN_API_VERSION. */
export const CONTRACT_VERSIONS: readonly ContractVersion[] = [
  {
    version: 1,
    breaking: [],
    added: ['the first contract: a stage plugin object with ctx.artifacts (the artifact store) to write outputs and read inputs'],
  },
  {
    version: 2,
    breaking: ['ctx.artifacts was replaced by ctx.output(kind, write) / ctx.localPath(ref) / ctx.checkpointDir() / ctx.checkpointUri()'],
    added: [
      'ctx.meter (usage of child processes), ctx.device, ctx.startedBy',
      'inputs typed by consumes, each checked present and intact before run',
      'estimateScale and estimate(params, inputs) for run estimates',
      "defineCommandStage and any-language stages over the stage protocol (docs/stage-protocol.md); ctx.services.python; UsageReport.wholeAttempt (CPU measured by pid is the attempt's whole use)",
      'capstan/plugin as compiled JavaScript with type declarations; params schemas from any zod v4 copy; StageError recognised across package copies',
    ],
  },
];

/**
 * Why a plugin written for plugin API `apiVersion` cannot load on a host speaking `host`, naming
 * both versions and what changed between them; undefined when it can load.
 */
export function apiVersionProblem(apiVersion: unknown, host: number = PLUGIN_API_VERSION): string | undefined {
  if (apiVersion === host) return undefined;
  if (typeof apiVersion !== 'number' || !Number.isInteger(apiVersion) || apiVersion < 1) {
    return `apiVersion must be the plugin API version the plugin is written for (this Capstan speaks ${host}), got ${JSON.stringify(apiVersion)}`;
  }
  const speaks = `it is written for plugin API ${apiVersion}; this Capstan speaks ${host}`;
  if (apiVersion > host) return `${speaks}: upgrade Capstan to a release that speaks plugin API ${apiVersion}`;
  const between = CONTRACT_VERSIONS.filter((v) => v.version > apiVersion && v.version <= host);
  const changed = between.flatMap((v) => v.breaking.map((b) => (between.length > 1 ? `in ${v.version}, ${b}` : b)));
  return `${speaks}: ${changed.length ? changed.join('; ') : 'the contract changed'} — see ${PLUGIN_CONTRACT_DOC}`;
}
