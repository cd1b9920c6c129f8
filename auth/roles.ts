/**
 * Roles a token carries, and what each may do. Not a ladder: a `predictor` (a service that calls a
 * model) may only predict; a `viewer` reads; an `operator` reads and runs pipelines; an `admin`
 * may do everything, including promotion, rollback and tokens.
 */
export const ROLES = ['viewer', 'predictor', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** What an operation needs. */
export type Permission = 'read' | 'predict' | 'operate' | 'admin';

const GRANTS: Record<Role, readonly Permission[]> = {
  viewer: ['read'],
  predictor: ['predict'],
  operator: ['read', 'predict', 'operate'],
  admin: ['read', 'predict', 'operate', 'admin'],
};

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}

export function allows(role: Role, p: Permission): boolean {
  return GRANTS[role].includes(p);
}

/** The roles that have a permission, for error messages ("needs operator or admin"). */
export function rolesWith(p: Permission): Role[] {
  return ROLES.filter((r) => allows(r, p));
}
