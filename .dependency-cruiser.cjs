/**
 * The layer rules of DESIGN.md ("Layers"), checked by `npm run lint` (depcruise): imports point
 * downwards only, the tooling stays out of the product, and no module imports itself in a
 * circle. Type-only imports count: a layer that names another layer's types depends on it.
 */

/** Paths of ours (src/) that are not under one of the given folders or files of src/. */
const ourPathsOutside = (...allowed) => `^src/(?!(?:${allowed.join('|')}))`;

module.exports = {
  forbidden: [
    {
      name: 'wire-imports-nothing-above',
      comment: 'wire/ is the bottom layer (views over bytes): it imports nothing of ours outside wire/.',
      severity: 'error',
      from: { path: '^src/wire/' },
      to: { path: ourPathsOutside('wire/') },
    },
    {
      name: 'net-imports-only-wire',
      comment: 'net/ (addresses as values) builds on wire/ alone.',
      severity: 'error',
      from: { path: '^src/net/' },
      to: { path: ourPathsOutside('wire/', 'net/') },
    },
    {
      name: 'native-imports-only-errors',
      comment: 'native/ loads the addon and types it; the only thing of ours it needs is the error type.',
      severity: 'error',
      from: { path: '^src/native/' },
      to: { path: ourPathsOutside('native/', 'errors\\.ts$') },
    },
    {
      name: 'wireguard-imports-only-below',
      comment: 'wireguard/ is the protocol: it builds on wire/, net/, native/, the clock, the logger and the errors, nothing else.',
      severity: 'error',
      from: { path: '^src/wireguard/' },
      to: { path: ourPathsOutside('wireguard/', 'wire/', 'net/', 'native/', 'clock\\.ts$', 'logger\\.ts$', 'errors\\.ts$') },
    },
    {
      name: 'stack-knows-no-upstream',
      comment: 'stack/ terminates flows; which upstream carries them (outbound/, relay/), the routes, the config and the tunnel are decided above it.',
      severity: 'error',
      from: { path: '^src/stack/' },
      to: { path: '^src/(?:outbound|relay|routes|config|wireguard)/' },
    },
    {
      name: 'outbound-knows-no-routes',
      comment: 'An outbound carries what it is given: which flows reach it (router/, relay/, routes/) and the command line are decided above it.',
      severity: 'error',
      from: { path: '^src/outbound/' },
      to: { path: '^src/(?:router|relay|routes|cli|server)/' },
    },
    {
      name: 'api-is-started-by-the-roots',
      comment: 'api/ (dashboard, Clash API, /metrics) is loaded only by the composition roots (app.ts, run-up.ts, server/run.ts) when --ui is given; nothing else imports it.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/(?:api/|app\\.ts$|run-up\\.ts$|server/run\\.ts$|index\\.ts$)' },
      to: { path: '^src/api/' },
    },
    {
      name: 'api-reads-no-roots',
      comment: 'api/ reads what a running daemon gives it (ApiSource); it never builds one (app.ts, run-up.ts, server/, cli/).',
      severity: 'error',
      from: { path: '^src/api/' },
      to: { path: '^src/(?:app\\.ts$|run-up\\.ts$|server/|cli/)' },
    },
    {
      name: 'cli-is-the-top',
      comment: 'cli/ parses and prints; nothing in src/ below it imports it.',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'product-imports-no-tooling',
      comment: 'dist/ holds only what tunroute and embedders run: nothing in src/ imports tools/ or test/.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(?:tools|test)/' },
    },
    {
      name: 'no-circular',
      comment: 'A cycle makes two modules one; split out what both need instead.',
      severity: 'error',
      from: { path: '^(?:src|tools|test)/' },
      to: { circular: true },
    },
  ],
  options: {
    includeOnly: '^(?:src|tools|test)/',
    exclude: { path: '^(?:dist|dist-tools|build|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.test.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.mjs', '.d.mts'] },
    skipAnalysisNotInRules: true,
  },
};
