// Temporal's time-skipping test server for the workflow tests that skip time
// (TestWorkflowEnvironment.createTimeSkipping). The SDK would download its native build from
// GitHub, which this machine cannot reach; the same server ships on Maven Central as the Java
// artifact io.temporal:temporal-test-server, so it is resolved through Maven (pinned) into
// `.tools/temporal-test-server/<version>/lib` and started by a small launcher script there, which
// the SDK runs as an `existing-path` executable. Needs a JDK (17 here) and Maven on PATH.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../lib/logger.js';
import { lastLine } from './find-binary.js';

/** Pinned: the Maven coordinates of the test server (the Java SDK's release). */
export const TEST_SERVER_ARTIFACT = 'io.temporal:temporal-test-server';
export const TEST_SERVER_VERSION = '1.31.0';
/** The server's entry point: `TestServer <port>` serves the Temporal API with time skipping. */
const MAIN_CLASS = 'io.temporal.testserver.TestServer';

export interface ResolvedTestServer {
  /** The launcher: `<path> <port>` starts the server. */
  path: string;
  source: 'TEMPORAL_TEST_SERVER_PATH' | 'tools-folder' | 'maven';
}

/**
 * Finds or installs the test server's launcher, in this order: TEMPORAL_TEST_SERVER_PATH, the
 * tools folder, Maven (`dependency:copy-dependencies` of a throwaway pom naming the pinned artifact
 * and slf4j-nop, about a minute on a fresh machine, then nothing: the jars stay in the tools folder).
 */
export function resolveTestServer(opts: { toolsDir: string; env: NodeJS.ProcessEnv; logger: Logger }): ResolvedTestServer {
  const fromEnv = opts.env.TEMPORAL_TEST_SERVER_PATH;
  if (fromEnv) {
    if (existsSync(fromEnv)) return { path: fromEnv, source: 'TEMPORAL_TEST_SERVER_PATH' };
    throw new Error(`TEMPORAL_TEST_SERVER_PATH is ${fromEnv}, which does not exist`);
  }
  const home = path.join(opts.toolsDir, 'temporal-test-server', TEST_SERVER_VERSION);
  const lib = path.join(home, 'lib');
  const launcher = path.join(home, 'temporal-test-server');
  const installed = () => existsSync(launcher) && existsSync(lib) && readdirSync(lib).some((f) => f.startsWith(`temporal-test-server-${TEST_SERVER_VERSION}`));
  if (installed()) return { path: launcher, source: 'tools-folder' };

  const java = spawnSync('java', ['-version'], { encoding: 'utf8' });
  if (java.status !== 0)
    throw new Error(`the time-skipping test server needs Java (a JDK 17 or newer on PATH): ${java.error?.message ?? lastLine(java.stderr)}`);
  mkdirSync(path.join(opts.toolsDir, 'temporal-test-server'), { recursive: true });
  const work = mkdtempSync(path.join(opts.toolsDir, 'temporal-test-server', 'mvn-'));
  const [group, artifact] = TEST_SERVER_ARTIFACT.split(':');
  writeFileSync(
    path.join(work, 'pom.xml'),
    `<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>capstan.local</groupId><artifactId>temporal-test-server-install</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>${group}</groupId><artifactId>${artifact}</artifactId><version>${TEST_SERVER_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-nop</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
`,
  );
  opts.logger.info(`installing Temporal's test server ${TEST_SERVER_VERSION} from Maven Central into ${home} (once)`);
  const mvn = spawnSync('mvn', ['-q', '-B', 'dependency:copy-dependencies', `-DoutputDirectory=${lib}`], {
    cwd: work,
    env: opts.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
  });
  rmSync(work, { recursive: true, force: true });
  if (mvn.status !== 0) {
    throw new Error(
      `could not install ${TEST_SERVER_ARTIFACT}:${TEST_SERVER_VERSION} with Maven: ${mvn.error?.message ?? lastLine(mvn.stdout) ?? lastLine(mvn.stderr) ?? `exit ${mvn.status}`}. Set TEMPORAL_TEST_SERVER_PATH to a test server executable.`,
    );
  }
  // C1 only and the serial collector: the server starts in about a second on 2 cores.
  writeFileSync(launcher, `#!/bin/sh\nexec java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "${lib}/*" ${MAIN_CLASS} "$@"\n`);
  chmodSync(launcher, 0o755);
  if (!installed()) throw new Error(`Maven finished but ${lib} has no temporal-test-server-${TEST_SERVER_VERSION} jar`);
  return { path: launcher, source: 'maven' };
}
