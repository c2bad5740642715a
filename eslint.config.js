// ESLint for src/, tools/ and test/: typescript-eslint's type-checked recommended rules, and no
// `any` at all (the project rule). Type information comes from tsconfig.test.json, the one
// project that covers all three folders, so a single TypeScript program serves every file.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['dist/**', 'dist-tools/**', 'build/**', 'node_modules/**', 'native/**', 'scripts/**'] },
  {
    files: ['src/**/*.ts', 'tools/**/*.ts', 'test/**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      // `_` marks a parameter kept for its position in a signature.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    // Fakes and lab helpers implement async interfaces (HostProbe, IpRunner, resolvers) with
    // values at hand; `async` keeps a throw a rejection, as the real implementations behave.
    files: ['test/**/*.ts', 'tools/**/*.ts'],
    rules: { '@typescript-eslint/require-await': 'off' },
  },
);
