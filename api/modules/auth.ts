import type { Role } from '../../auth/roles.js';
import type { TokenInfo } from '../../auth/tokens.js';
import type { ApiContext, ApiModule } from '../module.js';
import { authTypeDefs } from '../schema/auth.js';

const toEnum = (r: Role) => r.toUpperCase();
const tokenView = (t: TokenInfo, now = Date.now()) => ({
  ...t,
  role: toEnum(t.role),
  active: !t.revokedAt && !(t.expiresAt && Date.parse(t.expiresAt) <= now),
});

/** API tokens (admins) and who-am-I (any token). */
export const authModule: ApiModule = {
  name: 'auth',
  typeDefs: authTypeDefs,
  resolvers: {
    Query: {
      tokens: async (_: unknown, __: unknown, ctx: ApiContext) => (await ctx.tokens.list()).map((t) => tokenView(t)),
      whoami: (_: unknown, __: unknown, ctx: ApiContext) => ({ ...ctx.principal, role: toEnum(ctx.principal.role) }),
    },
    Mutation: {
      createToken: async (_: unknown, a: { name: string; role: string; expiresAt?: Date | null }, ctx: ApiContext) => {
        const created = await ctx.tokens.create({ name: a.name, role: a.role.toLowerCase() as Role, ...(a.expiresAt ? { expiresAt: a.expiresAt } : {}) });
        ctx.logger.info('token created', { id: created.info.id, name: created.info.name, role: created.info.role, by: ctx.principal.name });
        return { token: created.token, info: tokenView(created.info) };
      },
      revokeToken: async (_: unknown, a: { id: string }, ctx: ApiContext) => {
        const t = await ctx.tokens.revoke(a.id);
        ctx.logger.info('token revoked', { id: t.id, name: t.name, by: ctx.principal.name });
        return tokenView(t);
      },
    },
  },
};
