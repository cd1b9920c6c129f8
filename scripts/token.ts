// API tokens without a running API (the database in CAPSTAN_DATA_DIR / DATABASE_URL):
//   npm run token -- create --role operator --name ci [--expires 30d]   # prints the token once
//   npm run token -- list
//   npm run token -- revoke <id>
import { parseArgs } from 'node:util';
import { withTokenStore } from '../app/admin-token.js';
import { loadConfig } from '../app/config.js';
import { isRole, ROLES } from '../auth/roles.js';
import { TokenError } from '../auth/tokens.js';
import { parseDurationMs } from '../lib/duration.js';

const USAGE = `usage: npm run token -- create --role <${ROLES.join('|')}> --name <name> [--expires <duration, e.g. 30d>]
       npm run token -- list
       npm run token -- revoke <token id>`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    options: { role: { type: 'string' }, name: { type: 'string' }, expires: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const config = loadConfig(process.env, process.cwd());
  return withTokenStore(config, async (tokens) => {
    switch (command) {
      case 'create': {
        if (!values.name) throw new TokenError('BAD_ARGUMENT', '--name is required');
        if (!isRole(values.role)) throw new TokenError('BAD_ARGUMENT', `--role must be one of ${ROLES.join(', ')}`);
        let expiresAt: Date | undefined;
        if (values.expires) {
          const ms = parseDurationMs(values.expires);
          if (ms === undefined || ms <= 0) throw new TokenError('BAD_ARGUMENT', `--expires must be a duration like 12h or 30d; got "${values.expires}"`);
          expiresAt = new Date(Date.now() + ms);
        }
        const { token, info } = await tokens.create({ name: values.name, role: values.role, ...(expiresAt ? { expiresAt } : {}) });
        process.stderr.write(
          `created token ${info.id} "${info.name}" (${info.role}${info.expiresAt ? `, expires ${info.expiresAt}` : ''}); it is shown only now:\n`,
        );
        process.stdout.write(`${token}\n`);
        return 0;
      }
      case 'list': {
        for (const t of await tokens.list()) {
          const state = t.revokedAt ? `revoked ${t.revokedAt}` : t.expiresAt && Date.parse(t.expiresAt) <= Date.now() ? `expired ${t.expiresAt}` : 'active';
          process.stdout.write(`${t.id}  ${t.role.padEnd(9)}  ${t.name}  created ${t.createdAt}${t.expiresAt ? `  expires ${t.expiresAt}` : ''}  ${state}\n`);
        }
        return 0;
      }
      case 'revoke': {
        if (rest.length !== 1) throw new TokenError('BAD_ARGUMENT', 'revoke takes one token id (see npm run token -- list)');
        const t = await tokens.revoke(rest[0]!);
        process.stdout.write(`revoked ${t.id} "${t.name}"\n`);
        return 0;
      }
      default:
        throw new TokenError('BAD_ARGUMENT', `unknown command "${command}"\n${USAGE}`);
    }
  });
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(e instanceof TokenError ? 2 : 1);
  },
);
