import { describe, expect, it } from 'vitest';
import { placeRoles } from '../../activities/devices.js';
import { loadConfig } from '../../app/config.js';

const none = () => [];
describe('gpu placement at worker start', () => {
  it('refuses an explicit gpu role on a host without GPUs, unless CAPSTAN_GPUS=cpu:N asks for CPU devices', () => {
    const explicit = loadConfig({ CAPSTAN_WORKER_ROLES: 'gpu' }, '/tmp');
    expect(() => placeRoles({ roles: explicit.workerRoles, explicit: explicit.workerRolesExplicit, detect: none })).toThrow(
      /refusing the gpu role.*CAPSTAN_GPUS=cpu:N/,
    );
    const cpu = loadConfig({ CAPSTAN_WORKER_ROLES: 'gpu', CAPSTAN_GPUS: 'cpu:1' }, '/tmp');
    expect(placeRoles({ roles: cpu.workerRoles, explicit: cpu.workerRolesExplicit, gpus: cpu.gpus!, detect: none })).toEqual({
      roles: ['gpu'],
      gpus: [{ kind: 'cpu', id: '0' }],
    });
  });

  it('leaves gpu out of the default roles on a host without GPUs, and says so', () => {
    const c = loadConfig({}, '/tmp');
    const placed = placeRoles({ roles: c.workerRoles, explicit: c.workerRolesExplicit, detect: none });
    expect(placed.roles).toEqual(['workflows', 'cpu']);
    expect(placed.note).toMatch(/no GPU/);
  });

  it('offers one gpu slot per GPU found, by its index', () => {
    const c = loadConfig({ CAPSTAN_WORKER_ROLES: 'gpu' }, '/tmp');
    expect(placeRoles({ roles: c.workerRoles, explicit: true, detect: () => ['0', '1'] }).gpus).toEqual([
      { kind: 'gpu', id: '0' },
      { kind: 'gpu', id: '1' },
    ]);
  });
});
