// Which address a request really comes from. Behind a reverse proxy every peer is the proxy, so
// its X-Forwarded-For names the client; but anyone can send that header, so it is believed only
// from peers listed in CAPSTAN_TRUSTED_PROXIES, and only up to the first hop (from the right)
// that is not itself a trusted proxy.
import { BlockList, isIP } from 'node:net';

/** Addresses and CIDR ranges of trusted proxies (e.g. `127.0.0.1`, `10.0.0.0/8`, `::1`). */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly size: number;

  /** Throws, naming the entry, when one is not an IPv4/IPv6 address or CIDR range. */
  constructor(entries: string[]) {
    for (const e of entries) {
      const [addr, bits, extra] = e.split('/');
      const family = isIP(addr ?? '');
      const prefix = bits === undefined ? undefined : Number(bits);
      if (!family || extra !== undefined || (prefix !== undefined && (!/^\d+$/.test(bits!) || prefix > (family === 4 ? 32 : 128)))) {
        throw new Error(`"${e}" is not an IP address or CIDR range (e.g. 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8)`);
      }
      const type = family === 4 ? 'ipv4' : 'ipv6';
      if (prefix === undefined) this.list.addAddress(addr!, type);
      else this.list.addSubnet(addr!, prefix, type);
    }
    this.size = entries.length;
  }

  /** Whether an address (IPv4, IPv6 or IPv4-mapped IPv6) is a trusted proxy. */
  has(address: string): boolean {
    const a = unmapped(address);
    const family = isIP(a);
    return family !== 0 && this.list.check(a, family === 4 ? 'ipv4' : 'ipv6');
  }

  /**
   * The client's address: the peer itself unless it is a trusted proxy; then the rightmost
   * X-Forwarded-For hop that is not a trusted proxy (hops left of it could be made up by the client).
   * A malformed hop ends the walk at the last address known good.
   */
  clientAddress(peer: string, forwardedFor: string | null | undefined): string {
    if (!this.size || !forwardedFor || !this.has(peer)) return peer;
    let client = peer;
    const hops = forwardedFor.split(',').map((h) => stripPort(h.trim()));
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!;
      if (!isIP(unmapped(hop))) return client;
      client = hop;
      if (!this.has(hop)) return hop;
    }
    return client;
  }
}

function unmapped(a: string): string {
  return a.toLowerCase().startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

/** `[::1]:443` → `::1`, `1.2.3.4:80` → `1.2.3.4` (some proxies add the port). */
function stripPort(h: string): string {
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(h);
  if (bracket) return bracket[1]!;
  const v4 = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(h);
  return v4 ? v4[1]! : h;
}
