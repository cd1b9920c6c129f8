import { allows, rolesWith, type Permission } from '../auth/roles.js';
import type { Principal } from '../auth/tokens.js';
import { AuthError } from './auth.js';

/**
 * What each root field needs. Every root field of the schema must be listed: createApi refuses
 * to build a schema with a field missing here, so a new operation cannot be left open.
 */
/** `any`: every valid token, whatever its role. */
export type Need = Permission | 'any';

export const OPERATION_PERMISSIONS: Record<'Query' | 'Mutation' | 'Subscription', Record<string, Need>> = {
  Query: {
    run: 'read',
    runs: 'read',
    stagePlugins: 'read',
    validatePipeline: 'read',
    savedPipelines: 'read',
    savedPipeline: 'read',
    schedules: 'read',
    ledger: 'read',
    roi: 'read',
    models: 'read',
    model: 'read',
    predict: 'predict',
    tokens: 'admin',
    whoami: 'any',
    ledgerPipelines: 'read',
    roiByRun: 'read',
    estimateRun: 'read',
    roiAlerts: 'read',
  },
  Mutation: {
    startPipeline: 'operate',
    startPipelineFromText: 'operate',
    retryStage: 'operate',
    skipStage: 'operate',
    abortRun: 'operate',
    cancelRun: 'operate',
    resumeRun: 'operate',
    savePipeline: 'operate',
    deleteSavedPipeline: 'operate',
    schedulePipeline: 'operate',
    pauseSchedule: 'operate',
    deleteSchedule: 'operate',
    emitEvent: 'operate',
    // operate + the model's owning token (checked in the resolver), or an admin.
    promoteModel: 'operate',
    rollbackModel: 'operate',
    setModelOwner: 'admin',
    setModelPromotionPolicy: 'admin',
    createToken: 'admin',
    revokeToken: 'admin',
    raiseBudget: 'operate',
    checkRoiWatches: 'operate',
  },
  Subscription: {
    runEvents: 'read',
  },
};

/** Throws FORBIDDEN unless the principal's role grants the permission. */
export function authorize(principal: Principal, permission: Need, what: string): void {
  if (permission === 'any' || allows(principal.role, permission)) return;
  throw new AuthError('FORBIDDEN', `${what} needs the ${rolesWith(permission).join(' or ')} role; token "${principal.name}" has ${principal.role}`);
}
